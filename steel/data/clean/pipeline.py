"""`steel data clean` as datatrove pipelines: per-shard cleaning in parallel, then global dedup.

One datatrove task cleans one input file (its rank is the file's position on the command line):

    ReadShard -> ApplyOperator (one step per mapper or filter) -> ComputeSignatures -> WriteShard

Each step wraps a plain operator function from this package and writes its per-shard statistics
and examples under `OUTPUT/work/`. When the recipe has deduplicators, their signatures are matched
across all shards on one node (`find_duplicates`), and a second parallel stage writes each shard
without the duplicates. datatrove marks every finished task, so a rerun after a crash skips the
finished input shards. The output is the same whatever the number of workers.

Executors: `local` (datatrove's LocalPipelineExecutor, one process per core) and `ray`
(RayPipelineExecutor on a running or local Ray cluster). Slurm: see docs/data-cleaning.md.
"""

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from steel.data import io
from steel.data.clean import dedup
from steel.data.clean.console import DATATROVE_LOG_NAME, QuietLocalPipelineExecutor, datatrove_console, task_progress
from steel.data.clean.recipe import Recipe
from steel.data.clean.stats import (
    OperatorStats,
    merge_stats,
    truncate,
)
from steel.data.clean.text import TextView

logger = logging.getLogger(__name__)

NUM_EXAMPLES = 5
SIGNATURE_DTYPES = {"exact": np.dtype("S16"), "simhash": np.uint64}


@dataclass
class CleanConfig:
    recipe: Recipe
    inputs: list[Path]
    output_dir: Path
    executor: str = "local"
    workers: int = 0  # 0: one per CPU core
    compression: str = ""  # "", "gz" or "zst": suffix of the output shards
    num_examples: int = NUM_EXAMPLES
    ray_cpus_per_task: float = 1.0
    verbose: bool = False  # show datatrove's own log messages on stderr instead of work/logs/datatrove.log
    extra: dict[str, Any] = field(default_factory=dict)
    skipped_files: list[dict[str, str]] = field(default_factory=list)  # {"path", "reason"}: inputs left out whole

    @property
    def work_dir(self) -> Path:
        return self.output_dir / "work"

    def stage_log_dir(self, stage: str) -> Path:
        return self.work_dir / "logs" / stage

    def shard_name(self, rank: int) -> str:
        return f"{rank:05d}.jsonl" + (f".{self.compression}" if self.compression else "")


# ---------------------------------------------------------------------------------------------
# Pipeline steps


def _view(doc: Document) -> TextView:
    """Return the document's shared TextView, rebuilt when a mapper has changed the text since."""
    view = doc.metadata.get("view")
    if view is None or view.text is not doc.text:
        view = TextView(doc.text)
        doc.metadata["view"] = view
    return view


class ReadShard(PipelineStep):
    """Read input file number `rank` with steel.data.io; bad records are counted, never dropped silently."""

    name = "read shard"
    type = "steel"

    def __init__(self, inputs: list[str], text_key: str, work_dir: str):
        super().__init__()
        self.inputs, self.text_key, self.work_dir = inputs, text_key, work_dir

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        path = self.inputs[rank]
        bad = io.BadRecordLog()
        num_docs = num_chars = 0
        encoding = None if io.data_suffix(path) == ".parquet" else io.detect_encoding(path, io.CONVERT_REMEDY)
        for line_no, record in io.iter_records(path, encoding=encoding, on_bad=bad):
            text = record.get(self.text_key)
            if not isinstance(text, str):
                reason = f"missing field {self.text_key!r}" if text is None else f"field {self.text_key!r} is not a string"
                bad(io.BadRecord(path, line_no, reason))
                continue
            num_docs += 1
            num_chars += len(text)
            self.stat_update("documents")
            yield Document(text=text, id=f"{rank:05d}:{line_no}", metadata={"record": record})
        summary = {
            "path": path,
            "encoding": encoding,
            "documents": num_docs,
            "chars": num_chars,
            "bad_records": bad.to_dict(),
        }
        io.write_json(Path(self.work_dir) / "stats" / f"{rank:05d}" / "input.json", summary)


class ApplyOperator(PipelineStep):
    """One mapper or filter of the recipe, applied to every document, with its statistics and examples."""

    type = "steel"

    def __init__(self, operator, work_dir: str, num_examples: int = NUM_EXAMPLES):
        self.name = operator.label  # before PipelineStep.__init__, which names the step's datatrove stats
        super().__init__()
        self.operator, self.work_dir, self.num_examples = operator, work_dir, num_examples

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        op = self.operator
        stats = OperatorStats(op.label, op.name, op.kind, skipped=op.skip_reason)
        for doc in data:
            if op.skip_reason:
                yield doc
                continue
            stats.docs_in += 1
            stats.chars_in += len(doc.text)
            if op.kind == "mapper":
                before = doc.text
                doc.text = op.map(before)
                if doc.text != before:
                    stats.record_modified(doc.id, before, doc.text, self.num_examples)
                yield doc
            else:
                kept, value = op.decide(_view(doc))
                if kept:
                    yield doc
                else:
                    stats.record_removed(doc.id, doc.text, value, self.num_examples)
        io.write_json(Path(self.work_dir) / "stats" / f"{rank:05d}" / f"{op.label}.json", stats.to_dict())


def compute_signature(op, text: str):
    params = op.params
    if op.method == "exact":
        return dedup.content_hash(text, params["lowercase"], params["ignore_non_character"])
    if op.method == "simhash":
        return dedup.simhash(text, params["tokenization"], params["window_size"], params["lowercase"], params["ignore_pattern"])
    return dedup.minhash_signature(text, minhash_config(op))


def minhash_config(op) -> dedup.MinHashConfig:
    return dedup.MinHashConfig(**{k: v for k, v in op.params.items() if k != "backend"})


def _on_datatrove(op) -> bool:
    return op.method == "minhash" and op.params.get("backend") == "datatrove"


class ComputeSignatures(PipelineStep):
    """The per-document half of every deduplicator: hashes saved per shard for the global search."""

    name = "dedup signatures"
    type = "steel"

    def __init__(self, operators: list, work_dir: str):
        super().__init__()
        self.operators, self.work_dir = operators, work_dir

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        signatures: list[list] = [[] for _ in self.operators]
        lengths = []
        for doc in data:
            for i, op in enumerate(self.operators):
                signatures[i].append(compute_signature(op, doc.text))
            lengths.append(len(doc.text))
            yield doc
        directory = Path(self.work_dir) / "signatures"
        for op, values in zip(self.operators, signatures):
            if op.method == "minhash":
                array = np.stack(values) if values else np.zeros((0, op.params["num_permutations"]), np.uint64)
            else:
                array = np.array(values, dtype=SIGNATURE_DTYPES[op.method])
            _save_npy(directory / f"{op.label}.{rank:05d}.npy", array)
        _save_npy(directory / f"lengths.{rank:05d}.npy", np.array(lengths, dtype=np.int64))


def _save_npy(path: Path, array: np.ndarray) -> None:
    with io.atomic_path(path) as temp:
        with open(temp, "wb") as f:
            np.save(f, array, allow_pickle=False)


class WriteShard(PipelineStep):
    """Write the surviving documents of shard `rank`, with every field of the input record."""

    name = "write shard"
    type = "steel"

    def __init__(self, directory: str, shard_names: list[str], text_key: str, summary_dir: str):
        super().__init__()
        self.directory, self.shard_names, self.text_key, self.summary_dir = directory, shard_names, text_key, summary_dir

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> None:
        path = Path(self.directory) / self.shard_names[rank]
        num_docs = num_chars = 0
        with io.open_output(path) as writer:
            for doc in data:
                record = dict(doc.metadata["record"])
                record[self.text_key] = doc.text
                writer.write(record)
                num_docs += 1
                num_chars += len(doc.text)
                self.stat_update("documents")
        summary = {"shard": path.name, "documents": num_docs, "chars": num_chars, "sha256": io_sha256(path)}
        io.write_json(Path(self.summary_dir) / f"{rank:05d}.json", summary)
        # The last step of a pipeline: it consumes the documents and returns nothing to pipe on.


def io_sha256(path: Path) -> str:
    from steel.resources import sha256_file

    return sha256_file(path)


class DropDuplicates(PipelineStep):
    """Read a cleaned intermediate shard and leave out the documents that global dedup removed."""

    name = "drop duplicates"
    type = "steel"

    def __init__(self, directory: str, removed_path: str):
        super().__init__()
        self.directory, self.removed_path = directory, removed_path

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        removed = set(json.loads(Path(self.removed_path).read_text(encoding="utf-8"))["removed"].get(str(rank), []))
        path = Path(self.directory) / f"{rank:05d}.jsonl"
        for index, (line_no, record) in enumerate(io.iter_jsonl(path)):
            if index in removed:
                continue
            yield Document(text=record.pop("__text__"), id=f"{rank:05d}:{index}", metadata={"record": record})


# ---------------------------------------------------------------------------------------------
# Global dedup


def find_duplicates(config: CleanConfig) -> dict:
    """Match every deduplicator's signatures across all shards; return removed indices and stats."""
    recipe, work = config.recipe, config.work_dir
    num_shards = len(config.inputs)
    lengths = [np.load(work / "signatures" / f"lengths.{r:05d}.npy") for r in range(num_shards)]
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in lengths])])
    all_lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
    alive = np.ones(int(offsets[-1]), dtype=bool)
    stats_list = []

    def locate(global_index: int) -> tuple[int, int]:
        rank = int(np.searchsorted(offsets, global_index, side="right") - 1)
        return rank, int(global_index - offsets[rank])

    text_cache: dict[int, list[str]] = {}

    def text_of(global_index: int) -> str:
        rank, index = locate(global_index)
        if rank not in text_cache:
            text_cache.clear()  # keep one shard in memory
            path = work / "cleaned" / f"{rank:05d}.jsonl"
            text_cache[rank] = [record["__text__"] for _, record in io.iter_jsonl(path)]
        return text_cache[rank][index]

    for op in recipe.deduplicators:
        stats = OperatorStats(op.label, op.name, op.kind)
        alive_indices = np.flatnonzero(alive)
        if _on_datatrove(op):
            duplicates, extra = _resolve_clusters(op, work, num_shards, offsets, alive_indices)
        else:
            duplicates, extra = _match_signatures(op, work, num_shards, alive_indices, text_of)
        stats.docs_in = len(alive_indices)
        stats.chars_in = int(all_lengths[alive_indices].sum())
        for local, kept_local in sorted(duplicates.items()):
            global_index, kept_index = int(alive_indices[local]), int(alive_indices[kept_local])
            alive[global_index] = False
            stats.docs_removed += 1
            stats.chars_removed += int(all_lengths[global_index])
            if len(stats.examples) < config.num_examples:
                rank, index = locate(global_index)
                kept_rank, kept_in_shard = locate(kept_index)
                stats.examples.append(
                    {
                        "id": f"{rank:05d}:{index}",
                        "duplicate_of": f"{kept_rank:05d}:{kept_in_shard}",
                        "text": truncate(text_of(global_index)),
                        "kept_text": truncate(text_of(kept_index)),
                    }
                )
        stats.extra.update(extra)
        stats_list.append(stats.to_dict())
        logger.info("%s: %d of %d documents are duplicates", op.label, stats.docs_removed, stats.docs_in)

    removed: dict[str, list[int]] = {}
    for global_index in np.flatnonzero(~alive):
        rank, index = locate(int(global_index))
        removed.setdefault(str(rank), []).append(index)
    return {"removed": removed, "stats": stats_list}


def _match_signatures(op, work: Path, num_shards: int, alive_indices: np.ndarray, text_of) -> tuple[dict[int, int], dict]:
    """Map each duplicate among the surviving documents to the one it duplicates (local indices)."""
    parts = [np.load(work / "signatures" / f"{op.label}.{r:05d}.npy") for r in range(num_shards)]
    candidates = (np.concatenate(parts) if parts else np.zeros(0))[alive_indices]
    if op.method == "exact":
        return dedup.find_exact_duplicates([bytes(s) for s in candidates]), {}
    if op.method == "simhash":
        fingerprints = [int(s) for s in candidates]
        return dedup.find_simhash_duplicates(fingerprints, op.params["num_blocks"], op.params["hamming_distance"]), {}
    config = minhash_config(op)
    return dedup.find_minhash_duplicates(candidates, config, lambda i: dedup.shingle_set(text_of(int(alive_indices[i])), config))


def _resolve_clusters(op, work: Path, num_shards: int, offsets: np.ndarray, alive_indices: np.ndarray):
    """Map each surviving duplicate of datatrove's clusters to the first survivor of its cluster."""
    from steel.data.clean.dedup_datatrove import read_clusters

    clusters, counts = read_clusters(op, work, num_shards)
    local_of = {int(g): i for i, g in enumerate(alive_indices)}
    duplicates = {}
    for members in clusters:
        survivors = sorted(local_of[g] for g in (int(offsets[s]) + d for s, d in members) if g in local_of)
        for local in survivors[1:]:
            duplicates[local] = survivors[0]
    return duplicates, counts


# ---------------------------------------------------------------------------------------------
# Running


def _plan(config: CleanConfig) -> dict:
    return {
        "inputs": [str(p) for p in config.inputs],
        "recipe_source": config.recipe.source,
        "recipe_fingerprint": config.recipe.fingerprint(),
        "compression": config.compression,
        "num_examples": config.num_examples,
        "skipped_files": config.skipped_files,
    }


def finish_from_plan(output_dir: Path) -> dict:
    """Merge the statistics of a run whose stages ran elsewhere (Slurm), from its work/plan.json."""
    from steel.data.clean.recipe import load_recipe

    plan = json.loads((output_dir / "work" / "plan.json").read_text(encoding="utf-8"))
    recipe = load_recipe(plan["recipe_source"])
    if recipe.fingerprint() != plan["recipe_fingerprint"]:
        raise SystemExit(f"{plan['recipe_source']} changed since the run in {output_dir} started; restore it to merge the statistics")
    config = CleanConfig(
        recipe,
        [Path(p) for p in plan["inputs"]],
        output_dir,
        compression=plan["compression"],
        num_examples=plan["num_examples"],
        skipped_files=plan.get("skipped_files", []),
    )
    return finish(config)


def _prepare_output(config: CleanConfig) -> None:
    """Create the work directory; a rerun must clean the same inputs with the same recipe."""
    try:
        io.make_output_dir(config.work_dir.parent)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    config.work_dir.mkdir(exist_ok=True)
    plan_path = config.work_dir / "plan.json"
    plan = _plan(config)
    if plan_path.is_file():
        previous = json.loads(plan_path.read_text(encoding="utf-8"))
        previous.setdefault("skipped_files", [])  # absent from plans written before files were skipped
        if previous != plan:
            raise SystemExit(
                f"{config.output_dir} contains a run with other inputs or another recipe; "
                "give a new --output directory or delete this one"
            )
        logger.info("resuming the run in %s: finished input shards are skipped", config.output_dir)
    else:
        io.write_json(plan_path, plan)


def _executor(config: CleanConfig, pipeline: list, stage: str, num_tasks: int):
    workers = min(config.workers or os.cpu_count() or 1, num_tasks)
    logging_dir = str(config.stage_log_dir(stage))
    if config.executor == "local" and config.verbose:
        from datatrove.executor import LocalPipelineExecutor

        return LocalPipelineExecutor(pipeline, tasks=num_tasks, workers=workers, logging_dir=logging_dir, skip_completed=True)
    if config.executor == "local":
        return QuietLocalPipelineExecutor(
            pipeline,
            tasks=num_tasks,
            workers=workers,
            logging_dir=logging_dir,
            skip_completed=True,
            datatrove_log=str(config.work_dir / "logs" / DATATROVE_LOG_NAME),
        )
    if config.executor == "ray":
        from datatrove.executor import RayPipelineExecutor
        return RayPipelineExecutor(
            pipeline,
            tasks=num_tasks,
            workers=workers,
            logging_dir=logging_dir,
            skip_completed=True,
            cpus_per_task=config.ray_cpus_per_task,
            mem_per_cpu_gb=config.extra.get("ray_mem_per_cpu_gb", 0.5),
        )
    raise SystemExit(f"unknown executor {config.executor!r}; use local or ray")


def _init_ray(address: str | None, num_cpus: int) -> bool:
    """Connect to the Ray cluster at `address`, or start a local one listening on 127.0.0.1 only.

    Returns whether this call started Ray (and so should shut it down).
    """
    if not address:
        # Ray 2.60 binds its gRPC and metrics servers to the machine's network address unless it
        # believes clusters are unsupported; this switch makes a local instance use the loopback
        # address for all of them. It must be set before Ray is imported, and its processes inherit it.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    return True


def build_stages(config: CleanConfig) -> list[tuple[str, list, int]]:
    """Build the datatrove stages of a run as (name, pipeline, number of tasks), to run in order.

    `clean` cleans each input file; with deduplicators, `dedup` matches their signatures across all
    shards in one task and `write` writes each shard without the duplicates. Any datatrove executor
    runs them (local, Ray, Slurm with `depends=` on the previous stage).
    """
    recipe, work = config.recipe, config.work_dir
    _prepare_output(config)
    inputs = [str(p) for p in config.inputs]
    num_shards = len(inputs)
    final_names = [config.shard_name(r) for r in range(num_shards)]
    shard_dir = str(config.output_dir / "shards")

    clean = [ReadShard(inputs, recipe.text_key, str(work))]
    clean += [ApplyOperator(op, str(work), config.num_examples) for op in recipe.per_document]
    if not recipe.deduplicators:
        clean.append(WriteShard(shard_dir, final_names, recipe.text_key, str(work / "shard_summary")))
        return [("clean", clean, num_shards)]

    # Before dedup the cleaned text is kept under "__text__", so no input field can collide with it.
    cleaned_names = [f"{r:05d}.jsonl" for r in range(num_shards)]
    clean.append(ComputeSignatures([op for op in recipe.deduplicators if not _on_datatrove(op)], str(work)))
    clean.append(WriteShard(str(work / "cleaned"), cleaned_names, "__text__", str(work / "cleaned_summary")))
    removed_path = str(work / "dedup" / "removed.json")
    write = [
        DropDuplicates(str(work / "cleaned"), removed_path),
        WriteShard(shard_dir, final_names, recipe.text_key, str(work / "shard_summary")),
    ]
    stages = [("clean", clean, num_shards)]
    for op in recipe.deduplicators:
        if _on_datatrove(op):
            from steel.data.clean.dedup_datatrove import build_minhash_stages

            stages += build_minhash_stages(op, work, num_shards)
    return stages + [("dedup", [FindDuplicates(config, removed_path)], 1), ("write", write, num_shards)]


class FindDuplicates(PipelineStep):
    """The global half of dedup: one task matches every shard's signatures and lists the duplicates."""

    name = "find duplicates"
    type = "steel"

    def __init__(self, config: CleanConfig, removed_path: str):
        super().__init__()
        self.config, self.removed_path = config, removed_path

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> None:
        logger.info("matching dedup signatures across %d shard(s)", len(self.config.inputs))
        io.write_json(self.removed_path, find_duplicates(self.config))


def run_clean(config: CleanConfig) -> dict:
    """Clean `config.inputs` with the recipe into `config.output_dir`; return the merged statistics."""
    stages = build_stages(config)
    logger.info("cleaning %d input shard(s) with recipe %s (%s executor)", len(config.inputs), config.recipe.name, config.executor)
    started_ray = False
    if config.executor == "ray":
        started_ray = _init_ray(config.extra.get("ray_address"), config.workers or os.cpu_count() or 1)
    # Ray workers' output never reaches this console (log_to_driver=False), so only this process
    # and the local executor's workers need their datatrove messages routed.
    datatrove_log = None if config.verbose else config.work_dir / "logs" / DATATROVE_LOG_NAME
    try:
        with datatrove_console(datatrove_log):
            for name, pipeline, num_tasks in stages:
                executor = _executor(config, pipeline, name, num_tasks)
                with task_progress(config.stage_log_dir(name) / "completions", name, num_tasks):
                    executor.run()
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    return finish(config)


def finish(config: CleanConfig) -> dict:
    """Merge per-shard statistics into stats.json, examples/ and manifest.json."""
    work, out, recipe = config.work_dir, config.output_dir, config.recipe
    removed_path = work / "dedup" / "removed.json"
    dedup_stats = json.loads(removed_path.read_text(encoding="utf-8"))["stats"] if recipe.deduplicators else []
    num_shards = len(config.inputs)
    inputs = [json.loads((work / "stats" / f"{r:05d}" / "input.json").read_text(encoding="utf-8")) for r in range(num_shards)]
    per_op = []
    for op in recipe.per_document:
        parts = [json.loads((work / "stats" / f"{r:05d}" / f"{op.label}.json").read_text(encoding="utf-8")) for r in range(num_shards)]
        per_op.append(merge_stats(parts, config.num_examples))
    per_op.extend(dedup_stats)
    shards = [json.loads((work / "shard_summary" / f"{r:05d}.json").read_text(encoding="utf-8")) for r in range(num_shards)]

    bad = io.BadRecordLog()
    for summary in inputs:
        counts = summary["bad_records"]["by_reason"]
        bad.counts.update(counts)
        for reason, examples in summary["bad_records"]["examples"].items():
            kept = bad.examples.setdefault(reason, [])
            kept.extend(examples[: max(0, bad.max_examples - len(kept))])

    totals = {
        "documents_in": sum(s["documents"] for s in inputs),
        "chars_in": sum(s["chars"] for s in inputs),
        "documents_out": sum(s["documents"] for s in shards),
        "chars_out": sum(s["chars"] for s in shards),
        "bad_records": bad.total,
    }
    stats = {
        "recipe": recipe.name,
        "totals": totals,
        "operators": [_without_examples(s) for s in per_op],
        "bad_records": bad.to_dict(),
        "skipped_files": config.skipped_files,
    }
    io.write_json(out / "stats.json", stats)

    examples_dir = out / "examples"
    if examples_dir.exists():
        shutil.rmtree(examples_dir)
    for s in per_op:
        if s["examples"]:
            with io.open_output(examples_dir / f"{s['label']}.jsonl") as writer:
                for example in s["examples"]:
                    writer.write(example)

    manifest = {
        "format": "steel-clean/1",
        "recipe": {**recipe.to_dict(), "source": recipe.source, "fingerprint": recipe.fingerprint(), "ignored_keys": recipe.ignored_keys},
        "inputs": [_manifest_input(s) for s in inputs],
        "skipped_files": config.skipped_files,
        "shards": shards,
        "totals": totals,
    }
    io.write_json(out / "manifest.json", manifest)
    return stats


def _manifest_input(summary: dict) -> dict:
    return {
        "path": summary["path"],
        "encoding": summary.get("encoding"),  # absent from runs started before encodings were recorded
        "documents": summary["documents"],
        "bad_records": summary["bad_records"]["total"],
    }


def _without_examples(stats: dict) -> dict:
    return {k: v for k, v in stats.items() if k != "examples"}
