"""Convert source files to JSONL shards in parallel, one work unit per process, streaming.

Each work unit (usually one input file) is read by its adapter and written to its own shards,
`{source}-{unit:05d}-{part:04d}.jsonl[.gz|.zst]`, so units never share a file and a crash leaves
only whole shards behind. Records whose `split` is `heldout` go to `heldout/` instead, so that a
later stage reading the output directory's shards never reads evaluation data by accident.
`summary.json` records the inputs with their encodings, the shards (paths relative to the output
directory) with their record counts, and every bad or skipped record by reason, with examples
naming file and line.
An input whose encoding is not detected is left out whole and listed under `skipped_files`, and
the other inputs are still converted.
"""

import logging
import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from steel.data.io import (
    ENCODING_OPTION_REMEDY,
    SkippedFile,
    check_output_dir,
    data_suffix,
    detect_encodings,
    make_output_dir,
    open_output,
    write_json,
)
from steel.data.langid import detect_language
from steel.data.sources.base import ConversionLog, ReadOptions, get_adapter

logger = logging.getLogger(__name__)

SUMMARY_NAME = "summary.json"
HELDOUT_DIR = "heldout"
COMPRESSION_SUFFIXES = {"none": "", "gz": ".gz", "zst": ".zst"}


@dataclass(frozen=True)
class ConvertConfig:
    """Settings of one conversion run."""

    source: str  # adapter name, as listed by `steel data sources`
    output_dir: Path
    compress: str = "none"  # "none", "gz" or "zst"
    shard_records: int = 100_000  # records per output shard before a new one starts
    language: str | None = None  # keep only records whose text is in this language ("zh", "en", "other")
    num_workers: int | None = None  # processes; None uses one per CPU, at most one per work unit
    options: ReadOptions = ReadOptions()


class ShardWriter:
    """Writes records to numbered JSONL shards of at most `max_records` each, atomically."""

    def __init__(self, output_dir: Path, subdirectory: str, prefix: str, suffix: str, max_records: int):
        self.output_dir = output_dir
        self.subdirectory = subdirectory  # "" or HELDOUT_DIR
        self.prefix = prefix
        self.suffix = suffix
        self.max_records = max_records
        self.shards: list[dict[str, Any]] = []  # {"path" relative to output_dir, "records"} per finished shard
        self._context = None
        self._writer = None

    def write(self, record: dict) -> None:
        if self._writer is None or self._writer.num_records >= self.max_records:
            self._finish_shard()
            self._start_shard()
        self._writer.write(record)

    def _start_shard(self) -> None:
        name = f"{self.prefix}-{len(self.shards):04d}.jsonl{self.suffix}"
        self._relative_path = f"{self.subdirectory}/{name}" if self.subdirectory else name
        self._context = open_output(self.output_dir / self._relative_path)
        self._writer = self._context.__enter__()

    def _finish_shard(self, error: BaseException | None = None) -> None:
        if self._context is None:
            return
        context, self._context = self._context, None
        if error is None:
            context.__exit__(None, None, None)
            self.shards.append({"path": self._relative_path, "records": self._writer.num_records})
        else:
            context.__exit__(type(error), error, error.__traceback__)
        self._writer = None

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        self._finish_shard(exc)


def convert_unit(
    config: ConvertConfig, unit_index: int, unit: tuple[Path, ...], progress: tqdm | None = None
) -> dict[str, Any]:
    """Convert one work unit to shards; return its counts, shards and log (JSON-able)."""
    adapter = get_adapter(config.source)
    log = ConversionLog()
    suffix = COMPRESSION_SUFFIXES[config.compress]
    prefix = f"{config.source}-{unit_index:05d}"
    num_characters = 0
    labels: Counter = Counter()

    with (
        ShardWriter(config.output_dir, "", prefix, suffix, config.shard_records) as writer,
        ShardWriter(config.output_dir, HELDOUT_DIR, prefix, suffix, config.shard_records) as heldout_writer,
    ):
        for record in adapter.read(unit, config.options, log):
            if config.language is not None:
                language = detect_language(_language_text(record))
                if language != config.language:
                    log.skip(f"language is {language}, not {config.language}")
                    continue
            if progress is not None:
                progress.update()
            is_heldout = record.get("split") == "heldout"
            (heldout_writer if is_heldout else writer).write(record)
            num_characters += len(record["text"])
            if "label" in record:
                labels[record["label"]] += 1

    num_records = sum(shard["records"] for shard in writer.shards)
    num_heldout = sum(shard["records"] for shard in heldout_writer.shards)
    return {
        "inputs": [str(path) for path in unit],
        "records": num_records,
        "heldout_records": num_heldout,
        "characters": num_characters,
        "labels": dict(labels),
        "shards": writer.shards,
        "heldout_shards": heldout_writer.shards,
        "bad": log.bad.to_dict(),
        "skipped": dict(log.skipped),
    }


def _language_text(record: dict) -> str:
    # Dialogue is judged by its turns, without the role labels of the plain-text rendering.
    if "messages" in record:
        return "\n".join(message["content"] for message in record["messages"])
    return record["text"]


def _check_encodings(
    inputs: list[Path], encoding: str | None
) -> tuple[list[Path], dict[str, str | None], list[SkippedFile]]:
    """Split `inputs` into files to convert, with their encodings, and files of an undetected encoding.

    Returns the readable files, the encoding of each by path (`encoding` when given, None for
    Parquet) and the skipped files. The check runs before any output is written, so a skipped file
    leaves no partial shard.
    """
    if encoding:
        return inputs, {str(path): None if data_suffix(path) == ".parquet" else encoding for path in inputs}, []

    encodings, skipped = detect_encodings(inputs, remedy=ENCODING_OPTION_REMEDY)
    for path, detected in encodings.items():
        # Plain UTF-8 is the usual case, so only other detections are logged where a user sees them.
        level = logging.DEBUG if detected in (None, "utf-8") else logging.INFO
        logger.log(level, "input %s: detected encoding %s", path, detected)
    for skipped_file in skipped:
        logger.warning("skipped input %s", skipped_file)
    return [path for path in inputs if str(path) in encodings], encodings, skipped


def convert_source(config: ConvertConfig, inputs: list[Path], progress: bool = True) -> dict[str, Any]:
    """Convert `inputs` (or the adapter's embedded files when empty) and write `summary.json`.

    Returns the summary. Raises ValueError for an unknown source, missing inputs, or an output
    path that is a file, cannot be created or already contains a conversion. Without
    `options.encoding`, text files whose encoding is not detected are skipped and listed in the
    summary's `skipped_files`.
    """
    adapter = get_adapter(config.source)
    inputs = [Path(path) for path in inputs] or adapter.default_inputs()
    if not inputs:
        raise ValueError(f"source {config.source!r} needs INPUT files ({adapter.input_format})")
    missing = [str(path) for path in inputs if not path.is_file()]
    if missing:
        raise ValueError(f"input file not found: {', '.join(missing)}")
    _check_output_dir(config.output_dir)
    readable, encodings, skipped = _check_encodings(inputs, config.options.encoding)

    units = adapter.work_units(readable) if readable else []
    num_workers = max(min(config.num_workers or os.cpu_count() or 1, len(units)), 1)
    make_output_dir(config.output_dir)
    logger.info("converting %d input file(s) of %s with %d process(es)", len(readable), config.source, num_workers)

    start = time.perf_counter()
    results = _run_units(config, units, num_workers, progress)
    summary = _summarize(config, inputs, encodings, skipped, results, time.perf_counter() - start)
    write_json(config.output_dir / SUMMARY_NAME, summary)
    return summary


def _check_output_dir(output_dir: Path) -> None:
    """Raise ValueError when `output_dir` is a file or already contains a conversion."""
    check_output_dir(output_dir)
    if (output_dir / SUMMARY_NAME).exists():
        raise ValueError(f"{output_dir} already contains a conversion ({SUMMARY_NAME}); choose another --output directory")


def _run_units(config: ConvertConfig, units: list[tuple[Path, ...]], num_workers: int, progress: bool) -> list[dict]:
    results: list[dict | None] = [None] * len(units)
    description = f"convert {config.source}"
    if num_workers <= 1:
        # One process: count records, which also shows progress within a single large file.
        with tqdm(unit=" records", desc=description, disable=not progress) as bar:
            for index, unit in enumerate(units):
                results[index] = convert_unit(config, index, unit, progress=bar)
        return results

    with tqdm(total=len(units), unit=" files", desc=description, disable=not progress) as bar:
        with ProcessPoolExecutor(max_workers=num_workers) as pool:
            futures = {pool.submit(convert_unit, config, index, unit): index for index, unit in enumerate(units)}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.update()
    return results


def _summarize(
    config: ConvertConfig,
    inputs: list[Path],
    encodings: dict[str, str | None],
    skipped: list[SkippedFile],
    results: list[dict],
    elapsed_s: float,
) -> dict[str, Any]:
    log = ConversionLog()
    labels: Counter = Counter()
    for result in results:
        log.bad.counts.update(result["bad"]["by_reason"])
        for reason, examples in result["bad"]["examples"].items():
            kept = log.bad.examples.setdefault(reason, [])
            kept.extend(examples[: max(0, log.bad.max_examples - len(kept))])
        log.skipped.update(result["skipped"])
        labels.update(result["labels"])

    options = asdict(config.options)
    return {
        "source": config.source,
        "inputs": [str(path) for path in inputs],
        "input_encodings": encodings,
        "settings": {
            "compress": config.compress,
            "shard_records": config.shard_records,
            "language": config.language,
            **options,
        },
        "records": sum(result["records"] for result in results),
        "heldout_records": sum(result["heldout_records"] for result in results),
        "characters": sum(result["characters"] for result in results),
        "labels": dict(labels),
        "bad_records": log.bad.to_dict(),
        "skipped_records": {"total": sum(log.skipped.values()), "by_reason": dict(log.skipped)},
        "skipped_files": [skipped_file.to_dict() for skipped_file in skipped],
        "shards": [shard for result in results for shard in result["shards"]],
        "heldout_shards": [shard for result in results for shard in result["heldout_shards"]],
        "units": results,
        "elapsed_s": round(elapsed_s, 3),
    }
