"""Cleaning throughput: Steel's operators against py-data-juicer 1.6.1 on the same input, same run.

Both sides run the Steel-LLM text operator list (recipes/data/steel-text.yaml) with the same
semantics: word operators on jieba words (Data-Juicer's SentencePiece word model is replaced by
jieba, see bench/dj/jieba_words.py), SimHash over character 6-grams, and no perplexity filter (no
model on either side). Both use 2 processes and start as fresh processes; the wall time of each
command is measured. The input is the sample corpora, converted to `{"text"}` JSONL and repeated.

Setup once: `bash bench/dj/setup.sh` (Data-Juicer in its own virtualenv, bench/.dj-venv).
Run: `.venv/bin/python bench/bench_clean.py --samples DIR` where DIR contains the sample files
(2021-31_zh_head_0000_sample.jsonl, wikipedia-cn-20230720-filtered_sample.json,
563w_baidubaike_sample.json, the Zhihu Parquet sample). `--profile` also times each Steel
operator in one process.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from steel.data import io  # noqa: E402

DJ_PYTHON = REPO / "bench" / ".dj-venv" / "bin" / "python"
NUM_PROCESSES = 2


def sample_texts(samples: Path) -> list[str]:
    """Chinese documents from the sample corpora as plain text."""
    texts = []
    for _, record in io.iter_records(samples / "2021-31_zh_head_0000_sample.jsonl"):
        texts.append(record["text"])
    for _, record in io.iter_records(samples / "wikipedia-cn-20230720-filtered_sample.json"):
        texts.append(record["completion"])
    for _, record in io.iter_records(samples / "563w_baidubaike_sample.json"):
        parts = [record.get("title") or "", record.get("summary") or ""]
        for section in record.get("sections") or []:
            parts += [section.get("title") or "", section.get("content") or ""]
        texts.append("\n".join(p for p in parts if p))
    for zhihu in sorted(samples.glob("train-*-a1278ede4e8c5cdb_sample.parquet")):
        for _, record in io.iter_records(zhihu):
            texts.append(record["INSTRUCTION"] + "\n" + record["RESPONSE"])
    return texts


def write_input(texts: list[str], repeats: int, num_shards: int, directory: Path) -> tuple[int, int]:
    documents = [t for _ in range(repeats) for t in texts]
    for shard in range(num_shards):
        with io.open_output(directory / f"part-{shard:02d}.jsonl") as writer:
            for text in documents[shard::num_shards]:
                writer.write({"text": text})
    num_bytes = sum(p.stat().st_size for p in directory.glob("*.jsonl"))
    return len(documents), num_bytes


def benchmark_process_list() -> list[dict]:
    """Return the faithful text operators with jieba word operators, character SimHash and no perplexity."""
    recipe = yaml.safe_load((REPO / "recipes" / "data" / "steel-text.yaml").read_text(encoding="utf-8"))
    process = []
    for entry in recipe["process"]:
        (name, params), = entry.items()
        params = dict(params or {})
        if name == "perplexity_filter":
            continue
        if name in ("words_num_filter", "word_repetition_filter"):
            params["tokenization"] = True
        if name == "document_simhash_deduplicator":
            params["tokenization"] = "character"
        process.append({name: params or None})
    return process


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _process_tree_cpu(root_pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of `root_pid` and its descendants now alive, from /proc."""
    parents, cpu = {}, {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended meanwhile
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        cpu[pid] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    tree, frontier = {root_pid}, [root_pid]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    return {pid: cpu[pid] for pid in tree if pid in cpu}


def timed_run(command: list[str], poll_seconds: float = 0.2, **kwargs) -> tuple[float, float, subprocess.CompletedProcess]:
    """Run a command; return its wall seconds and the CPU seconds of its whole process tree.

    Worker processes that datatrove starts through a fork server are not waited for by the
    command, so `getrusage` misses them; the tree is sampled from /proc instead (a process that
    ends between two samples loses at most `poll_seconds` of its CPU time).
    """
    start = time.perf_counter()
    process = subprocess.Popen(command, **kwargs)
    seen: dict[int, float] = {}
    while process.poll() is None:
        seen.update(_process_tree_cpu(process.pid))
        time.sleep(poll_seconds)
    stdout, stderr = process.communicate()
    wall = time.perf_counter() - start
    result = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    return wall, sum(seen.values()), result


def run_steel(process: list[dict], input_dir: Path, work: Path) -> tuple[float, float]:
    recipe_path = work / "steel-bench.yaml"
    recipe_path.write_text(yaml.safe_dump({"name": "steel-text-bench", "compat": "data-juicer", "process": process}, allow_unicode=True))
    inputs = sorted(str(p) for p in input_dir.glob("*.jsonl"))
    command = [sys.executable, "-m", "steel", "data", "clean", "--recipe", str(recipe_path), *inputs,
               "--output", str(work / "steel-out"), "--workers", str(NUM_PROCESSES)]  # fmt: skip
    wall, cpu, result = timed_run(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if result.returncode != 0:
        raise SystemExit(f"steel data clean failed (exit {result.returncode}): {' '.join(command)}")
    return wall, cpu


def run_data_juicer(process: list[dict], input_dir: Path, work: Path) -> tuple[float, float]:
    config = {
        "project_name": "steel-bench",
        "dataset_path": str(input_dir),
        "export_path": str(work / "dj-out" / "result.jsonl"),
        "np": NUM_PROCESSES,
        "text_keys": "text",
        "use_cache": False,
        "open_tracer": False,
        "op_fusion": True,
        # Fuse operators that share words without first timing each one on a probe batch.
        "fusion_strategy": "greedy",
        "work_dir": str(work / "dj-work"),
        "process": process,
    }
    config_path = work / "dj.yaml"
    config_path.write_text(yaml.safe_dump(config, allow_unicode=True))
    env = {**os.environ, "UV_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    command = [str(DJ_PYTHON), str(REPO / "bench" / "dj" / "run_dj.py"), str(config_path)]
    log_path = work / "dj.log"  # a file, not a pipe: nothing reads a pipe while the run is sampled
    with open(log_path, "w") as log:
        wall, cpu, result = timed_run(command, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        sys.stderr.write(log_path.read_text(errors="replace")[-4000:])
        raise SystemExit(f"Data-Juicer failed (exit {result.returncode}); see the output above")
    return wall, cpu


def output_digests(output_dir: Path) -> dict[str, str]:
    """sha256 of every cleaned shard, stats.json and example file, by path under the output directory."""
    import hashlib

    paths = sorted([*output_dir.glob("shards/*"), output_dir / "stats.json", *output_dir.glob("examples/*")])
    return {str(p.relative_to(output_dir)): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def count_lines(directory: Path, pattern: str) -> int:
    return sum(sum(1 for _ in p.open(encoding="utf-8")) for p in directory.glob(pattern))


def profile_steel(process: list[dict], texts: list[str]) -> tuple[list[tuple[str, float]], float]:
    """CPU seconds per operator in one process, and the part of them spent in jieba segmentation.

    The documents go through the recipe once first, so that tables and jieba's dictionary are loaded
    before the timed pass.
    """
    from steel.data.clean import text as text_module
    from steel.data.clean.recipe import parse_recipe

    recipe = parse_recipe({"compat": "data-juicer", "process": process})
    seconds = {op.label: 0.0 for op in recipe.per_document}
    segmentation = [0.0]
    segment = text_module.jieba_words

    def timed_segment(text: str) -> list[str]:
        start = time.process_time()
        words = segment(text)
        segmentation[0] += time.process_time() - start
        return words

    for timed in (False, True):
        text_module.jieba_words = timed_segment if timed else segment
        try:
            for text in texts:
                _profile_document(recipe, text, seconds if timed else None)
        finally:
            text_module.jieba_words = segment
    return sorted(seconds.items(), key=lambda item: -item[1]), segmentation[0]


def _profile_document(recipe, text: str, seconds: dict[str, float] | None) -> None:
    """Run the per-document operators on one text as `steel data clean` does, adding up CPU time per operator."""
    from steel.data.clean.text import TextView

    def run(op, call):
        start = time.process_time()
        result = call()
        if seconds is not None:
            seconds[op.label] += time.process_time() - start
        return result

    for op in recipe.per_document:
        if op.kind == "mapper":
            text = run(op, lambda: op.map(text))  # noqa: B023 (called at once)
    view = TextView(text)
    for op in recipe.per_document:
        if op.kind == "filter" and not op.skip_reason:
            keep, _ = run(op, lambda: op.decide(view))  # noqa: B023 (called at once)
            if not keep:
                break


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=Path, help="directory with the sample corpora (required to run)")
    parser.add_argument("--repeats", type=int, default=3, help="times the sample documents are repeated")
    parser.add_argument("--shards", type=int, default=4, help="input files (Steel runs one task per file)")
    parser.add_argument("--profile", action="store_true", help="also time each Steel operator in one process")
    parser.add_argument("--skip-data-juicer", action="store_true", help="measure Steel only")
    parser.add_argument(
        "--digest", action="store_true",
        help="print the sha256 of Steel's output files, to check that a change keeps the output byte for byte",
    )  # fmt: skip
    args = parser.parse_args()
    if args.samples is None:
        print("skipped: bench_clean.py needs --samples DIR, the directory with the sample corpora")
        return
    if not args.skip_data_juicer and not DJ_PYTHON.is_file():
        print(f"{DJ_PYTHON} not found (run `bash bench/dj/setup.sh` to compare with Data-Juicer); measuring Steel only")
        args.skip_data_juicer = True

    texts = sample_texts(args.samples)
    process = benchmark_process_list()
    with tempfile.TemporaryDirectory(prefix="bench-clean-") as temp:
        work = Path(temp)
        input_dir = work / "input"
        num_docs, num_bytes = write_input(texts, args.repeats, args.shards, input_dir)
        print(f"input: {num_docs} documents, {num_bytes / 1e6:.1f} MB in {args.shards} shards; {NUM_PROCESSES} processes each")

        steel_wall, steel_cpu = run_steel(process, input_dir, work)
        steel_kept = count_lines(work / "steel-out" / "shards", "*.jsonl")
        if args.digest:
            for name, digest in output_digests(work / "steel-out").items():
                print(f"sha256 {digest}  {name}")
        rows = [("steel", steel_wall, steel_cpu, steel_kept)]
        if not args.skip_data_juicer:
            dj_wall, dj_cpu = run_data_juicer(process, input_dir, work)
            dj_kept = count_lines(work / "dj-out", "result.jsonl")
            rows.append(("data-juicer 1.6.1", dj_wall, dj_cpu, dj_kept))

        # Wall time is what a user waits; CPU time (all processes) is steadier on a shared machine.
        print(f"{'system':<20} {'wall s':>7} {'docs/s':>7} {'MB/s':>6} {'CPU s':>7} {'docs/CPU-s':>10} {'kept':>6}")
        for name, wall, cpu, kept in rows:
            print(
                f"{name:<20} {wall:>7.1f} {num_docs / wall:>7.0f} {num_bytes / 1e6 / wall:>6.2f} "
                f"{cpu:>7.1f} {num_docs / cpu:>10.0f} {kept:>6}"
            )
        if len(rows) == 2:
            print(f"speed ratio steel / data-juicer: {rows[1][1] / rows[0][1]:.2f}x wall, {rows[1][2] / rows[0][2]:.2f}x CPU")

        if args.profile:
            profile, segmentation = profile_steel(process, texts)
            total = sum(s for _, s in profile)
            print(f"\nsteel, one process, {len(texts)} documents, {total:.2f} CPU s; share of the time:")
            for label, seconds in profile[:12]:
                print(f"  {label:<38} {seconds:7.2f} s {100 * seconds / total:5.1f}%")
            print(f"  {'of which jieba segmentation':<38} {segmentation:7.2f} s {100 * segmentation / total:5.1f}%")

if __name__ == "__main__":
    main()
