"""The demo's report: `report.md`, `report.json` and PNG charts in the demo's output directory."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from steel.demo import Demo

# Thresholds the demo is expected to reach; the report marks each one PASS or FAIL.
MIN_NATS_BELOW_UNIGRAM = 0.5
MIN_SFT_ACCURACY = {"full": 0.80, "fast": 0.65}


def write_report(demo: Demo, total_seconds: float) -> Path:
    output = demo.output
    results = demo.stages.results
    charts = {
        "corpus": plot_corpus(results["tokens"]["tokens_by_source"], output / "corpus.png"),
        "evaluation": plot_evaluation(results["evaluate"], output / "evaluation.png"),
    }
    charts.update(copy_loss_charts(Path(results["pretrain"]["run_dir"]), output, "pretrain"))
    charts.update(copy_loss_charts(Path(results["sft"]["run_dir"]), output, "sft"))

    report = build_report_data(demo, total_seconds, charts)
    _write_text(output / "report.json", json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    _write_text(output / "report.md", render_markdown(report))
    return output / "report.md"


def build_report_data(demo: Demo, total_seconds: float, charts: dict[str, str]) -> dict:
    results = demo.stages.results
    evaluation = results["evaluate"]
    sft_accuracy = evaluation["sentiment"]["sft"]["accuracy"]
    required_accuracy = MIN_SFT_ACCURACY[demo.profile.name]
    return {
        "profile": demo.profile.name,
        "tokenizer": demo.settings.tokenizer,
        "total_seconds": total_seconds,
        "stages": demo.stages.timings,
        "corpus": results["sources"],
        "cleaning": results["clean"]["recipes"],
        "tokens": {k: results["tokens"][k] for k in ("totals", "tokens_by_source", "tokens_by_language")},
        "pretrain": {"steps": results["pretrain"]["steps"], "run_dir": results["pretrain"]["run_dir"]},
        "sft": {"samples": results["sft"]["samples"], "run_dir": results["sft"]["run_dir"]},
        "validation": evaluation["validation"],
        "unigram_baseline_loss": evaluation["unigram_baseline_loss"],
        "sentiment": evaluation["sentiment"],
        "majority_baseline": evaluation["majority_baseline"],
        "contamination": evaluation["contamination"],
        "chat": results["chat"]["replies"],
        "checks": {
            "loss_below_unigram": evaluation["loss_below_unigram"] > 0,
            "loss_at_least_0.5_nats_below_unigram": evaluation["loss_below_unigram"] >= MIN_NATS_BELOW_UNIGRAM,
            f"sft_accuracy_at_least_{required_accuracy}": sft_accuracy >= required_accuracy,
            "no_heldout_review_in_training_data": (
                evaluation["contamination"]["exact_in_pretraining"]
                + evaluation["contamination"]["exact_in_sft"]
                + evaluation["contamination"]["ngram_overlap_flagged"]
            )
            == 0,
        },
        "charts": charts,
    }


def render_markdown(report: dict) -> str:
    validation = report["validation"]
    sentiment = report["sentiment"]
    lines = [
        f"# Steel demo report ({report['profile']})",
        "",
        f"This run took {report['total_seconds'] / 60:.1f} min; the stages took "
        f"{sum(t['seconds'] for t in report['stages'].values()) / 60:.1f} min when they ran (reused stages "
        f"count with their original time). Tokenizer: {report['tokenizer']}.",
        "",
        "## Checks",
        "",
        *[f"- {'PASS' if passed else 'FAIL'}: {name}" for name, passed in report["checks"].items()],
        "",
        "## Stages",
        "",
        "| stage | seconds | reused |",
        "|---|---:|---|",
        *[f"| {name} | {t['seconds']:.0f} | {'yes' if t['reused'] else 'no'} |" for name, t in report["stages"].items()],
        "",
        "## Corpus",
        "",
        f"People's Daily documents: {report['corpus']['news_documents']:,}; training reviews: "
        f"{report['corpus']['train_reviews']:,} ({_label_counts(report['corpus'])}); held-out reviews: "
        f"{report['corpus']['heldout_reviews']:,}.",
        "",
        "| recipe | documents in | documents out | kept | largest removals |",
        "|---|---:|---:|---:|---|",
        *[
            f"| {r['recipe']} | {r['documents_in']:,} | {r['documents_out']:,} | {r['kept_fraction']:.1%} | "
            + ", ".join(f"{op} {n:,}" for op, n in r["top_removals"][:4])
            + " |"
            for r in report["cleaning"]
        ],
        "",
        "`zh-web` is the recommended Chinese recipe; `steel-text` is the faithful Data-Juicer recipe of the "
        "released run, measured on the same input for comparison.",
        "",
        f"Tokens: {report['tokens']['totals']['train_tokens']:,} training, "
        f"{report['tokens']['totals']['validation_tokens']:,} validation.",
        "",
        f"![corpus]({report['charts']['corpus']})",
        "",
        "## Pretraining",
        "",
        f"{report['pretrain']['steps']} optimizer steps.",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| validation loss (nats/token) | {validation['loss']:.3f} |",
        f"| add-one unigram loss on the same tokens | {report['unigram_baseline_loss']:.3f} |",
        f"| validation perplexity | {validation['ppl']:.1f} |",
        f"| bits per character | {validation['bits_per_char']:.3f} |",
        "",
        *[f"![{name}]({path})" for name, path in report["charts"].items() if name.startswith("pretrain")],
        "",
        "## Sentiment of held-out reviews",
        "",
        f"{sentiment['sft']['questions']} held-out reviews, balanced, posed as a two-option question "
        "(A. 正面 / B. 负面) through the multiple-choice scorer in generate mode; a reply without a letter is "
        "matched to the option texts.",
        "",
        "| model | accuracy |",
        "|---|---:|",
        f"| majority baseline | {report['majority_baseline']:.3f} |",
        f"| base (pretrained) | {sentiment['base']['accuracy']:.3f} |",
        f"| SFT | {sentiment['sft']['accuracy']:.3f} |",
        "",
        f"Held-out reviews found in pretraining text: {report['contamination']['exact_in_pretraining']}; "
        f"in SFT prompts: {report['contamination']['exact_in_sft']}; flagged by the 13-gram overlap search of "
        f"`steel eval contamination`: {report['contamination']['ngram_overlap_flagged']}. "
        f"Held-out reviews left out before sampling because they nearly duplicate training text: "
        f"{report['contamination'].get('heldout_excluded_as_near_duplicates', 0)}.",
        "",
        f"![evaluation]({report['charts']['evaluation']})",
        "",
        *[f"![{name}]({path})" for name, path in report["charts"].items() if name.startswith("sft")],
        "",
        "## Chat",
        "",
        *[f"- **用户**：{turn['prompt']}\n  **助手**：{turn['reply']}" for turn in report["chat"]],
        "",
    ]
    return "\n".join(lines)


def _label_counts(corpus: dict) -> str:
    labels = corpus.get("train_review_labels", {})
    return ", ".join(f"{label} {count:,}" for label, count in labels.items()) or "labels not recorded"


def plot_corpus(tokens_by_source: dict[str, int], path: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(tokens_by_source, key=tokens_by_source.get, reverse=True)
    counts = [tokens_by_source[name] for name in names]
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.pie(counts, labels=[f"{n}\n{c:,} tokens" for n, c in zip(names, counts)], autopct="%1.0f%%", startangle=90)
    axis.set_title("Pretraining tokens by source")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path.name


def plot_evaluation(evaluation: dict, path: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["majority", "base", "SFT"]
    values = [
        evaluation["majority_baseline"],
        evaluation["sentiment"]["base"]["accuracy"],
        evaluation["sentiment"]["sft"]["accuracy"],
    ]
    figure, axis = plt.subplots(figsize=(5, 3.5))
    bars = axis.bar(labels, values, color=["#999999", "#6699cc", "#cc6633"])
    axis.bar_label(bars, labels=[f"{v:.3f}" for v in values])
    axis.set_ylim(0, 1)
    axis.set_ylabel("accuracy on held-out reviews")
    axis.set_title("Review sentiment (two options)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path.name


def copy_loss_charts(run_dir: Path, output: Path, prefix: str) -> dict[str, str]:
    """Copy the PNGs `steel plot` wrote for a run next to the report, named by stage."""
    charts = {}
    for png in sorted(run_dir.rglob("*.png")):
        name = f"{prefix}-{png.stem}"
        shutil.copyfile(png, output / f"{name}.png")
        charts[name] = f"{name}.png"
    return charts


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
