"""Supervised fine-tuning with the Qwen1.5 chat template on the shared trainer core.

A recipe is a pretraining recipe whose `data` section lists chat sources (see
`steel.train.sft_data`) and whose `model.init_from` names the starting weights: a pretraining run
directory, a checkpoint or an exported Hugging Face directory. The loss is next-token
cross-entropy on the assistant tokens only, weighted by token over all micro-batches and ranks.
The run length is `data.epochs` passes over the mixture, so `schedule.max_steps` is derived.

    steel sft recipes/sft-tiny.yaml
    steel sft recipes/sft-steel-chat.yaml model.init_from=runs/pretrain --resume
    torchrun --nproc_per_node 8 -m steel sft recipes/sft-steel-chat.yaml
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path

from steel.train.config import (
    BatchConfig,
    LoggingConfig,
    OptimizerConfig,
    ScheduleConfig,
    TrainConfig,
    describe,
    load_config,
)
from steel.train.loss import CausalLMLoss
from steel.train.sft_data import SFTDataConfig

log = logging.getLogger(__name__)


# Stage defaults are subclasses rather than default factories, so that a recipe which sets
# one field of a section keeps the stage's defaults for the others.


@dataclass
class PostTrainingScheduleConfig(ScheduleConfig):
    warmup_steps: int = 0
    """Optimizer steps of linear warmup; `warmup_ratio` sets it when this is 0."""

    warmup_ratio: float = 0.03
    """Warmup as a fraction of the derived run length, used when `warmup_steps` is 0."""


@dataclass
class PostTrainingLoggingConfig(LoggingConfig):
    log_interval: int = 1
    """Optimizer steps between lines in `metrics.jsonl` and the log."""

    eval_interval: int = 0
    """Optimizer steps between validation-loss measurements; 0 disables them."""

    sample_interval: int = 0
    """Plain-text sample completions; off because a chat model needs chat prompts."""


@dataclass
class SFTOptimizerConfig(OptimizerConfig):
    lr: float = 2e-5
    """Peak learning rate (AdamW), reached at the end of warmup (the report: 2e-5)."""


@dataclass
class SFTBatchConfig(BatchConfig):
    global_batch_size: int = 256
    """Rows (conversations, or packed rows) per optimizer step over all ranks (the report: 256)."""


@dataclass
class SFTConfig(TrainConfig):
    """An SFT run. Defaults from the Steel-LLM report: 4 epochs, cosine decay, max LR 2e-5,
    global batch 256 conversations. The warmup ratio is not from the report."""

    run_dir: str = "runs/sft"
    """Directory of the run: resolved config, checkpoints, metrics.jsonl and plots."""

    data: SFTDataConfig = field(default_factory=SFTDataConfig)
    optimizer: SFTOptimizerConfig = field(default_factory=SFTOptimizerConfig)
    schedule: PostTrainingScheduleConfig = field(default_factory=PostTrainingScheduleConfig)
    batch: SFTBatchConfig = field(default_factory=SFTBatchConfig)
    logging: PostTrainingLoggingConfig = field(default_factory=PostTrainingLoggingConfig)


# ---------------------------------------------------------------------------------------------
# Shared by SFT and DPO


def resolve_tokenizer(spec: str | None, init_from: str | None):
    """Load `spec`, or else the tokenizer that the starting model records, and check its chat tokens."""
    from steel.tokenizer import IM_END, IM_START, load_tokenizer

    if spec is not None:
        tokenizer = load_tokenizer(spec)
    elif init_from is not None:
        tokenizer = _tokenizer_of(init_from)
        if tokenizer is None:
            raise ValueError(f"model.init_from={init_from} records no tokenizer; set data.tokenizer")
    else:
        raise ValueError("set data.tokenizer (\"qwen\" or a tokenizer directory) or model.init_from")

    missing = [token for token in (IM_START, IM_END) if token not in tokenizer.special_ids]
    if missing:
        raise ValueError(f"tokenizer {tokenizer.name} has no {' or '.join(missing)}; chat training needs both")
    return tokenizer


def _tokenizer_of(spec: str):
    from steel.tokenizer import load_tokenizer
    from steel.train import checkpoint as ckpt
    from steel.train.load import _tokenizer_from_meta, resolve_spec

    kind, path = resolve_spec(spec)
    if kind == "checkpoint":
        return _tokenizer_from_meta(path, ckpt.read_meta(path))
    if (path / "tokenizer_config.json").is_file() or (path / "tokenizer.json").is_file():
        return load_tokenizer(str(path))
    return None


def resolve_schedule(config: TrainConfig, num_steps: int) -> None:
    """Set `max_steps` from the data when unset, and the warmup from `warmup_ratio` when 0."""
    schedule = config.schedule
    if schedule.max_steps is None and schedule.max_tokens is None:
        schedule.max_steps = num_steps
    if schedule.warmup_steps == 0 and schedule.warmup_ratio > 0:
        total = schedule.max_steps if schedule.max_steps is not None else num_steps
        schedule.warmup_steps = round(schedule.warmup_ratio * total)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the recipe, `key=value` overrides, `--resume` and `--print-config` to `parser`."""
    from steel.train.cli import pretrain_parser

    pretrain_parser(parser)


def parse_config(args: argparse.Namespace, cls: type) -> TrainConfig | None:
    """Build the config from the parsed arguments; print it and return None for `--print-config`."""
    recipe, overrides = args.recipe, list(args.overrides)
    if recipe is not None and "=" in recipe:
        recipe, overrides = None, [recipe, *overrides]
    if args.resume:
        overrides.append("checkpoint.resume=latest")
    config = load_config(recipe, overrides, cls=cls)
    if args.print_config:
        print(describe(config), end="")
        return None
    problems = config.data.validate()
    if problems:
        raise ValueError("invalid training config:\n  - " + "\n  - ".join(problems))
    return config


# ---------------------------------------------------------------------------------------------
# SFT


class ChatLMLoss(CausalLMLoss):
    """`CausalLMLoss` on SFT batches, counting real tokens only in throughput and `tokens`."""

    def num_tokens(self, micro_batch: dict) -> int:
        return int(micro_batch["attention_mask"].sum())


def run_sft(config: SFTConfig):
    """Fine-tune as `config` specifies, on this process's share of the world; return the final TrainState."""
    from steel.train.distributed import destroy_distributed, init_distributed
    from steel.train.load import build_model
    from steel.train.sft_data import SFTBatches, load_sources
    from steel.train.trainer import Trainer, configure_determinism

    env = init_distributed(config.system.device)
    try:
        configure_determinism(config)
        tokenizer = resolve_tokenizer(config.data.tokenizer, config.model.init_from)
        sources = load_sources(config.data, tokenizer)
        batches = SFTBatches(sources, config.data, tokenizer.pad_id, config.batch.global_batch_size,
                             rank=env.rank, world_size=env.world_size)  # fmt: skip
        resolve_schedule(config, batches.num_steps)
        config.validate()
        if env.is_main:
            rows = "packed rows" if config.data.packing else "one conversation per row"
            log.info("SFT data: %d optimizer steps per epoch over %d epochs (%s)",
                     batches.steps_per_epoch[0], config.data.epochs, rows)

        model = build_model(config.model, vocab_size=tokenizer.vocab_size, seed=config.seed)
        trainer = Trainer(
            config, model, ChatLMLoss(chunk_size=config.system.loss_chunk_size), batches, env,
            tokenizer=tokenizer,
            stage="sft",
            block_size=config.data.cutoff_len,
            extra_meta={"sft_sources": {source.name: source.stats for source in sources}},
        )  # fmt: skip
        return trainer.fit()
    finally:
        destroy_distributed()


def main(args: argparse.Namespace) -> int:
    from steel.train.trainer import NonFiniteLossError

    try:
        config = parse_config(args, SFTConfig)
        if config is None:
            return 0
        state = run_sft(config)
    except (ValueError, FileNotFoundError, NonFiniteLossError) as error:
        raise SystemExit(f"error: {error}") from None
    except KeyboardInterrupt as error:
        from steel.train.cli import report_interrupt

        return report_interrupt(error)
    log.info("SFT finished at step %d; run directory %s", state.step, Path(config.run_dir))
    return 0
