"""Run every CPU benchmark in bench/ one after another (`make bench`).

Each script measures Steel against a baseline in the same run and prints its ratios; the numbers
recorded in bench/RESULTS.md come from these scripts. A failing script is reported and the others
still run. Scripts that need a separate environment (the Data-Juicer comparison) say so and skip,
and the GPU scripts (`bench_*_gpu.py`) are skipped on a machine without CUDA.
"""

import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent


def main() -> int:
    import torch

    scripts = sorted(BENCH_DIR.glob("bench_*.py"))
    failed = []
    for script in scripts:
        if script.stem.endswith("_gpu") and not torch.cuda.is_available():
            print(f"\n=== {script.name}: skipped, no CUDA device", flush=True)
            continue
        print(f"\n=== {script.name}", flush=True)
        start = time.perf_counter()
        completed = subprocess.run([sys.executable, str(script)], cwd=BENCH_DIR.parent)
        print(f"=== {script.name}: exit {completed.returncode} after {time.perf_counter() - start:.0f} s", flush=True)
        if completed.returncode != 0:
            failed.append(script.name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
