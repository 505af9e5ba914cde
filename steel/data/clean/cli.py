"""`steel data clean` and `steel data stats`."""

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from steel.data.io import SkippedFile

logger = logging.getLogger(__name__)

DEFAULT_RECIPE = "zh-web"


def clean_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs", nargs="+", type=Path, metavar="INPUT",
        help="JSONL/JSON/Parquet files (.gz/.zst too), one task each, or directories of them (e.g. a steel data convert output)",
    )
    parser.add_argument("--recipe", default=DEFAULT_RECIPE, help=f"recipe YAML file or shipped name (default: {DEFAULT_RECIPE})")
    parser.add_argument("--output", type=Path, required=True, help="output directory: shards/, stats.json, examples/, manifest.json")
    parser.add_argument("--executor", choices=("local", "ray"), default="local", help="datatrove executor (default: local)")
    parser.add_argument("--workers", type=int, default=0, help="parallel tasks (default: one per CPU core)")
    parser.add_argument("--compression", choices=("none", "gz", "zst"), default="none", help="compression of the output shards")
    parser.add_argument("--num-examples", type=int, default=5, help="examples kept per operator (default: 5)")
    parser.add_argument("--ray-address", default=None, help="Ray cluster address; default: start a local cluster on 127.0.0.1")
    parser.add_argument("--ray-cpus-per-task", type=float, default=1.0, help="CPUs Ray reserves per task; fractions allowed")
    parser.add_argument(
        "--verbose", action="store_true",
        help="show datatrove's own log messages (pipeline banner, per-task statistics) on stderr; "
        "by default they go to OUTPUT/work/logs/datatrove.log",
    )  # fmt: skip


def clean(args: argparse.Namespace) -> int:
    from steel.data.clean.pipeline import CleanConfig, run_clean
    from steel.data.clean.recipe import load_recipe
    from steel.data.clean.stats import format_table

    from steel.data.tokenize import expand_inputs

    # A directory gives its data files: the shards of a `steel data convert` or `clean` output.
    inputs, skipped = split_readable(expand_inputs(args.inputs))
    recipe = load_recipe(args.recipe)
    if recipe.ignored_keys:
        print(f"recipe {recipe.name}: ignored keys: {', '.join(recipe.ignored_keys)}", file=sys.stderr)
    config = CleanConfig(
        recipe=recipe,
        inputs=[p.resolve() for p in inputs],
        output_dir=args.output,
        executor=args.executor,
        workers=args.workers or (os.cpu_count() or 1),
        compression="" if args.compression == "none" else args.compression,
        num_examples=args.num_examples,
        ray_cpus_per_task=args.ray_cpus_per_task,
        verbose=args.verbose,
        extra={"ray_address": args.ray_address},
        skipped_files=[skipped_file.to_dict() for skipped_file in skipped],
    )
    stats = run_clean(config)
    print(format_table(stats))
    print(f"wrote {args.output / 'shards'}, stats.json, examples/ and manifest.json")
    return 0


def split_readable(paths: list[Path]) -> tuple[list[Path], list["SkippedFile"]]:
    """Split inputs into files to clean and `SkippedFile`s: undetected encodings and empty files.

    The cleaning workers read UTF-8 and GBK/GB18030 only, so a file in another encoding is skipped
    and counted; `steel data convert --encoding NAME` turns it into UTF-8 JSONL. A file without
    records (only whitespace, `[]` or no Parquet rows) is skipped and counted too. Raises
    SystemExit when no input is left.
    """
    from steel.data.io import CONVERT_REMEDY, SkippedFile, detect_encodings

    encodings, skipped = detect_encodings(paths, remedy=CONVERT_REMEDY)
    readable = []
    for path in paths:
        if str(path) not in encodings:
            continue
        if _is_empty(path, encodings[str(path)]):
            skipped.append(SkippedFile(str(path), "the file is empty: it contains no records"))
            continue
        if encodings[str(path)] not in (None, "utf-8"):
            logger.info("input %s: detected encoding %s", path, encodings[str(path)])
        readable.append(path)

    input_order = {str(path): index for index, path in enumerate(paths)}
    skipped.sort(key=lambda skipped_file: input_order[skipped_file.path])
    for skipped_file in skipped:
        logger.warning("skipped input %s", skipped_file)
    if not readable:
        all_undetected = all(str(path) not in encodings for path in paths)
        problem = "no input could be read" if all_undetected else "no input contains records"
        raise SystemExit(f"{problem}:\n  " + "\n  ".join(map(str, skipped)))
    return readable, skipped


def _is_empty(path: Path, encoding: str | None) -> bool:
    from steel.data.io import is_empty_input

    try:
        return is_empty_input(path, encoding)
    except (OSError, ValueError):
        return False  # a corrupt file is left to the reader, which reports what it cannot read


def stats_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths", nargs="+", type=Path, metavar="PATH",
        help="output directories of `steel data clean`, or input files with --recipe",
    )  # fmt: skip
    parser.add_argument("--recipe", action="append", help="measure this recipe on the input files (repeatable) without writing shards")
    parser.add_argument("--max-docs", type=int, default=None, help="with --recipe: read at most this many documents")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")


def stats(args: argparse.Namespace) -> int:
    from steel.data.clean.recipe import load_recipe
    from steel.data.clean.stats import format_table, load_stats, measure_recipe

    if args.recipe:
        from steel.data.tokenize import expand_inputs

        inputs, skipped = split_readable(expand_inputs(args.paths))
        results = [measure_recipe(load_recipe(r), inputs, max_docs=args.max_docs) for r in args.recipe]
        for result in results:
            result["skipped_files"] = [skipped_file.to_dict() for skipped_file in skipped]
    else:
        results = [load_stats(p) for p in args.paths]

    if args.json:
        for result in results:
            for op in result["operators"]:
                op.pop("examples", None)
        print(json.dumps(results if len(results) > 1 else results[0], ensure_ascii=False, indent=2))
    else:
        print("\n\n".join(format_table(r) for r in results))
    return 0
