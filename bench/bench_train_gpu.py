"""`steel-1b` training throughput on one CUDA GPU: tokens/s, MFU and peak memory.

    python bench/bench_train_gpu.py [--steps 8] [--warmup 3] [--micro-batch-size 4]

Runs Steel's `Trainer` (bfloat16 autocast, float32 master weights, fused AdamW, chunked
cross-entropy) at sequence length 2048 on random token ids, for `soft_moe` and `soft_moe_causal`,
each without and with `torch.compile`. Prints one JSON line per case and a Markdown table.
MFU uses `steel.model.flops` and the data-sheet peak of the device (None for an unknown GPU).

NOTE: written for a GPU session and not yet run; sizes (micro-batch, steps) are estimates meant to
keep all four cases within about 8 minutes on one H200.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time

import torch

BLOCK_SIZE = 2048


class RandomSource:
    def __init__(self, global_batch_size: int, vocab_size: int):
        self.shape = (global_batch_size, BLOCK_SIZE + 1)
        self.vocab_size = vocab_size

    def __iter__(self):
        generator = torch.Generator().manual_seed(0)
        step = 0
        while True:
            step += 1
            yield torch.randint(0, self.vocab_size, self.shape, generator=generator), {"position": step}

    def load_state_dict(self, state):
        raise NotImplementedError


def run_case(ffn_type: str, compile_model: bool, args) -> dict:
    from steel.train.config import load_config
    from steel.train.distributed import init_distributed
    from steel.train.load import build_model
    from steel.train.loss import CausalLMLoss
    from steel.train.metrics import read_metrics
    from steel.train.trainer import Trainer

    global_batch = args.micro_batch_size * args.grad_accum_steps
    with tempfile.TemporaryDirectory() as run_dir:
        config = load_config(None, [
            f"run_dir={run_dir}", "model.preset=steel-1b", f"model.overrides.ffn_type={ffn_type}",
            f"data.block_size={BLOCK_SIZE}", f"batch.global_batch_size={global_batch}",
            f"batch.micro_batch_size={args.micro_batch_size}", f"schedule.max_steps={args.steps + args.warmup}",
            "schedule.warmup_steps=2", "logging.log_interval=1", "logging.eval_interval=0",
            "logging.sample_interval=0", "logging.progress_bar=false",
            f"checkpoint.interval={args.steps + args.warmup + 1}", f"system.compile={str(compile_model).lower()}",
            "system.loss_chunk_size=4096", "system.device=cuda",
        ])
        env = init_distributed("cuda")
        model = build_model(config.model, seed=0)
        source = RandomSource(global_batch, model.config.vocab_size)
        trainer = Trainer(config, model, CausalLMLoss(config.system.loss_chunk_size), source, env,
                          block_size=BLOCK_SIZE)
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        # The final checkpoint of 1.1B parameters is part of fit(); its time is not in tokens_per_s.
        trainer.fit()
        wall = time.perf_counter() - start
        timed = [r for r in read_metrics(run_dir) if r["kind"] == "train" and r["step"] > args.warmup]
    tokens = sum(global_batch * BLOCK_SIZE for _ in timed)
    seconds = sum(global_batch * BLOCK_SIZE / r["tokens_per_s"] for r in timed)
    mfus = [r["mfu"] for r in timed if r["mfu"] is not None]
    result = {
        "ffn_type": ffn_type,
        "compile": compile_model,
        "device": torch.cuda.get_device_name(),
        "tokens_per_s": tokens / seconds,
        "mfu": sum(mfus) / len(mfus) if mfus else None,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30,
        "micro_batch_size": args.micro_batch_size,
        "grad_accum_steps": args.grad_accum_steps,
        "wall_s": wall,
    }
    del trainer, model
    torch.cuda.empty_cache()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="timed optimizer steps per case")
    parser.add_argument("--warmup", type=int, default=3, help="untimed optimizer steps first (compilation)")
    parser.add_argument("--micro-batch-size", type=int, default=4)
    parser.add_argument("--grad-accum-steps", type=int, default=2)
    parser.add_argument("--cases", default="soft_moe:0,soft_moe:1,soft_moe_causal:0,soft_moe_causal:1",
                        help="comma-separated ffn_type:compile pairs")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if not torch.cuda.is_available():
        raise SystemExit("bench_train_gpu.py needs a CUDA device")

    results = []
    for case in args.cases.split(","):
        ffn_type, compiled = case.split(":")
        result = run_case(ffn_type, compiled == "1", args)
        print(json.dumps(result), flush=True)
        results.append(result)

    print("| FFN | torch.compile | tokens/s per GPU | MFU | peak memory (GiB) |\n|---|---|---:|---:|---:|")
    for r in results:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        print(f"| {r['ffn_type']} | {'yes' if r['compile'] else 'no'} | {r['tokens_per_s']:,.0f} | {mfu} "
              f"| {r['peak_memory_gib']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
