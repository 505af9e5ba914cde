"""Ctrl-C in training (a real SIGINT to `steel pretrain`): one line naming the step and checkpoint, exit 130."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from steel.train import checkpoint as ckpt
from steel.train.metrics import read_metrics

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "pretrain-tiny.yaml"
CHECKPOINT_INTERVAL = 3
INTERRUPT_AFTER_STEP = 4


def last_train_step(run_dir: Path) -> int:
    if not (run_dir / "metrics.jsonl").is_file():
        return 0
    return max((r["step"] for r in read_metrics(run_dir) if r["kind"] == "train"), default=0)


def test_sigint_reports_step_and_checkpoint(tmp_path, shards):
    run_dir = tmp_path / "run"
    command = [
        sys.executable, "-m", "steel", "pretrain", str(RECIPE),
        f"run_dir={run_dir}", f"data.shards=[{shards / 'shards'}]",
        "model.overrides.hidden_size=32", "model.overrides.intermediate_size=64",
        "data.block_size=32", "batch.global_batch_size=4", "batch.micro_batch_size=2",
        "schedule.max_steps=100000", "schedule.warmup_steps=2",
        f"checkpoint.interval={CHECKPOINT_INTERVAL}", "checkpoint.keep_last=2",
        "logging.log_interval=1", "logging.eval_interval=0", "logging.sample_interval=0",
        "logging.progress_bar=false", "system.num_threads=1",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    # A background job of a non-interactive shell ignores SIGINT, and so would the child; Python
    # installs its KeyboardInterrupt handler only when SIGINT is not ignored at start-up.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 240
        while last_train_step(run_dir) < INTERRUPT_AFTER_STEP:
            assert process.poll() is None, process.communicate()[1][-3000:]
            assert time.monotonic() < deadline, f"{run_dir} did not reach step {INTERRUPT_AFTER_STEP}"
            time.sleep(0.01)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    last_line = stderr.strip().splitlines()[-1]
    latest = ckpt.latest_checkpoint(run_dir)
    assert latest is not None
    assert last_line.startswith("interrupted at step "), last_line
    assert f"latest checkpoint {latest.name} ({latest})" in last_line
    assert last_line.endswith("rerun with --resume to continue")

    stopped_at = int(last_line.removeprefix("interrupted at step ").split(";")[0])
    assert stopped_at >= INTERRUPT_AFTER_STEP
    # A SIGINT during a save leaves that save unfinished, so the checkpoint before it is the latest.
    saved_step = ckpt.read_meta(latest)["step"]
    assert stopped_at - 2 * CHECKPOINT_INTERVAL < saved_step <= stopped_at
    assert saved_step % CHECKPOINT_INTERVAL == 0
    assert (latest / "model.safetensors").is_file()


@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_post_training_interrupt_exits_130(stage, monkeypatch, capsys):
    import importlib

    from steel.train.trainer import TrainingInterrupted

    module = importlib.import_module(f"steel.train.{stage}")
    message = "interrupted at step 7; latest checkpoint step-00000005 (RUN); rerun with --resume to continue"

    def interrupted(config):
        raise TrainingInterrupted(message)

    monkeypatch.setattr(module, f"run_{stage}", interrupted)
    recipe = Path(__file__).resolve().parents[2] / "recipes" / f"{stage}-tiny.yaml"
    from steel.cli import main

    assert main([stage, str(recipe)]) == 130
    assert capsys.readouterr().err.strip() == message


def test_interrupt_before_training_reported():
    from steel.train.trainer import interrupt_message

    assert interrupt_message(KeyboardInterrupt()) == "interrupted before training started; nothing was trained"
