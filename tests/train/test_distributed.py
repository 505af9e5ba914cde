"""Real processes: 2 gloo ranks under torchrun against 1 process, world-size change, SIGKILL and resume."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from steel.train import checkpoint as ckpt
from steel.train.metrics import read_metrics
from train_toys import BLOCK_SIZE, read_losses

SCRIPT = Path(__file__).resolve().parent / "toy_train.py"
MAX_STEPS = 8


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def overrides(model_config, run_dir, *extra):
    return [
        f"run_dir={run_dir}", f"model.config={model_config}", f"data.block_size={BLOCK_SIZE}",
        "batch.global_batch_size=8", "batch.micro_batch_size=2", "optimizer.lr=3e-3",
        "schedule.warmup_steps=2", f"schedule.max_steps={MAX_STEPS}", "system.num_threads=1",
        "system.deterministic=true", "system.loss_chunk_size=48", "logging.log_interval=1",
        "logging.sample_interval=0", "logging.progress_bar=false",
        "checkpoint.interval=2", "checkpoint.keep_last=10", "logging.eval_interval=4", *extra,
    ]


def command(tokens, args, nproc=1):
    if nproc == 1:
        launcher = [sys.executable, str(SCRIPT)]
    else:
        launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
                    "--master_addr=127.0.0.1", f"--master_port={free_port()}", str(SCRIPT)]
    return [*launcher, str(tokens), *args]


def environment():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def run_toy(tokens, args, nproc=1):
    result = subprocess.run(command(tokens, args, nproc), capture_output=True, text=True, env=environment(),
                            timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, toy_tokens_file, qwen2_config):
    """One uninterrupted run on 1 process and one on 2 processes, each dumping step-1 gradients."""
    root = tmp_path_factory.mktemp("runs")
    for nproc in (1, 2):
        args = overrides(qwen2_config, root / f"w{nproc}") + ["--dump-grads", str(root / f"grads{nproc}.safetensors")]
        run_toy(toy_tokens_file, args, nproc)
    return root


def test_first_step_gradients_match(runs):
    single = load_file(runs / "grads1.safetensors")
    sharded = load_file(runs / "grads2.safetensors")
    assert single.keys() == sharded.keys()
    # rtol 1e-5 also rules out gradients summed instead of averaged over ranks (a factor 2).
    for name in single:
        assert torch.allclose(sharded[name], single[name], rtol=1e-5, atol=1e-8), name
    assert single["lm_head.weight"].abs().sum() > 0


def test_losses_match_single_process(runs):
    single, sharded = read_losses(runs / "w1"), read_losses(runs / "w2")
    assert sorted(single) == sorted(sharded) == list(range(1, MAX_STEPS + 1))
    for step in single:
        assert sharded[step] == pytest.approx(single[step], rel=1e-5), step
    # Validation splits its micro-batches over the ranks and all-reduces the token-weighted sums.
    single_val = {r["step"]: r["val_loss"] for r in read_metrics(runs / "w1") if r["kind"] == "val"}
    sharded_val = {r["step"]: r["val_loss"] for r in read_metrics(runs / "w2") if r["kind"] == "val"}
    assert sorted(single_val) == sorted(sharded_val) == [4, 8]
    for step in single_val:
        assert sharded_val[step] == pytest.approx(single_val[step], rel=1e-5), step
    meta = ckpt.read_meta(ckpt.latest_checkpoint(runs / "w2"))
    assert (meta["format"], meta["world_size"]) == ("dcp", 2)
    assert ckpt.read_meta(ckpt.latest_checkpoint(runs / "w1"))["format"] == "full"


def test_resume_with_other_world_size(tmp_path, runs, toy_tokens_file, qwen2_config):
    # Resume the 2-process run's step-4 checkpoint on 1 process: same data order, same losses.
    source = runs / "w2" / "checkpoints" / "step-00000004"
    shutil.copytree(source, tmp_path / "resumed" / "checkpoints" / source.name)
    run_toy(toy_tokens_file, overrides(qwen2_config, tmp_path / "resumed", "checkpoint.resume=latest"))
    expected, actual = read_losses(runs / "w2"), read_losses(tmp_path / "resumed")
    assert sorted(actual) == [5, 6, 7, 8]
    for step in actual:
        assert actual[step] == pytest.approx(expected[step], rel=1e-5), step


def wait_for_step(run_dir: Path, step: int, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before it could be killed"
        metrics = run_dir / "metrics.jsonl"
        if metrics.is_file() and any(r.get("step", 0) >= step and r["kind"] == "train" for r in read_metrics(run_dir)):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{run_dir} did not reach step {step}")


def test_sigkill_and_resume_is_exact(tmp_path, runs, toy_tokens_file, qwen2_config):
    run_dir = tmp_path / "killed"
    args = overrides(qwen2_config, run_dir, "checkpoint.resume=auto")
    process = subprocess.Popen(command(toy_tokens_file, [*args, "--step-delay", "0.3"]), env=environment(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_step(run_dir, 5, process)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    killed_at = max(r["step"] for r in read_metrics(run_dir) if r["kind"] == "train")
    assert 5 <= killed_at < MAX_STEPS
    assert ckpt.read_meta(ckpt.latest_checkpoint(run_dir))["step"] < MAX_STEPS

    run_toy(toy_tokens_file, args)
    assert read_losses(run_dir) == read_losses(runs / "w1")
    final = load_file(ckpt.latest_checkpoint(run_dir) / "model.safetensors")
    reference = load_file(ckpt.latest_checkpoint(runs / "w1") / "model.safetensors")
    assert final.keys() == reference.keys()
    for name in final:
        assert torch.equal(final[name], reference[name]), name


def test_load_model_reads_sharded_checkpoint(runs):
    from steel.train import load_model

    sharded = load_model(runs / "w2")
    single = load_model(runs / "w1")
    assert sharded.provenance["step"] == MAX_STEPS
    assert sharded.provenance["kind"] == "checkpoint"
    reference = single.model.state_dict()
    for name, tensor in sharded.model.state_dict().items():
        assert torch.allclose(tensor, reference[name], rtol=1e-4, atol=1e-6), name
