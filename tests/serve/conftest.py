"""Fixtures for the serving tests; the tiny model and the test server live in serve_testing.py."""

from pathlib import Path

import pytest
import torch

from serve_testing import build_model, build_tokenizer


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Run the tiny models on one thread: faster than two for matrices this small, and steady on a busy CPU."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """An exported Hugging Face directory: tokenizer files, config and weights of the tiny model."""
    directory = tmp_path_factory.mktemp("tiny-chat-model")
    hf_tokenizer = build_tokenizer(directory)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        build_model(directory, hf_tokenizer)
    finally:
        torch.set_num_threads(previous)
    return directory


@pytest.fixture(scope="session")
def loaded(tiny_model_dir):
    from steel.serve.loading import load_for_serving

    return load_for_serving(str(tiny_model_dir))
