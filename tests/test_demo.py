import json
import os
import shutil
import signal
import subprocess
import sys
import time
from types import SimpleNamespace
from pathlib import Path

import pytest

from steel.demo import (
    EXIT_INTERRUPTED,
    REVIEW_OPTIONS,
    StageInterrupted,
    StageRunner,
    balanced_reviews,
    measured_seconds_per_step,
    recipe_summary,
    review_chat_sample,
    review_prompt_text,
    review_question,
)


def test_stage_reused_when_key_unchanged(tmp_path):
    calls = []

    def body(stage_dir: Path) -> dict:
        calls.append(stage_dir)
        (stage_dir / "out.txt").write_text("x")
        return {"value": len(calls)}

    first = StageRunner(tmp_path, fresh=False)
    assert first.run("a", {"n": 1}, [], body) == {"value": 1}
    second = StageRunner(tmp_path, fresh=False)
    assert second.run("a", {"n": 1}, [], body) == {"value": 1}
    assert len(calls) == 1
    assert second.timings["a"]["reused"] is True


def test_stage_reruns_when_settings_change(tmp_path):
    calls = []

    def body(stage_dir: Path) -> dict:
        calls.append(sorted(p.name for p in stage_dir.iterdir()))
        (stage_dir / "out.txt").write_text("x")
        return {}

    StageRunner(tmp_path, fresh=False).run("a", {"n": 1}, [], body)
    StageRunner(tmp_path, fresh=False).run("a", {"n": 2}, [], body)
    assert len(calls) == 2
    # The directory of the old settings was removed before the rerun.
    assert calls[1] == [".stage-key"]


def test_stage_reruns_when_input_stage_changes(tmp_path):
    calls = []

    def body(stage_dir: Path) -> dict:
        calls.append(1)
        return {}

    runner = StageRunner(tmp_path, fresh=False)
    runner.run("a", {"n": 1}, [], body)
    runner.run("b", {}, ["a"], body)
    runner = StageRunner(tmp_path, fresh=False)
    runner.run("a", {"n": 2}, [], body)
    runner.run("b", {}, ["a"], body)
    assert len(calls) == 4


def test_fresh_reruns_every_stage(tmp_path):
    calls = []

    def body(stage_dir: Path) -> dict:
        calls.append(1)
        return {}

    StageRunner(tmp_path, fresh=False).run("a", {}, [], body)
    StageRunner(tmp_path, fresh=True).run("a", {}, [], body)
    assert len(calls) == 2


def test_interrupted_stage_keeps_its_directory(tmp_path):
    def crash(stage_dir: Path) -> dict:
        (stage_dir / "checkpoint").write_text("step 5")
        raise KeyboardInterrupt

    with pytest.raises(StageInterrupted) as interrupted:
        StageRunner(tmp_path, fresh=False).run("train", {"steps": 10}, [], crash, resumable=True)
    assert interrupted.value.stage == "train"
    assert not (tmp_path / "stages" / "train.json").exists()

    seen = []

    def resume(stage_dir: Path) -> dict:
        seen.append((stage_dir / "checkpoint").read_text())
        return {}

    StageRunner(tmp_path, fresh=False).run("train", {"steps": 10}, [], resume, resumable=True)
    assert seen == ["step 5"]


def test_interrupted_plain_stage_starts_empty(tmp_path):
    def crash(stage_dir: Path) -> dict:
        (stage_dir / "part.jsonl").write_text("{}")
        raise KeyboardInterrupt

    with pytest.raises(StageInterrupted):
        StageRunner(tmp_path, fresh=False).run("sources", {}, [], crash)

    seen = []

    def list_files(stage_dir: Path) -> dict:
        seen.append(sorted(p.name for p in stage_dir.iterdir()))
        return {}

    StageRunner(tmp_path, fresh=False).run("sources", {}, [], list_files)
    assert seen == [[".stage-key"]]


def _writing_stage(calls: list):
    def body(stage_dir: Path) -> dict:
        calls.append(stage_dir)
        (stage_dir / "run").mkdir(exist_ok=True)
        (stage_dir / "data.jsonl").write_text("{}")
        return {"run_dir": str(stage_dir / "run"), "samples": 1}

    return body


def test_stage_reruns_when_result_path_missing(tmp_path, capsys):
    calls = []
    StageRunner(tmp_path, fresh=False).run("sft", {}, [], _writing_stage(calls))
    (tmp_path / "sft" / "run").rename(tmp_path / "moved-run")

    runner = StageRunner(tmp_path, fresh=False)
    result = runner.run("sft", {}, [], _writing_stage(calls))
    assert len(calls) == 2
    assert f"recorded output {tmp_path / 'sft' / 'run'} is missing" in capsys.readouterr().out
    assert runner.timings["sft"]["reused"] is False
    assert Path(result["run_dir"]).is_dir()


def test_stage_reruns_when_declared_output_missing(tmp_path):
    calls = []
    StageRunner(tmp_path, fresh=False).run("sft", {}, [], _writing_stage(calls), outputs=("data.jsonl",))
    StageRunner(tmp_path, fresh=False).run("sft", {}, [], _writing_stage(calls), outputs=("data.jsonl",))
    assert len(calls) == 1

    (tmp_path / "sft" / "data.jsonl").unlink()
    StageRunner(tmp_path, fresh=False).run("sft", {}, [], _writing_stage(calls), outputs=("data.jsonl",))
    assert len(calls) == 2


def test_old_marker_checks_result_paths(tmp_path):
    calls = []
    StageRunner(tmp_path, fresh=False).run("sft", {}, [], _writing_stage(calls))
    # A marker written before outputs and run ids were recorded.
    marker = tmp_path / "stages" / "sft.json"
    record = json.loads(marker.read_text(encoding="utf-8"))
    del record["outputs"], record["run_id"]
    marker.write_text(json.dumps(record), encoding="utf-8")

    runner = StageRunner(tmp_path, fresh=False)
    runner.run("sft", {}, [], _writing_stage(calls))
    assert len(calls) == 1
    assert runner.run_ids["sft"] == record["key"]

    shutil.rmtree(tmp_path / "sft" / "run")
    StageRunner(tmp_path, fresh=False).run("sft", {}, [], _writing_stage(calls))
    assert len(calls) == 2


def test_redone_stage_reruns_its_readers(tmp_path):
    calls = []

    def evaluate(stage_dir: Path) -> dict:
        calls.append("evaluate")
        return {}

    runner = StageRunner(tmp_path, fresh=False)
    runner.run("sft", {}, [], _writing_stage(calls))
    runner.run("evaluate", {}, ["sft"], evaluate)
    shutil.rmtree(tmp_path / "sft" / "run")

    runner = StageRunner(tmp_path, fresh=False)
    runner.run("sft", {}, [], _writing_stage(calls))
    runner.run("evaluate", {}, ["sft"], evaluate)
    assert calls.count("evaluate") == 2

    # Both are reused once their outputs exist again.
    runner = StageRunner(tmp_path, fresh=False)
    runner.run("sft", {}, [], _writing_stage(calls))
    runner.run("evaluate", {}, ["sft"], evaluate)
    assert len(calls) == 4


# Runs `steel demo --fast` with its first stage replaced by `steel tokenizer encode`, which blocks
# reading standard input, so the test can interrupt a stage while its child process runs.
BLOCKING_DEMO = """
import signal
import sys

import steel.demo
from steel.cli import main

# A shell starts background jobs with SIGINT ignored; act like a foreground command in a terminal.
signal.signal(signal.SIGINT, signal.default_int_handler)


def sources(self):
    return self.stages.run("sources", {}, [], lambda stage_dir: steel.demo.run_steel("tokenizer", "encode"))


steel.demo.Demo.sources = sources
sys.exit(main(["demo", "--fast", "--output", sys.argv[1]]))
"""


def _child_pids(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in children.read_text().split()] if children.exists() else []


def _wait_for_child(parent: subprocess.Popen) -> int:
    """Return the pid of the parent's child once it runs `steel tokenizer encode`."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and parent.poll() is None:
        for pid in _child_pids(parent.pid):
            try:
                if b"tokenizer" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return pid
            except FileNotFoundError:
                pass
        time.sleep(0.1)
    raise AssertionError(f"the demo started no `steel tokenizer encode` child; exit status {parent.poll()}")


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the child process through /proc")
@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_stops_stage_and_child(tmp_path, signal_number):
    script = tmp_path / "blocking_demo.py"
    script.write_text(BLOCKING_DEMO, encoding="utf-8")
    output = tmp_path / "demo"
    demo = subprocess.Popen(
        [sys.executable, str(script), str(output)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        child = _wait_for_child(demo)
        # Popen returns once the child has run exec; give it that moment before the signal.
        time.sleep(0.5)
        demo.send_signal(signal_number)
        stdout, stderr = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()

    assert demo.returncode == EXIT_INTERRUPTED
    assert "Traceback" not in stderr
    assert "interrupted during stage 'sources'" in stderr
    assert "run the same command again to continue" in stderr
    assert not _process_exists(child)
    assert not (output / "stages" / "sources.json").exists()


def _reviews(count_pos: int, count_neg: int) -> list[dict]:
    reviews = [{"id": f"p{i}", "text": f"好评{i}", "label": "正面"} for i in range(count_pos)]
    reviews += [{"id": f"n{i}", "text": f"差评{i}", "label": "负面"} for i in range(count_neg)]
    return reviews


def test_balanced_reviews_half_each_label():
    picked = balanced_reviews(_reviews(30, 50), 40, seed=1)
    labels = [r["label"] for r in picked]
    assert labels.count("正面") == 20
    assert labels.count("负面") == 20
    assert len({r["id"] for r in picked}) == 40


def test_balanced_reviews_deterministic():
    assert balanced_reviews(_reviews(30, 50), 40, seed=1) == balanced_reviews(_reviews(30, 50), 40, seed=1)


def test_balanced_reviews_too_few_fails():
    with pytest.raises(SystemExit, match="only 5 held-out reviews"):
        balanced_reviews(_reviews(5, 50), 40, seed=1)


def test_sft_sample_matches_scorer_prompt():
    review = {"id": "r1", "text": "质量很好，推荐购买。", "label": "负面"}
    sample = review_chat_sample(review, 0)
    question = review_question(review, 0)
    assert sample["messages"][0] == {"role": "user", "content": review_prompt_text(question)}
    assert sample["messages"][1] == {"role": "assistant", "content": "负面"}
    assert question.answer == "B"
    assert question.options == REVIEW_OPTIONS
    assert "质量很好，推荐购买。" in sample["messages"][0]["content"]
    assert sample["messages"][0]["content"].endswith("答案：")


def test_seconds_per_step_is_median_without_first_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    records = [{"kind": "start", "step": 0, "time": 0.0}]
    records += [{"kind": "train", "step": s, "time": t} for s, t in [(1, 100.0), (2, 102.0), (3, 104.0), (4, 110.0), (5, 112.0)]]
    path.write_text("\n".join(json.dumps(r) for r in records))
    assert measured_seconds_per_step(path) == 2.0


def test_recipe_summary_counts_removals():
    stats = {
        "totals": {"documents_in": 10, "documents_out": 4},
        "operators": [
            {"operator": "words_num_filter", "docs_removed": 5},
            {"operator": "clean_html_mapper", "docs_removed": 0},
            {"operator": "text_length_filter", "docs_removed": 1},
        ],
    }
    summary = recipe_summary(stats)
    assert summary["kept_fraction"] == 0.4
    assert summary["top_removals"] == [("words_num_filter", 5), ("text_length_filter", 1)]


def test_demo_rejects_bad_budget():
    result = subprocess.run(
        [sys.executable, "-m", "steel", "demo", "--steps", "0"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "--steps must be at least 1" in result.stderr


@pytest.mark.timeout(1800)
def test_fast_demo_end_to_end(tmp_path):
    output = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "steel", "demo", "--fast", "--output", str(output)],
        capture_output=True, text=True, timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"report: {output / 'report.md'}" in result.stdout

    report = json.loads((output / "report.json").read_text(encoding="utf-8"))
    for chart in report["charts"].values():
        assert (output / chart).is_file()
    assert (output / "report.md").read_text(encoding="utf-8").startswith("# Steel demo report (fast)")

    assert report["validation"]["loss"] < report["unigram_baseline_loss"]
    assert report["sentiment"]["sft"]["questions"] == 200
    assert report["sentiment"]["sft"]["accuracy"] >= 0.65
    assert report["contamination"]["exact_in_pretraining"] == 0
    assert report["contamination"]["exact_in_sft"] == 0
    assert report["contamination"]["ngram_overlap_flagged"] == 0

    # A rerun reuses every stage.
    rerun = subprocess.run(
        [sys.executable, "-m", "steel", "demo", "--fast", "--output", str(output)],
        capture_output=True, text=True, timeout=600,
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert rerun.stdout.count(": reused") >= 8


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_full_demo_reaches_targets(tmp_path):
    output = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "steel", "demo", "--output", str(output)], capture_output=True, text=True, timeout=3600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((output / "report.json").read_text(encoding="utf-8"))
    assert report["unigram_baseline_loss"] - report["validation"]["loss"] >= 0.5
    assert report["sentiment"]["sft"]["questions"] >= 500
    assert report["sentiment"]["sft"]["accuracy"] >= 0.80


# The fields of a steel-tiny `model_config.json` that the report reads.
TINY_MODEL_CONFIG = {
    "model_type": "steel",
    "ffn_type": "soft_moe_causal",
    "n_experts": 4,
    "num_hidden_layers": 2,
    "hidden_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 300,
    "max_position_embeddings": 256,
}


def _training_run(run_dir: Path) -> int:
    """Write a run directory with one checkpoint and two logged steps, and return its parameter count."""
    import numpy as np
    from safetensors.numpy import save_file

    checkpoint = run_dir / "checkpoints" / "step-00000002"
    checkpoint.mkdir(parents=True)
    (checkpoint / "checkpoint.json").write_text(json.dumps({"stage": "pretrain"}), encoding="utf-8")
    (checkpoint / "model_config.json").write_text(json.dumps(TINY_MODEL_CONFIG), encoding="utf-8")
    weights = {"embed_tokens.weight": np.zeros((300, 128), np.float32), "norm.weight": np.ones(128, np.float32)}
    save_file(weights, str(checkpoint / "model.safetensors"))

    records = [{"kind": "start", "step": 0}]
    records += [{"kind": "train", "step": s, "tokens": 100 * s, "loss": 5.0 - s, "lr": 1e-3} for s in (1, 2)]
    (run_dir / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return 300 * 128 + 128


def _finished_demo(output: Path):
    from steel.demo import PROFILES

    parameters = _training_run(output / "pretrain" / "run")
    _training_run(output / "sft" / "run")
    contamination = {"exact_in_pretraining": 0, "exact_in_sft": 0, "ngram_overlap_flagged": 1}
    results = {
        "sources": {"news_documents": 3, "train_reviews": 4, "heldout_reviews": 2, "train_review_labels": {"正面": 2, "负面": 2}},
        "clean": {"recipes": [{"recipe": "zh-web", "documents_in": 7, "documents_out": 6, "kept_fraction": 6 / 7, "top_removals": []}]},
        "tokens": {
            "totals": {"train_tokens": 900, "validation_tokens": 100},
            "tokens_by_source": {"news": 600, "reviews": 400},
            "tokens_by_language": {"zh": 1000},
        },
        "pretrain": {"run_dir": str(output / "pretrain" / "run"), "steps": 2},
        "sft": {"run_dir": str(output / "sft" / "run"), "samples": 4},
        "evaluate": {
            "validation": {"loss": 5.0, "ppl": 148.4, "bits_per_char": 7.0},
            "unigram_baseline_loss": 5.2,
            "loss_below_unigram": 0.2,
            "sentiment": {"base": {"accuracy": 0.5, "questions": 200}, "sft": {"accuracy": 0.7, "questions": 200}},
            "majority_baseline": 0.5,
            "contamination": contamination,
        },
        "chat": {"replies": [{"prompt": "请介绍一下北京。", "reply": "负面"}]},
    }
    stages = SimpleNamespace(results=results, timings={name: {"seconds": 1.0, "reused": False} for name in results})
    demo = SimpleNamespace(output=output, profile=PROFILES["fast"], settings=SimpleNamespace(tokenizer="bpe"), stages=stages)
    return demo, parameters


def test_report_names_model_and_explains_checks(tmp_path):
    from steel.demo_report import write_report

    demo, parameters = _finished_demo(tmp_path)
    markdown = write_report(demo, 60.0).read_text(encoding="utf-8")
    report = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))

    assert report["model"]["preset"] == "steel-tiny"
    assert report["model"]["parameters"] == parameters
    assert report["model"]["causal"] is True
    assert f"`steel-tiny`, {parameters / 1e6:.2f}M parameters" in markdown
    assert "FFN `soft_moe_causal` (causal, 4 experts)" in markdown

    assert report["checks"] == {
        "loss_below_unigram": True,
        "loss_at_least_0.5_nats_below_unigram": False,
        "sft_accuracy_at_least_0.65": True,
        "no_heldout_review_in_training_data": False,
    }
    assert "- FAIL `loss_at_least_0.5_nats_below_unigram`: that gap is at least 0.5 nats per token" in markdown
    assert "near-duplicate: 1 found" in markdown
    assert "labelled 70.0%" in markdown

    assert "nats per token" in markdown
    assert "counts the assistant's tokens only" in markdown
    assert "fine-tuned on review-sentiment classification only" in markdown
    for chart in ("pretrain-loss", "pretrain-lr", "sft-loss", "sft-lr", "corpus", "evaluation"):
        assert (tmp_path / report["charts"][chart]).is_file()
