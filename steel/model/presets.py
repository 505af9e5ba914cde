"""Named Steel configurations.

`steel-1b` is the released Steel-LLM configuration. The small presets train on a CPU; their
`vocab_size` is a placeholder that callers replace with their tokenizer's `vocab_size`.
"""

import logging

from steel.model.modeling_steel import SteelConfig

logger = logging.getLogger(__name__)

PRESETS: dict[str, dict] = {
    # The released Steel-LLM: 1,122,922,770 parameters, faithful (non-causal) Soft MoE.
    "steel-1b": dict(
        vocab_size=151936,
        hidden_size=1792,
        intermediate_size=1792,
        num_hidden_layers=18,
        num_attention_heads=32,
        num_key_value_heads=32,
        max_position_embeddings=2048,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        ffn_type="soft_moe",
        expert_type="double_swiglu",
        n_experts=6,
        slots_per_expert=1,
        mlp_div_ratio=4,
    ),
    # The released shape with the causal Soft MoE, for new pretraining runs.
    "steel-1b-causal": dict(
        vocab_size=151936,
        hidden_size=1792,
        intermediate_size=1792,
        num_hidden_layers=18,
        num_attention_heads=32,
        num_key_value_heads=32,
        max_position_embeddings=2048,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        ffn_type="soft_moe_causal",
        expert_type="double_swiglu",
        n_experts=6,
        slots_per_expert=1,
        mlp_div_ratio=4,
    ),
    # About 1M parameters at vocab 2048: unit tests and smoke runs.
    "steel-tiny": dict(
        vocab_size=2048,
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rope_theta=10_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        ffn_type="soft_moe_causal",
        expert_type="double_swiglu",
        n_experts=4,
        slots_per_expert=1,
        mlp_div_ratio=4,
    ),
    # About 6M parameters at vocab 8192: the CPU demo model.
    "steel-small": dict(
        vocab_size=8192,
        hidden_size=192,
        intermediate_size=512,
        num_hidden_layers=6,
        num_attention_heads=6,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        rope_theta=10_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        ffn_type="soft_moe_causal",
        expert_type="double_swiglu",
        n_experts=4,
        slots_per_expert=1,
        mlp_div_ratio=4,
    ),
}


def get_preset(name: str, **overrides) -> SteelConfig:
    """Return the SteelConfig of a named preset, with `overrides` (e.g. `vocab_size=...`) applied."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; available: {', '.join(sorted(PRESETS))}")
    # PretrainedConfig keeps unknown keys as attributes, so a misspelt override would be ignored.
    unknown = sorted(set(overrides) - set(config_fields()))
    if unknown:
        raise ValueError(f"unknown model field(s) {', '.join(unknown)}; valid fields: {', '.join(config_fields())}")
    return SteelConfig(**{**PRESETS[name], **overrides})


def list_presets() -> list[str]:
    return sorted(PRESETS)


def config_fields() -> list[str]:
    """SteelConfig's own fields in declaration order (not the generic PretrainedConfig ones)."""
    import inspect

    parameters = inspect.signature(SteelConfig.__init__).parameters.values()
    return [p.name for p in parameters if p.name != "self" and p.kind is p.POSITIONAL_OR_KEYWORD]


# Keys of a recipe's `model:` section (steel.train.config.ModelConfig) besides `preset`.
RECIPE_MODEL_KEYS = ("config", "overrides", "init_from", "attn_implementation")


def resolve_config(spec: "str | dict", **overrides) -> SteelConfig:
    """Build a SteelConfig from a preset, a model, run or checkpoint directory, a JSON or YAML file, or a dict.

    A directory is read the way `steel.train.load_model` finds its model: a run directory gives
    its latest checkpoint's `model_config.json`, a checkpoint directory its own, and an exported
    directory its `config.json`. Weights are never read. A JSON file is any such config file.
    A dict (or YAML mapping) holds SteelConfig fields, optionally with `preset: NAME` as the base,
    or is a recipe's `model:` section (`preset`, `config` or `init_from`, then `overrides`). A YAML
    file may nest either form under a `model:` key, the way recipes do.
    """
    from pathlib import Path

    if isinstance(spec, dict):
        return _config_from_mapping(spec, overrides)
    if spec in PRESETS:
        return get_preset(spec, **overrides)

    path = Path(spec)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return _config_from_yaml(path, overrides)
    if path.is_dir() or (path.suffix == ".json" and path.is_file()):
        return _with_overrides(_config_from_path(path), overrides)
    raise ValueError(
        f"{spec!r} is neither a preset ({', '.join(sorted(PRESETS))}) nor an existing model, run or checkpoint "
        "directory, JSON config or YAML file"
    )


def _check_fields(fields, what: str = "model field(s)") -> None:
    # PretrainedConfig keeps unknown keys as attributes, so a misspelt field would be ignored.
    unknown = sorted(set(fields) - set(config_fields()))
    if unknown:
        raise ValueError(f"unknown {what} {', '.join(unknown)}; valid fields: {', '.join(config_fields())}")


def _with_overrides(config: SteelConfig, overrides: dict) -> SteelConfig:
    _check_fields(overrides)
    return SteelConfig.from_dict({**config.to_dict(), **overrides})


def _config_from_mapping(fields: dict, overrides: dict) -> SteelConfig:
    fields = dict(fields)
    if any(key in fields for key in RECIPE_MODEL_KEYS):
        return _config_from_recipe_model(fields, overrides)

    preset = fields.pop("preset", None)
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"unknown model preset {preset!r}; available: {', '.join(sorted(PRESETS))}")
        return get_preset(preset, **fields, **overrides)
    _check_fields(fields)
    return SteelConfig(**{**fields, **overrides})


def _config_from_recipe_model(fields: dict, overrides: dict) -> SteelConfig:
    """Resolve a recipe's `model:` section as training does: preset, else config, else init_from."""
    from pathlib import Path

    unknown = sorted(set(fields) - {"preset", *RECIPE_MODEL_KEYS})
    if unknown:
        raise ValueError(
            f"unknown key(s) {', '.join(unknown)} in the model section; a recipe's model section takes "
            f"preset, {', '.join(RECIPE_MODEL_KEYS)}, and SteelConfig fields go under overrides"
        )
    recipe_overrides = fields.get("overrides") or {}
    if not isinstance(recipe_overrides, dict):
        raise ValueError(f"model.overrides must be a mapping of SteelConfig fields, got {type(recipe_overrides).__name__}")
    _check_fields(recipe_overrides, "field(s) in model.overrides:")

    if fields.get("preset") is not None:
        config = get_preset(fields["preset"])
        if "vocab_size" not in recipe_overrides and "vocab_size" not in overrides:
            logger.warning(
                "vocab_size %d is the preset's placeholder: training replaces it with the tokenizer's "
                "vocab_size, so pass --vocab-size to count the parameters of the trained model",
                config.vocab_size,
            )
    elif fields.get("config") is not None:
        config = _config_from_recipe_path("config", Path(fields["config"]))
    elif fields.get("init_from") is not None:
        config = _config_from_recipe_path("init_from", Path(fields["init_from"]))
    else:
        raise ValueError("the model section sets none of preset, config and init_from; set one of them")
    return _with_overrides(config, {**recipe_overrides, **overrides})


def _config_from_recipe_path(key: str, path) -> SteelConfig:
    if not path.exists():
        raise ValueError(
            f"model.{key} {path} not found (paths are relative to the working directory); "
            "train or export that model first, or run from the directory the recipe expects"
        )
    return _config_from_path(path)


def _config_from_yaml(path, overrides: dict) -> SteelConfig:
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of model fields, got {type(data).__name__}")
    data = data.get("model", data)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the `model` key must be a mapping of SteelConfig fields")
    try:
        return _config_from_mapping(data, overrides)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from error


def _config_from_path(path) -> SteelConfig:
    """Read the config of a model, run or checkpoint directory, or a JSON config file."""
    from steel.train.load import read_config_json, resolve_spec

    if path.is_dir():
        kind, directory = resolve_spec(path)
        path = directory / ("model_config.json" if kind == "checkpoint" else "config.json")
    logger.info("reading the model config %s", path)
    return _config_from_json(read_config_json(path), path)


def _config_from_json(data: dict, path) -> SteelConfig:
    model_type = data.get("model_type")
    if model_type == "steel" or (model_type == "qwen2" and "FFN_type" in data):
        # SteelConfig translates a released Steel-LLM config (FFN_type, mlp_type) itself.
        fields = {key: value for key, value in data.items() if key not in ("model_type", "auto_map")}
        return SteelConfig(**fields)
    if model_type == "qwen2":
        # `steel export` writes a dense Steel model as a native Qwen2 directory with the same weights.
        from transformers import Qwen2Config

        qwen2 = Qwen2Config(**{key: value for key, value in data.items() if key != "model_type"})
        fields = {key: getattr(qwen2, key) for key in config_fields() if hasattr(qwen2, key)}
        rope_parameters = getattr(qwen2, "rope_parameters", None) or {}
        fields["rope_theta"] = rope_parameters.get("rope_theta", getattr(qwen2, "rope_theta", None))
        return SteelConfig(**{**fields, "ffn_type": "dense"})
    raise ValueError(
        f"{path}: model_type {model_type!r} is not a Steel model; expected 'steel', a released Steel-LLM "
        "config or a Qwen2 config"
    )
