"""`steel tokenizer encode|decode|train|export`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _load(spec: str):
    from steel.tokenizer import load_tokenizer

    try:
        return load_tokenizer(spec)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(str(error)) from None


def encode_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", nargs="?", help="text to encode (default: read standard input)")
    parser.add_argument("--tokenizer", default="qwen", help="'qwen' or a Hugging Face tokenizer directory")
    parser.add_argument("--allow-special", action="store_true", help="turn special-token text such as <|im_end|> into its id")


def encode(args: argparse.Namespace) -> int:
    from steel.tokenizer.user_text import InvalidTextError, check_text, read_all

    try:
        text = check_text(args.text, "the text argument") if args.text is not None else read_all(sys.stdin)
    except InvalidTextError as error:
        print(f"steel tokenizer encode: {error}", file=sys.stderr)
        return 2
    print(json.dumps(_load(args.tokenizer).encode(text, allow_special=args.allow_special)))
    return 0


def decode_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ids", nargs="+", help="token ids, separate or as one JSON array")
    parser.add_argument("--tokenizer", default="qwen", help="'qwen' or a Hugging Face tokenizer directory")


def _parse_ids(values: list[str]) -> list[int]:
    text = " ".join(values).strip()
    try:
        ids = json.loads(text) if text.startswith("[") else [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise SystemExit(f"invalid token ids {text!r}: give integers, e.g. `1 2 3` or `[1, 2, 3]`") from None
    if not all(isinstance(i, int) and i >= 0 for i in ids):
        raise SystemExit(f"invalid token ids {text!r}: every id must be a non-negative integer")
    return ids


def decode(args: argparse.Namespace) -> int:
    tokenizer = _load(args.tokenizer)
    ids = _parse_ids(args.ids)
    out_of_range = [i for i in ids if not 0 <= i < tokenizer.vocab_size]
    if out_of_range:
        raise SystemExit(
            f"token id(s) {', '.join(map(str, out_of_range))} outside the vocabulary of {tokenizer.name} "
            f"(valid: 0 to {tokenizer.vocab_size - 1})"
        )
    print(tokenizer.decode(ids))
    return 0


def train_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs", nargs="+", type=Path,
        help="JSONL, JSON array or Parquet files with a text field, or directories of them (e.g. a convert output)",
    )
    parser.add_argument("--vocab-size", type=int, required=True, help="tokens in the vocabulary, special tokens included")
    parser.add_argument("--output", "-o", type=Path, required=True, help="directory for the Hugging Face tokenizer files")
    parser.add_argument("--text-field", default="text", help="record field with the text (default: text)")
    parser.add_argument("--min-frequency", type=int, default=2, help="minimum count of a pair to merge (default: 2)")
    parser.add_argument("--max-docs", type=int, default=None, help="train on the first N documents only")


def train(args: argparse.Namespace) -> int:
    from steel.tokenizer.train import TrainConfig, train_tokenizer

    from steel.data.tokenize import expand_inputs

    # Directories give their data files, as for `steel data tokenize` (e.g. a convert output).
    inputs = expand_inputs(args.inputs)
    config = TrainConfig(inputs, args.output, args.vocab_size, args.text_field, args.min_frequency, args.max_docs)
    try:
        output = train_tokenizer(config)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    tokenizer = _load(str(output))
    if tokenizer.vocab_size < config.vocab_size:
        print(f"wrote {output} ({tokenizer.vocab_size} tokens, fewer than the requested {config.vocab_size}; "
              f"the corpus has too few pairs that occur {config.min_frequency} times)")
    else:
        print(f"wrote {output} ({tokenizer.vocab_size} tokens)")
    return 0


def export_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("tokenizer", help="'qwen' or a Hugging Face tokenizer directory")
    parser.add_argument("output", type=Path, help="directory to write the Hugging Face tokenizer files to")


def export(args: argparse.Namespace) -> int:
    output = _load(args.tokenizer).save_pretrained(args.output)
    print(f"wrote {output}")
    return 0
