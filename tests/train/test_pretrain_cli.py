"""`steel pretrain`, `--resume`, `steel export` and `steel plot` on real token shards, as a user runs them."""

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from steel.train import checkpoint as ckpt
from steel.train.metrics import read_metrics

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "pretrain-tiny.yaml"
def steel(*args, check=True):
    """Run `steel ARGS` in a fresh interpreter (for what must not see this process's state)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    result = subprocess.run([sys.executable, "-m", "steel", *map(str, args)], capture_output=True, text=True,
                            env=env, timeout=300)
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def steel_here(*args) -> str:
    """Run `steel ARGS` in this process, as the command line does, and return its log output.

    Training switches on deterministic algorithms and sets the thread count; both are restored, so
    other tests in this process are not affected.
    """
    from steel.cli import main

    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        assert main([str(a) for a in args]) == 0
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    return stream.getvalue()


def tiny_overrides(run_dir: Path, shards_root: Path, max_steps: int) -> list[str]:
    return [
        f"run_dir={run_dir}", f"data.shards=[{shards_root / 'shards'}]",
        "model.overrides.hidden_size=32", "model.overrides.intermediate_size=64",
        "data.block_size=32", "batch.global_batch_size=4", "batch.micro_batch_size=2",
        f"schedule.max_steps={max_steps}", "schedule.warmup_steps=3", "checkpoint.interval=6",
        "logging.eval_interval=6", "logging.sample_interval=6", "logging.log_interval=1", "system.num_threads=1",
    ]


@pytest.fixture(scope="module")
def run(tmp_path_factory, shards):
    run_dir = tmp_path_factory.mktemp("pretrain") / "run"
    log = steel_here("pretrain", RECIPE, *tiny_overrides(run_dir, shards, 12), "logging.progress_bar=false")
    return run_dir, log


def test_pretrain_writes_run_directory(run):
    run_dir, log = run
    assert [p.name for p in ckpt.list_checkpoints(run_dir)] == ["step-00000006", "step-00000012"]
    assert (run_dir / "config.yaml").is_file()
    assert (run_dir / "data_manifest.json").is_file()
    records = read_metrics(run_dir)
    kinds = {r["kind"] for r in records}
    assert {"start", "train", "val", "sample"} <= kinds
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 13))
    assert train[-1]["tokens"] == 12 * 4 * 32
    assert train[-1]["tokens_per_s"] > 0
    assert train[-1]["mfu"] > 0  # on a CPU: against the measured matmul peak
    assert all(r["completion"] is not None for r in records if r["kind"] == "sample")

    for expected in ("world size 1", "attention kernel sdpa", "parameters", "ln(V) = 5.951",
                     "tokens per step", "resolved config", "compute dtype float32"):
        assert expected in log, expected


def test_checkpoint_records_tokenizer(run):
    run_dir, _ = run
    meta = ckpt.read_meta(ckpt.latest_checkpoint(run_dir))
    assert meta["tokenizer"]["vocab_size"] == 384
    assert meta["tokenizer_spec"] == "tokenizer"
    assert meta["stream_state"]["samples"] == 12 * 4
    assert meta["config"]["model"]["preset"] == "steel-tiny"


def test_resume_appends_data_and_continues_schedule(tmp_path, run, shards):
    import shutil

    run_dir = tmp_path / "resumed"
    shutil.copytree(run[0], run_dir)
    steel_here("data", "append", run_dir, shards / "more")
    steel_here("pretrain", RECIPE, *tiny_overrides(run_dir, shards, 16), "--resume")

    records = read_metrics(run_dir)
    assert [r["step"] for r in records if r["kind"] == "start"] == [0, 12]
    train = {r["step"]: r for r in records if r["kind"] == "train"}
    assert sorted(train) == list(range(1, 17))
    # No second warmup: the LR after resuming continues the cosine decay.
    assert train[13]["lr"] < train[4]["lr"]
    manifest = json.loads((run_dir / "data_manifest.json").read_text())
    assert len(manifest["datasets"]) == 2
    assert ckpt.read_meta(ckpt.latest_checkpoint(run_dir))["step"] == 16


def test_existing_run_needs_resume(run, shards):
    with pytest.raises(SystemExit, match="--resume"):
        steel_here("pretrain", RECIPE, *tiny_overrides(run[0], shards, 14), "checkpoint.resume=never")


def test_unknown_key_is_user_error(tmp_path):
    result = steel("pretrain", RECIPE, "optimizer.lrr=1", check=False)
    assert result.returncode != 0
    assert "optimizer.lrr" in result.stderr
    assert "Traceback" not in result.stderr


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def test_export_loads_with_plain_transformers(tmp_path, run):
    run_dir, _ = run
    out = tmp_path / "hf"
    steel_here("export", run_dir, out)
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= {
        p.name for p in out.iterdir()}
    # Readable by others like any file a user writes (safetensors alone writes 0600).
    usual_mode = 0o666 & ~_umask()
    assert (out / "model.safetensors").stat().st_mode & 0o777 == usual_mode
    assert (ckpt.latest_checkpoint(run_dir) / "model.safetensors").stat().st_mode & 0o777 == usual_mode

    # A fresh interpreter without `steel` imported: remote code and tokenizer come from the directory.
    script = (
        "import sys, torch\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        f"model = AutoModelForCausalLM.from_pretrained({str(out)!r}, trust_remote_code=True)\n"
        f"tokenizer = AutoTokenizer.from_pretrained({str(out)!r}, trust_remote_code=True)\n"
        "ids = torch.tensor([tokenizer.encode('中国的首都是')])\n"
        "assert 'steel' not in sys.modules\n"
        "print(model(ids).logits[0, -1, :5].tolist())\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    plain_logits = torch.tensor(json.loads(result.stdout.strip().splitlines()[-1]))

    from steel.train import load_model

    loaded = load_model(run_dir)
    ids = torch.tensor([loaded.tokenizer.encode("中国的首都是")])
    with torch.no_grad():
        expected = loaded.model(ids).logits[0, -1, :5]
    assert torch.allclose(plain_logits, expected, atol=1e-5)
    assert loaded.provenance["step"] == 12
    assert loaded.provenance["kind"] == "checkpoint"

    exported = load_model(out)
    assert exported.provenance["kind"] == "hf"
    assert exported.provenance["step"] == 12
    assert exported.chat_template is not None
    with torch.no_grad():
        assert torch.allclose(exported.model(ids).logits[0, -1, :5], expected, atol=1e-5)


def test_init_from_copies_weights_only(tmp_path, run, shards):
    run_dir = tmp_path / "continued"
    steel_here("pretrain", RECIPE, *tiny_overrides(run_dir, shards, 1), f"model.init_from={run[0]}",
               "logging.eval_interval=0", "logging.sample_interval=0")
    records = [r for r in read_metrics(run_dir) if r["kind"] == "train"]
    # Weights from step 12, but a fresh schedule (warmup LR at step 1) and data position.
    assert records[0]["loss"] < 5.5
    assert records[0]["lr"] == pytest.approx(3e-3 / 3)
    assert ckpt.read_meta(ckpt.latest_checkpoint(run_dir))["stream_state"]["samples"] == 4


def test_plot_writes_pngs(tmp_path, run, capsys):
    run_dir, _ = run
    steel_here("plot", run_dir, "--out", tmp_path / "plots")
    output = capsys.readouterr().out
    for name in ("loss.png", "lr.png"):
        path = tmp_path / "plots" / name
        assert path.is_file()
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert str(path) in output


def test_resume_from_earlier_checkpoint_is_exact(tmp_path, run, shards):
    # Real stream and Steel model: drop the last checkpoint, resume from step 6, match bit for bit.
    import shutil

    from safetensors.torch import load_file

    run_dir = tmp_path / "again"
    shutil.copytree(run[0], run_dir)
    shutil.rmtree(run_dir / "checkpoints" / "step-00000012")
    steel_here("pretrain", RECIPE, *tiny_overrides(run_dir, shards, 12), "--resume")

    def losses(directory):
        return {r["step"]: r["loss"] for r in read_metrics(directory) if r["kind"] == "train"}

    assert losses(run_dir) == losses(run[0])
    final = load_file(run_dir / "checkpoints" / "step-00000012" / "model.safetensors")
    reference = load_file(run[0] / "checkpoints" / "step-00000012" / "model.safetensors")
    for name in reference:
        assert torch.equal(final[name], reference[name]), name


def test_changed_shards_on_existing_run_rejected(tmp_path):
    from steel.train.pretrain import check_shards_recorded

    run_manifest = tmp_path / "data_manifest.json"
    recorded = tmp_path / "tokens-a"
    run_manifest.write_text(json.dumps({"datasets": [{"directory": str(recorded.resolve())}]}), encoding="utf-8")

    check_shards_recorded(run_manifest, [str(recorded)])
    with pytest.raises(ValueError, match="does not contain"):
        check_shards_recorded(run_manifest, [str(tmp_path / "tokens-b")])


def test_max_steps_below_one_rejected():
    from steel.train.config import TrainConfig

    config = TrainConfig()
    config.model.preset = "steel-tiny"
    config.schedule.max_steps = 0
    with pytest.raises(ValueError, match="schedule.max_steps must be at least 1"):
        config.validate()
