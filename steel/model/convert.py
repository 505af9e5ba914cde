"""Write Steel models as Hugging Face directories.

- `convert_released(src, out)`: a released Steel-LLM directory (model_type qwen2 with FFN_type)
  becomes a `model_type: steel` directory with the same tensor names. `modeling_steel.py` is
  copied beside the weights, so `trust_remote_code=True` loads it without the steel package.
- `export_pretrained(model, out)`: a Soft-MoE model is written the same way; a dense model is
  written as a native `qwen2` directory that needs no remote code.
"""

import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from steel.model.load import load
from steel.model.modeling_steel import SteelConfig, SteelForCausalLM

logger = logging.getLogger(__name__)

# Files of a model directory that the conversion rewrites; everything else (tokenizer files,
# README, licence) is copied unchanged.
MODEL_FILES = {"config.json", "generation_config.json", "model.safetensors.index.json", "pytorch_model.bin.index.json"}
MODEL_SUFFIXES = (".safetensors", ".bin", ".pt", ".py")


def qwen2_config(config: SteelConfig):
    """Return the `Qwen2Config` with the same shape as a dense Steel config."""
    from transformers import Qwen2Config

    if config.ffn_type != "dense":
        raise ValueError(f"only a dense Steel model is a Qwen2 model; this one has ffn_type {config.ffn_type!r}")
    return Qwen2Config(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        max_position_embeddings=config.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta},
        rms_norm_eps=config.rms_norm_eps,
        initializer_range=config.initializer_range,
        attention_dropout=config.attention_dropout,
        tie_word_embeddings=config.tie_word_embeddings,
        use_sliding_window=False,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )


def to_qwen2(model: SteelForCausalLM):
    """Return a transformers `Qwen2ForCausalLM` with the weights of a dense Steel model (same tensor names)."""
    from transformers import Qwen2ForCausalLM

    qwen2 = Qwen2ForCausalLM(qwen2_config(model.config)).to(model.dtype)
    missing, unexpected = qwen2.load_state_dict(model.state_dict(), strict=False)
    if missing or unexpected:
        raise RuntimeError(f"dense Steel and Qwen2 tensor names differ: missing {missing}, unexpected {unexpected}")
    qwen2.generation_config = model.generation_config
    return qwen2.eval()


def _replace_directory(staging: Path, out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    os.replace(staging, out)


def save_atomically(save, out: str | Path, overwrite: bool = False) -> Path:
    """Call `save(staging_dir)`, then move the finished directory to `out` in one rename."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty; choose another output directory or remove it")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        save(staging)
        _replace_directory(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def export_pretrained(model: SteelForCausalLM, out: str | Path, overwrite: bool = False) -> Path:
    """Write `model` as a Hugging Face directory: native qwen2 when dense, else steel with remote code."""
    if model.config.ffn_type == "dense":
        return save_atomically(lambda staging: to_qwen2(model).save_pretrained(staging), out, overwrite)
    return save_atomically(lambda staging: model.save_pretrained(staging), out, overwrite)


def _copy_extra_files(src: Path, out: Path) -> list[str]:
    copied = []
    for path in sorted(src.iterdir()):
        if path.is_file() and path.name not in MODEL_FILES and not path.name.endswith(MODEL_SUFFIXES):
            shutil.copy2(path, out / path.name)
            copied.append(path.name)
    return copied


def convert_released(src: str | Path, out: str | Path, dtype: torch.dtype | None = None, overwrite: bool = False) -> Path:
    """Convert a released Steel-LLM directory to a `model_type: steel` directory.

    The weights keep their dtype unless `dtype` is given; tokenizer and other non-model files are
    copied unchanged.
    """
    src = Path(src)
    model = load(src, dtype=dtype or "auto")

    def save(staging: Path) -> None:
        model.save_pretrained(staging)
        copied = _copy_extra_files(src, staging)
        if copied:
            logger.info("copied %d non-model files unchanged: %s", len(copied), ", ".join(copied))

    return save_atomically(save, out, overwrite)
