"""Spread of the CPU peak FLOP/s behind CPU MFU: the estimate the trainer uses against a direct timing.

Both methods take the best of short 512 x 512 float32 matmuls:

- baseline: the matmul timed with every thread (`torch.get_num_threads()`), best of 5, as the
  trainer measured the peak before;
- estimate: `steel.train.metrics.measure_cpu_matmul_flops`, one thread's best of as many matmuls as
  fit in 0.2 s, times the thread count.

Each is called `--trials` times, interleaved, and the script prints the min, median and max and the
max/min spread of each. A small spread is the goal: MFU divides by this number.

    python bench/bench_cpu_peak.py --trials 20
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from steel.train.metrics import measure_cpu_matmul_flops


def all_threads_matmul_flops(size: int = 512, repeats: int = 5) -> float:
    a = torch.randn(size, size, generator=torch.Generator().manual_seed(0))
    b = torch.randn(size, size, generator=torch.Generator().manual_seed(1))
    torch.mm(a, b)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def summarize(name: str, values: list[float]) -> None:
    values = [v / 1e9 for v in values]
    print(f"| {name} | {min(values):.1f} | {statistics.median(values):.1f} | {max(values):.1f} | "
          f"{max(values) / min(values):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="calls of each method (default: 20)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    baseline, estimate = [], []
    for _ in range(args.trials):
        baseline.append(all_threads_matmul_flops())
        estimate.append(measure_cpu_matmul_flops())

    print(f"{args.trials} trials, {torch.get_num_threads()} threads (GFLOP/s)")
    print("| method | min | median | max | max / min |")
    print("|---|---:|---:|---:|---:|")
    summarize("baseline: all threads, best of 5", baseline)
    summarize("estimate: one thread's best x threads", estimate)


if __name__ == "__main__":
    main()
