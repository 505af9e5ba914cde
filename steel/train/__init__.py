"""Training: one trainer core for pretraining, SFT and DPO; checkpoints; `load_model`; export; plots.

`load_model(spec)` loads a run directory, checkpoint or Hugging Face directory; evaluation, SFT,
DPO and serving load models only through it. Importing this package stays cheap: the loader is
imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from steel.train.load import LoadedModel, load_model

__all__ = ["LoadedModel", "load_model"]


def __getattr__(name: str):
    if name in __all__:
        from steel.train import load

        return getattr(load, name)
    raise AttributeError(f"module 'steel.train' has no attribute {name!r}")
