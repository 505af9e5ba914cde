"""Task files for EleutherAI's lm-evaluation-harness that read C-Eval or CMMLU from local CSV files.

The harness's own `ceval-valid` and `cmmlu` tasks download their data from the Hugging Face Hub.
`write_lm_eval_tasks` writes equivalent tasks (the same prompt, choices, target and metrics as
lm-eval 0.4.13's) whose data comes from a directory in the official layout, plus a group task
that averages them weighted by size, as the harness's groups do. Run them with
`lm_eval --include_path OUT_DIR --tasks steel-ceval-valid ...`.
"""

from pathlib import Path

import yaml

from steel.eval.benchmarks import get_benchmark
from steel.eval.loaders import subject_file

_SPECS = {
    # benchmark: (group name, scored split, split key in the task file, columns, question and answer columns, instruction)
    "ceval": (
        "steel-ceval-valid",
        "val",
        "validation_split",
        ["id", "question", "A", "B", "C", "D", "answer"],
        ("question", "answer"),
        "以下是中国关于{name}的单项选择题，请选出其中的正确答案。\n\n",
    ),
    "cmmlu": (
        "steel-cmmlu",
        "test",
        "test_split",
        ["Question", "A", "B", "C", "D", "Answer"],
        ("Question", "Answer"),
        "以下是关于{name}的单项选择题，请直接给出正确答案的选项。\n\n",
    ),
}


def write_lm_eval_tasks(benchmark: str, data_dir: str | Path, out_dir: str | Path, subjects: list[str] | None = None) -> str:
    """Write one task file per subject plus a group file; return the group's task name."""
    if benchmark not in _SPECS:
        raise ValueError(f"lm-evaluation-harness task files are written for {sorted(_SPECS)}, not {benchmark!r}")
    group, split, split_key, columns, (question, answer), instruction = _SPECS[benchmark]
    spec = get_benchmark(benchmark)
    data_dir = Path(data_dir).resolve()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    task_names = []
    for key in subjects or list(spec.subjects):
        files = {split: subject_file(benchmark, data_dir, key, split), "dev": subject_file(benchmark, data_dir, key, "dev")}
        missing = [str(path) for path in files.values() if not path.is_file()]
        if missing:
            raise FileNotFoundError(f"{benchmark} subject {key!r}: missing {', '.join(missing)}")
        name = f"{group}_{key}"
        task = {
            "task": name,
            "dataset_path": "csv",
            "dataset_name": None,
            # The dev files of C-Eval have an extra `explanation` column, so only shared columns are read.
            "dataset_kwargs": {"data_files": {s: str(p) for s, p in files.items()}, "usecols": columns},
            split_key: split,
            "fewshot_split": "dev",
            "fewshot_config": {"sampler": "first_n"},
            "output_type": "multiple_choice",
            "description": instruction.format(name=spec.subjects[key].name),
            "doc_to_text": f"{{{{{question}.strip()}}}}\nA. {{{{A}}}}\nB. {{{{B}}}}\nC. {{{{C}}}}\nD. {{{{D}}}}\n答案：",
            "doc_to_choice": ["A", "B", "C", "D"],
            "doc_to_target": f"{{{{['A', 'B', 'C', 'D'].index({answer})}}}}",
            "metric_list": [
                {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
            ],
            "metadata": {"version": 1.0},
        }
        _write_yaml(out_dir / f"{name}.yaml", task)
        task_names.append(name)

    _write_yaml(out_dir / f"_{group}.yaml", {
        "group": group,
        "task": task_names,
        "aggregate_metric_list": [
            {"metric": "acc", "aggregation": "mean", "weight_by_size": True},
            {"metric": "acc_norm", "aggregation": "mean", "weight_by_size": True},
        ],
        "metadata": {"version": 1.0},
    })
    return group


def _write_yaml(path: Path, value: dict) -> None:
    path.write_text(yaml.safe_dump(value, allow_unicode=True, sort_keys=False), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m steel.eval.harness",
        description="Write lm-evaluation-harness task files that read C-Eval or CMMLU from local CSV files.",
    )
    parser.add_argument("benchmark", choices=sorted(_SPECS))
    parser.add_argument("data_dir", type=Path, help="benchmark directory in the official layout")
    parser.add_argument("out_dir", type=Path, help="directory for the task files (pass it to lm_eval --include_path)")
    parser.add_argument("--subjects", help="comma-separated subject keys (default: all)")
    args = parser.parse_args(argv)
    try:
        group = write_lm_eval_tasks(args.benchmark, args.data_dir, args.out_dir, args.subjects.split(",") if args.subjects else None)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(str(error)) from None
    print(f"wrote {args.out_dir}; run: lm_eval --include_path {args.out_dir} --tasks {group} ...")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
