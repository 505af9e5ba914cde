"""Training metrics: `metrics.jsonl`, throughput, model FLOPs utilisation (MFU), optional TensorBoard/W&B.

Every record in `RUN_DIR/metrics.jsonl` is one JSON object with a `kind`:

- `train`: step, tokens, loss, lr, grad_norm, tokens_per_s, flops_per_s, mfu (None when unknown;
  approximate on a CPU, whose peak is estimated from a timed matmul)
- `val`: step, tokens, val_loss
- `sample`: step, prompt, completion
- `skip`: step, reason (a non-finite loss or gradient norm; the update was skipped)
- `start`: step the process started from (0, or the resumed checkpoint's step), world_size

A run that resumes appends; `steel plot` drops the points of steps that a later `start` rolled back.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

# Dense bfloat16 tensor-core peak in FLOP/s, from the vendors' data sheets (no sparsity).
# A device that matches no entry gets no MFU rather than a wrong one.
PEAK_BF16_FLOPS: list[tuple[str, float]] = [
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),
    ("H800", 989e12),
    ("H200", 989e12),
    ("H20", 148e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
]


def peak_flops(device_name: str) -> float | None:
    """Return the bf16 dense peak of a CUDA device name (e.g. "NVIDIA H200"), or None if unknown."""
    for key, peak in PEAK_BF16_FLOPS:
        if key.lower() in device_name.lower():
            return peak
    return None


def measure_cpu_matmul_flops(size: int = 512, budget_seconds: float = 0.2, min_repeats: int = 5) -> float:
    """Estimate this CPU's float32 matmul peak in FLOP/s: one thread's best timing x the thread count.

    One thread is timed because a multi-threaded matmul waits for its slowest thread. On a loaded
    2-core VM, two threads' best timing ranged from 11 to 238 GFLOP/s between calls, and this
    estimate from 228 to 243 (`bench/bench_cpu_peak.py`). The best of as many matmuls as fit in
    `budget_seconds` (at least `min_repeats`) is taken. Scaling to all threads is an estimate.
    """
    a = torch.randn(size, size, generator=torch.Generator().manual_seed(0))
    b = torch.randn(size, size, generator=torch.Generator().manual_seed(1))
    num_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.mm(a, b)
        best = math.inf
        repeats = 0
        deadline = time.perf_counter() + budget_seconds
        while repeats < min_repeats or time.perf_counter() < deadline:
            start = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - start)
            repeats += 1
    finally:
        torch.set_num_threads(num_threads)
    return 2 * size**3 / best * num_threads


def device_peak_flops(device: torch.device) -> tuple[float | None, str]:
    """Return (peak FLOP/s, description) for MFU: the table on CUDA, an estimate from a measured matmul on CPU."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = peak_flops(name)
        return peak, f"{name} bf16 peak {peak / 1e12:.0f} TFLOP/s" if peak else f"{name} (peak unknown: no MFU)"
    peak = measure_cpu_matmul_flops()
    threads = torch.get_num_threads()
    return peak, (
        f"CPU float32 matmul peak estimated at {peak / 1e9:.1f} GFLOP/s (one thread measured, x {threads} threads); "
        "CPU MFU is approximate, and unreliable on a machine that other processes share"
    )


def flops_per_token(model_config: Any, block_size: int) -> float:
    """Return training FLOPs per token (forward + backward) of the model at sequence length `block_size`.

    Steel configs use `steel.model.flops.flops_per_token`, which counts the Soft-MoE variant in use.
    Other configs use 6 x (non-embedding parameters + output layer) + 12 x layers x hidden x
    block_size for attention scores and values (the PaLM appendix estimate).
    """
    if getattr(model_config, "model_type", None) == "steel":
        from steel.model.flops import flops_per_token as steel_flops_per_token

        return float(steel_flops_per_token(model_config, block_size))

    hidden = model_config.hidden_size
    layers = model_config.num_hidden_layers
    intermediate = getattr(model_config, "intermediate_size", 4 * hidden)
    heads = model_config.num_attention_heads
    kv_heads = getattr(model_config, "num_key_value_heads", None) or heads
    head_dim = getattr(model_config, "head_dim", None) or hidden // heads
    attention = hidden * head_dim * (2 * heads + 2 * kv_heads)
    mlp = 3 * hidden * intermediate
    matmul_params = layers * (attention + mlp) + hidden * model_config.vocab_size
    return 6.0 * matmul_params + 12.0 * layers * heads * head_dim * block_size


class MetricsLogger:
    """Append metric records to `metrics.jsonl` (rank 0 only) and forward scalars to optional sinks."""

    def __init__(self, run_dir: str | Path, enabled: bool, tensorboard: bool = False,
                 wandb: bool = False, wandb_project: str = "steel", config: dict | None = None):
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self._tensorboard = None
        self._wandb = None
        if not enabled:
            return
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as error:
                raise ValueError("logging.tensorboard=true needs the `tensorboard` package: pip install tensorboard") from error
            self._tensorboard = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))
        if wandb:
            try:
                import wandb as wandb_module
            except ImportError as error:
                raise ValueError("logging.wandb=true needs the `wandb` package: pip install wandb") from error
            self._wandb = wandb_module.init(project=wandb_project, dir=str(run_dir), config=config, resume="allow")

    def write(self, kind: str, **record: Any) -> None:
        if not self.enabled:
            return
        record = {"kind": kind, **record, "time": time.time()}
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        scalars = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k not in ("step", "time")}
        step = record.get("step", 0)
        if self._tensorboard is not None:
            for name, value in scalars.items():
                self._tensorboard.add_scalar(f"{kind}/{name}", value, step)
        if self._wandb is not None:
            self._wandb.log({f"{kind}/{k}": v for k, v in scalars.items()}, step=step)

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
        if self._wandb is not None:
            self._wandb.finish()


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """Return the records of `metrics.jsonl`, with points that a later resume rolled back removed.

    A `start` record at step S means every earlier `train`/`val`/`sample`/`skip` record with a step
    above S was redone by the process that continued, so only the later copy is kept.
    """
    path = Path(run_dir) / "metrics.jsonl"
    records: list[dict[str, Any]] = []
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            # A process killed mid-write can leave a partial last line.
            log.warning("%s:%d: skipped a line that is not valid JSON", path, line_number)
            continue
        if record.get("kind") == "start":
            resumed_step = record.get("step", 0)
            records = [r for r in records if r.get("kind") == "start" or r.get("step", 0) <= resumed_step]
        records.append(record)
    return records
