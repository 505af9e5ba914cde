"""Named Steel configurations.

`steel-1b` is the released Steel-LLM configuration. The small presets train on a CPU; their
`vocab_size` is a placeholder that callers replace with their tokenizer's `vocab_size`.
"""

from steel.model.modeling_steel import SteelConfig

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


def resolve_config(spec: "str | dict", **overrides) -> SteelConfig:
    """Build a SteelConfig from a preset name, a model directory, a config.json or YAML file, or a dict.

    A dict (or YAML mapping) holds SteelConfig fields, optionally with `preset: NAME` as the base;
    a YAML file may also nest them under a `model:` key, the way recipes do.
    """
    from pathlib import Path

    if isinstance(spec, dict):
        fields = dict(spec)
        preset = fields.pop("preset", None)
        if preset is not None and preset not in PRESETS:
            raise ValueError(f"unknown model preset {preset!r}; available: {', '.join(sorted(PRESETS))}")
        if preset is not None:
            return get_preset(preset, **fields, **overrides)
        unknown = sorted(set(fields) - set(config_fields()))
        if unknown:
            raise ValueError(f"unknown model field(s) {', '.join(unknown)}; valid fields: {', '.join(config_fields())}")
        return SteelConfig(**{**fields, **overrides})
    if spec in PRESETS:
        return get_preset(spec, **overrides)

    path = Path(spec)
    if path.is_dir() or path.name == "config.json":
        directory = path if path.is_dir() else path.parent
        config = SteelConfig.from_pretrained(str(directory))
        for key, value in overrides.items():
            setattr(config, key, value)
        return SteelConfig.from_dict(config.to_dict())
    if path.suffix in (".yaml", ".yml") and path.is_file():
        import yaml

        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of model fields, got {type(data).__name__}")
        data = data.get("model", data)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: the `model` key must be a mapping of SteelConfig fields")
        try:
            return resolve_config(data, **overrides)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path}: {error}") from error
    raise ValueError(
        f"{spec!r} is neither a preset ({', '.join(sorted(PRESETS))}) nor a model directory, config.json or YAML file"
    )
