"""The trainer core shared by pretraining, SFT and DPO.

A stage supplies four things and the core does the rest (device placement, FSDP2 sharding,
mixed precision, gradient accumulation, token-weighted loss, clipping, the non-finite guard, the
LR schedule, checkpoints and exact resume, metrics, validation, sample completions):

- `model`: an unwrapped `transformers` causal LM on the CPU, initialised the same way on every rank.
- `loss`: a `steel.train.loss.TrainLoss` (`count(micro_batch)` and `__call__(model, micro_batch)`).
- `batches`: a *step source*: iterating it yields `(local_batch, state)` once per optimizer step,
  where `local_batch` holds this rank's `global_batch_size / world_size` rows (a tensor, or a dict of
  tensors with the rows on dim 0) and `state` is a JSON-able position after that step;
  `load_state_dict(state)` continues right after it. `steel.data.stream.PretrainStream` is one.
- optionally `validation_batches`: a callable returning an iterable of micro-batches of the held-out
  data (the same on every rank; the trainer splits them over ranks).

Launch commands:

    steel pretrain recipes/pretrain-tiny.yaml                       # one process
    torchrun --nproc_per_node 8 -m steel pretrain recipes/steel-1b-pretrain.yaml   # FSDP2
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol

import torch

from steel.train import checkpoint as ckpt
from steel.train.config import TrainConfig, grad_accum_steps, to_dict, to_yaml
from steel.train.distributed import DistributedEnv, all_reduce_sum, shard_model
from steel.train.loss import TrainLoss, decoder_of, hidden_states, output_weight
from steel.train.metrics import MetricsLogger, device_peak_flops, flops_per_token
from steel.train.schedule import LRSchedule, set_learning_rate

log = logging.getLogger(__name__)


class StepSource(Protocol):
    """Batches of one optimizer step at a time, resumable from a JSON-able state."""

    def __iter__(self) -> Iterator[tuple[Any, dict]]: ...

    def load_state_dict(self, state: dict) -> None: ...


class NonFiniteLossError(RuntimeError):
    """Raised after `max_consecutive_nonfinite` optimizer steps in a row had a non-finite loss."""


class TrainingInterrupted(KeyboardInterrupt):
    """Raised by `Trainer.fit` on Ctrl-C (SIGINT), with a message naming the step and the checkpoint to resume.

    Checkpoints are written to a `.tmp` directory and renamed when complete, so an interrupted save
    leaves nothing that a later resume would load.
    """


def interrupt_message(error: KeyboardInterrupt) -> str:
    """Return the one-line report of a Ctrl-C: the trainer's message, or a note that training had not begun."""
    if isinstance(error, TrainingInterrupted):
        return str(error)
    return "interrupted before training started; nothing was trained"


class TrainModule(torch.nn.Module):
    """The FSDP root: holds the model and runs a function of it inside the root's forward.

    FSDP2 gathers the root's own parameters (embeddings, final norm, output layer) in the root's
    forward hook, so the loss, the validation loss and sampling all call through here; a loss may
    then use any submodule of the model, such as the decoder and the output weight apart.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, fn: Callable[[torch.nn.Module, Any], Any], batch: Any) -> Any:
        return fn(self.model, batch)


@dataclass
class TrainState:
    """Counters saved with every checkpoint."""

    step: int = 0
    tokens: int = 0
    stream_state: dict | None = None
    nonfinite_in_row: int = 0
    skipped_steps: int = 0


@dataclass
class StepResult:
    loss: float
    grad_norm: float
    lr: float
    tokens: int
    skipped: bool
    metrics: dict[str, float] = field(default_factory=dict)


def split_micro_batches(local_batch: Any, micro_batch_size: int) -> list[Any]:
    """Split a tensor (rows on dim 0) or a dict of such tensors into micro-batches."""
    if isinstance(local_batch, torch.Tensor):
        return list(local_batch.split(micro_batch_size))
    if isinstance(local_batch, dict):
        pieces = {key: value.split(micro_batch_size) for key, value in local_batch.items()}
        count = len(next(iter(pieces.values())))
        return [{key: chunks[i] for key, chunks in pieces.items()} for i in range(count)]
    raise TypeError(f"a local batch must be a tensor or a dict of tensors, not {type(local_batch).__name__}")


def move_to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {key: move_to(value, device) for key, value in batch.items()}
    return batch


def count_input_tokens(micro_batch: Any) -> int:
    """Token positions a micro-batch feeds the model (throughput and the `tokens` counter)."""
    if isinstance(micro_batch, torch.Tensor):
        return micro_batch.shape[0] * (micro_batch.shape[1] - 1)
    return sum(v.numel() for k, v in micro_batch.items() if k.endswith("input_ids"))


def build_optimizer(model: torch.nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over two parameter groups: decayed and not decayed (`optimizer.weight_decay_scope`).

    Scope `all` decays every parameter, as the released Steel-LLM run did. Scope `matrices` decays
    only weight matrices, so parameters with fewer than 2 dimensions (norm scales, biases) and the
    input embedding are not decayed. The output layer is decayed unless it is tied to the embedding.
    """
    opt = config.optimizer
    embedding_ids = {id(p) for p in model.get_input_embeddings().parameters()}
    decay, no_decay = [], []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        if opt.weight_decay_scope == "all" or (param.dim() >= 2 and id(param) not in embedding_ids):
            decay.append(param)
        else:
            no_decay.append(param)
    groups = [{"params": decay, "weight_decay": opt.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    fused = opt.fused if opt.fused is not None else device.type == "cuda"
    return torch.optim.AdamW(groups, lr=opt.lr, betas=(opt.beta1, opt.beta2), eps=opt.eps, fused=fused)


def configure_determinism(config: TrainConfig) -> None:
    if config.system.num_threads is not None:
        torch.set_num_threads(config.system.num_threads)
    if config.system.deterministic:
        torch.use_deterministic_algorithms(True)


def select_resume_checkpoint(config: TrainConfig) -> Path | None:
    """Return the checkpoint that `checkpoint.resume` selects in `run_dir`, or None for a fresh start."""
    mode = config.checkpoint.resume
    run_dir = Path(config.run_dir)
    latest = ckpt.latest_checkpoint(run_dir)
    if mode == "never":
        if latest is not None:
            raise ValueError(
                f"{run_dir} already has checkpoint {latest.name}; resume it with --resume "
                "(or checkpoint.resume=auto), or choose another run_dir"
            )
        return None
    if mode == "auto" and latest is None:
        return None
    if mode in ("auto", "latest"):
        if latest is None:
            raise ValueError(
                f"--resume: no complete checkpoint in {run_dir / ckpt.CHECKPOINT_DIR}; "
                "drop --resume to start this run, or set run_dir to the run you want to continue"
            )
        return newest_intact_checkpoint(run_dir)
    path = Path(mode)
    if not ckpt.is_checkpoint(path):
        raise ValueError(
            f"checkpoint.resume={mode!r}: not a complete checkpoint directory; use never, auto, latest "
            "or the path of a checkpoint directory (RUN/checkpoints/step-NNNNNNNN)"
        )
    ckpt.verify_checkpoint(path)
    return path


# Checkpoints already reported by this process (damaged ones, and the intact one resumed instead): a
# stage selects the resume checkpoint before building the model and again in `Trainer.fit`.
_reported_damaged: set[Path] = set()


def newest_intact_checkpoint(run_dir: Path) -> Path:
    """Return the newest checkpoint of `run_dir` whose files are intact, warning about each damaged one skipped."""
    damaged = []
    for candidate in reversed(ckpt.list_checkpoints(run_dir)):
        try:
            ckpt.verify_checkpoint(candidate)
        except ckpt.DamagedCheckpointError as error:
            damaged.append(f"{error.path}: {error.reason}")
            if candidate.resolve() not in _reported_damaged:
                _reported_damaged.add(candidate.resolve())
                log.warning("skipping damaged checkpoint %s: %s: %s", candidate.name, error.path.name, error.reason)
            continue
        if damaged and candidate.resolve() not in _reported_damaged:
            _reported_damaged.add(candidate.resolve())
            log.info("resuming from %s, the newest intact checkpoint", candidate)
        return candidate
    checkpoints_dir = run_dir / ckpt.CHECKPOINT_DIR
    raise ValueError(
        f"every checkpoint in {checkpoints_dir} is damaged; delete {checkpoints_dir} to start the run again, "
        "or set another run_dir:\n  - " + "\n  - ".join(damaged)
    )


class Trainer:
    """One training run: set up with `__init__`, then `fit()` trains to `schedule.max_steps`."""

    def __init__(
        self,
        config: TrainConfig,
        model: torch.nn.Module,
        loss: TrainLoss,
        batches: StepSource,
        env: DistributedEnv,
        *,
        tokenizer: Any = None,
        validation_batches: Callable[[], Iterable[Any]] | None = None,
        stage: str = "pretrain",
        block_size: int | None = None,
        extra_meta: dict[str, Any] | None = None,
    ):
        self.config = config
        self.env = env
        self.loss = loss
        self.batches = batches
        self.tokenizer = tokenizer
        self.validation_batches = validation_batches
        self.stage = stage
        self.extra_meta = dict(extra_meta or {})
        self.run_dir = Path(config.run_dir)
        self.block_size = block_size or getattr(getattr(config, "data", None), "block_size", None)
        self.state = TrainState()

        self.grad_accum_steps = grad_accum_steps(
            config.batch.global_batch_size, config.batch.micro_batch_size, env.world_size
        )
        self.compute_dtype = self._compute_dtype()
        self.model = model
        self.root = self._prepare_model(model)
        self.optimizer = build_optimizer(model, config, env.device)
        self.max_steps = self._resolve_max_steps()
        self.schedule = LRSchedule(
            max_lr=config.optimizer.lr,
            warmup_steps=config.schedule.warmup_steps,
            max_steps=self.max_steps,
            decay=config.schedule.decay,
            min_lr_ratio=config.schedule.min_lr_ratio,
        )
        self.metrics = MetricsLogger(
            self.run_dir, enabled=env.is_main, tensorboard=config.logging.tensorboard,
            wandb=config.logging.wandb, wandb_project=config.logging.wandb_project, config=to_dict(config),
        )

    # -----------------------------------------------------------------------------------------
    # Set-up

    def _compute_dtype(self) -> torch.dtype:
        requested = self.config.precision.dtype
        if requested == "auto":
            return torch.bfloat16 if self.env.device.type == "cuda" else torch.float32
        return getattr(torch, requested)

    def _prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move to the device, add activation checkpointing and compilation, and shard under FSDP."""
        system = self.config.system
        model.to(device=self.env.device, dtype=torch.float32)
        model.train()
        if system.activation_checkpointing:
            if not getattr(model, "supports_gradient_checkpointing", False):
                raise ValueError(f"{type(model).__name__} does not support activation checkpointing")
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if system.compile:
            for layer in _decoder_layers(model):
                layer.compile()

        root = TrainModule(model)
        if self.env.is_distributed:
            param_dtype = self.compute_dtype if self.compute_dtype != torch.float32 else None
            shard_model(root, model, self.env, reshard_after_forward=system.reshard_after_forward,
                        param_dtype=param_dtype)
        return root

    def _resolve_max_steps(self) -> int:
        schedule = self.config.schedule
        if schedule.max_steps is not None:
            return schedule.max_steps
        if self.block_size is None:
            raise ValueError("schedule.max_tokens needs a block size; set schedule.max_steps instead")
        tokens_per_step = self.config.batch.global_batch_size * self.block_size
        return math.ceil(schedule.max_tokens / tokens_per_step)

    def _autocast(self):
        if self.env.device.type == "cuda" and self.compute_dtype != torch.float32:
            return torch.autocast("cuda", dtype=self.compute_dtype)
        if self.env.device.type == "cpu" and self.compute_dtype != torch.float32:
            return torch.autocast("cpu", dtype=self.compute_dtype)
        return contextlib.nullcontext()

    # -----------------------------------------------------------------------------------------
    # Checkpoints

    def resume_checkpoint(self) -> Path | None:
        """Return the checkpoint that `checkpoint.resume` selects, or None for a fresh start."""
        return select_resume_checkpoint(self.config)

    def load(self, checkpoint_dir: Path) -> None:
        meta = ckpt.load_checkpoint(checkpoint_dir, self.model, self.optimizer, self.env)
        saved_max_steps = meta.get("config", {}).get("schedule", {}).get("max_steps")
        if saved_max_steps is not None and saved_max_steps != self.config.schedule.max_steps:
            log.warning(
                "schedule.max_steps changed from %d to %d on resume: the learning-rate schedule after "
                "step %d differs from the one the run started with", saved_max_steps,
                self.config.schedule.max_steps, meta["step"],
            )
        saved_batch = meta.get("config", {}).get("batch", {}).get("global_batch_size")
        if saved_batch is not None and saved_batch != self.config.batch.global_batch_size:
            log.warning(
                "global_batch_size changed from %d to %d on resume: the data order differs from the "
                "uninterrupted run", saved_batch, self.config.batch.global_batch_size,
            )
        self.state = TrainState(
            step=meta["step"],
            tokens=meta["tokens"],
            stream_state=meta.get("stream_state"),
            nonfinite_in_row=meta.get("nonfinite_in_row", 0),
            skipped_steps=meta.get("skipped_steps", 0),
        )
        if self.state.stream_state is not None:
            self.batches.load_state_dict(self.state.stream_state)
        log.info("resumed from %s at step %d (%d tokens); saved with world size %d, now %d",
                 checkpoint_dir, self.state.step, self.state.tokens, meta.get("world_size", 1),
                 self.env.world_size)

    def save(self) -> Path:
        meta = {
            "stage": self.stage,
            "tokens": self.state.tokens,
            "stream_state": self.state.stream_state,
            "nonfinite_in_row": self.state.nonfinite_in_row,
            "skipped_steps": self.state.skipped_steps,
            "schedule": self.schedule.state_dict(),
            "config": to_dict(self.config),
            **self.extra_meta,
        }
        return ckpt.save_checkpoint(
            self.run_dir, self.state.step, self.model, self.optimizer, meta, self.env,
            keep_last=self.config.checkpoint.keep_last,
            milestone_interval=self.config.checkpoint.milestone_interval,
            write_extra=self._write_tokenizer,
        )

    def _write_tokenizer(self, directory: Path) -> dict[str, Any]:
        """Record the tokenizer in a checkpoint: its identity, and its files unless it is the built-in Qwen one."""
        if self.tokenizer is None:
            return {"tokenizer": None, "tokenizer_spec": None}
        if self.tokenizer.name == "qwen":
            spec = "qwen"
        else:
            self.tokenizer.save_pretrained(directory / "tokenizer")
            spec = "tokenizer"
        return {"tokenizer": self.tokenizer.identity(), "tokenizer_spec": spec}

    # -----------------------------------------------------------------------------------------
    # One optimizer step

    def train_step(self, local_batch: Any) -> StepResult:
        """Forward and backward over the micro-batches of one step, then clip and update (or skip)."""
        loss, metrics, tokens = self.accumulate_gradients(local_batch)
        grad_norm = self._clip_gradients()
        lr = self.schedule(self.state.step)
        skipped = not (math.isfinite(loss) and math.isfinite(grad_norm))
        if not skipped:
            set_learning_rate(self.optimizer, lr)
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return StepResult(loss=loss, grad_norm=grad_norm, lr=lr, tokens=tokens, skipped=skipped, metrics=metrics)

    def accumulate_gradients(self, local_batch: Any) -> tuple[float, dict[str, float], int]:
        """Run forward and backward over every micro-batch of `local_batch`, leaving the step's gradients.

        Returns the step's loss (all ranks agree on it), the other loss metrics and the global
        number of input tokens.
        """
        micro_batches = split_micro_batches(local_batch, self.config.batch.micro_batch_size)
        if len(micro_batches) != self.grad_accum_steps:
            raise ValueError(
                f"the step source gave {len(micro_batches)} micro-batches on rank {self.env.rank}, "
                f"expected grad_accum_steps={self.grad_accum_steps}"
            )

        # The step's loss is the mean over every unit (target token) on every rank, so each
        # micro-batch's summed loss is divided by the global count. FSDP averages gradients over
        # ranks, which the factor world_size undoes.
        counts = torch.tensor(
            [sum(self.loss.count(mb) for mb in micro_batches),
             sum(self._num_tokens(mb) for mb in micro_batches)],
            dtype=torch.float64, device=self.env.device,
        )
        all_reduce_sum(counts)
        global_count, global_tokens = counts.tolist()
        scale = self.env.world_size / max(global_count, 1.0)

        sums: dict[str, torch.Tensor] = {}
        for index, micro_batch in enumerate(micro_batches):
            if self.env.is_distributed:
                self.root.set_requires_gradient_sync(index == len(micro_batches) - 1)
            micro_batch = move_to(micro_batch, self.env.device)
            with self._autocast():
                outputs = self.root(self.loss, micro_batch)
            (outputs["loss_sum"] * scale).backward()
            for name, value in outputs.items():
                sums[name] = sums.get(name, 0.0) + value.detach().float()

        # The non-finite check uses these all-reduced sums, so every rank skips the same steps.
        names = sorted(sums)
        totals = all_reduce_sum(torch.stack([sums[name] for name in names]).to(torch.float64))
        means = {name: value / max(global_count, 1.0) for name, value in zip(names, totals.tolist())}
        loss = means.pop("loss_sum")
        metrics = {name.removesuffix("_sum"): value for name, value in means.items()}
        return loss, metrics, int(global_tokens)

    def _num_tokens(self, micro_batch: Any) -> int:
        counter = getattr(self.loss, "num_tokens", None)
        return counter(micro_batch) if counter is not None else count_input_tokens(micro_batch)

    def _clip_gradients(self) -> float:
        max_norm = self.config.optimizer.grad_clip if self.config.optimizer.grad_clip > 0 else math.inf
        params = [p for p in self.model.parameters() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm=max_norm, foreach=True)
        if hasattr(norm, "full_tensor"):
            norm = norm.full_tensor()
        return float(norm)

    # -----------------------------------------------------------------------------------------
    # Validation and samples

    @torch.no_grad()
    def validate(self) -> float | None:
        """Return the token-weighted loss over `logging.eval_batches` held-out micro-batches."""
        if self.validation_batches is None:
            return None
        world = self.env.world_size
        target_count = max(world, self.config.logging.eval_batches // world * world)
        micro_batches = []
        for micro_batch in self.validation_batches():
            micro_batches.append(micro_batch)
            if len(micro_batches) == target_count:
                break
        usable = len(micro_batches) // world * world
        if usable == 0:
            return None

        self.root.eval()
        totals = torch.zeros(2, dtype=torch.float64, device=self.env.device)
        for micro_batch in micro_batches[self.env.rank:usable:world]:
            micro_batch = move_to(micro_batch, self.env.device)
            with self._autocast():
                outputs = self.root(self.loss, micro_batch)
            totals[0] += float(outputs["loss_sum"])
            totals[1] += self.loss.count(micro_batch)
        self.root.train()
        all_reduce_sum(totals)
        return float(totals[0] / totals[1]) if totals[1] > 0 else None

    @torch.no_grad()
    def sample(self, prompt: str, max_new_tokens: int) -> str | None:
        """Greedily continue `prompt` (the same number of forward passes on every rank, as FSDP needs)."""
        if self.tokenizer is None:
            return None
        ids = torch.tensor([self.tokenizer.encode(prompt)], dtype=torch.long, device=self.env.device)
        if self.block_size is not None:
            max_new_tokens = min(max_new_tokens, max(0, self.block_size - ids.shape[1]))
        self.root.eval()
        for _ in range(max_new_tokens):
            with self._autocast():
                logits = self.root(_last_position_logits, ids)
            ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
        self.root.train()
        completion = ids[0].tolist()[len(self.tokenizer.encode(prompt)):]
        # Cut at the end of the document (the shard separator) or of a chat turn.
        stops = {getattr(self.tokenizer, "eos_id", None), *getattr(self.tokenizer, "special_ids", {}).values()}
        for index, token_id in enumerate(completion):
            if token_id in stops:
                completion = completion[:index]
                break
        return self.tokenizer.decode(completion)

    # -----------------------------------------------------------------------------------------
    # The loop

    def log_start(self) -> None:
        """Log what was resolved: config, world size, device, dtype, kernel, sizes, expected loss."""
        if not self.env.is_main:
            return
        model_config = self.model.config
        num_params = sum(p.numel() for p in self.model.parameters())
        vocab = model_config.vocab_size
        tokens_per_step = (self.config.batch.global_batch_size * self.block_size) if self.block_size else None
        attention = getattr(model_config, "_attn_implementation", None) or "default"
        if attention == "sdpa" and self.env.device.type == "cuda":
            backends = [name for name, enabled in (
                ("flash", torch.backends.cuda.flash_sdp_enabled()),
                ("memory-efficient", torch.backends.cuda.mem_efficient_sdp_enabled()),
                ("math", torch.backends.cuda.math_sdp_enabled()),
            ) if enabled]
            attention += f" (backends allowed: {', '.join(backends)})"
        log.info("resolved config:\n%s", to_yaml(self.config))
        log.info("stage %s | world size %d | device %s | compute dtype %s (master weights float32)",
                 self.stage, self.env.world_size, self.env.device, str(self.compute_dtype).removeprefix("torch."))
        log.info("model %s | attention kernel %s | %s parameters | vocab %d",
                 model_config.model_type, attention, f"{num_params:,}", vocab)
        log.info("global batch %d sequences = micro-batch %d x world size %d x grad_accum_steps %d%s",
                 self.config.batch.global_batch_size, self.config.batch.micro_batch_size,
                 self.env.world_size, self.grad_accum_steps,
                 f" | {tokens_per_step:,} tokens per step" if tokens_per_step else "")
        log.info("steps %d (warmup %d, %s decay)%s", self.max_steps, self.config.schedule.warmup_steps,
                 self.config.schedule.decay, self._expected_initial_loss(vocab))

    def _expected_initial_loss(self, vocab_size: int) -> str:
        """Return the log text of the loss expected at step 0, or "" where none is known (a resumed run)."""
        if self.state.step > 0:
            return ""
        if self.stage == "dpo":
            # The policy starts equal to the reference, so every pair's loss is -log sigmoid(0) = ln 2.
            return f" | expected initial loss ln 2 = {math.log(2):.3f}"
        if getattr(getattr(self.config, "model", None), "init_from", None) is None:
            return f" | expected initial loss ln(V) = {math.log(vocab_size):.3f} (untrained model)"
        return ""

    def fit(self) -> TrainState:
        """Train until `max_steps`, resuming first when `checkpoint.resume` selects a checkpoint."""
        configure_determinism(self.config)
        if self.env.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        progress = None
        try:
            resume_from = self.resume_checkpoint()
            if resume_from is not None:
                self.load(resume_from)
            # Written after a resume loads, so a config that does not fit the run leaves the old one.
            if self.env.is_main:
                (self.run_dir / "config.yaml").write_text(to_yaml(self.config), encoding="utf-8")
            self.log_start()
            self.metrics.write("start", step=self.state.step, world_size=self.env.world_size, stage=self.stage)

            peak, peak_text = device_peak_flops(self.env.device)
            flops_token = self._flops_per_token()
            if self.env.is_main:
                log.info("throughput reference: %s", peak_text)

            progress = self._progress_bar()
            redirect = contextlib.nullcontext()
            if progress is not None:
                from tqdm.contrib.logging import logging_redirect_tqdm

                redirect = logging_redirect_tqdm()
            with redirect:
                self._train_loop(progress, peak, flops_token)

            if progress is not None:
                progress.close()
            last = ckpt.latest_checkpoint(self.run_dir)
            if last is None or ckpt.read_meta(last)["step"] != self.state.step:
                self.save()
        except KeyboardInterrupt:
            if progress is not None:
                progress.close()
            self.metrics.close()
            raise TrainingInterrupted(self._interrupted_message()) from None
        self.metrics.close()
        return self.state

    def _interrupted_message(self) -> str:
        latest = ckpt.latest_checkpoint(self.run_dir)
        if latest is None:
            return (f"interrupted at step {self.state.step}; no checkpoint in {self.run_dir} yet; "
                    "rerun the same command to start again")
        return (f"interrupted at step {self.state.step}; latest checkpoint {latest.name} ({latest}); "
                "rerun with --resume to continue")

    def _train_loop(self, progress, peak: float | None, flops_token: float | None) -> None:
        # Throughput counts the optimizer steps only, not validation, samples or checkpoints.
        window_seconds, window_tokens = 0.0, 0
        batches = iter(self.batches)
        while self.state.step < self.max_steps:
            try:
                local_batch, stream_state = next(batches)
            except StopIteration:
                log.warning("the step source ended at step %d before max_steps=%d", self.state.step, self.max_steps)
                break

            step_start = time.perf_counter()
            result = self.train_step(local_batch)
            window_seconds += time.perf_counter() - step_start
            self.state.step += 1
            self.state.tokens += result.tokens
            self.state.stream_state = stream_state
            window_tokens += result.tokens
            self._handle_skip(result)

            if self.state.step % self.config.logging.log_interval == 0 or self.state.step == self.max_steps:
                tokens_per_s = window_tokens / max(window_seconds, 1e-9)
                flops_per_s = tokens_per_s * flops_token if flops_token else None
                mfu = flops_per_s / (peak * self.env.world_size) if (flops_per_s and peak) else None
                self.metrics.write(
                    "train", step=self.state.step, tokens=self.state.tokens, loss=result.loss,
                    lr=result.lr, grad_norm=result.grad_norm, tokens_per_s=tokens_per_s,
                    flops_per_s=flops_per_s, mfu=mfu, **result.metrics,
                )
                if progress is not None:
                    progress.set_postfix(loss=f"{result.loss:.4f}", lr=f"{result.lr:.2e}",
                                         tok_s=f"{tokens_per_s:,.0f}", refresh=False)
                window_seconds, window_tokens = 0.0, 0
            if progress is not None:
                progress.update(1)

            self._periodic(progress)

    def _periodic(self, progress) -> None:
        step = self.state.step
        logging_config = self.config.logging
        if logging_config.eval_interval and step % logging_config.eval_interval == 0:
            val_loss = self.validate()
            if val_loss is not None:
                self.metrics.write("val", step=step, tokens=self.state.tokens, val_loss=val_loss)
                self._info(progress, f"step {step}: validation loss {val_loss:.4f}")
        if logging_config.sample_interval and step % logging_config.sample_interval == 0:
            completion = self.sample(logging_config.sample_prompt, logging_config.sample_max_new_tokens)
            if completion is not None:
                self.metrics.write("sample", step=step, prompt=logging_config.sample_prompt, completion=completion)
                self._info(progress, f"step {step}: {logging_config.sample_prompt!r} -> {completion!r}")
        if step % self.config.checkpoint.interval == 0 and step < self.max_steps:
            self.save()

    def _handle_skip(self, result: StepResult) -> None:
        if not result.skipped:
            self.state.nonfinite_in_row = 0
            return
        self.state.nonfinite_in_row += 1
        self.state.skipped_steps += 1
        log.warning("step %d: non-finite loss %s or gradient norm %s; update skipped on every rank (%d in a row)",
                    self.state.step, result.loss, result.grad_norm, self.state.nonfinite_in_row)
        self.metrics.write("skip", step=self.state.step, loss=str(result.loss), grad_norm=str(result.grad_norm))
        if self.state.nonfinite_in_row >= self.config.max_consecutive_nonfinite:
            raise NonFiniteLossError(
                f"{self.state.nonfinite_in_row} optimizer steps in a row had a non-finite loss or gradient "
                f"(last at step {self.state.step}); lower optimizer.lr or check the data, then resume from "
                "the latest checkpoint"
            )

    def _info(self, progress, message: str) -> None:
        # While the bar is shown, log records go through tqdm (see fit), so they do not break it.
        if self.env.is_main:
            log.info(message)

    def _progress_bar(self):
        if not (self.env.is_main and self.config.logging.progress_bar):
            return None
        from tqdm.auto import tqdm

        return tqdm(total=self.max_steps, initial=self.state.step, desc=self.stage, unit="step", dynamic_ncols=True)

    def _flops_per_token(self) -> float | None:
        if self.block_size is None:
            return None
        try:
            return flops_per_token(self.model.config, self.block_size)
        except (AttributeError, ImportError) as error:
            log.warning("no FLOPs estimate for %s (%s): MFU is not reported", type(self.model).__name__, error)
            return None


def _last_position_logits(model: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    hidden = hidden_states(model, input_ids)[:, -1]
    return (hidden @ output_weight(model).t()).float()


def _decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    from steel.train.distributed import decoder_layers

    return decoder_layers(model)


__all__ = [
    "Trainer",
    "TrainModule",
    "TrainState",
    "StepSource",
    "NonFiniteLossError",
    "TrainingInterrupted",
    "build_optimizer",
    "split_micro_batches",
    "decoder_of",
]
