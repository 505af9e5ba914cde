"""The `steel` command: one subcommand per pipeline stage.

Each command lives in its stage's package as a pair of functions, `<name>_parser(parser)` that
adds the arguments and `<name>(args) -> int` that runs it. Only the module of the chosen command
is imported, so `steel --help` stays fast and a stage's heavy dependencies load only when used.
"""

import argparse
import importlib
import logging
import sys

# (command words, "module:function", one-line help)
COMMANDS: list[tuple[tuple[str, ...], str, str]] = [
    (("data", "sources"), "steel.data.sources.cli:sources", "list the source adapters"),
    (("data", "convert"), "steel.data.sources.cli:convert", "convert a source corpus to JSONL"),
    (("data", "clean"), "steel.data.clean.cli:clean", "clean and deduplicate JSONL with a recipe"),
    (("data", "stats"), "steel.data.clean.cli:stats", "per-operator statistics of a recipe"),
    (("data", "tokenize"), "steel.data.tokenize:tokenize", "pack documents into token shards"),
    (("data", "inspect"), "steel.data.tokenize:inspect", "print a shard directory's manifest and decode a window"),
    (("data", "append"), "steel.data.stream:append", "add token shards to a training run"),
    (("tokenizer", "encode"), "steel.tokenizer.cli:encode", "encode text to token ids (JSON)"),
    (("tokenizer", "decode"), "steel.tokenizer.cli:decode", "decode token ids to text"),
    (("tokenizer", "train"), "steel.tokenizer.cli:train", "train a byte-level BPE tokenizer"),
    (("tokenizer", "export"), "steel.tokenizer.cli:export", "write a Hugging Face tokenizer directory"),
    (("model", "info"), "steel.model.cli:info", "print a model configuration and its parameter count"),
    (("model", "convert"), "steel.model.cli:convert", "convert a released Steel-LLM checkpoint"),
    (("pretrain",), "steel.train.cli:pretrain", "pretrain on token shards"),
    (("sft",), "steel.train.cli:sft", "supervised fine-tuning with the Qwen chat template"),
    (("dpo",), "steel.train.cli:dpo", "direct preference optimisation"),
    (("export",), "steel.train.cli:export", "export a run or checkpoint as a Hugging Face directory"),
    (("plot",), "steel.train.cli:plot", "plot the loss and learning-rate curves of a run"),
    (("eval", "run"), "steel.eval.cli:run", "evaluate on C-Eval, CMMLU, MMLU or perplexity"),
    (("eval", "contamination"), "steel.eval.cli:contamination", "find benchmark questions in training data"),
    (("generate",), "steel.serve.cli:generate", "continue a prompt with a base model"),
    (("chat",), "steel.serve.cli:chat", "chat with a model in the terminal"),
    (("serve",), "steel.serve.cli:serve", "serve an OpenAI-compatible API and a web chat page"),
    (("demo",), "steel.demo:demo", "the main job: build a small Chinese LLM end to end on a CPU"),
]


def _print_overview(words: tuple[str, ...] = ()) -> None:
    prefix = " ".join(("steel",) + words)
    print(f"usage: {prefix} COMMAND [ARGS...]\n\ncommands:")
    for command_words, _, help_text in COMMANDS:
        if command_words[: len(words)] == words:
            print(f"  {' '.join(command_words):<22} {help_text}")
    print("\nRun `steel COMMAND --help` for the arguments of one command.")


def _find_command(argv: list[str]) -> tuple[tuple[str, ...], str, str, list[str]] | None:
    for command_words, target, help_text in sorted(COMMANDS, key=lambda c: -len(c[0])):
        if tuple(argv[: len(command_words)]) == command_words:
            return command_words, target, help_text, argv[len(command_words):]
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        _print_overview()
        return 0
    if argv[0] == "--version":
        from steel import __version__

        print(f"steel {__version__}")
        return 0

    found = _find_command(argv)
    if found is None:
        groups = {words[0] for words, _, _ in COMMANDS if len(words) > 1}
        if argv[0] in groups:
            _print_overview((argv[0],))
            return 0 if len(argv) == 1 else 2
        print(f"steel: unknown command {argv[0]!r}; run `steel --help` for the list.", file=sys.stderr)
        return 2

    command_words, target, help_text, rest = found
    module_name, function_name = target.split(":")
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog="steel " + " ".join(command_words), description=help_text)
    getattr(module, f"{function_name}_parser")(parser)
    # Intermixed: `steel pretrain RECIPE --resume key=value` reads like `... key=value --resume`.
    args = parser.parse_intermixed_args(rest)

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    return int(getattr(module, function_name)(args) or 0)
