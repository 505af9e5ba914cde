import numpy as np
import pytest

from train_toys import make_tokens, write_corpus, write_qwen2_config


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


@pytest.fixture(scope="session")
def shards(tmp_path_factory):
    """A trained 384-token BPE tokenizer and two shard directories (the second is appended later)."""
    from steel.data.tokenize import TokenizeConfig, run_tokenize
    from steel.tokenizer.train import TrainConfig, train_tokenizer

    root = tmp_path_factory.mktemp("data")
    corpus = write_corpus(root / "corpus.jsonl", 400, seed=0)
    more = write_corpus(root / "more.jsonl", 100, seed=1)
    tokenizer_dir = train_tokenizer(TrainConfig([corpus], root / "tokenizer", 384))
    run_tokenize(TokenizeConfig([corpus], root / "shards", tokenizer=str(tokenizer_dir), val_fraction=0.1))
    run_tokenize(TokenizeConfig([more], root / "more", tokenizer=str(tokenizer_dir), val_fraction=0.1))
    return root


@pytest.fixture
def single_process():
    from steel.train.distributed import init_distributed

    return init_distributed("cpu")
