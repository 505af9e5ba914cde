"""Load Steel model directories, including checkpoints in the released Steel-LLM layout."""

import json
import logging
from pathlib import Path

import torch

from steel.model.modeling_steel import SteelForCausalLM

logger = logging.getLogger(__name__)


def read_config_json(directory: str | Path) -> dict:
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; expected a model directory with config.json")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: invalid JSON at line {error.lineno}: {error.msg}") from error


def is_released_format(directory: str | Path) -> bool:
    """True for a released Steel-LLM directory: model_type qwen2 with SteelForCausalLM or FFN_type."""
    config = read_config_json(directory)
    return config.get("model_type") == "qwen2" and (
        "SteelForCausalLM" in (config.get("architectures") or []) or "FFN_type" in config
    )


def load(
    directory: str | Path, dtype: torch.dtype | str | None = None, device: str | torch.device | None = None
) -> SteelForCausalLM:
    """Load a Steel model in eval mode from a `model_type: steel` or a released Steel-LLM directory.

    `dtype` defaults to float32; `"auto"` keeps the dtype recorded in config.json.

    Tensor names are the same in both layouts; the released config's `FFN_type` / `mlp_type`
    are translated by `SteelConfig`, which rejects values it does not implement.
    """
    config = read_config_json(directory)
    model_type = config.get("model_type")
    if model_type != "steel" and not is_released_format(directory):
        raise ValueError(
            f"{Path(directory) / 'config.json'}: model_type {model_type!r} with architectures "
            f"{config.get('architectures')} is not a Steel model; expected model_type 'steel' or a released "
            "Steel-LLM config (model_type 'qwen2' with FFN_type)"
        )
    if model_type != "steel":
        logger.info("loading %s in the released Steel-LLM layout (FFN_type %s)", directory, config.get("FFN_type"))
    model = SteelForCausalLM.from_pretrained(str(directory), dtype=dtype or torch.float32)
    if device is not None:
        model = model.to(device)
    return model.eval()
