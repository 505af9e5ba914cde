"""Training throughput on the CPU: Steel's trainer against a plain PyTorch loop, in one run.

    python bench/bench_train.py [--steps 8] [--warmup 2] [--threads 2]

Three measurements with the same dimensions, batch and data (random token ids), each in
tokens per second over `--steps` optimizer steps after `--warmup` untimed ones:

1. baseline: a plain loop over `transformers`' `Qwen2ForCausalLM` (forward with labels, which
   materialises the full logits; backward; clip 1.0; AdamW).
2. Steel's `Trainer` (the core `steel pretrain` runs) on the same Qwen2 config: the cost of the
   trainer itself (chunked cross-entropy, token-weighted accumulation, metrics).
3. Steel's `Trainer` on a small Steel model (causal Soft MoE) of the same hidden size, layers,
   heads, vocabulary and FFN width.

Ratios are against (1). The step source is in memory, so data loading is not part of the numbers.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import tempfile
import time
from pathlib import Path

import torch

HIDDEN, LAYERS, HEADS, FFN, VOCAB = 256, 4, 4, 1024, 4096
BLOCK_SIZE, MICRO_BATCH, ACCUMULATION = 256, 4, 2
GLOBAL_BATCH = MICRO_BATCH * ACCUMULATION


def qwen2_config():
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, num_key_value_heads=HEADS, max_position_embeddings=BLOCK_SIZE,
        tie_word_embeddings=False,
    )


def random_batches(num_steps: int, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (GLOBAL_BATCH, BLOCK_SIZE + 1), generator=generator) for _ in range(num_steps)]


def plain_loop(batches: list[torch.Tensor], warmup: int) -> float:
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(qwen2_config())
    model.config._attn_implementation = "sdpa"
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.05)
    start = 0.0
    for step, batch in enumerate(batches):
        if step == warmup:
            start = time.perf_counter()
        for micro in batch.split(MICRO_BATCH):
            # transformers shifts labels inside, so inputs and labels are the same block.
            loss = model(input_ids=micro[:, :-1], labels=micro[:, :-1]).loss / ACCUMULATION
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return (len(batches) - warmup) * GLOBAL_BATCH * BLOCK_SIZE / (time.perf_counter() - start)


class ListSource:
    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        for index, batch in enumerate(self.batches):
            yield batch, {"position": index + 1}

    def load_state_dict(self, state):
        raise NotImplementedError


def steel_trainer(batches: list[torch.Tensor], warmup: int, model_overrides: list[str], threads: int) -> float:
    """Run the trainer over `batches` and return tokens/s of the steps after `warmup`."""
    from steel.train.config import load_config
    from steel.train.distributed import init_distributed
    from steel.train.load import build_model
    from steel.train.loss import CausalLMLoss
    from steel.train.metrics import read_metrics
    from steel.train.trainer import Trainer

    with tempfile.TemporaryDirectory() as run_dir:
        config = load_config(None, [
            f"run_dir={run_dir}", f"data.block_size={BLOCK_SIZE}", f"batch.global_batch_size={GLOBAL_BATCH}",
            f"batch.micro_batch_size={MICRO_BATCH}", f"schedule.max_steps={len(batches)}",
            "schedule.warmup_steps=2", "logging.log_interval=1", "logging.eval_interval=0",
            "logging.sample_interval=0", "logging.progress_bar=false", f"checkpoint.interval={len(batches) + 1}",
            f"system.num_threads={threads}", "system.loss_chunk_size=1024", *model_overrides,
        ])
        env = init_distributed("cpu")
        model = build_model(config.model, seed=0)
        trainer = Trainer(config, model, CausalLMLoss(config.system.loss_chunk_size), ListSource(batches), env,
                          block_size=BLOCK_SIZE)
        trainer.fit()
        records = [r for r in read_metrics(run_dir) if r["kind"] == "train" and r["step"] > warmup]
    # Each record covers one step (log_interval 1), so the harmonic mean is tokens over total time.
    seconds = sum(GLOBAL_BATCH * BLOCK_SIZE / r["tokens_per_s"] for r in records)
    return len(records) * GLOBAL_BATCH * BLOCK_SIZE / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="timed optimizer steps per measurement")
    parser.add_argument("--warmup", type=int, default=2, help="untimed optimizer steps first")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)

    batches = random_batches(args.steps + args.warmup)
    with tempfile.TemporaryDirectory() as scratch:
        config_path = Path(scratch) / "config.json"
        config_path.write_text(qwen2_config().to_json_string())
        results = {"plain Qwen2 loop (baseline)": plain_loop(batches, args.warmup)}
        results["Steel trainer, same Qwen2 config"] = steel_trainer(
            batches, args.warmup, [f"model.config={config_path}"], args.threads)
    results["Steel trainer, Steel causal Soft MoE"] = steel_trainer(batches, args.warmup, [
        "model.preset=steel-tiny", f"model.overrides.vocab_size={VOCAB}", f"model.overrides.hidden_size={HIDDEN}",
        f"model.overrides.num_hidden_layers={LAYERS}", f"model.overrides.num_attention_heads={HEADS}",
        f"model.overrides.num_key_value_heads={HEADS}", f"model.overrides.intermediate_size={FFN}",
    ], args.threads)

    baseline = results["plain Qwen2 loop (baseline)"]
    print(f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"hidden {HIDDEN}, {LAYERS} layers, {HEADS} heads, FFN {FFN}, vocab {VOCAB}, "
          f"block {BLOCK_SIZE}, micro-batch {MICRO_BATCH} x {ACCUMULATION} accumulation")
    print("| measurement | tokens/s | ratio to baseline |\n|---|---:|---:|")
    for name, rate in results.items():
        print(f"| {name} | {rate:,.0f} | {rate / baseline:.2f} |")
    print(json.dumps({name: round(rate, 1) for name, rate in results.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
