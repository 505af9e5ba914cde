"""`steel model info` on run, checkpoint and exported directories, JSON configs and recipes."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from steel.cli import main as steel_main
from steel_model_testing import tiny_model

REPO = Path(__file__).resolve().parents[2]


def _num_parameters(model) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory as the trainer writes it, with one checkpoint of a tiny Steel model."""
    from steel.train import checkpoint
    from steel.train.distributed import DistributedEnv

    model = tiny_model("soft_moe_causal", hidden_size=32, intermediate_size=64)
    env = DistributedEnv(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
    optimizer = torch.optim.AdamW(model.parameters())
    directory = tmp_path_factory.mktemp("info") / "run"
    checkpoint.save_checkpoint(directory, 3, model, optimizer, {"stage": "pretrain"}, env, keep_last=1)
    return directory, _num_parameters(model)


def _info(spec: str, capsys, *extra: str) -> str:
    assert steel_main(["model", "info", spec, *extra]) == 0
    return capsys.readouterr().out


def test_info_reads_run_checkpoint_and_json(run_dir, capsys):
    directory, num_parameters = run_dir
    step_dir = directory / "checkpoints" / "step-00000003"
    assert step_dir.is_dir()
    for spec in (directory, step_dir, step_dir / "model_config.json"):
        output = _info(str(spec), capsys)
        assert f"parameters: {num_parameters:,}" in output
        assert "  hidden_size: 32" in output
        assert "  vocab_size: 256" in output


def test_info_applies_cli_overrides_to_run(run_dir, capsys):
    directory, _ = run_dir
    output = _info(str(directory), capsys, "--ffn-type", "dense", "--vocab-size", "300")
    assert "  ffn_type: dense" in output
    assert "  vocab_size: 300" in output


def test_info_reads_exported_qwen2(tmp_path, capsys):
    from steel.model.convert import export_pretrained

    model = tiny_model("dense")
    export_pretrained(model, tmp_path / "export")
    assert json.loads((tmp_path / "export" / "config.json").read_text())["model_type"] == "qwen2"
    output = _info(str(tmp_path / "export"), capsys)
    assert f"parameters: {_num_parameters(model):,}" in output
    assert "  ffn_type: dense" in output


def test_info_rejects_directory_without_config(tmp_path):
    with pytest.raises(SystemExit) as raised:
        steel_main(["model", "info", str(tmp_path)])
    assert str(tmp_path) in str(raised.value)
    assert "neither a run directory, a checkpoint nor a directory with config.json" in str(raised.value)


def test_info_rejects_run_without_checkpoint(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(SystemExit, match="has no complete checkpoint yet"):
        steel_main(["model", "info", str(tmp_path)])


def test_info_rejects_other_model_type(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    with pytest.raises(SystemExit, match="model_type 'llama' is not a Steel model"):
        steel_main(["model", "info", str(tmp_path / "config.json")])


def test_info_reads_shipped_recipe(tmp_path, capsys, caplog):
    recipe = REPO / "recipes" / "pretrain-tiny.yaml"
    output = _info(str(recipe), capsys)
    # The recipe's overrides replace the preset's hidden_size 128.
    assert "  hidden_size: 64" in output
    assert "  intermediate_size: 256" in output
    assert "placeholder" in caplog.text


@pytest.mark.parametrize("section,expected", [
    ("  preset: steel-tiny\n  overrides: {hiden_size: 8}\n", "hiden_size"),
    ("  preset: steel-tiny\n  hidden_size: 8\n  overrides: {}\n", "unknown key(s) hidden_size in the model section"),
    ("  overrides: {hidden_size: 8}\n", "sets none of preset, config and init_from"),
    ("  init_from: absent-run\n", "model.init_from absent-run not found"),
], ids=["misspelt-override", "field-outside-overrides", "no-base", "missing-init-from"])
def test_info_rejects_bad_recipe_section(tmp_path, section, expected):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model:\n" + section)
    with pytest.raises(SystemExit) as raised:
        steel_main(["model", "info", str(recipe)])
    assert expected in str(raised.value)


def test_info_recipe_init_from_run(run_dir, tmp_path, capsys):
    directory, _ = run_dir
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model:\n  init_from: {directory}\n  overrides: {{num_hidden_layers: 1}}\n")
    output = _info(str(recipe), capsys)
    assert "  hidden_size: 32" in output
    assert "  num_hidden_layers: 1" in output


def test_info_recipe_config_file(run_dir, tmp_path, capsys):
    directory, num_parameters = run_dir
    config = tmp_path / "model_config.json"
    shutil.copyfile(directory / "checkpoints" / "step-00000003" / "model_config.json", config)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model:\n  config: {config}\n")
    assert f"parameters: {num_parameters:,}" in _info(str(recipe), capsys)
