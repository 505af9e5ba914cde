"""The shipped SFT and DPO recipes parse, validate, and the tiny ones train for a step on a CPU."""

import json
from pathlib import Path

import pytest
import yaml

from steel.cli import main as steel_main
from steel.tokenizer.chat import render_chat
from steel.train.config import load_config, to_dict
from steel.train.dpo import DPOConfig
from steel.train.sft import SFTConfig
from steel.train.metrics import read_metrics

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
REPO_ROOT = RECIPES.parent


@pytest.mark.parametrize("command, recipe", [
    ("sft", "sft-tiny.yaml"), ("sft", "sft-steel-chat.yaml"),
    ("dpo", "dpo-tiny.yaml"), ("dpo", "dpo-steel-chat.yaml"),
])  # fmt: skip
def test_recipe_prints_config(command, recipe, capsys):
    assert steel_main([command, str(RECIPES / recipe), "--print-config"]) == 0

    printed = capsys.readouterr().out
    assert "sources:" in printed
    assert "cutoff_len:" in printed
    # The documented config parses back to the resolved one, sources included.
    cls = SFTConfig if command == "sft" else DPOConfig
    assert yaml.safe_load(printed) == to_dict(load_config(RECIPES / recipe, cls=cls))
    # Field documentation of a source item, and of fields the stage sections inherit.
    assert "  # Name in logs and statistics" in printed
    assert "  # Total optimizer steps." in printed
    assert "  # AdamW beta1." in printed


def test_print_config_documents_empty_sources(capsys):
    assert steel_main(["sft", "--print-config"]) == 0

    printed = capsys.readouterr().out
    assert yaml.safe_load(printed) == to_dict(SFTConfig())
    assert "  sources: []" in printed
    assert "  # # A JSONL, JSON-array or Parquet file" in printed
    assert "  # - path: null" in printed
    assert "  #   choice_answer: both" in printed


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    from steel.tokenizer.train import TrainConfig, train_tokenizer

    workdir = tmp_path_factory.mktemp("recipes")
    texts = []
    for path in sorted((RECIPES / "post-training-data").glob("*.jsonl")):
        texts += [json.dumps(json.loads(line), ensure_ascii=False) for line in path.read_text("utf-8").splitlines()]
    texts.append(render_chat([{"role": "user", "content": "hi"}]))
    corpus = workdir / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    return train_tokenizer(TrainConfig(inputs=[corpus], output=workdir / "tokenizer", vocab_size=512))


def test_tiny_recipes_run_and_chain(tmp_path, tokenizer_dir, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)  # the recipes name their data relative to the repository root
    sft_dir, dpo_dir = tmp_path / "sft", tmp_path / "dpo"
    small = ["model.overrides={hidden_size: 64, intermediate_size: 128, num_hidden_layers: 1}",
             "logging.progress_bar=false"]  # fmt: skip

    assert steel_main(["sft", "recipes/sft-tiny.yaml", f"run_dir={sft_dir}", "model.init_from=null",
                       "model.preset=steel-tiny", f"data.tokenizer={tokenizer_dir}", "data.epochs=1",
                       "data.samples_per_epoch=8", *small]) == 0  # fmt: skip
    # DPO starts from the exported SFT model: weights, architecture and tokenizer all come from it.
    export_dir = tmp_path / "sft-export"
    assert steel_main(["export", str(sft_dir), str(export_dir)]) == 0
    assert steel_main(["dpo", "recipes/dpo-tiny.yaml", f"run_dir={dpo_dir}", f"model.init_from={export_dir}",
                       "data.epochs=1", "data.samples_per_epoch=8", "logging.progress_bar=false"]) == 0  # fmt: skip

    sft_steps = [r for r in read_metrics(sft_dir) if r["kind"] == "train"]
    dpo_steps = [r for r in read_metrics(dpo_dir) if r["kind"] == "train"]
    assert len(sft_steps) >= 1
    assert len(dpo_steps) == 1
    assert dpo_steps[0]["reward_margin"] == pytest.approx(0.0, abs=1e-4)  # policy == reference at step 1
