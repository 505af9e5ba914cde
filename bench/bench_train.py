"""Training throughput on the CPU: Steel's trainer against a plain PyTorch loop, in one run.

    python bench/bench_train.py [--steps 4] [--rounds 3] [--threads 2]

Three set-ups with the same dimensions, batch and data (random token ids), in tokens per second:

1. baseline: a plain loop over `transformers`' `Qwen2ForCausalLM` (forward with labels, which
   materialises the full logits; backward; clip 1.0; AdamW).
2. Steel's `Trainer.train_step` (the step `steel pretrain` runs) on the same Qwen2 config: the
   cost of the trainer itself (chunked cross-entropy, token-weighted accumulation, clipping).
3. Steel's `Trainer.train_step` on a small Steel model (causal Soft MoE) of the same hidden size,
   layers, heads, vocabulary and FFN width.

The set-ups take turns step by step (`--rounds` x `--steps` timed optimizer steps each, after one
untimed step), so a change in machine load during the run affects all three alike. Each rate is
tokens over the summed time of that set-up's steps. Ratios are against (1). The batches come from memory, so data loading is not part of the numbers.
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


def plain_step_fn():
    """Return a function that runs one optimizer step of the plain loop on a global batch."""
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(0)
    config = qwen2_config()
    config._attn_implementation = "sdpa"
    model = Qwen2ForCausalLM(config)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.05)

    def step(batch: torch.Tensor) -> None:
        for micro in batch.split(MICRO_BATCH):
            # transformers shifts labels inside, so inputs and labels are the same block.
            loss = model(input_ids=micro[:, :-1], labels=micro[:, :-1]).loss / ACCUMULATION
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def trainer_step_fn(run_dir: str, model_overrides: list[str], threads: int):
    """Return a function that runs one `Trainer.train_step` on a global batch."""
    from steel.train.config import load_config
    from steel.train.distributed import init_distributed
    from steel.train.load import build_model
    from steel.train.loss import CausalLMLoss
    from steel.train.trainer import Trainer

    config = load_config(None, [
        f"run_dir={run_dir}", f"data.block_size={BLOCK_SIZE}", f"batch.global_batch_size={GLOBAL_BATCH}",
        f"batch.micro_batch_size={MICRO_BATCH}", "schedule.max_steps=1000", "schedule.warmup_steps=2",
        "logging.progress_bar=false", f"system.num_threads={threads}", "system.loss_chunk_size=1024",
        *model_overrides,
    ])
    model = build_model(config.model, seed=0)
    trainer = Trainer(config, model, CausalLMLoss(config.system.loss_chunk_size), iter(()),
                      init_distributed("cpu"), block_size=BLOCK_SIZE)
    return trainer.train_step


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4, help="timed optimizer steps per set-up and round")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the --steps batches")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)

    batches = random_batches(args.steps)
    with tempfile.TemporaryDirectory() as scratch:
        config_path = Path(scratch) / "config.json"
        config_path.write_text(qwen2_config().to_json_string())
        setups = {
            "plain Qwen2 loop (baseline)": plain_step_fn(),
            "Steel trainer, same Qwen2 config": trainer_step_fn(
                str(Path(scratch) / "qwen2"), [f"model.config={config_path}"], args.threads),
            "Steel trainer, Steel causal Soft MoE": trainer_step_fn(str(Path(scratch) / "steel"), [
                "model.preset=steel-tiny", f"model.overrides.vocab_size={VOCAB}",
                f"model.overrides.hidden_size={HIDDEN}", f"model.overrides.num_hidden_layers={LAYERS}",
                f"model.overrides.num_attention_heads={HEADS}", f"model.overrides.num_key_value_heads={HEADS}",
                f"model.overrides.intermediate_size={FFN}",
            ], args.threads),
        }
        for step in setups.values():
            step(batches[0])  # warm-up: first-call allocations and lazy initialisation
        # Steps alternate between the set-ups, so a change in machine load hits all of them alike.
        seconds = {name: 0.0 for name in setups}
        for round_index in range(args.rounds):
            for batch in batches:
                for name, step in setups.items():
                    start = time.perf_counter()
                    step(batch)
                    seconds[name] += time.perf_counter() - start
            print(f"round {round_index + 1} of {args.rounds} done", flush=True)
        tokens = args.rounds * len(batches) * GLOBAL_BATCH * BLOCK_SIZE
        results = {name: tokens / total for name, total in seconds.items()}

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
