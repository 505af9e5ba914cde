"""Damaged checkpoints: errors name the file and the fix, and `--resume` skips to the newest intact one."""

import logging
import shutil

import pytest

from steel.train import checkpoint as ckpt
from steel.train.load import load_model
from steel.train.trainer import select_resume_checkpoint
from train_toys import build_trainer, toy_config


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, qwen2_config, toy_tokens):
    """A toy run with checkpoints at steps 2 and 4."""
    from steel.train.distributed import init_distributed

    run_dir = tmp_path_factory.mktemp("damaged") / "run"
    config = toy_config(run_dir, qwen2_config, **{"schedule.max_steps": 4, "checkpoint.interval": 2,
                                                  "checkpoint.keep_last": 3})
    build_trainer(config, init_distributed("cpu"), toy_tokens).fit()
    return run_dir


@pytest.fixture
def run_copy(tmp_path, trained_run):
    return shutil.copytree(trained_run, tmp_path / "run")


def truncate(path, keep_bytes):
    data = path.read_bytes()
    path.write_bytes(data[:keep_bytes])


def resume_config(run_dir, qwen2_config, resume):
    return toy_config(run_dir, qwen2_config, **{"checkpoint.resume": resume})


def test_truncated_weights_named_on_load(run_copy):
    latest = ckpt.latest_checkpoint(run_copy)
    weights = latest / "model.safetensors"
    truncate(weights, 100)

    with pytest.raises(ValueError) as caught:
        load_model(run_copy)
    message = str(caught.value)
    assert message.startswith(f"{weights}: damaged checkpoint")
    assert f"delete {latest}" in message
    assert "checkpoint.resume=PATH" in message


def test_truncated_meta_named(run_copy):
    latest = ckpt.latest_checkpoint(run_copy)
    truncate(latest / ckpt.META_FILE, 11)

    with pytest.raises(ValueError) as caught:
        ckpt.read_meta(latest)
    assert str(caught.value).startswith(f"{latest / ckpt.META_FILE}: damaged checkpoint (invalid JSON")
    assert f"delete {latest}" in str(caught.value)


@pytest.mark.parametrize("damaged_file", [ckpt.META_FILE, "model.safetensors", "optimizer.pt", "model_config.json"])
def test_resume_skips_damaged_latest(run_copy, qwen2_config, caplog, damaged_file):
    latest = ckpt.latest_checkpoint(run_copy)
    assert latest.name == "step-00000004"
    truncate(latest / damaged_file, 40)

    with caplog.at_level(logging.WARNING, logger="steel.train.trainer"):
        chosen = select_resume_checkpoint(resume_config(run_copy, qwen2_config, "latest"))
    assert chosen.name == "step-00000002"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(w.startswith("skipping damaged checkpoint step-00000004") and damaged_file in w for w in warnings)


def test_resume_all_damaged_raises(run_copy, qwen2_config):
    for checkpoint_dir in ckpt.list_checkpoints(run_copy):
        truncate(checkpoint_dir / "model.safetensors", 100)

    with pytest.raises(ValueError, match="every checkpoint in .* is damaged") as caught:
        select_resume_checkpoint(resume_config(run_copy, qwen2_config, "auto"))
    assert "step-00000002/model.safetensors" in str(caught.value)
    assert "step-00000004/model.safetensors" in str(caught.value)
    assert f"delete {run_copy / ckpt.CHECKPOINT_DIR} to start the run again, or set another run_dir" in str(caught.value)
    assert "previous checkpoint" not in str(caught.value)


def test_fallback_reports_each_checkpoint_once(run_copy, qwen2_config, caplog):
    # A stage selects the resume checkpoint twice (before building the model and in fit).
    truncate(ckpt.latest_checkpoint(run_copy) / "model.safetensors", 40)
    config = resume_config(run_copy, qwen2_config, "latest")
    with caplog.at_level(logging.INFO, logger="steel.train.trainer"):
        assert select_resume_checkpoint(config) == select_resume_checkpoint(config)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("skipping damaged checkpoint" in m for m in messages) == 1
    assert sum("the newest intact checkpoint" in m for m in messages) == 1
    # The warning names the damage; the delete-or-resume advice is for errors, not for a fallback.
    assert not any("previous checkpoint is used" in m for m in messages)


def test_resume_damaged_path_raises(run_copy, qwen2_config):
    earliest = ckpt.list_checkpoints(run_copy)[0]
    (earliest / "optimizer.pt").unlink()

    with pytest.raises(ckpt.DamagedCheckpointError, match="optimizer.pt: damaged checkpoint"):
        select_resume_checkpoint(resume_config(run_copy, qwen2_config, str(earliest)))


def test_resume_from_fallback_trains_on(run_copy, qwen2_config, toy_tokens, single_process):
    truncate(ckpt.latest_checkpoint(run_copy) / "model.safetensors", 1000)
    config = toy_config(run_copy, qwen2_config, **{"schedule.max_steps": 5, "checkpoint.resume": "latest"})

    state = build_trainer(config, single_process, toy_tokens).fit()
    assert state.step == 5
    assert ckpt.latest_checkpoint(run_copy).name == "step-00000005"


def test_prune_leaves_damaged_checkpoint(run_copy, caplog):
    oldest, newest = ckpt.list_checkpoints(run_copy)
    truncate(oldest / ckpt.META_FILE, 11)

    with caplog.at_level(logging.WARNING, logger="steel.train.checkpoint"):
        removed = ckpt.prune_checkpoints(run_copy, keep_last=1)
    assert removed == []
    assert oldest.is_dir()
    assert newest.is_dir()
    assert any(r.getMessage().startswith("not pruning damaged checkpoint step-00000002") for r in caplog.records)
