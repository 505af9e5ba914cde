"""Checkpoints: atomic, resumable, world-size independent, and free of pickled user objects.

Layout of one checkpoint, `RUN_DIR/checkpoints/step-00001000/`:

    checkpoint.json     step and token counters, data-stream state, LR schedule, resolved training
                        config, tokenizer identity, storage format, world size (written last)
    model_config.json   the model's `transformers` config
    model.safetensors   full model weights            } format "full": one process
    optimizer.pt        full AdamW state, FQN-keyed   } (tensors only, read with weights_only=True)
    state/              torch.distributed.checkpoint shards of model and optimizer (format "dcp":
                        FSDP runs, each rank writes its own shards)
    rng-rank00000.json  RNG states of each rank (Python, NumPy, torch CPU and CUDA)

Every rank writes into `step-00001000.tmp/`, and rank 0 renames it to its final name only after all
files are complete. A crash mid-write therefore leaves a `.tmp` directory, which is never loaded
and which the next save removes. Both formats load into any world size: DCP reshards, and a full
checkpoint is split by `set_model_state_dict(full_state_dict=True)`.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import pickle
import random
import re
import shutil
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from steel.data.io import give_usual_file_modes
from steel.train.distributed import DistributedEnv, barrier

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
META_FILE = "checkpoint.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def is_checkpoint(path: Path) -> bool:
    return path.is_dir() and (path / META_FILE).is_file() and _STEP_DIR.match(path.name) is not None


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Return the complete checkpoints of a run, oldest first (`.tmp` directories are skipped)."""
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if is_checkpoint(p)]
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else None


class DamagedCheckpointError(ValueError):
    """A checkpoint file that is missing, truncated or unreadable. The message names the file and the fix."""

    def __init__(self, path: Path, reason: str, checkpoint_dir: Path):
        self.path = path
        self.reason = reason
        self.checkpoint_dir = checkpoint_dir
        super().__init__(
            f"{path}: damaged checkpoint ({reason}); delete {checkpoint_dir} so that the run's previous "
            "checkpoint is used, or give an earlier checkpoint directory (when training: checkpoint.resume=PATH)"
        )


def damaged_file(path: Path, reason: str, checkpoint_dir: Path | None = None) -> DamagedCheckpointError:
    """Return the error for damaged file `path` of `checkpoint_dir` (default: the directory containing it)."""
    return DamagedCheckpointError(path, reason, checkpoint_dir or path.parent)


def read_meta(checkpoint_dir: str | Path) -> dict[str, Any]:
    path = Path(checkpoint_dir) / META_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{checkpoint_dir} is not a complete checkpoint: {META_FILE} is missing") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise damaged_file(path, f"invalid JSON: {error}") from None
    if not isinstance(meta, dict):
        raise damaged_file(path, f"a JSON object was expected, not {type(meta).__name__}")
    return meta


def verify_checkpoint(checkpoint_dir: str | Path) -> None:
    """Raise DamagedCheckpointError unless every file of the checkpoint is present and readable.

    Reads only `checkpoint.json`, `model_config.json` and the safetensors header (which records
    the file's length, so a truncated file fails), so it costs milliseconds at any model size.
    """
    checkpoint_dir = Path(checkpoint_dir)
    meta = read_meta(checkpoint_dir)
    config_file = checkpoint_dir / "model_config.json"
    try:
        json.loads(config_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise damaged_file(config_file, "missing") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise damaged_file(config_file, f"invalid JSON: {error}") from None

    if meta.get("format") == "full":
        weights = checkpoint_dir / "model.safetensors"
        try:
            with safe_open(weights, framework="pt"):
                pass
        except FileNotFoundError:
            raise damaged_file(weights, "missing") from None
        except SafetensorError as error:
            raise damaged_file(weights, str(error)) from None
        optimizer_file = checkpoint_dir / "optimizer.pt"
        # torch.save writes a zip archive, whose directory sits at the end: a truncated file has none.
        if not zipfile.is_zipfile(optimizer_file):
            raise damaged_file(optimizer_file, "missing or not a complete torch.save archive")
    elif meta.get("format") == "dcp":
        state_metadata = checkpoint_dir / "state" / ".metadata"
        if not state_metadata.is_file():
            raise damaged_file(state_metadata, "missing", checkpoint_dir)


def write_json_atomic(path: str | Path, value: Any) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=2, ensure_ascii=False)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Saving


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    meta: dict[str, Any],
    env: DistributedEnv,
    *,
    keep_last: int,
    milestone_interval: int = 0,
    write_extra: Callable[[Path], dict[str, Any]] | None = None,
) -> Path:
    """Write the checkpoint of optimizer step `step` atomically (all ranks call this) and prune old ones.

    `meta` must be JSON-able; the step, format, world size and milestone flag are added to it.
    `write_extra(directory)`, run on rank 0 only, may add files (the tokenizer) and returns more
    metadata.
    """
    root = Path(run_dir) / CHECKPOINT_DIR
    final = root / checkpoint_name(step)
    tmp = root / (checkpoint_name(step) + ".tmp")
    if env.is_main:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob("*.tmp"):
            shutil.rmtree(stale)
        tmp.mkdir()
    barrier()

    storage_format = "dcp" if env.is_distributed else "full"
    if storage_format == "dcp":
        _save_sharded(tmp, model, optimizer)
    else:
        _save_full(tmp, model, optimizer)
    _save_rng(tmp / f"rng-rank{env.rank:05d}.json")
    barrier()

    if env.is_main:
        model.config.to_json_file(tmp / "model_config.json")
        if write_extra is not None:
            meta = dict(meta, **write_extra(tmp))
        milestone = milestone_interval > 0 and step % milestone_interval == 0
        full_meta = dict(meta, step=step, format=storage_format, world_size=env.world_size, milestone=milestone)
        write_json_atomic(tmp / META_FILE, full_meta)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
        prune_checkpoints(run_dir, keep_last)
        log.info("saved checkpoint %s", final)
    barrier()
    return final


def _save_full(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    # Tied weights share storage, which safetensors rejects; each key gets its own copy.
    weights = {name: tensor.detach().clone().contiguous().cpu() for name, tensor in model.state_dict().items()}
    save_file(weights, directory / "model.safetensors")
    torch.save(get_optimizer_state_dict(model, optimizer), directory / "optimizer.pt")
    give_usual_file_modes(directory)


def _save_sharded(directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=directory / "state")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def prune_checkpoints(run_dir: str | Path, keep_last: int) -> list[Path]:
    """Delete regular checkpoints beyond the newest `keep_last`; milestones are kept. Return the deleted."""
    regular = []
    for path in list_checkpoints(run_dir):
        try:
            milestone = read_meta(path).get("milestone", False)
        except DamagedCheckpointError as error:
            log.warning("not pruning damaged checkpoint %s: %s", path.name, error)
            continue
        if not milestone:
            regular.append(path)
    removed = regular[: max(0, len(regular) - keep_last)]
    for path in removed:
        # Renamed first, so an interruption mid-delete leaves a `.tmp` directory, never a partial checkpoint.
        deleting = path.with_name(path.name + ".tmp")
        os.replace(path, deleting)
        shutil.rmtree(deleting)
        log.info("removed old checkpoint %s", path)
    return removed


# ---------------------------------------------------------------------------------------------
# Loading


def _load_weights_file(checkpoint_dir: Path) -> dict[str, torch.Tensor]:
    path = checkpoint_dir / "model.safetensors"
    try:
        return load_file(path)
    except FileNotFoundError:
        raise damaged_file(path, "missing") from None
    except SafetensorError as error:
        raise damaged_file(path, str(error)) from None


def _load_optimizer_file(checkpoint_dir: Path) -> dict[str, Any]:
    path = checkpoint_dir / "optimizer.pt"
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise damaged_file(path, "missing") from None
    except (RuntimeError, EOFError, pickle.UnpicklingError) as error:
        raise damaged_file(path, str(error).splitlines()[0]) from None


def load_checkpoint(
    checkpoint_dir: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    env: DistributedEnv,
) -> dict[str, Any]:
    """Load weights (and optimizer state when `optimizer` is given) into a model of any world size.

    `model` may be plain or FSDP-sharded; its parameters must already be on their final device.
    Returns the checkpoint's metadata.
    """
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    checkpoint_dir = Path(checkpoint_dir)
    meta = read_meta(checkpoint_dir)
    if meta["format"] == "full":
        options = StateDictOptions(full_state_dict=True)
        model_state = _load_weights_file(checkpoint_dir)
        _check_shapes(checkpoint_dir, model, model_state)
        set_model_state_dict(model, model_state, options=options)
        if optimizer is not None:
            optimizer_state = _load_optimizer_file(checkpoint_dir)
            set_optimizer_state_dict(model, optimizer, optimizer_state, options=options)
    elif meta["format"] == "dcp":
        import torch.distributed.checkpoint as dcp

        no_dist = not env.is_distributed
        state = {"model": get_model_state_dict(model)}
        if optimizer is not None:
            state["optimizer"] = get_optimizer_state_dict(model, optimizer)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single process")
            dcp.load(state, checkpoint_id=checkpoint_dir / "state", no_dist=no_dist)
        set_model_state_dict(model, state["model"])
        if optimizer is not None:
            set_optimizer_state_dict(model, optimizer, state["optimizer"])
    else:
        raise ValueError(f"{checkpoint_dir / META_FILE}: unknown checkpoint format {meta['format']!r}")

    rng_file = checkpoint_dir / f"rng-rank{env.rank:05d}.json"
    if rng_file.is_file():
        _load_rng(rng_file)
    return meta


def _check_shapes(checkpoint_dir: Path, model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Raise ValueError when the checkpoint's weights do not fit the model built from the config."""
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    mismatched = [
        f"{name} {tuple(tensor.shape)} in the checkpoint, {expected[name]} in the model"
        for name, tensor in state.items()
        if name in expected and tuple(tensor.shape) != expected[name]
    ]
    if mismatched:
        raise ValueError(
            f"{checkpoint_dir}: the checkpoint's weights do not fit the model this config builds "
            f"({len(mismatched)} tensors differ, e.g. {mismatched[0]}); resume with the model settings "
            "the run was started with (drop overrides that change the architecture) or use a new run_dir"
        )


def load_weights(checkpoint_dir: str | Path, model: torch.nn.Module) -> None:
    """Load only the model weights of a checkpoint into an unsharded model, in this process alone."""
    checkpoint_dir = Path(checkpoint_dir)
    meta = read_meta(checkpoint_dir)
    if meta["format"] == "full":
        state = _load_weights_file(checkpoint_dir)
    else:
        import torch.distributed.checkpoint as dcp

        state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
        holder = {"model": state}
        with warnings.catch_warnings():
            # Loading in one process is the intent here, which DCP would warn about.
            warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single process")
            dcp.load(holder, checkpoint_id=checkpoint_dir / "state", no_dist=True)
        state = holder["model"]
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not _is_tied_copy(model, k)]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{checkpoint_dir}: weights do not match the model: missing {missing[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )


def _is_tied_copy(model: torch.nn.Module, key: str) -> bool:
    return key.endswith("lm_head.weight") and bool(getattr(model.config, "tie_word_embeddings", False))


# ---------------------------------------------------------------------------------------------
# RNG states, as JSON


def _save_rng(path: Path) -> None:
    state: dict[str, Any] = {
        "python": _jsonable(random.getstate()),
        "numpy": _jsonable(np.random.get_state()),
        "torch_cpu": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode("ascii"),
    }
    if torch.cuda.is_available():
        state["torch_cuda"] = base64.b64encode(torch.cuda.get_rng_state().numpy().tobytes()).decode("ascii")
    write_json_atomic(path, state)


def _load_rng(path: Path) -> None:
    state = json.loads(path.read_text(encoding="utf-8"))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.frombuffer(bytearray(base64.b64decode(state["torch_cpu"])), dtype=torch.uint8))
    if "torch_cuda" in state and torch.cuda.is_available():
        cuda_state = torch.frombuffer(bytearray(base64.b64decode(state["torch_cuda"])), dtype=torch.uint8)
        torch.cuda.set_rng_state(cuda_state)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
