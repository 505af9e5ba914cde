"""Load a model, its tokenizer and chat template for serving, through `steel.train.load_model`."""

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


@dataclass
class ServingModel:
    """A model ready for generation: the module in eval mode, its tokenizer and where it came from."""

    model: torch.nn.Module
    tokenizer: object
    """A `SteelTokenizer` (encode, decode, special_ids)."""
    chat_template: str | None
    name: str
    """The id that `/v1/models` lists and that requests name."""
    provenance: dict = field(default_factory=dict)


def load_for_serving(
    spec: str, name: str | None = None, dtype: str | None = None, device: str | None = None
) -> ServingModel:
    """Load a run, checkpoint or exported directory in eval mode.

    `device` defaults to cuda when available, else cpu; `dtype` ("float32", "bfloat16",
    "float16") defaults to float32. Raises ValueError when the model has no tokenizer.
    """
    from steel.train import load_model

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    loaded = load_model(spec, device=device, dtype=getattr(torch, dtype or "float32"))
    if loaded.tokenizer is None:
        raise ValueError(
            f"{spec} records no tokenizer; serving needs one (export the model with its tokenizer files)"
        )

    provenance = dict(loaded.provenance or {})
    logger.info(
        "loaded %s (%s, step %s) on %s",
        provenance.get("source", spec),
        type(loaded.model).__name__,
        provenance.get("step", "unknown"),
        device,
    )
    return ServingModel(
        model=loaded.model.eval(),
        tokenizer=loaded.tokenizer,
        chat_template=loaded.chat_template,
        name=name or default_model_name(spec, provenance),
        provenance=provenance,
    )


# Directory names that do not identify a model. The demo writes every stage to `STAGE/run`.
GENERIC_DIRECTORY_NAMES = frozenset({"run", "runs", "model", "models", "output", "out", "export", "hf", "checkpoint"})


def default_model_name(spec: str, provenance: dict | None = None) -> str:
    """Derive the model id that `/v1/models` lists from the directory a model was loaded from.

    It is the directory name (`runs/sft` -> `sft`). A generic name such as `run` is replaced by
    the parent directory's name, followed by the training stage when the provenance records one
    that the parent's name lacks (`demo-run/sft/run` -> `sft`, `base/run` -> `base-pretrain`). A
    checkpoint directory inside a run gets the run's name and its own (`sft-step-00000500`).
    """
    provenance = provenance or {}
    path = Path(spec).resolve()
    checkpoint_name = None
    if path.parent.name == "checkpoints" and (path / "checkpoint.json").is_file():
        checkpoint_name = path.name
        path = path.parent.parent

    name = path.name
    if name.lower() in GENERIC_DIRECTORY_NAMES and path.parent.name:
        stage = provenance.get("stage")
        name = path.parent.name
        if stage and str(stage) not in name:
            name = f"{name}-{stage}"
    return f"{name}-{checkpoint_name}" if checkpoint_name else name

