"""`steel plot RUN_DIR`: loss and learning-rate charts from `metrics.jsonl`."""

from __future__ import annotations

from pathlib import Path

from steel.train.metrics import read_metrics


def run_label(run_dir: Path) -> str:
    """Return a chart label for a run: its directory name, with the parent's when the name is `run`."""
    run_dir = run_dir.resolve()
    if run_dir.name.lower() in ("run", "runs", "output", "out") and run_dir.parent.name:
        return f"{run_dir.parent.name}/{run_dir.name}"
    return run_dir.name


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write `loss.png` (train and validation loss against tokens) and `lr.png` (LR against steps).

    Steps that a resume rolled back are drawn once, from the process that continued.
    Returns the written paths.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    if not (run_dir / "metrics.jsonl").is_file():
        raise ValueError(f"{run_dir} has no metrics.jsonl; is it a training run directory?")
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)

    records = read_metrics(run_dir)
    train = sorted((r for r in records if r["kind"] == "train"), key=lambda r: r["step"])
    val = sorted((r for r in records if r["kind"] == "val"), key=lambda r: r["step"])
    if not train:
        raise ValueError(f"{run_dir / 'metrics.jsonl'} has no training records yet")

    figure, axes = plt.subplots(figsize=(7, 4))
    axes.plot([r["tokens"] for r in train], [r["loss"] for r in train], label="train", linewidth=1)
    if val:
        axes.plot([r["tokens"] for r in val], [r["val_loss"] for r in val], "o-", label="validation", markersize=3)
    axes.set_xlabel("tokens")
    axes.set_ylabel("loss (nats per target token)")
    axes.set_title(f"loss: {run_label(run_dir)}")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    loss_path = out_dir / "loss.png"
    figure.savefig(loss_path, dpi=120)
    plt.close(figure)

    figure, axes = plt.subplots(figsize=(7, 3))
    axes.plot([r["step"] for r in train], [r["lr"] for r in train], linewidth=1)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel("learning rate")
    axes.set_title(f"learning rate: {run_label(run_dir)}")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    lr_path = out_dir / "lr.png"
    figure.savefig(lr_path, dpi=120)
    plt.close(figure)
    return [loss_path, lr_path]
