"""`steel model info` and `steel model convert`."""

import argparse
import logging
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

FFN_DESCRIPTIONS = {
    "soft_moe": "Soft MoE as released (not causal: each slot mixes the whole sequence)",
    "soft_moe_causal": "causal Soft MoE (each position's slots mix tokens up to it)",
    "dense": "dense SwiGLU (a Qwen2 model)",
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def info_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        help="preset name (e.g. steel-1b); run, checkpoint or exported model directory (only its config is read); "
        "JSON config file (config.json, model_config.json); or YAML file with model fields or a recipe's model section",
    )
    parser.add_argument("--vocab-size", type=int, help="replace vocab_size, e.g. with a tokenizer's vocab_size")
    parser.add_argument("--ffn-type", choices=sorted(FFN_DESCRIPTIONS), help="replace the FFN variant")
    parser.add_argument("--seq-len", type=int, help="sequence length for the FLOPs count (default: max_position_embeddings)")


def _count_parameters(config) -> tuple[int, int]:
    from steel.model.modeling_steel import SteelForCausalLM

    with torch.device("meta"):
        model = SteelForCausalLM(config)
    total = sum(p.numel() for p in model.parameters())
    embeddings = model.model.embed_tokens.weight.numel()
    if not config.tie_word_embeddings:
        embeddings += model.lm_head.weight.numel()
    return total, total - embeddings


def info(args: argparse.Namespace) -> int:
    from steel.model.flops import flops_per_token
    from steel.model.presets import config_fields, resolve_config

    overrides = {}
    if args.vocab_size is not None:
        overrides["vocab_size"] = args.vocab_size
    if args.ffn_type is not None:
        overrides["ffn_type"] = args.ffn_type
    try:
        config = resolve_config(args.model, **overrides)
    except (ValueError, OSError) as error:
        raise SystemExit(f"steel model info: {error}") from None

    print(f"model: {args.model}")
    for key in config_fields():
        print(f"  {key}: {getattr(config, key)}")
    print(f"ffn: {FFN_DESCRIPTIONS[config.ffn_type]}")

    total, without_embeddings = _count_parameters(config)
    print(f"parameters: {total:,}")
    print(f"parameters without embeddings: {without_embeddings:,}")

    seq_len = args.seq_len or config.max_position_embeddings
    train_flops = flops_per_token(config, seq_len, training=True)
    print(f"training FLOPs per token at seq_len {seq_len}: {train_flops:.4g} (6N gives {6 * total:.4g})")
    return 0


def convert_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", type=Path, help="released Steel-LLM directory (config.json with model_type qwen2 and FFN_type)")
    parser.add_argument("out", type=Path, help="output directory (model_type steel, loads with AutoModelForCausalLM)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), help="weight dtype to write (default: the checkpoint's own)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")


def convert(args: argparse.Namespace) -> int:
    from steel.model.convert import convert_released
    from steel.model.load import is_released_format

    try:
        if not is_released_format(args.src):
            raise ValueError(
                f"{args.src / 'config.json'} is not in the released Steel-LLM layout "
                "(model_type 'qwen2' with architectures SteelForCausalLM or FFN_type); nothing to convert"
            )
        out = convert_released(args.src, args.out, dtype=DTYPES.get(args.dtype), overwrite=args.overwrite)
    except (ValueError, OSError) as error:
        raise SystemExit(f"steel model convert: {error}") from None
    logger.info("wrote %s (model_type steel)", out)
    print(out)
    return 0
