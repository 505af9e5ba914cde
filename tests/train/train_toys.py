"""Small, deterministic training set-ups for the trainer tests: a Qwen2 config, a toy step source and a
small real text corpus for `steel data tokenize`."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch

VOCAB_SIZE = 256
BLOCK_SIZE = 32

SENTENCES = [
    "中国的首都是北京。", "今天天气很好，我们去公园散步。", "人工智能正在改变世界。", "我喜欢读书和写字。",
    "长江是中国最长的河流。", "学习语言需要耐心和练习。", "The quick brown fox jumps over the lazy dog.",
]


def write_corpus(path: Path, num_docs: int, seed: int) -> Path:
    """Write a JSONL corpus of `num_docs` documents, each 3 to 8 sentences drawn from SENTENCES."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as handle:
        for _ in range(num_docs):
            text = "".join(rng.choice(SENTENCES) for _ in range(rng.randint(3, 8)))
            handle.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    return path


def write_qwen2_config(directory: Path, vocab_size: int = VOCAB_SIZE) -> Path:
    """Write a tiny `transformers` Qwen2 config.json (hidden 32, 2 layers) and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "model_type": "qwen2",
        "architectures": ["Qwen2ForCausalLM"],
        "vocab_size": vocab_size,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 64,
        "rope_theta": 10000.0,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        "hidden_act": "silu",
    }
    path = directory / "config.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def make_tokens(num_tokens: int = 20_000, vocab_size: int = VOCAB_SIZE, seed: int = 0) -> np.ndarray:
    """Token ids with learnable structure: runs of an arithmetic sequence, restarted at random."""
    rng = np.random.default_rng(seed)
    tokens = np.empty(num_tokens, dtype=np.int64)
    current, stride = 0, 1
    for i in range(num_tokens):
        if rng.random() < 0.05:
            current, stride = int(rng.integers(vocab_size)), int(rng.integers(1, 4))
        tokens[i] = current
        current = (current + stride) % vocab_size
    return tokens


class ToyStream:
    """A step source over a token array with the same global order for every world size.

    Step k's global batch is `global_batch_size` windows of `block_size + 1` tokens at offsets drawn
    from a generator seeded with (seed, k). Rank r takes rows [r * local, (r + 1) * local).
    """

    def __init__(self, tokens: np.ndarray, block_size: int, global_batch_size: int,
                 rank: int = 0, world_size: int = 1, seed: int = 0):
        self.tokens = tokens
        self.block_size = block_size
        self.global_batch_size = global_batch_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.position = 0

    def _global_batch(self, step: int, seed_offset: int = 0) -> torch.Tensor:
        rng = np.random.default_rng((self.seed + seed_offset, step))
        starts = rng.integers(0, len(self.tokens) - self.block_size - 1, size=self.global_batch_size)
        rows = np.stack([self.tokens[s : s + self.block_size + 1] for s in starts])
        return torch.from_numpy(rows)

    def __iter__(self):
        local = self.global_batch_size // self.world_size
        while True:
            batch = self._global_batch(self.position)[self.rank * local : (self.rank + 1) * local]
            self.position += 1
            yield batch, {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = state["position"]

    def validation_batches(self, micro_batch_size: int = 2, num_batches: int = 4):
        for index in range(num_batches):
            yield self._global_batch(index, seed_offset=10_000)[:micro_batch_size]


def toy_config(run_dir: Path, model_config: Path, **sections):
    """A TrainConfig for a tiny Qwen2 run on the CPU; `sections` maps "section.key" strings to values."""
    from steel.train.config import load_config

    overrides = [
        f"run_dir={run_dir}",
        f"model.config={model_config}",
        f"data.block_size={BLOCK_SIZE}",
        "batch.global_batch_size=8",
        "batch.micro_batch_size=2",
        "optimizer.lr=3e-3",
        "schedule.warmup_steps=5",
        "schedule.max_steps=20",
        "system.num_threads=1",
        "system.deterministic=true",
        "system.loss_chunk_size=48",
        "logging.log_interval=1",
        "logging.eval_interval=0",
        "logging.sample_interval=0",
        "logging.progress_bar=false",
        "checkpoint.interval=1000",
    ]
    overrides += [f"{key}={value}" for key, value in sections.items()]
    return load_config(None, overrides)


def build_trainer(config, env, tokens: np.ndarray, loss=None, tokenizer=None):
    """Build the model and a Trainer over a ToyStream for `config` on `env`."""
    from steel.train.load import build_model
    from steel.train.loss import CausalLMLoss
    from steel.train.trainer import Trainer, configure_determinism

    configure_determinism(config)
    stream = ToyStream(tokens, config.data.block_size, config.batch.global_batch_size,
                       rank=env.rank, world_size=env.world_size, seed=config.data.seed)
    model = build_model(config.model, seed=config.seed)
    return Trainer(
        config, model, loss or CausalLMLoss(config.system.loss_chunk_size), stream, env,
        tokenizer=tokenizer,
        validation_batches=lambda: stream.validation_batches(config.batch.micro_batch_size),
        block_size=config.data.block_size,
    )


def read_losses(run_dir: Path) -> dict[int, float]:
    """Map step -> training loss from metrics.jsonl, the last record of each step winning."""
    from steel.train.metrics import read_metrics

    return {r["step"]: r["loss"] for r in read_metrics(run_dir) if r["kind"] == "train"}
