import math

import pytest

from steel.train.config import (
    TrainConfig,
    describe,
    field_docs,
    grad_accum_steps,
    load_config,
    OptimizerConfig,
)


def test_defaults_follow_report():
    config = TrainConfig()
    assert (config.optimizer.beta1, config.optimizer.beta2) == (0.9, 0.95)
    assert config.optimizer.weight_decay == 0.05
    assert config.optimizer.lr == 3e-4
    assert config.optimizer.grad_clip == 1.0
    assert config.schedule.warmup_steps == 2000
    assert config.schedule.decay == "cosine"
    assert config.schedule.min_lr_ratio == 0.0
    assert config.data.block_size == 2048
    assert config.batch.global_batch_size == 512


def test_recipe_and_overrides(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "run_dir: runs/x\nmodel:\n  preset: steel-tiny\n  overrides: {num_hidden_layers: 2}\n"
        "optimizer:\n  lr: 1e-3\nschedule:\n  max_steps: 100\n"
    )
    config = load_config(recipe, ["optimizer.lr=3e-4", "batch.micro_batch_size=4", "model.overrides.hidden_size=64",
                                  "data.shards=[a, b]", "checkpoint.resume=auto"])
    assert config.optimizer.lr == 3e-4
    assert isinstance(config.optimizer.lr, float)
    assert config.batch.micro_batch_size == 4
    assert config.model.overrides == {"num_hidden_layers": 2, "hidden_size": 64}
    assert config.data.shards == ["a", "b"]
    assert config.schedule.max_steps == 100
    assert config.checkpoint.resume == "auto"
    config.validate()


def test_number_written_without_point_is_float(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("optimizer:\n  lr: 3e-4\n  eps: 1e-8\n")
    config = load_config(recipe)
    assert config.optimizer.lr == pytest.approx(3e-4)
    assert config.optimizer.eps == pytest.approx(1e-8)


@pytest.mark.parametrize(
    "override, message",
    [
        ("optimizer.learning_rate=1", "optimizer.learning_rate"),
        ("bogus=1", "'bogus'"),
        ("batch.micro_batch_size=abc", "batch.micro_batch_size must be an integer"),
        ("system.compile=maybe", "system.compile must be true or false"),
        ("optimizer.lr=fast", "optimizer.lr must be a number"),
        ("noequals", "write key=value"),
    ],
)
def test_bad_override_names_key(override, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        load_config(None, [override])


def test_unknown_recipe_key_names_file(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("schedule:\n  warmup: 10\n")
    with pytest.raises(ValueError) as error:
        load_config(recipe)
    assert str(recipe) in str(error.value)
    assert "schedule.warmup" in str(error.value)


def test_validate_collects_problems():
    config = load_config(None, ["schedule.decay=exp", "precision.dtype=fp8"])
    with pytest.raises(ValueError) as error:
        config.validate()
    text = str(error.value)
    assert "model.preset" in text
    assert "schedule.max_steps" in text
    assert "schedule.decay" in text
    assert "precision.dtype" in text


def test_grad_accum_steps():
    assert grad_accum_steps(512, 8, 8) == 8
    assert grad_accum_steps(8, 2, 2) == 2
    with pytest.raises(ValueError, match="not a multiple"):
        grad_accum_steps(512, 8, 3)


def test_field_docs_and_describe():
    docs = field_docs(OptimizerConfig)
    assert "AdamW beta1" in docs["beta1"]
    assert set(docs) == {"lr", "beta1", "beta2", "eps", "weight_decay", "weight_decay_scope", "grad_clip", "fused"}
    text = describe(TrainConfig())
    assert "# Peak learning rate" in text
    assert "lr: 0.0003" in text


def test_describe_parses_back_to_config():
    import yaml

    from steel.train.config import to_dict

    config = load_config(None, ["model.preset=steel-tiny", "model.overrides={hidden_size: 64}", "data.shards=[a, b]"])
    assert yaml.safe_load(describe(config)) == to_dict(config)


def test_field_docs_include_base_fields():
    from steel.train.sft import PostTrainingScheduleConfig

    docs = field_docs(PostTrainingScheduleConfig)
    assert docs["warmup_steps"].startswith("Optimizer steps of linear warmup; `warmup_ratio`")
    assert docs["max_steps"].startswith("Total optimizer steps")


@pytest.mark.parametrize("name", ["pretrain-tiny.yaml", "steel-1b-pretrain.yaml"])
def test_shipped_recipes_validate(name):
    from pathlib import Path

    recipe = Path(__file__).resolve().parents[2] / "recipes" / name
    config = load_config(recipe)
    config.validate()
    assert math.isfinite(config.optimizer.lr)
