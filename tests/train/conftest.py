import numpy as np
import pytest

from train_toys import make_tokens, write_qwen2_config


@pytest.fixture(scope="session")
def toy_tokens() -> np.ndarray:
    return make_tokens()


@pytest.fixture(scope="session")
def toy_tokens_file(tmp_path_factory, toy_tokens):
    path = tmp_path_factory.mktemp("tokens") / "tokens.npy"
    np.save(path, toy_tokens)
    return path


@pytest.fixture(scope="session")
def qwen2_config(tmp_path_factory):
    return write_qwen2_config(tmp_path_factory.mktemp("qwen2"))


@pytest.fixture
def single_process():
    from steel.train.distributed import init_distributed

    return init_distributed("cpu")
