"""The demo's report: `report.md`, `report.json` and PNG charts in the demo's output directory."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from steel.demo import Demo

# Thresholds the demo is expected to reach. The report marks each one PASS or FAIL.
MIN_NATS_BELOW_UNIGRAM = 0.5
MIN_SFT_ACCURACY = {"full": 0.80, "fast": 0.65}

# Loss chart of each training stage: title, metrics field and label of the x axis, y-axis label.
# SFT is drawn against steps because its token count includes the masked prompt tokens.
LOSS_CHARTS = {
    "pretrain": ("pretraining loss", "tokens", "tokens", "loss (nats per token)"),
    "sft": ("SFT loss (review sentiment)", "step", "optimizer step", "loss (nats per assistant token)"),
}


def write_report(demo: Demo, total_seconds: float) -> Path:
    output = demo.output
    results = demo.stages.results
    charts = {
        "corpus": plot_corpus(results["tokens"]["tokens_by_source"], output / "corpus.png"),
        "evaluation": plot_evaluation(results["evaluate"], output / "evaluation.png"),
    }
    model_name = demo.profile.model_preset
    charts.update(plot_training_run(Path(results["pretrain"]["run_dir"]), output, "pretrain", model_name))
    charts.update(plot_training_run(Path(results["sft"]["run_dir"]), output, "sft", model_name))

    report = build_report_data(demo, total_seconds, charts)
    _write_text(output / "report.json", json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    _write_text(output / "report.md", render_markdown(report))
    return output / "report.md"


def build_report_data(demo: Demo, total_seconds: float, charts: dict[str, str]) -> dict:
    results = demo.stages.results
    evaluation = results["evaluate"]
    checks = build_checks(evaluation, MIN_SFT_ACCURACY[demo.profile.name])
    return {
        "profile": demo.profile.name,
        "tokenizer": demo.settings.tokenizer,
        "model": describe_model(demo.profile.model_preset, Path(results["pretrain"]["run_dir"])),
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
        "checks": {name: passed for name, passed, _ in checks},
        "check_descriptions": {name: description for name, _, description in checks},
        "charts": charts,
    }


def build_checks(evaluation: dict, required_accuracy: float) -> list[tuple[str, bool, str]]:
    """Return (identifier, passed, plain-language description) for each check of the report."""
    contamination = evaluation["contamination"]
    leaked = sum(contamination[field] for field in ("exact_in_pretraining", "exact_in_sft", "ngram_overlap_flagged"))
    loss_gap = evaluation["loss_below_unigram"]
    sft_accuracy = evaluation["sentiment"]["sft"]["accuracy"]
    return [
        (
            "loss_below_unigram",
            loss_gap > 0,
            f"the base model's validation loss is {loss_gap:.2f} nats per token below the add-one unigram "
            "model's on the same tokens, so it predicts held-out text better than token frequencies alone",
        ),
        (
            f"loss_at_least_{MIN_NATS_BELOW_UNIGRAM}_nats_below_unigram",
            loss_gap >= MIN_NATS_BELOW_UNIGRAM,
            f"that gap is at least {MIN_NATS_BELOW_UNIGRAM} nats per token",
        ),
        (
            f"sft_accuracy_at_least_{required_accuracy}",
            sft_accuracy >= required_accuracy,
            f"the SFT model labels at least {required_accuracy:.0%} of the held-out reviews correctly: it "
            f"labelled {sft_accuracy:.1%}, and always answering one label scores 50%",
        ),
        (
            "no_heldout_review_in_training_data",
            leaked == 0,
            "no evaluated review appears in the pretraining text or the SFT data, exactly or as a "
            f"near-duplicate: {leaked} found",
        ),
    ]


def describe_model(preset: str, run_dir: Path) -> dict:
    """Describe the trained model from the configuration and weights of the run's latest checkpoint."""
    from safetensors import safe_open

    from steel.train.checkpoint import latest_checkpoint

    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        raise SystemExit(
            f"{run_dir} has no complete checkpoint. Delete {run_dir} and run the same demo command again to retrain it."
        )
    config = json.loads((checkpoint / "model_config.json").read_text(encoding="utf-8"))

    parameters = 0
    with safe_open(checkpoint / "model.safetensors", framework="numpy") as weights:
        for name in weights.keys():
            shape = weights.get_slice(name).get_shape()
            parameters += math.prod(shape)

    ffn_type = config["ffn_type"]
    return {
        "preset": preset,
        "parameters": parameters,
        "ffn_type": ffn_type,
        "causal": ffn_type != "soft_moe",
        "num_hidden_layers": config["num_hidden_layers"],
        "hidden_size": config["hidden_size"],
        "num_attention_heads": config["num_attention_heads"],
        "num_key_value_heads": config["num_key_value_heads"],
        "n_experts": config.get("n_experts"),
        "vocab_size": config["vocab_size"],
        "max_position_embeddings": config["max_position_embeddings"],
    }


def render_markdown(report: dict) -> str:
    validation = report["validation"]
    sentiment = report["sentiment"]
    model = report["model"]
    descriptions = report.get("check_descriptions", {})
    lines = [
        f"# Steel demo report ({report['profile']})",
        "",
        f"This run took {report['total_seconds'] / 60:.1f} min; the stages took "
        f"{sum(t['seconds'] for t in report['stages'].values()) / 60:.1f} min when they ran (reused stages "
        f"count with their original time). Tokenizer: {report['tokenizer']}.",
        "",
        "## Model",
        "",
        _model_sentence(model),
        "",
        "## Checks",
        "",
        *[
            f"- {'PASS' if passed else 'FAIL'} `{name}`: {descriptions.get(name, '')}"
            for name, passed in report["checks"].items()
        ],
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
        f"{report['pretrain']['steps']} optimizer steps of `{model['preset']}`. Losses are next-token "
        "cross-entropy in nats per token (natural log); ln of the vocabulary size "
        f"({math.log(model['vocab_size']):.2f}) is the loss of a uniform guess.",
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
        "## SFT",
        "",
        f"{report['sft']['samples']:,} training reviews as chat turns. The SFT loss counts the assistant's "
        "tokens only (the answer 正面 or 负面 and the `<|im_end|>` that closes it); the prompt is masked out, "
        "so this loss is not comparable with the pretraining loss.",
        "",
        *[f"![{name}]({path})" for name, path in report["charts"].items() if name.startswith("sft")],
        "",
        "## Chat",
        "",
        "The SFT model was fine-tuned on review-sentiment classification only: every answer it saw in SFT "
        "is 正面 or 负面. Prompts that are not a review question show that limit rather than general chat "
        "ability. Replies are greedy, at most 48 new tokens.",
        "",
        *[f"- **用户**：{turn['prompt']}\n  **助手**：{turn['reply']}" for turn in report["chat"]],
        "",
    ]
    return "\n".join(lines)


def _model_sentence(model: dict) -> str:
    causality = "causal" if model["causal"] else "non-causal (it reads later tokens of the same sequence)"
    experts = f", {model['n_experts']} experts" if model.get("n_experts") else ""
    return (
        f"`{model['preset']}`, {model['parameters'] / 1e6:.2f}M parameters: a Qwen1.5-style decoder with "
        f"{model['num_hidden_layers']} layers, hidden size {model['hidden_size']}, "
        f"{model['num_attention_heads']} attention heads ({model['num_key_value_heads']} key-value heads), "
        f"FFN `{model['ffn_type']}` ({causality}{experts}), a {model['vocab_size']:,}-token vocabulary and "
        f"a context of {model['max_position_embeddings']} tokens. The SFT model has the same architecture "
        "and starts from the pretrained weights."
    )


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


def plot_training_run(run_dir: Path, output: Path, stage: str, model_name: str) -> dict[str, str]:
    """Draw the loss and learning-rate charts of a training run, titled by stage and model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from steel.train.metrics import read_metrics

    records = read_metrics(run_dir)
    train = sorted((r for r in records if r["kind"] == "train"), key=lambda r: r["step"])
    val = sorted((r for r in records if r["kind"] == "val"), key=lambda r: r["step"])
    title, x_field, x_label, loss_label = LOSS_CHARTS[stage]

    figure, axis = plt.subplots(figsize=(7, 4))
    axis.plot([r[x_field] for r in train], [r["loss"] for r in train], label="train", linewidth=1)
    if val:
        axis.plot([r[x_field] for r in val], [r["val_loss"] for r in val], "o-", label="validation", markersize=3)
    axis.set_xlabel(x_label)
    axis.set_ylabel(loss_label)
    axis.set_title(f"{title}: {model_name}")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(output / f"{stage}-loss.png", dpi=100)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(7, 3))
    axis.plot([r["step"] for r in train], [r["lr"] for r in train], linewidth=1)
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("learning rate")
    axis.set_title(f"{stage} learning rate: {model_name}")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(output / f"{stage}-lr.png", dpi=100)
    plt.close(figure)
    return {f"{stage}-loss": f"{stage}-loss.png", f"{stage}-lr": f"{stage}-lr.png"}


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
