"""`steel pretrain` killed with SIGKILL at an arbitrary step, then resumed with `--resume`.

The resumed run must match an uninterrupted run of the same command exactly: the loss, LR,
gradient norm and validation loss of every later step, and the final `model.safetensors`. Both
runs use one process, one thread and deterministic algorithms, on a Soft-MoE (causal) Steel
model and token shards that `steel data tokenize` wrote.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from steel.train import checkpoint as ckpt
from steel.train.metrics import read_metrics

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "pretrain-tiny.yaml"
MAX_STEPS = 40
CHECKPOINT_INTERVAL = 4
KILL_AFTER_STEP = 6  # the kill lands at this step or later, wherever the run has got to


def pretrain_command(run_dir: Path, shards: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "steel", "pretrain", str(RECIPE),
        f"run_dir={run_dir}", f"data.shards=[{shards / 'shards'}]",
        "model.preset=steel-tiny", "model.overrides.hidden_size=32", "model.overrides.intermediate_size=64",
        "data.block_size=32", "batch.global_batch_size=4", "batch.micro_batch_size=2",
        f"schedule.max_steps={MAX_STEPS}", "schedule.warmup_steps=5",
        f"checkpoint.interval={CHECKPOINT_INTERVAL}", "checkpoint.keep_last=2",
        "logging.log_interval=1", "logging.eval_interval=5", "logging.eval_batches=2",
        "logging.sample_interval=0", "logging.progress_bar=false",
        "system.num_threads=1", "system.deterministic=true", *extra,
    ]


def start(command: list[str], log_path: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    with open(log_path, "w", encoding="utf-8") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)


def finish(process: subprocess.Popen, log_path: Path) -> None:
    assert process.wait(timeout=300) == 0, log_path.read_text(encoding="utf-8")[-3000:]


def last_train_step(run_dir: Path) -> int:
    if not (run_dir / "metrics.jsonl").is_file():
        return 0
    return max((r["step"] for r in read_metrics(run_dir) if r["kind"] == "train"), default=0)


def kill_after_step(process: subprocess.Popen, run_dir: Path, step: int, timeout: float = 240) -> None:
    """SIGKILL `process` as soon as `run_dir/metrics.jsonl` shows a training step >= `step`."""
    deadline = time.monotonic() + timeout
    while last_train_step(run_dir) < step:
        assert process.poll() is None, f"the run exited with {process.returncode} before step {step}"
        assert time.monotonic() < deadline, f"{run_dir} did not reach step {step} in {timeout} s"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)


def records_by_step(records: list[dict], kind: str) -> dict[int, dict]:
    return {r["step"]: r for r in records if r["kind"] == kind}


@pytest.fixture(scope="module")
def killed_and_reference(tmp_path_factory, shards):
    """Run the reference to the end while the other run is killed, then resume the killed one."""
    root = tmp_path_factory.mktemp("kill")
    reference_dir, killed_dir = root / "reference", root / "killed"

    reference = start(pretrain_command(reference_dir, shards), root / "reference.log")
    killed = start(pretrain_command(killed_dir, shards), root / "killed.log")
    try:
        kill_after_step(killed, killed_dir, KILL_AFTER_STEP)
    finally:
        if killed.poll() is None:
            killed.kill()
            killed.wait()
    killed_at = last_train_step(killed_dir)
    checkpoint = ckpt.latest_checkpoint(killed_dir)
    resumed_from = ckpt.read_meta(checkpoint)["step"] if checkpoint is not None else None

    resumed = start(pretrain_command(killed_dir, shards, "--resume"), root / "resumed.log")
    finish(resumed, root / "resumed.log")
    finish(reference, root / "reference.log")
    return {
        "reference": reference_dir, "killed": killed_dir, "returncode": killed.returncode,
        "killed_at": killed_at, "resumed_from": resumed_from,
    }


def test_kill_lands_mid_run(killed_and_reference):
    run = killed_and_reference
    assert run["returncode"] == -signal.SIGKILL
    assert KILL_AFTER_STEP <= run["killed_at"] < MAX_STEPS
    assert run["resumed_from"] is not None
    assert CHECKPOINT_INTERVAL <= run["resumed_from"] <= run["killed_at"]
    starts = [r["step"] for r in read_metrics(run["killed"]) if r["kind"] == "start"]
    assert starts == [0, run["resumed_from"]]


def test_resumed_steps_match_uninterrupted_run(killed_and_reference):
    run = killed_and_reference
    reference = read_metrics(run["reference"])
    killed = read_metrics(run["killed"])
    # The records the resumed process wrote: everything after its `start` record.
    second_start = max(i for i, r in enumerate(killed) if r["kind"] == "start")
    resumed, before_kill = killed[second_start:], killed[:second_start]

    expected_train = records_by_step(reference, "train")
    resumed_train = records_by_step(resumed, "train")
    assert sorted(resumed_train) == list(range(run["resumed_from"] + 1, MAX_STEPS + 1))
    for step, record in resumed_train.items():
        # Exact: the LR continues the schedule (no second warmup), and the loss is bit-identical.
        assert record["lr"] == expected_train[step]["lr"], step
        assert record["loss"] == expected_train[step]["loss"], step
        assert record["grad_norm"] == expected_train[step]["grad_norm"], step
        assert record["tokens"] == expected_train[step]["tokens"], step
    for step, record in records_by_step(before_kill, "train").items():
        assert record["loss"] == expected_train[step]["loss"], step

    expected_val = records_by_step(reference, "val")
    resumed_val = records_by_step(resumed, "val")
    assert sorted(resumed_val) == [s for s in sorted(expected_val) if s > run["resumed_from"]]
    for step, record in resumed_val.items():
        assert record["val_loss"] == expected_val[step]["val_loss"], step


def test_resumed_final_weights_are_identical(killed_and_reference):
    run = killed_and_reference
    final = ckpt.latest_checkpoint(run["killed"])
    reference = ckpt.latest_checkpoint(run["reference"])
    assert ckpt.read_meta(final)["step"] == ckpt.read_meta(reference)["step"] == MAX_STEPS

    weights = load_file(final / "model.safetensors")
    expected = load_file(reference / "model.safetensors")
    assert weights.keys() == expected.keys()
    for name in expected:
        assert torch.equal(weights[name], expected[name]), name
    model_config = (final / "model_config.json").read_text(encoding="utf-8")
    assert '"ffn_type": "soft_moe_causal"' in model_config
