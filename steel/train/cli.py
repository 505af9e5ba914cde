"""Training commands: `steel pretrain`, `steel export`, `steel plot`, and `steel sft` / `steel dpo`.

`sft` and `dpo` delegate to `steel.train.sft` and `steel.train.dpo`, each of which provides
`add_arguments(parser)` and `main(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

log = logging.getLogger(__name__)


# Exit status of a process ended by SIGINT, as shells report it (128 + signal number 2).
INTERRUPTED_EXIT_CODE = 130


def _user_error(error: Exception) -> SystemExit:
    return SystemExit(f"error: {error}")


def report_interrupt(error: KeyboardInterrupt) -> int:
    """Print the one-line report of a Ctrl-C on rank 0 and return the exit status 130."""
    from steel.train.trainer import interrupt_message

    if int(os.environ.get("RANK", "0")) == 0:
        print(interrupt_message(error), file=sys.stderr)
    return INTERRUPTED_EXIT_CODE


# ---------------------------------------------------------------------------------------------
# steel pretrain


def pretrain_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", nargs="?", help="YAML recipe (see recipes/); omitted: defaults only")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="override a recipe field, e.g. optimizer.lr=1e-3 schedule.max_steps=100")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the latest complete checkpoint in run_dir (checkpoint.resume=latest)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config with each field's documentation and exit")


def pretrain(args: argparse.Namespace) -> int:
    from steel.train.config import describe, load_config

    recipe, overrides = args.recipe, list(args.overrides)
    if recipe is not None and "=" in recipe:
        recipe, overrides = None, [recipe, *overrides]
    if args.resume:
        overrides.append("checkpoint.resume=latest")
    try:
        config = load_config(recipe, overrides)
        if args.print_config:
            print(describe(config), end="")
            return 0
        config.validate()
    except ValueError as error:
        raise _user_error(error) from None

    from steel.train.pretrain import run_pretraining
    from steel.train.trainer import NonFiniteLossError

    try:
        state = run_pretraining(config)
    except (ValueError, FileNotFoundError, NonFiniteLossError) as error:
        raise _user_error(error) from None
    except KeyboardInterrupt as error:
        return report_interrupt(error)
    if int(os.environ.get("RANK", "0")) == 0:
        log.info("finished at step %d after %s tokens; run directory %s", state.step, f"{state.tokens:,}", config.run_dir)
    return 0


# ---------------------------------------------------------------------------------------------
# steel export


def export_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="run directory (its latest checkpoint) or checkpoint directory")
    parser.add_argument("out_dir", help="output Hugging Face directory")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="dtype of the saved weights (default: float32)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")


def export(args: argparse.Namespace) -> int:
    from steel.train.export import export_model

    try:
        out = export_model(args.source, args.out_dir, dtype=args.dtype, overwrite=args.overwrite)
    except ValueError as error:
        raise _user_error(error) from None
    print(out)
    return 0


# ---------------------------------------------------------------------------------------------
# steel plot


def plot_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="training run directory (with metrics.jsonl)")
    parser.add_argument("--out", default=None, help="output directory for the PNG files (default: RUN_DIR/plots)")


def plot(args: argparse.Namespace) -> int:
    from steel.train.plot import plot_run

    try:
        paths = plot_run(args.run_dir, args.out)
    except ValueError as error:
        raise _user_error(error) from None
    for path in paths:
        print(path)
    return 0


# ---------------------------------------------------------------------------------------------
# steel sft and steel dpo: implemented in their own modules


def _stage_module(name: str):
    try:
        return importlib.import_module(f"steel.train.{name}")
    except ModuleNotFoundError as error:
        if error.name != f"steel.train.{name}":
            raise
        return None


def _stage_parser(name: str, parser: argparse.ArgumentParser) -> None:
    module = _stage_module(name)
    if module is None:
        parser.epilog = f"steel {name} is not available in this installation (steel.train.{name} is missing)"
        return
    module.add_arguments(parser)


def _stage_main(name: str, args: argparse.Namespace) -> int:
    module = _stage_module(name)
    if module is None:
        print(f"steel {name}: not available (steel.train.{name} is missing)", file=sys.stderr)
        return 2
    return int(module.main(args) or 0)


def sft_parser(parser: argparse.ArgumentParser) -> None:
    _stage_parser("sft", parser)


def sft(args: argparse.Namespace) -> int:
    return _stage_main("sft", args)


def dpo_parser(parser: argparse.ArgumentParser) -> None:
    _stage_parser("dpo", parser)


def dpo(args: argparse.Namespace) -> int:
    return _stage_main("dpo", args)
