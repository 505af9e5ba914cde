"""Direct preference optimisation (sigmoid DPO) on the shared trainer core.

The loss of a preference pair is ``-log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))``, where
``pi_c`` is the policy's log-probability of the chosen response summed over the response tokens and
``ref_c`` the same under the reference model, the frozen starting policy (Rafailov et al. 2023,
"Direct Preference Optimization", eq. 7). The reference log-probabilities are computed on the fly
by a frozen copy of the starting weights, or once before training with
`data.precompute_reference` and then kept in the run directory, which saves the copy's memory.

Prompt and response are encoded by `steel.tokenizer.chat.encode_chat`, which encodes the
assistant header apart from the content. The prompt ids (ending in ``<|im_start|>assistant\\n``)
are therefore the same for the chosen and the rejected response. Only the response tokens,
including the closing ``<|im_end|>``, count.

    steel dpo recipes/dpo-tiny.yaml
    torchrun --nproc_per_node 8 -m steel dpo recipes/dpo-steel-chat.yaml
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from steel.data.io import BadRecord, BadRecordLog, iter_records
from steel.data.langid import is_chinese
from steel.data.sources.base import RecordError
from steel.tokenizer import SteelTokenizer
from steel.tokenizer.chat import encode_chat
from steel.train.config import BatchConfig, OptimizerConfig, TrainConfig
from steel.train.loss import IGNORE_INDEX, chunked_label_logprobs, hidden_states, output_weight
from steel.train.sft import (
    PostTrainingLoggingConfig,
    PostTrainingScheduleConfig,
    add_arguments,
    parse_config,
    resolve_schedule,
    resolve_tokenizer,
)
from steel.train.sft_data import (
    EpochBatches,
    TokenizedSource,
    openai_messages,
    source_files,
)

logger = logging.getLogger(__name__)

PAIR_FORMATS = ("auto", "pairs", "ultrafeedback")
REFERENCE_FILE = "reference_logps.safetensors"


# ---------------------------------------------------------------------------------------------
# Configuration


@dataclass
class DPOSourceConfig:
    path: str = ""
    """A JSONL, JSON-array or Parquet file of preference records, or a directory of them."""

    format: str = "auto"
    """`pairs` (`prompt`, `chosen`, `rejected`), `ultrafeedback` (`instruction` and scored
    `completions`), or `auto` (per record)."""

    name: str | None = None
    """Name in logs and statistics; default: the file or directory name."""

    weight: float | None = None
    """Share of each epoch's pairs drawn from this source (normalised over all sources). Set it on
    every source or on none; none takes every pair once per epoch."""

    system: str | None = None
    """System prompt for prompts that carry none; None keeps the template's default."""

    language: str | None = None
    """`zh` keeps only pairs whose prompt is Chinese; None keeps all."""


@dataclass
class DPODataConfig:
    sources: list[DPOSourceConfig] = field(default_factory=list)
    """The preference mixture (see `DPOSourceConfig`)."""

    tokenizer: str | None = None
    """Tokenizer spec ("qwen" or a directory); default: the tokenizer of the initial model."""

    cutoff_len: int = 2048
    """Maximum tokens of prompt plus response; longer responses are cut, and a pair whose prompt
    alone leaves no room for a response is skipped and counted."""

    samples_per_epoch: int | None = None
    """Pairs drawn per epoch when sources have weights; default: the total of all sources."""

    epochs: int = 3
    """Passes over the (re-drawn) mixture."""

    seed: int = 0
    """Seed of the mixture draw and the shuffle."""

    precompute_reference: bool = False
    """Compute the reference log-probabilities once before training (kept in the run directory)
    instead of keeping a frozen copy of the model in memory."""

    @property
    def block_size(self) -> int:
        """Maximum sequence length in tokens, under the name the trainer core uses."""
        return self.cutoff_len

    def validate(self) -> list[str]:
        """Return every problem of the DPO data settings (empty when valid)."""
        problems = []
        if not self.sources:
            problems.append("data.sources is empty; list at least one preference source")
        weights = [source.weight for source in self.sources]
        if any(w is None for w in weights) and any(w is not None for w in weights):
            problems.append("set data.sources[*].weight on every source or on none")
        for index, source in enumerate(self.sources):
            where = f"data.sources[{index}]"
            if not source.path:
                problems.append(f"{where}.path is missing")
            if source.format not in PAIR_FORMATS:
                problems.append(f"{where}.format must be one of {', '.join(PAIR_FORMATS)}, not {source.format!r}")
            if source.weight is not None and not source.weight > 0:
                problems.append(f"{where}.weight must be positive, not {source.weight}")
            if source.language not in (None, "zh"):
                problems.append(f"{where}.language must be zh or null, not {source.language!r}")
        if self.cutoff_len < 2:
            problems.append("data.cutoff_len must be at least 2")
        if self.epochs < 1:
            problems.append("data.epochs must be at least 1")
        return problems


@dataclass
class DPOSettings:
    beta: float = 0.1
    """Strength of the KL penalty towards the reference model (the report: 0.1)."""


# ---------------------------------------------------------------------------------------------
# Preference records


@dataclass
class PreferencePair:
    prompt: list[dict]
    chosen: str
    rejected: str


def _response_text(value: Any, prompt: list[dict] | None, field_name: str) -> tuple[str, list[dict]]:
    """Return (response, prompt messages) from a string, a message, or a conversation ending in the response."""
    if isinstance(value, str):
        return value, prompt or []
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not value:
        raise RecordError(f"invalid field {field_name!r}", "expected a string, a message or a list of messages")
    messages = openai_messages({"messages": value})
    if messages[-1]["role"] != "assistant":
        raise RecordError(f"invalid field {field_name!r}", "the last message is not from the assistant")
    context = messages[:-1]
    if prompt and context and context != prompt:
        raise RecordError("prompt mismatch", f"the turns before the {field_name} response differ from 'prompt'")
    return messages[-1]["content"], prompt or context


def pair_from_record(record: dict, source: DPOSourceConfig) -> PreferencePair:
    """Read one preference record, or raise RecordError."""
    record_format = source.format
    if record_format == "auto":
        record_format = "ultrafeedback" if "completions" in record else "pairs"

    if record_format == "ultrafeedback":
        pair = _ultrafeedback_pair(record)
    else:
        for name in ("chosen", "rejected"):
            if record.get(name) is None:
                raise RecordError(f"missing field {name!r}", f"fields present: {', '.join(sorted(record))}")
        prompt = record.get("prompt")
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        elif prompt is not None:
            prompt = openai_messages({"messages": prompt})
        chosen, chosen_prompt = _response_text(record["chosen"], prompt, "chosen")
        rejected, rejected_prompt = _response_text(record["rejected"], prompt, "rejected")
        if chosen_prompt != rejected_prompt:
            raise RecordError("prompt mismatch", "chosen and rejected follow different prompts")
        pair = PreferencePair(chosen_prompt, chosen, rejected)

    if not any(m["role"] == "user" for m in pair.prompt):
        raise RecordError("missing prompt", "no user turn before the responses")
    system = record.get("system") or source.system
    if system and pair.prompt[0]["role"] != "system":
        pair.prompt = [{"role": "system", "content": str(system)}] + pair.prompt
    return pair


def _ultrafeedback_pair(record: dict) -> PreferencePair:
    """Best- versus worst-rated completion of an UltraFeedback record (`overall_score`)."""
    instruction = record.get("instruction")
    completions = record.get("completions")
    if not isinstance(instruction, str) or not isinstance(completions, list):
        raise RecordError("invalid UltraFeedback record", "expected 'instruction' and a list 'completions'")
    scored = [(c.get("overall_score"), c.get("response")) for c in completions if isinstance(c, dict)]
    scored = [(float(s), r) for s, r in scored if isinstance(s, (int, float)) and isinstance(r, str)]
    if len(scored) < 2:
        raise RecordError("too few scored completions", f"{len(scored)} with overall_score and response")
    best = max(scored, key=lambda item: item[0])
    worst = min(scored, key=lambda item: item[0])
    if best[0] == worst[0]:
        raise RecordError("tied scores", f"every completion scored {best[0]}")
    return PreferencePair([{"role": "user", "content": instruction}], best[1], worst[1])


def load_pairs(source: DPOSourceConfig) -> tuple[list[PreferencePair], dict]:
    """Read one source into preference pairs; return them with counts of what was skipped and why."""
    bad = BadRecordLog()
    counts: Counter = Counter()
    pairs = []
    for path in source_files(source.path):
        for line_no, record in iter_records(path, on_bad=bad):
            counts["records"] += 1
            try:
                pair = pair_from_record(record, source)
            except RecordError as error:
                bad(BadRecord(str(path), line_no, error.reason, error.detail))
                continue
            if not pair.chosen.strip() or not pair.rejected.strip():
                bad(BadRecord(str(path), line_no, "empty response", "chosen or rejected is empty"))
            elif pair.chosen == pair.rejected:
                bad(BadRecord(str(path), line_no, "identical responses", "chosen equals rejected"))
            elif source.language == "zh" and not is_chinese(" ".join(m["content"] for m in pair.prompt)):
                counts["not Chinese"] += 1
            else:
                pairs.append(pair)
    stats = {"records": counts.pop("records", 0), "skipped": {**bad.counts, **counts}}
    if bad.total:
        stats["skipped_examples"] = bad.examples
    return pairs, stats


def encode_pair(tokenizer: SteelTokenizer, pair: PreferencePair, cutoff_len: int) -> tuple[list, list, list, list] | None:
    """Encode a pair as (chosen ids, chosen mask, rejected ids, rejected mask); None when it cannot fit.

    The masks mark the response tokens only, so earlier assistant turns of a multi-turn prompt
    are context, not part of the compared responses.
    """
    prompt_ids, _ = encode_chat(tokenizer, pair.prompt, add_generation_prompt=True)
    if len(prompt_ids) >= cutoff_len:
        return None
    encoded = []
    for response in (pair.chosen, pair.rejected):
        ids, mask = encode_chat(tokenizer, pair.prompt + [{"role": "assistant", "content": response}],
                                cutoff_len=cutoff_len)  # fmt: skip
        assert ids[: len(prompt_ids)] == prompt_ids, "the prompt boundary must not depend on the response"
        mask = [0] * len(prompt_ids) + mask[len(prompt_ids) :]
        encoded += [ids, mask]
    return tuple(encoded)


def _pack_source(name: str, sequences: list[tuple[np.ndarray, np.ndarray]]) -> TokenizedSource:
    offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(ids) for ids, _ in sequences])
    ids = np.concatenate([ids for ids, _ in sequences])
    mask = np.concatenate([mask for _, mask in sequences])
    return TokenizedSource(name=name, ids=ids, mask=mask, offsets=offsets, stats={})


@dataclass
class PairSource:
    """The tokenized pairs of one source: chosen and rejected sequences, aligned by index."""

    name: str
    chosen: TokenizedSource
    rejected: TokenizedSource
    stats: dict[str, Any]

    def __len__(self) -> int:
        return len(self.chosen)


def load_pair_sources(config: DPODataConfig, tokenizer: SteelTokenizer) -> list[PairSource]:
    """Read and tokenize every preference source, logging what each one skipped."""
    sources = []
    for source in config.sources:
        name = source.name or Path(source.path).name
        pairs, stats = load_pairs(source)
        chosen, rejected = [], []
        too_long = 0
        for pair in pairs:
            encoded = encode_pair(tokenizer, pair, config.cutoff_len)
            if encoded is None:
                too_long += 1
                continue
            chosen.append((np.asarray(encoded[0], dtype=np.int32), np.asarray(encoded[1], dtype=np.uint8)))
            rejected.append((np.asarray(encoded[2], dtype=np.int32), np.asarray(encoded[3], dtype=np.uint8)))
        if too_long:
            stats["skipped"]["prompt longer than cutoff_len"] = too_long
        stats["pairs"] = len(chosen)
        skipped = ", ".join(f"{reason}: {n}" for reason, n in stats["skipped"].items()) or "none"
        logger.info("DPO source %s: %d pairs; skipped: %s", name, len(chosen), skipped)
        if not chosen:
            raise ValueError(f"DPO source {name} ({source.path}) has no usable pair; skipped: {skipped}")
        sources.append(PairSource(name, _pack_source(name, chosen), _pack_source(name, rejected), stats))
    return sources


# ---------------------------------------------------------------------------------------------
# Batches


def _pad_sequences(sequences: list[tuple[np.ndarray, np.ndarray]], pad_id: int) -> dict[str, torch.Tensor]:
    """Inputs, shifted labels (IGNORE_INDEX outside the response) and attention mask, right-padded."""
    width = max(len(ids) - 1 for ids, _ in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    labels = torch.full((len(sequences), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, (ids, mask) in enumerate(sequences):
        ids_t = torch.from_numpy(ids.astype(np.int64))
        n = len(ids) - 1
        input_ids[row, :n] = ids_t[:-1]
        labels[row, :n] = torch.where(torch.from_numpy(mask[1:].astype(bool)), ids_t[1:], IGNORE_INDEX)
        attention_mask[row, :n] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


class DPOBatches(EpochBatches):
    """The steps of a DPO run: rows of one preference pair each.

    A local batch has `chosen_input_ids`, `chosen_labels`, `chosen_attention_mask` and the same
    for `rejected_`, plus `reference_chosen_logps` and `reference_rejected_logps` when the
    reference log-probabilities were precomputed.
    """

    def __init__(self, sources: list[PairSource], config: DPODataConfig, pad_id: int,
                 global_batch_size: int, rank: int = 0, world_size: int = 1):  # fmt: skip
        self.sources = sources
        self.config = config
        self.pad_id = pad_id
        self.reference: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        weights = None if config.sources[0].weight is None else [s.weight for s in config.sources]
        super().__init__([len(s) for s in sources], weights, config.samples_per_epoch, config.epochs,
                         config.seed, global_batch_size, rank, world_size)  # fmt: skip

    def collate(self, rows: list[list[tuple[int, int]]]) -> dict[str, torch.Tensor]:
        pairs = [row[0] for row in rows]
        batch = {}
        for side in ("chosen", "rejected"):
            sequences = [getattr(self.sources[s], side).sample(i) for s, i in pairs]
            for key, value in _pad_sequences(sequences, self.pad_id).items():
                batch[f"{side}_{key}"] = value
        if self.reference is not None:
            batch["reference_chosen_logps"] = torch.stack([self.reference[s][0][i] for s, i in pairs])
            batch["reference_rejected_logps"] = torch.stack([self.reference[s][1][i] for s, i in pairs])
        return batch

    def fingerprint_data(self) -> bytes:
        digest = hashlib.sha256()
        for source in self.sources:
            for side in (source.chosen, source.rejected):
                digest.update(side.offsets.tobytes())
                digest.update(side.ids.tobytes())
                digest.update(side.mask.tobytes())
        digest.update(json.dumps([self.config.cutoff_len]).encode())
        return digest.digest()

    def all_pairs(self) -> list[tuple[int, int]]:
        return [(s, i) for s, source in enumerate(self.sources) for i in range(len(source))]


# ---------------------------------------------------------------------------------------------
# Loss


def sequence_logps(model: torch.nn.Module, input_ids: torch.Tensor, labels: torch.Tensor,
                   attention_mask: torch.Tensor, chunk_size: int = 1024) -> torch.Tensor:  # fmt: skip
    """Sum of log p(label) over the labelled positions of each row: a tensor [batch]."""
    hidden = hidden_states(model, input_ids, attention_mask=attention_mask)
    return chunked_label_logprobs(hidden, output_weight(model), labels, chunk_size).sum(-1)


def _concatenated(micro_batch: dict[str, torch.Tensor], pad_id: int) -> dict[str, torch.Tensor]:
    """Chosen rows then rejected rows in one batch, so one forward pass serves both."""
    width = max(micro_batch["chosen_input_ids"].shape[1], micro_batch["rejected_input_ids"].shape[1])
    fill = {"input_ids": pad_id, "labels": IGNORE_INDEX, "attention_mask": 0}
    return {
        key: torch.cat([F.pad(micro_batch[f"{side}_{key}"], (0, width - micro_batch[f"{side}_{key}"].shape[1]),
                              value=value) for side in ("chosen", "rejected")])
        for key, value in fill.items()
    }  # fmt: skip


class DPOLoss:
    """Sigmoid DPO as a `steel.train.loss.TrainLoss`: one unit per preference pair.

    Returns `loss_sum` and the sums of `chosen_reward`, `rejected_reward`, `reward_margin` and
    `reward_accuracy` (the trainer logs their means per pair). A reward is
    `beta * (log pi(response) - log ref(response))`.
    """

    def __init__(self, beta: float, pad_id: int, reference: torch.nn.Module | None, chunk_size: int = 1024):
        self.beta = beta
        self.pad_id = pad_id
        self.reference = reference
        self.chunk_size = chunk_size

    def count(self, micro_batch: dict[str, torch.Tensor]) -> int:
        return int(micro_batch["chosen_input_ids"].shape[0])

    def num_tokens(self, micro_batch: dict[str, torch.Tensor]) -> int:
        return int(micro_batch["chosen_attention_mask"].sum() + micro_batch["rejected_attention_mask"].sum())

    def reference_logps(self, micro_batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if "reference_chosen_logps" in micro_batch:
            return micro_batch["reference_chosen_logps"], micro_batch["reference_rejected_logps"]
        if self.reference is None:
            raise ValueError("DPO needs a reference model or precomputed reference log-probabilities")
        with torch.no_grad():
            both = sequence_logps(self.reference, **_concatenated(micro_batch, self.pad_id), chunk_size=self.chunk_size)
        return both.chunk(2)

    def __call__(self, model: torch.nn.Module, micro_batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        policy_chosen, policy_rejected = sequence_logps(
            model, **_concatenated(micro_batch, self.pad_id), chunk_size=self.chunk_size
        ).chunk(2)
        reference_chosen, reference_rejected = self.reference_logps(micro_batch)

        chosen_reward = self.beta * (policy_chosen - reference_chosen.to(policy_chosen.dtype))
        rejected_reward = self.beta * (policy_rejected - reference_rejected.to(policy_rejected.dtype))
        margin = chosen_reward - rejected_reward
        losses = -F.logsigmoid(margin)
        return {
            "loss_sum": losses.sum(),
            "chosen_reward_sum": chosen_reward.detach().sum(),
            "rejected_reward_sum": rejected_reward.detach().sum(),
            "reward_margin_sum": margin.detach().sum(),
            "reward_accuracy_sum": (margin.detach() > 0).float().sum(),
        }


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """Return a copy of the starting policy that takes no gradient and stays in eval mode."""
    reference = copy.deepcopy(model)
    reference.requires_grad_(False)
    return reference.eval()


# ---------------------------------------------------------------------------------------------
# Precomputed reference log-probabilities


@torch.no_grad()
def compute_reference_logps(model: torch.nn.Module, batches: DPOBatches, micro_batch_size: int,
                            device: torch.device, compute_dtype: torch.dtype = torch.float32,
                            chunk_size: int = 1024) -> list[tuple[torch.Tensor, torch.Tensor]]:  # fmt: skip
    """Log-probabilities of every chosen and rejected response under `model`, per source.

    Each rank computes every `world_size`-th micro-batch and the results are summed over ranks,
    so the model must not be sharded yet. `compute_dtype` should be the autocast dtype of the
    training steps, so that the policy starts exactly at the reference.
    """
    from steel.train.distributed import all_reduce_sum

    pairs = batches.all_pairs()
    totals = torch.zeros(2, len(pairs), dtype=torch.float64, device=device)
    was_training = model.training
    model.eval()
    starts = range(0, len(pairs), micro_batch_size)
    for number, start in enumerate(starts):
        if number % batches.world_size != batches.rank:
            continue
        micro_batch = batches.collate([[pair] for pair in pairs[start : start + micro_batch_size]])
        micro_batch = {key: value.to(device) for key, value in micro_batch.items()}
        with torch.autocast(device.type, dtype=compute_dtype, enabled=compute_dtype != torch.float32):
            logps = sequence_logps(model, **_concatenated(micro_batch, batches.pad_id), chunk_size=chunk_size)
        chosen, rejected = logps.double().chunk(2)
        totals[0, start : start + len(chosen)] = chosen
        totals[1, start : start + len(rejected)] = rejected
    model.train(was_training)
    all_reduce_sum(totals)

    result = []
    position = 0
    for source in batches.sources:
        end = position + len(source)
        result.append((totals[0, position:end].float().cpu(), totals[1, position:end].float().cpu()))
        position = end
    return result


def save_reference_logps(path: Path, reference: list[tuple[torch.Tensor, torch.Tensor]], fingerprint: str) -> None:
    from safetensors.torch import save_file

    from steel.data.io import atomic_path

    tensors = {}
    for index, (chosen, rejected) in enumerate(reference):
        tensors[f"source{index}.chosen"] = chosen.contiguous()
        tensors[f"source{index}.rejected"] = rejected.contiguous()
    with atomic_path(path) as temp_path:
        save_file(tensors, str(temp_path), metadata={"fingerprint": fingerprint, "sources": str(len(reference))})


def load_reference_logps(path: Path, fingerprint: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
        if metadata.get("fingerprint") != fingerprint:
            raise ValueError(
                f"{path} contains reference log-probabilities of other data (fingerprint {metadata.get('fingerprint')}, "
                f"now {fingerprint}); delete it to recompute them from the starting model"
            )
        return [(f.get_tensor(f"source{i}.chosen"), f.get_tensor(f"source{i}.rejected"))
                for i in range(int(metadata["sources"]))]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# The run


@dataclass
class DPOOptimizerConfig(OptimizerConfig):
    lr: float = 5e-6
    """Peak learning rate (AdamW), reached at the end of warmup (the report: 5e-6)."""


@dataclass
class DPOBatchConfig(BatchConfig):
    global_batch_size: int = 128
    """Preference pairs per optimizer step over all ranks (the report: 128)."""

    micro_batch_size: int = 4
    """Pairs per forward/backward pass on one rank (each pair is two sequences)."""


@dataclass
class DPOConfig(TrainConfig):
    """A DPO run. Defaults from the Steel-LLM report: beta 0.1, 3 epochs, global batch 128 pairs,
    max LR 5e-6, cosine decay. The warmup ratio is not from the report."""

    run_dir: str = "runs/dpo"
    """Directory of the run: resolved config, checkpoints, metrics.jsonl and plots."""

    dpo: DPOSettings = field(default_factory=DPOSettings)
    data: DPODataConfig = field(default_factory=DPODataConfig)
    optimizer: DPOOptimizerConfig = field(default_factory=DPOOptimizerConfig)
    schedule: PostTrainingScheduleConfig = field(default_factory=PostTrainingScheduleConfig)
    batch: DPOBatchConfig = field(default_factory=DPOBatchConfig)
    logging: PostTrainingLoggingConfig = field(default_factory=PostTrainingLoggingConfig)


def _reference_logps(config: DPOConfig, model: torch.nn.Module, batches: DPOBatches, env) -> list:
    """Load the run's precomputed reference log-probabilities, or compute them with the starting model."""
    from steel.train.checkpoint import latest_checkpoint

    path = Path(config.run_dir) / REFERENCE_FILE
    if path.is_file():
        return load_reference_logps(path, batches.fingerprint())
    if config.checkpoint.resume != "never" and latest_checkpoint(config.run_dir) is not None:
        raise ValueError(f"{path} is missing, so the reference log-probabilities of this resumed run are lost; "
                         "start a new run")  # fmt: skip
    model.to(env.device)
    dtype = config.precision.dtype
    compute_dtype = torch.bfloat16 if dtype == "bfloat16" or (dtype == "auto" and env.device.type == "cuda") else torch.float32
    reference = compute_reference_logps(model, batches, config.batch.micro_batch_size, env.device, compute_dtype,
                                        config.system.loss_chunk_size)  # fmt: skip
    if env.is_main:
        save_reference_logps(path, reference, batches.fingerprint())
    logger.info("precomputed reference log-probabilities of %d pairs into %s", sum(len(c) for c, _ in reference), path)
    return reference


def run_dpo(config: DPOConfig):
    """Train with DPO as `config` specifies, on this process's share of the world; return the final TrainState."""
    from steel.train.distributed import barrier, destroy_distributed, init_distributed
    from steel.train.load import build_model
    from steel.train.trainer import Trainer, configure_determinism

    env = init_distributed(config.system.device)
    try:
        configure_determinism(config)
        tokenizer = resolve_tokenizer(config.data.tokenizer, config.model.init_from)
        sources = load_pair_sources(config.data, tokenizer)
        batches = DPOBatches(sources, config.data, tokenizer.pad_id, config.batch.global_batch_size,
                             rank=env.rank, world_size=env.world_size)  # fmt: skip
        resolve_schedule(config, batches.num_steps)
        config.validate()

        # The policy starts from init_from; a resumed run loads its checkpoint inside fit(), after
        # the reference (a copy, or log-probabilities) has been taken from these starting weights.
        model = build_model(config.model, vocab_size=tokenizer.vocab_size, seed=config.seed)
        reference_model = None
        if config.data.precompute_reference:
            Path(config.run_dir).mkdir(parents=True, exist_ok=True)
            batches.reference = _reference_logps(config, model, batches, env)
            barrier()
        else:
            reference_model = frozen_copy(model).to(env.device)
        loss = DPOLoss(config.dpo.beta, tokenizer.pad_id, reference_model, chunk_size=config.system.loss_chunk_size)

        trainer = Trainer(
            config, model, loss, batches, env,
            tokenizer=tokenizer,
            stage="dpo",
            block_size=config.data.cutoff_len,
            extra_meta={"dpo_sources": {source.name: source.stats for source in sources}},
        )  # fmt: skip
        return trainer.fit()
    finally:
        destroy_distributed()


def main(args: argparse.Namespace) -> int:
    from steel.train.trainer import NonFiniteLossError

    try:
        config = parse_config(args, DPOConfig)
        if config is None:
            return 0
        state = run_dpo(config)
    except (ValueError, FileNotFoundError, NonFiniteLossError) as error:
        raise SystemExit(f"error: {error}") from None
    except KeyboardInterrupt as error:
        from steel.train.cli import report_interrupt

        return report_interrupt(error)
    logger.info("DPO finished at step %d; run directory %s", state.step, config.run_dir)
    return 0


__all__ = ["DPOConfig", "DPOLoss", "DPOBatches", "add_arguments", "main", "run_dpo"]
