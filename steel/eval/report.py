"""Result files and tables: JSON, Markdown, the C-Eval submission file and accuracy over tokens."""

import json
import os
import tempfile
from pathlib import Path

from steel.eval.benchmarks import get_benchmark
from steel.eval.results import QuestionResult

RESULT_FORMAT_VERSION = 1


def write_json_atomic(path: str | Path, value) -> Path:
    """Write JSON to a temporary file beside `path`, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, prefix=path.name, suffix=".tmp", delete=False) as file:
        json.dump(value, file, ensure_ascii=False, indent=2)
        file.write("\n")
    os.replace(file.name, path)
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, prefix=path.name, suffix=".tmp", delete=False) as file:
        file.write(text)
    os.replace(file.name, path)
    return path


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def benchmark_markdown(result: dict) -> str:
    """Render a benchmark result as Markdown: overall, per-category and per-subject accuracy."""
    task = result["task"]
    summary = result["summary"]
    subject_names = {key: s.name for key, s in get_benchmark(task).subjects.items()}
    overall = summary["overall"]
    protocol = result["protocol"]
    lines = [
        f"## {task} ({result['split']}), protocol {protocol['id']}",
        "",
        f"Model: `{result['model'].get('provenance', {}).get('source', '?')}`; mode {protocol['mode']}, "
        f"{protocol['shots']}-shot; {overall['num_questions']} questions at {result['questions_per_second']:.2f} questions/s.",
        "",
        "| group | accuracy (%) | macro (%) | correct | total |",
        "|---|---:|---:|---:|---:|",
        f"| **overall** | **{_percent(overall['accuracy'])}** | {_percent(overall['macro_accuracy'])} "
        f"| {overall['correct']} | {overall['total']} |",
    ]
    for name, row in summary["categories"].items():
        lines.append(
            f"| {name} | {_percent(row['accuracy'])} | {_percent(row['macro_accuracy'])} | {row['correct']} | {row['total']} |"
        )
    lines += ["", "| subject | name | category | accuracy (%) | correct | total |", "|---|---|---|---:|---:|---:|"]
    for key, row in summary["subjects"].items():
        lines.append(
            f"| {key} | {subject_names.get(key, key)} | {row['category']} | {_percent(row['accuracy'])} "
            f"| {row['correct']} | {row['total']} |"
        )

    notes = []
    if overall["unparseable"]:
        notes.append(f"{overall['unparseable']} replies had no readable answer letter and count as wrong.")
    if overall["over_context"]:
        notes.append(f"{overall['over_context']} prompts were longer than the context even without examples and were cut on the left.")
    if overall["unanswered"]:
        notes.append(f"{overall['unanswered']} questions have no answer in this split and count in no accuracy.")
    if result.get("data_problems"):
        notes.append(f"{len(result['data_problems'])} invalid data rows or files were skipped (listed in the JSON file).")
    if notes:
        lines += [""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def perplexity_markdown(result: dict) -> str:
    metrics = result["metrics"]
    return "\n".join([
        f"## perplexity on {result['data']}",
        "",
        f"Model: `{result['model'].get('provenance', {}).get('source', '?')}`",
        "",
        "| loss (nats/token) | perplexity | bits/char | bits/byte | tokens | characters | documents |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {metrics['loss']:.4f} | {metrics['ppl']:.2f} | {metrics['bits_per_char']:.4f} | {metrics['bits_per_byte']:.4f} "
        f"| {metrics['num_tokens']} | {metrics['num_chars']} | {metrics['num_documents']} |",
    ]) + "\n"


def ceval_submission(results: list[QuestionResult]) -> dict[str, dict[str, str]]:
    """Build the C-Eval test submission: `{subject: {question id: letter}}`.

    An unparseable reply still needs an entry, so it is submitted as "A" (and counted in the result file).
    """
    submission: dict[str, dict[str, str]] = {}
    for result in results:
        submission.setdefault(result.subject, {})[result.id] = result.prediction or "A"
    return submission


def plot_over_tokens(points: list[dict], path: str | Path, title: str, ylabel: str) -> Path:
    """Plot `value` against `tokens` (training tokens), one point per checkpoint."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = sorted(points, key=lambda p: p["tokens"])
    figure, axes = plt.subplots(figsize=(7, 4))
    axes.plot([p["tokens"] for p in points], [p["value"] for p in points], marker="o")
    axes.set_xlabel("training tokens")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp.png")
    figure.savefig(temporary, dpi=120)
    plt.close(figure)
    os.replace(temporary, path)
    return path
