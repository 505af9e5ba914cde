"""Bad recipes, overrides and failed starts: one error line that names the input and the fix."""

import contextlib
import json
import logging
from pathlib import Path

import pytest
import torch

from steel.train.config import load_config
from steel.train.load import build_model_config
from steel.train.pretrain import prepare_run_manifest

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "pretrain-tiny.yaml"


def run_steel(*args) -> str:
    """Run `steel ARGS` in this process and return the message of the SystemExit it must raise."""
    from steel.cli import main

    with pytest.raises(SystemExit) as caught:
        main([str(a) for a in args])
    return str(caught.value.code)


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.shards=[/x", "command-line override data.shards=[/x: the value is invalid YAML"),
        ("optimzer.lr=1e-3", "command-line override optimzer.lr=1e-3: unknown key 'optimzer' (did you mean 'optimizer'?)"),
        ("schedule.max_stepz=3", "unknown key 'max_stepz' in section 'schedule' (did you mean 'max_steps'?)"),
        ("optimizer=5", "command-line override optimizer=5: optimizer must be a mapping, not 5"),
        ("optimizer.lr.x=1", "optimizer.lr is a value, not a section"),
        ("optimizer.lr=fast", "command-line override optimizer.lr=fast: optimizer.lr must be a number"),
    ],
)
def test_bad_override_blames_command_line(override, message):
    text = run_steel("pretrain", RECIPE, override)
    assert message in text
    assert str(RECIPE) not in text


def test_recipe_typo_blames_recipe(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("optimizer:\n  lrr: 1\n", encoding="utf-8")

    with pytest.raises(ValueError) as caught:
        load_config(recipe, ["optimizer.lr=1e-3"])
    assert str(caught.value).startswith(f"{recipe}: unknown config key 'optimizer.lrr'")
    assert "(did you mean 'lr'?)" in str(caught.value)


def test_binary_recipe_names_file(tmp_path):
    recipe = tmp_path / "weights.bin"
    recipe.write_bytes(b"\xfc\x00\x01binary")

    text = run_steel("pretrain", recipe)
    assert text.startswith(f"error: {recipe}: not a UTF-8 text file")


@pytest.mark.parametrize(
    "override, message",
    [
        ("num_hidden_layers=abc", "model.overrides.num_hidden_layers must be an integer (the base config has 2), not 'abc'"),
        ("num_hidden_layers=2.5", "model.overrides.num_hidden_layers must be an integer"),
        ("num_hidden_layers=true", "model.overrides.num_hidden_layers must be an integer"),
        ("rms_norm_eps=small", "model.overrides.rms_norm_eps must be a number"),
        ("tie_word_embeddings=yes please", "model.overrides.tie_word_embeddings must be true or false"),
    ],
)
def test_model_override_type_checked(override, message):
    config = load_config(RECIPE, [f"model.overrides.{override}"])
    with pytest.raises(ValueError) as caught:
        build_model_config(config.model)
    assert message in str(caught.value)


def test_model_override_numbers_converted():
    config = load_config(RECIPE, ["model.overrides.rms_norm_eps=1e-5", "model.overrides.num_hidden_layers=3.0"])
    model_config = build_model_config(config.model)
    assert model_config.rms_norm_eps == 1e-5
    assert model_config.num_hidden_layers == 3
    assert isinstance(model_config.num_hidden_layers, int)


def test_failed_start_writes_nothing(tmp_path, shards):
    run_dir = tmp_path / "run"
    text = run_steel("pretrain", RECIPE, f"run_dir={run_dir}", f"data.shards=[{shards / 'shards'}]",
                     "model.overrides.num_hidden_layers=abc")
    assert "model.overrides.num_hidden_layers must be an integer" in text
    assert not run_dir.exists()


def test_manifest_without_checkpoint_replaced(tmp_path, shards, single_process):
    run_dir = tmp_path / "run"
    first = load_config(RECIPE, [f"run_dir={run_dir}", f"data.shards=[{shards / 'more'}]"])
    manifest = prepare_run_manifest(first, single_process)

    fixed = load_config(RECIPE, [f"run_dir={run_dir}", f"data.shards=[{shards / 'shards'}]"])
    assert prepare_run_manifest(fixed, single_process) == manifest
    directories = [entry["directory"] for entry in json.loads(manifest.read_text(encoding="utf-8"))["datasets"]]
    assert directories == [str((shards / "shards").resolve())]


def test_manifest_with_checkpoint_kept(tmp_path, shards, single_process):
    run_dir = tmp_path / "run"
    first = load_config(RECIPE, [f"run_dir={run_dir}", f"data.shards=[{shards / 'more'}]"])
    prepare_run_manifest(first, single_process)
    (run_dir / "checkpoints" / "step-00000001").mkdir(parents=True)
    (run_dir / "checkpoints" / "step-00000001" / "checkpoint.json").write_text("{}", encoding="utf-8")

    changed = load_config(RECIPE, [f"run_dir={run_dir}", f"data.shards=[{shards / 'shards'}]"])
    with pytest.raises(ValueError, match="does not contain"):
        prepare_run_manifest(changed, single_process)


def tiny_pretrain_args(run_dir: Path, shards: Path) -> list[str]:
    """`steel pretrain` arguments for a two-layer run of a few seconds; add the model width and max_steps."""
    return [
        "pretrain", str(RECIPE), f"run_dir={run_dir}", f"data.shards=[{shards / 'shards'}]",
        "model.overrides.intermediate_size=64", "data.block_size=32", "batch.global_batch_size=4",
        "batch.micro_batch_size=2", "schedule.warmup_steps=1", "checkpoint.interval=2",
        "logging.eval_interval=0", "logging.sample_interval=0", "logging.progress_bar=false", "system.num_threads=1",
    ]


@contextlib.contextmanager
def torch_settings_restored():
    """Training sets the thread count and deterministic algorithms; give other tests theirs back."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def test_resume_with_other_architecture_names_mismatch(tmp_path, shards):
    from steel.cli import main

    run_dir = tmp_path / "run"
    common = tiny_pretrain_args(run_dir, shards)
    with torch_settings_restored():
        assert main([*common, "model.overrides.hidden_size=32", "schedule.max_steps=2"]) == 0
        config_before = (run_dir / "config.yaml").read_text(encoding="utf-8")
        text = run_steel(*common, "model.overrides.hidden_size=48", "schedule.max_steps=4", "--resume")
    assert "the checkpoint's weights do not fit the model this config builds" in text
    assert "in the checkpoint" in text
    assert "use a new run_dir" in text
    assert (run_dir / "config.yaml").read_text(encoding="utf-8") == config_before


def test_resume_warns_when_max_steps_changes(tmp_path, shards, caplog):
    from steel.cli import main

    common = [*tiny_pretrain_args(tmp_path / "run", shards), "model.overrides.hidden_size=32"]
    with torch_settings_restored():
        assert main([*common, "schedule.max_steps=2"]) == 0
        with caplog.at_level(logging.WARNING, logger="steel"):
            assert main([*common, "schedule.max_steps=3", "--resume"]) == 0
    assert "schedule.max_steps changed from 2 to 3 on resume" in caplog.text


def test_resume_errors_say_what_to_do(tmp_path, shards):
    run_dir = tmp_path / "new-run"
    common = ["pretrain", RECIPE, f"run_dir={run_dir}", f"data.shards=[{shards / 'shards'}]"]
    assert "drop --resume to start this run" in run_steel(*common, "--resume")
    assert "use never, auto, latest or the path" in run_steel(*common, "checkpoint.resume=latset")


def test_model_override_typo_suggests_field():
    config = load_config(RECIPE, ["model.overrides.hiden_size=64"])
    with pytest.raises(ValueError, match=r"has no attribute 'hiden_size' \(did you mean 'hidden_size'\?\)"):
        build_model_config(config.model, vocab_size=384)
