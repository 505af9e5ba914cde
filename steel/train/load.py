"""Build models for training and load trained ones: `build_model` and `load_model`.

`load_model(spec)` is the one way evaluation, SFT, DPO and serving get a model. `spec` is

- a run directory (it has `checkpoints/`): its latest complete checkpoint;
- a checkpoint directory (it has `checkpoint.json`);
- an exported Hugging Face directory (`steel export`, or any local `transformers` causal LM with
  `config.json`, including a released Steel-LLM directory).
"""

from __future__ import annotations

import difflib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from steel.train import checkpoint as ckpt
from steel.train.config import ModelConfig

log = logging.getLogger(__name__)

PROVENANCE_FILE = "steel_provenance.json"


@dataclass
class LoadedModel:
    """A model with what is needed to use it."""

    model: torch.nn.Module
    tokenizer: Any
    """A `steel.tokenizer.SteelTokenizer`, or None when the source records no tokenizer."""
    chat_template: str | None
    provenance: dict[str, Any] = field(default_factory=dict)
    """Source path, kind (`checkpoint` or `hf`), stage, step and tokens when known."""


def _register_steel() -> None:
    """Register the Steel model type with `transformers` (a no-op when `steel.model` is absent)."""
    try:
        import steel.model  # noqa: F401
    except ImportError:
        pass


# ---------------------------------------------------------------------------------------------
# Building a model for training


def read_config_json(file: Path) -> dict[str, Any]:
    """Read a model config file as a dict; raise ValueError naming the file when it is missing or invalid."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"model config not found: {file}") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{file}: invalid JSON at line {error.lineno}: {error.msg}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{file}: expected a JSON object of config fields, got {type(data).__name__}")
    return data


def read_model_config(path: str | Path):
    """Read a `transformers` config from a `config.json` file or a directory containing one."""
    from transformers import AutoConfig

    _register_steel()
    path = Path(path)
    file = path / "config.json" if path.is_dir() else path
    data = read_config_json(file)
    model_type = data.pop("model_type", None)
    if model_type is None:
        raise ValueError(f"{file}: no model_type; expected a transformers causal-LM config.json")
    if model_type == "qwen2" and "FFN_type" in data:
        model_type = "steel"  # a released Steel-LLM config
    data.pop("auto_map", None)
    try:
        return AutoConfig.for_model(model_type, **data)
    except ValueError as error:
        raise ValueError(f"{file}: model_type {model_type!r} is not known to transformers: {error}") from None


def build_model_config(model_config: ModelConfig, vocab_size: int | None = None):
    """Resolve the `transformers` config a run trains: preset, config.json or init_from, then overrides.

    A preset's vocabulary is a placeholder, so it takes `vocab_size` (the tokenizer's) unless the
    overrides set one. A config file keeps its own vocabulary, which must hold every token id.
    """
    if model_config.preset is not None:
        _register_steel()
        from steel.model.presets import get_preset

        config = get_preset(model_config.preset)
        if vocab_size is not None and "vocab_size" not in model_config.overrides:
            config.vocab_size = vocab_size
    elif model_config.config is not None:
        config = read_model_config(model_config.config)
    elif model_config.init_from is not None:
        config = _config_of(model_config.init_from)
    else:
        raise ValueError("set model.preset, model.config or model.init_from")

    for key, value in model_config.overrides.items():
        if not hasattr(config, key):
            close = difflib.get_close_matches(key, list(config.to_dict()), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"model.overrides.{key}: {type(config).__name__} has no attribute {key!r}{hint}")
        setattr(config, key, checked_override(config, key, value))
    if vocab_size is not None and config.vocab_size < vocab_size:
        raise ValueError(
            f"the model's vocab_size {config.vocab_size} is smaller than the tokenizer's {vocab_size}; "
            "set model.overrides.vocab_size"
        )
    config._attn_implementation = model_config.attn_implementation
    return config


def checked_override(config: Any, key: str, value: Any) -> Any:
    """Check `value` against the type of config attribute `key` (bool, int or float) and return it converted.

    Raises ValueError naming the key. Attributes of other types, and None, pass unchecked.
    """
    current = getattr(config, key)
    name = f"model.overrides.{key}"
    if value is None or current is None:
        return value
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, not {value!r}")
        return value
    if isinstance(current, int):
        number = _as_number(value)
        if number is None or not float(number).is_integer():
            raise ValueError(f"{name} must be an integer (the base config has {current}), not {value!r}")
        return int(number)
    if isinstance(current, float):
        number = _as_number(value)
        if number is None:
            raise ValueError(f"{name} must be a number (the base config has {current}), not {value!r}")
        return float(number)
    return value


def _as_number(value: Any) -> int | float | None:
    """Return an int or float value as it is, a numeric string as a float, and anything else as None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        # PyYAML reads `1e-6` (no decimal point) as a string, so numbers may arrive as text.
        try:
            return float(value.replace("_", ""))
        except ValueError:
            return None
    return None


def build_model(model_config: ModelConfig, vocab_size: int | None = None, seed: int = 0) -> torch.nn.Module:
    """Create the model of a run in float32 on the CPU, initialised from `seed` (or `init_from`)."""
    from transformers import AutoModelForCausalLM

    config = build_model_config(model_config, vocab_size)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(
        config, attn_implementation=model_config.attn_implementation, dtype=torch.float32
    )
    if model_config.init_from is not None:
        init_weights_from(model, model_config.init_from)
    return model


def init_weights_from(model: torch.nn.Module, spec: str | Path) -> None:
    """Copy the weights of `spec` (run, checkpoint or HF directory) into `model`, warning on mismatches."""
    source = load_model(spec).model
    result = model.load_state_dict(source.state_dict(), strict=False)
    if result.missing_keys or result.unexpected_keys:
        log.warning("init_from %s: missing keys %s; unexpected keys %s",
                    spec, result.missing_keys, result.unexpected_keys)
    log.info("initialised weights from %s (optimizer, schedule and data position start fresh)", spec)


# ---------------------------------------------------------------------------------------------
# Loading a trained model


def resolve_spec(spec: str | Path) -> tuple[str, Path]:
    """Return ("checkpoint" | "hf", path) for a run directory, checkpoint or Hugging Face directory."""
    path = Path(spec)
    if not path.exists():
        raise ValueError(f"model not found: {spec} (expected a run directory, checkpoint or model directory)")
    if (path / ckpt.META_FILE).is_file():
        return "checkpoint", path
    if (path / ckpt.CHECKPOINT_DIR).is_dir():
        latest = ckpt.latest_checkpoint(path)
        if latest is None:
            raise ValueError(f"run directory {path} has no complete checkpoint yet")
        return "checkpoint", latest
    if (path / "config.json").is_file():
        return "hf", path
    raise ValueError(f"{spec} is neither a run directory, a checkpoint nor a directory with config.json")


def _config_of(spec: str | Path):
    kind, path = resolve_spec(spec)
    return read_model_config(path / ("model_config.json" if kind == "checkpoint" else "config.json"))


def load_model(spec: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> LoadedModel:
    """Load a run directory, checkpoint or Hugging Face directory as (model, tokenizer, template, provenance).

    The model is returned in eval mode on `device` in `dtype`.
    """
    kind, path = resolve_spec(spec)
    loaded = _load_checkpoint(path) if kind == "checkpoint" else _load_hf(path)
    loaded.model.to(device=device, dtype=dtype).eval()
    return loaded


def _load_checkpoint(path: Path) -> LoadedModel:
    from transformers import AutoModelForCausalLM

    meta = ckpt.read_meta(path)
    config = read_model_config(path / "model_config.json")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    ckpt.load_weights(path, model)

    tokenizer = _tokenizer_from_meta(path, meta)
    provenance = {
        "source": str(path.resolve()),
        "kind": "checkpoint",
        "stage": meta.get("stage"),
        "step": meta.get("step"),
        "tokens": meta.get("tokens"),
        "tokenizer": meta.get("tokenizer"),
    }
    return LoadedModel(model=model, tokenizer=tokenizer, chat_template=_chat_template(tokenizer), provenance=provenance)


def _tokenizer_from_meta(path: Path, meta: dict[str, Any]):
    """Load the tokenizer a checkpoint names: "qwen", or the files saved inside the checkpoint."""
    spec = meta.get("tokenizer_spec")
    if spec is None:
        return None
    from steel.tokenizer import load_tokenizer

    if spec != "qwen" and not Path(spec).is_absolute():
        spec = str(path / spec)
    return load_tokenizer(spec)


def _load_hf(path: Path) -> LoadedModel:
    from transformers import AutoModelForCausalLM

    _register_steel()
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, trust_remote_code=True)
    tokenizer = None
    if (path / "tokenizer_config.json").is_file() or (path / "tokenizer.json").is_file():
        from steel.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(str(path))
    provenance: dict[str, Any] = {}
    if (path / PROVENANCE_FILE).is_file():
        provenance.update(json.loads((path / PROVENANCE_FILE).read_text(encoding="utf-8")))
    provenance.update(source=str(path.resolve()), kind="hf")
    return LoadedModel(model=model, tokenizer=tokenizer, chat_template=_chat_template(tokenizer, path),
                       provenance=provenance)


def _chat_template(tokenizer: Any, directory: Path | None = None) -> str | None:
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, str):
        return template
    if directory is not None and (directory / "tokenizer_config.json").is_file():
        data = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
        if isinstance(data.get("chat_template"), str):
            return data["chat_template"]
    return None
