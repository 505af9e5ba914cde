"""The Steel model as a `transformers` model.

Importing this package registers `SteelConfig` and `SteelForCausalLM` with `AutoConfig` and
`AutoModelForCausalLM` under model type `steel`.
"""

from transformers import AutoConfig, AutoModelForCausalLM

from steel.model.modeling_steel import SteelConfig, SteelForCausalLM, SteelModel

AutoConfig.register("steel", SteelConfig, exist_ok=True)
AutoModelForCausalLM.register(SteelConfig, SteelForCausalLM, exist_ok=True)

from steel.model.load import load, is_released_format  # noqa: E402
from steel.model.presets import get_preset, list_presets  # noqa: E402

__all__ = [
    "SteelConfig",
    "SteelForCausalLM",
    "SteelModel",
    "get_preset",
    "list_presets",
    "load",
    "is_released_format",
]
