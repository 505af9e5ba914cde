"""Shared pieces of the evaluation tests: the fixture benchmarks, a tokenizer and tiny models.

The tokenizer is a byte-level BPE trained on the fixture questions and prompt formats, with the
three Qwen special tokens. The models are tiny randomly initialised Steel models (one per FFN
variant) saved as Hugging Face directories and read back through the trainer's `load_model`.
"""

import csv
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _corpus() -> list[str]:
    texts = [
        "以下是中国关于考试的单项选择题，请选出其中的正确答案。答案：A 答案：B 答案：C 答案：D",
        "以下是关于的单项选择题，请直接给出正确答案的选项。题目：答案是：A",
        "The following are multiple choice questions (with answers) about. Answer: A Answer: B",
        "system user assistant You are a helpful assistant.",
    ]
    for path in sorted(FIXTURES.rglob("*.csv")):
        with open(path, encoding="utf-8", newline="") as file:
            texts += [" ".join(row) for row in csv.reader(file)]
    return texts


def build_tokenizer(directory: Path) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    ).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    return build_tokenizer(tmp_path_factory.mktemp("eval-tokenizer"))


def save_tiny_model(directory: Path, tokenizer_dir: Path, ffn_type: str, seed: int = 0) -> Path:
    """Write a tiny random Steel model plus the test tokenizer as an exported model directory."""
    from steel.model import SteelConfig, SteelForCausalLM
    from steel.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_dir)
    config = SteelConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        rope_theta=10_000.0,
        ffn_type=ffn_type,
        n_experts=2,
        mlp_div_ratio=2,
    )
    torch.manual_seed(seed)
    model = SteelForCausalLM(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def load(directory: Path):
    """Load through the trainer's `load_model`, or the same way by hand where steel.train is absent."""
    try:
        from steel.train.load import load_model
    except ImportError:
        from types import SimpleNamespace

        from transformers import AutoModelForCausalLM

        import steel.model  # noqa: F401  (registers the steel model type)
        from steel.tokenizer import load_tokenizer

        model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
        return SimpleNamespace(model=model, tokenizer=load_tokenizer(directory), chat_template=None, provenance={})
    return load_model(directory)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer_dir):
    """Return a function that writes (once) and returns the directory of a tiny model variant."""
    root = tmp_path_factory.mktemp("eval-models")
    directories: dict[str, Path] = {}

    def model_dir(ffn_type: str) -> Path:
        if ffn_type not in directories:
            directories[ffn_type] = save_tiny_model(root / ffn_type, tokenizer_dir, ffn_type)
        return directories[ffn_type]

    return model_dir


@pytest.fixture(scope="session")
def causal_model(tiny_model_dir):
    return load(tiny_model_dir("soft_moe_causal"))


@pytest.fixture(scope="session")
def noncausal_model(tiny_model_dir):
    return load(tiny_model_dir("soft_moe"))


@pytest.fixture(scope="session")
def dense_model(tiny_model_dir):
    return load(tiny_model_dir("dense"))
