"""Export a run or checkpoint as a Hugging Face directory that plain `transformers` loads."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch

from steel.data.io import give_usual_file_modes
from steel.train.load import PROVENANCE_FILE, load_model

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def export_model(spec: str | Path, out_dir: str | Path, dtype: str = "float32", overwrite: bool = False) -> Path:
    """Write config, `model.safetensors`, tokenizer files, generation config and provenance to `out_dir`.

    Steel models also get their modeling code (`auto_map`), so
    `AutoModelForCausalLM.from_pretrained(out_dir, trust_remote_code=True)` loads them without Steel
    installed. The directory appears complete or not at all (written under a temporary name first).
    """
    out_dir = Path(out_dir)
    _check_output_path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise ValueError(f"{out_dir} exists and is not empty; choose another directory or pass --overwrite")
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")

    loaded = load_model(spec, dtype=DTYPES[dtype])
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)

    _save_model(loaded.model, tmp)
    generation_config = _generation_config(loaded)
    if generation_config is not None:
        generation_config.save_pretrained(tmp)
    if loaded.tokenizer is not None:
        loaded.tokenizer.save_pretrained(tmp)
    else:
        log.warning("%s records no tokenizer: the export has model files only", spec)
    provenance = dict(loaded.provenance, exported_from=loaded.provenance.get("source"), dtype=dtype)
    (tmp / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    give_usual_file_modes(tmp)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    log.info("exported %s to %s", spec, out_dir)
    return out_dir


def _check_output_path(out_dir: Path) -> None:
    """Raise ValueError when `out_dir`, its temporary sibling or a parent is an existing non-directory."""
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir} exists and is not a directory; choose a directory path for the export")
    if tmp.exists() and not tmp.is_dir():
        raise ValueError(f"{tmp} exists and is not a directory; the export writes there first, so move it away")
    for parent in out_dir.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{parent} is not a directory, so {out_dir} cannot be created inside it")
            break


def _save_model(model, directory: Path) -> None:
    """Save weights and config; a dense Steel model becomes a native `qwen2` directory."""
    if getattr(model.config, "model_type", None) == "steel" and model.config.ffn_type == "dense":
        from steel.model.convert import to_qwen2

        model = to_qwen2(model)
    model.save_pretrained(directory)


def _generation_config(loaded):
    from transformers import GenerationConfig

    tokenizer = loaded.tokenizer
    if tokenizer is None:
        return None
    # A base model ends documents with <|endoftext|>; a chat model ends turns with <|im_end|>.
    eos_ids = []
    for token_id in (tokenizer.special_ids.get("<|endoftext|>"), tokenizer.special_ids.get("<|im_end|>")):
        if token_id is not None and token_id not in eos_ids:
            eos_ids.append(token_id)
    return GenerationConfig(
        eos_token_id=eos_ids or None,
        pad_token_id=tokenizer.pad_id,
        do_sample=False,
    )
