"""`steel eval run` and `steel eval contamination`."""

import argparse
import hashlib
import logging
import sys
import time
from pathlib import Path

logger = logging.getLogger(__name__)

BENCHMARK_TASKS = ("ceval", "cmmlu", "mmlu")
TASKS = BENCHMARK_TASKS + ("perplexity",)


# --- steel eval run ------------------------------------------------------------------------------


def run_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="run directory, checkpoint directory or exported Hugging Face model directory")
    parser.add_argument("--task", required=True, choices=TASKS, help="benchmark or perplexity")
    parser.add_argument("--data-dir", type=Path, help="benchmark directory in the official layout (with dev/, val/ or test/)")
    parser.add_argument("--data", type=Path, help="perplexity: JSONL file of held-out documents")
    parser.add_argument("--text-field", default="text", help="perplexity: JSON field that contains the document text (default: text)")
    parser.add_argument("--protocol", default="strict", choices=("strict", "steel-llm-report"),
                        help="named evaluation protocol (default: strict); options below override its settings")
    parser.add_argument("--shots", type=int, help="solved dev examples per prompt (0 or 5; default: the protocol's)")
    parser.add_argument("--mode", choices=("logits", "option-logprob", "option-logprob-norm", "generate"),
                        help="scoring mode (default: the protocol's)")
    parser.add_argument("--split", help="split to score (default: the protocol's; C-Eval test gives a submission file only)")
    parser.add_argument("--max-new-tokens", type=int, help="generate mode: tokens per reply (default: the protocol's)")
    parser.add_argument("--subjects", help="comma-separated subject keys (default: every subject of the benchmark)")
    parser.add_argument("--limit", type=int, help="score at most this many questions per subject (a quick check, not a result)")
    parser.add_argument("--skip-invalid", action="store_true",
                        help="skip invalid data rows and missing subject files, listing them in the result, instead of failing")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass (default: 8)")
    parser.add_argument("--max-length", type=int, help="prompt budget in tokens (default: the model's context length)")
    parser.add_argument("--block-size", type=int, help="perplexity: window length in tokens (default: the model's context length)")
    parser.add_argument("--stride", type=int, help="perplexity: new tokens per window (default: half the window)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: cuda when available)")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                        help="model dtype (default: bfloat16 on CUDA, float32 on CPU)")
    parser.add_argument("--output", type=Path, help="result JSON file (a Markdown table is written beside it as .md)")
    parser.add_argument("--submission", type=Path, help="C-Eval test split: write the submission JSON here")
    parser.add_argument("--all-checkpoints", action="store_true",
                        help="MODEL is a run directory: evaluate every checkpoint and plot accuracy over training tokens")


def run(args: argparse.Namespace) -> int:
    _check_run_args(args)
    specs = _model_specs(args)
    device, dtype = _device_and_dtype(args.device, args.dtype)
    from steel.train.load import load_model

    results = []
    for spec in specs:
        logger.info("loading %s on %s in %s", spec, device, str(dtype).removeprefix("torch."))
        try:
            loaded = load_model(spec, device=device, dtype=dtype)
        except (FileNotFoundError, ValueError) as error:
            raise SystemExit(f"error: {error}") from None
        if loaded.tokenizer is None:
            raise SystemExit(f"{spec}: the model has no tokenizer; export it with its tokenizer or pass a run or checkpoint directory")
        if args.task == "perplexity":
            result = _run_perplexity(args, loaded)
        else:
            result = _run_benchmark(args, loaded)
        results.append(result)
        print(result["markdown"])

    if args.submission is not None:
        from steel.eval.report import ceval_submission, write_json_atomic

        write_json_atomic(args.submission, ceval_submission(results[-1]["_question_results"]))
        logger.info("wrote the C-Eval submission file %s", args.submission)
    if args.output is not None:
        _write_outputs(args, results)
    return 0


def _check_run_args(args: argparse.Namespace) -> None:
    if args.task == "perplexity":
        if args.data is None:
            raise SystemExit("--task perplexity needs --data FILE.jsonl")
        if not args.data.is_file():
            raise SystemExit(f"perplexity data file {args.data} not found")
    else:
        if args.data_dir is None:
            raise SystemExit(f"--task {args.task} needs --data-dir DIR (the benchmark in its official layout)")
        if not args.data_dir.is_dir():
            raise SystemExit(f"benchmark directory {args.data_dir} not found")
    if args.shots is not None and args.shots < 0:
        raise SystemExit(f"--shots must be 0 or more, got {args.shots}")
    if args.all_checkpoints and args.output is None:
        raise SystemExit("--all-checkpoints needs --output (the plot is written beside it)")
    if args.submission is not None and args.task != "ceval":
        raise SystemExit("--submission is for the C-Eval test split only")


def _model_specs(args: argparse.Namespace) -> list[str]:
    if not args.all_checkpoints:
        return [args.model]
    from steel.train.checkpoint import list_checkpoints

    checkpoints = list_checkpoints(args.model)
    if not checkpoints:
        raise SystemExit(f"--all-checkpoints: {args.model} is not a run directory with complete checkpoints under checkpoints/")
    logger.info("evaluating %d checkpoints of %s", len(checkpoints), args.model)
    return [str(path) for path in checkpoints]


def _device_and_dtype(device: str, dtype: str):
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    return device, getattr(torch, dtype)


def _run_benchmark(args: argparse.Namespace, loaded) -> dict:
    from steel.eval.adapter import as_eval_model
    from steel.eval.benchmarks import get_benchmark
    from steel.eval.loaders import BenchmarkDataError, load_split, subject_file
    from steel.eval.protocols import get_protocol
    from steel.eval.report import benchmark_markdown
    from steel.eval.scorer import MultipleChoiceScorer, ScoringConfig

    task = args.task
    benchmark = get_benchmark(task)
    base = get_protocol(args.protocol)
    protocol = base.with_overrides(
        shots=args.shots,
        mode=args.mode,
        max_new_tokens=args.max_new_tokens,
        splits={**base.splits, task: args.split} if args.split else None,
    )
    split = protocol.splits[task]
    if split not in benchmark.splits:
        raise SystemExit(f"--split {split}: {task} has splits {', '.join(benchmark.splits)}")
    if split == "dev" and protocol.shots:
        raise SystemExit("the dev split is where few-shot examples come from; score it with --shots 0")
    subjects = args.subjects.split(",") if args.subjects else None

    try:
        data = load_split(task, args.data_dir, split, subjects, skip_invalid=args.skip_invalid)
        dev = load_split(task, args.data_dir, "dev", subjects, skip_invalid=args.skip_invalid) if protocol.shots else None
    except (BenchmarkDataError, ValueError) as error:
        raise SystemExit(str(error)) from None
    questions = [q for qs in data.questions.values() for q in (qs[: args.limit] if args.limit else qs)]
    if not questions:
        raise SystemExit(f"no {task} {split} questions found under {args.data_dir}")

    eval_model = as_eval_model(loaded)
    config = ScoringConfig(
        mode=protocol.mode,
        prompt_format=protocol.prompt_formats[task],
        shots=protocol.shots,
        batch_size=args.batch_size,
        max_length=args.max_length,
        max_new_tokens=protocol.max_new_tokens,
        system_prompt=protocol.system_prompt,
        fuzzy_match=protocol.fuzzy_match,
    )
    try:
        scored = MultipleChoiceScorer(eval_model, config).score(
            questions,
            dev.questions if dev else None,
            {key: subject.name for key, subject in benchmark.subjects.items()},
            benchmark.categories,
            progress=True,
        )
    except ValueError as error:
        raise SystemExit(f"{task}: {error}") from None

    files = [subject_file(task, args.data_dir, subject, split) for subject in data.questions]
    if dev:
        files += [subject_file(task, args.data_dir, subject, "dev") for subject in dev.questions]
    result = {
        "format_version": 1,
        "task": task,
        "split": split,
        "protocol": protocol.record(base) | {"scoring": scored.config, "answer_token_ids": scored.answer_token_ids},
        "model": eval_model.describe(),
        "data": {
            "data_dir": str(Path(args.data_dir).resolve()),
            "subjects": list(data.questions),
            "limit_per_subject": args.limit,
            "files_sha256": _files_sha256(files),
        },
        "data_problems": [str(problem) for problem in data.problems + (dev.problems if dev else [])],
        "summary": scored.summary,
        "questions_per_second": scored.questions_per_second,
        "elapsed_s": scored.elapsed_s,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": [r.to_dict() for r in scored.results],
    }
    result["markdown"] = benchmark_markdown(result)
    result["_question_results"] = scored.results
    return result


def _files_sha256(paths: list[Path]) -> str:
    """Hash the names and contents of the data files into one sha256 that identifies the data version."""
    digest = hashlib.sha256()
    for path in sorted(set(paths)):
        digest.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).hexdigest().encode() + b"\0")
    return digest.hexdigest()


def _read_documents(path: Path, text_field: str) -> tuple[list[str], list[str]]:
    """Read the documents of a JSONL, JSON-array or Parquet file (UTF-8 or GBK, optionally compressed).

    Unreadable records and records without a string `text_field` are returned as problems that name
    the file and line; the other documents are still read.
    """
    from steel.data.io import CONVERT_REMEDY, iter_records

    documents, problems = [], []
    try:
        records = iter_records(path, on_bad=lambda bad: problems.append(str(bad)), remedy=CONVERT_REMEDY)
        for line_number, record in records:
            text = record.get(text_field) if isinstance(record, dict) else None
            if not isinstance(text, str):
                problems.append(f"{path}:{line_number}: no string field {text_field!r}")
                continue
            documents.append(text)
    except (OSError, ValueError) as error:
        raise SystemExit(f"error: cannot read {path}: {error}") from None
    return documents, problems


def _run_perplexity(args: argparse.Namespace, loaded) -> dict:
    from steel.eval.adapter import as_eval_model
    from steel.eval.perplexity import evaluate_perplexity
    from steel.eval.report import perplexity_markdown

    documents, problems = _read_documents(args.data, args.text_field)
    for problem in problems[:20]:
        logger.warning("skipped %s", problem)
    if problems:
        logger.warning("skipped %d of %d lines of %s", len(problems), len(problems) + len(documents), args.data)
    if not documents:
        raise SystemExit(f"{args.data}: no documents with a string field {args.text_field!r}")

    eval_model = as_eval_model(loaded)
    start = time.perf_counter()
    try:
        metrics = evaluate_perplexity(
            eval_model, documents, block_size=args.block_size, stride=args.stride, batch_size=args.batch_size, progress=True
        )
    except ValueError as error:
        raise SystemExit(f"perplexity: {error}") from None
    result = {
        "format_version": 1,
        "task": "perplexity",
        "data": str(args.data),
        "data_sha256": hashlib.sha256(args.data.read_bytes()).hexdigest(),
        "text_field": args.text_field,
        "data_problems": problems,
        "model": eval_model.describe(),
        "metrics": metrics,
        "elapsed_s": time.perf_counter() - start,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    result["markdown"] = perplexity_markdown(result)
    return result


def _write_outputs(args: argparse.Namespace, results: list[dict]) -> None:
    from steel.eval.report import plot_over_tokens, write_json_atomic, write_text_atomic

    for result in results:
        result.pop("_question_results", None)
    markdown = "\n".join(result.pop("markdown") for result in results)
    if args.all_checkpoints:
        points = _metric_points(results)
        plot_path = args.output.with_suffix(".png")
        if points:
            ylabel = "loss (nats/token)" if args.task == "perplexity" else "accuracy (%)"
            plot_over_tokens(points, plot_path, f"{args.task} over training", ylabel)
            logger.info("wrote %s", plot_path)
        write_json_atomic(args.output, {"format_version": 1, "task": args.task, "run": str(args.model), "checkpoints": results})
    else:
        write_json_atomic(args.output, results[0])
    write_text_atomic(args.output.with_suffix(".md"), markdown)
    logger.info("wrote %s and %s", args.output, args.output.with_suffix(".md"))


def _metric_points(results: list[dict]) -> list[dict]:
    """Return (training tokens, accuracy in % or loss) per checkpoint for the plot."""
    points = []
    for result in results:
        tokens = result["model"]["provenance"].get("tokens")
        if result["task"] == "perplexity":
            value = result["metrics"]["loss"]
        else:
            accuracy = result["summary"]["overall"]["accuracy"]
            value = None if accuracy is None else 100 * accuracy
        if tokens is None or value is None:
            logger.warning("no plot point for %s: its training tokens or the metric are unknown", result["model"]["provenance"].get("source"))
            continue
        points.append({"tokens": tokens, "value": value})
    return points


# --- steel eval contamination --------------------------------------------------------------------


def contamination_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, nargs="+", required=True, help="training or fine-tuning JSONL file(s)")
    parser.add_argument("--task", required=True, choices=BENCHMARK_TASKS, help="benchmark whose questions are searched for")
    parser.add_argument("--data-dir", type=Path, required=True, help="benchmark directory in the official layout")
    parser.add_argument("--split", action="append", help="split(s) to check (default: every split present)")
    parser.add_argument("--subjects", help="comma-separated subject keys (default: every subject with files present)")
    parser.add_argument("--ngram", type=int, default=13, help="n-gram length in normalised characters (default: 13)")
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="report a question when at least this fraction of its n-grams occur in the data (default: 0.5)")
    parser.add_argument("--output", type=Path, help="write the full report as JSON here")


def contamination(args: argparse.Namespace) -> int:
    from steel.eval.benchmarks import get_benchmark
    from steel.eval.contamination import find_contamination, iter_jsonl_texts
    from steel.eval.loaders import load_split, subject_file
    from steel.eval.report import write_json_atomic

    benchmark = get_benchmark(args.task)
    if not args.data_dir.is_dir():
        raise SystemExit(f"benchmark directory {args.data_dir} not found")
    for path in args.data:
        if not path.is_file():
            raise SystemExit(f"data file {path} not found")
    if not 0 < args.threshold <= 1:
        raise SystemExit(f"--threshold must be in (0, 1], got {args.threshold}")

    splits = args.split or [s for s in benchmark.splits if (args.data_dir / s).is_dir()]
    questions, problems = [], []
    for split in splits:
        subjects = args.subjects.split(",") if args.subjects else [
            key for key in benchmark.subjects if subject_file(args.task, args.data_dir, key, split).is_file()
        ]
        try:
            loaded = load_split(args.task, args.data_dir, split, subjects, skip_invalid=True)
        except ValueError as error:
            raise SystemExit(str(error)) from None
        problems += [str(problem) for problem in loaded.problems]
        questions += [(split, q) for qs in loaded.questions.values() for q in qs]
    if not questions:
        raise SystemExit(f"no {args.task} questions found under {args.data_dir} for splits {splits}")

    report = find_contamination(questions, iter_jsonl_texts(args.data), ngram=args.ngram, threshold=args.threshold, progress=True)
    report["task"] = args.task
    report["data"] = [str(path) for path in args.data]
    report["data_problems"] = problems
    _print_contamination(report)
    if args.output is not None:
        write_json_atomic(args.output, report)
        logger.info("wrote %s", args.output)
    return 0


def _print_contamination(report: dict) -> None:
    flagged = report["flagged"]
    print(
        f"{len(flagged)} of {report['num_questions']} {report['task']} questions overlap the data "
        f"(>= {100 * report['threshold']:.0f}% of their {report['ngram']}-character n-grams); "
        f"{report['num_too_short']} questions too short to check; {report['num_documents']} documents scanned."
    )
    if report["num_skipped_lines"]:
        print(f"{report['num_skipped_lines']} data lines were not valid JSON and were skipped.", file=sys.stderr)
    if flagged:
        print("\n| split | subject | id | overlap | first match | question |\n|---|---|---|---:|---|---|")
        for item in flagged[:50]:
            question = item["question"].replace("\n", " ").replace("|", "\\|")[:60]
            print(f"| {item['split']} | {item['subject']} | {item['id']} | {100 * item['overlap']:.0f}% | {item['first_match']} | {question} |")
        if len(flagged) > 50:
            print(f"... and {len(flagged) - 50} more (see --output)")
