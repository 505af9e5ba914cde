"""Chat data for supervised fine-tuning: formats, preparation, mixtures, packing and batches.

Records become conversations (`[{"role", "content"}]`) from four input formats, detected per
record unless a source names one:

- Alpaca: `instruction`, optional `input`, `output`, optional `system` and `history`
  (`[[user, assistant], ...]` turns before the instruction).
- ShareGPT: `conversations` of `{"from", "value"}` (`human`/`gpt`, also `user`/`assistant`),
  optional `system`.
- OpenAI: `messages` of `{"role", "content"}`, the form `steel data convert` writes for dialogue.
- Multiple choice: `question`, the options as `choices` (a list or an `{"A": ...}` mapping) or as
  fields `A`, `B`, `C`, ...; `answer` (a letter); optional `explanation` (or `analysis`). Each
  question becomes a chat sample with the bare answer, with the worked answer, or both.

Self-identity conversations come from built-in templates (or a template file) with the model's
name and maker filled in. Each conversation is encoded by `steel.tokenizer.chat.encode_chat`;
samples with no supervised token after truncation are skipped and counted, like every other
record that cannot be used.

`SFTBatches` draws a weighted mixture of the sources afresh every epoch, optionally packs several
samples per row (segment ids keep them apart in the model), and hands the trainer the micro-batches
of one optimizer step at a time together with a resume state.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from steel.data.io import BadRecord, BadRecordLog, data_suffix, iter_records
from steel.data.langid import is_chinese
from steel.data.sources.base import RecordError
from steel.data.sources.dialogue import ROLE_ALIASES
from steel.tokenizer import SteelTokenizer
from steel.tokenizer.chat import encode_chat
from steel.train.loss import IGNORE_INDEX

logger = logging.getLogger(__name__)

FORMATS = ("auto", "alpaca", "sharegpt", "messages", "multiple_choice", "identity")
CHOICE_VARIANTS = ("answer", "explained", "both")
DATA_SUFFIXES = (".jsonl", ".json", ".parquet")


# ---------------------------------------------------------------------------------------------
# Configuration


@dataclass
class SFTSourceConfig:
    path: str | None = None
    """A JSONL, JSON-array or Parquet file, or a directory of them (`.gz`/`.zst` allowed). Not
    used by `format: identity`."""

    format: str = "auto"
    """`auto` (per record), `alpaca`, `sharegpt`, `messages`, `multiple_choice` or `identity`."""

    name: str | None = None
    """Name in logs and statistics; default: the file or directory name."""

    weight: float | None = None
    """Share of each epoch's samples drawn from this source (normalised over all sources). Set it
    on every source or on none; none takes every sample once per epoch."""

    system: str | None = None
    """System prompt for conversations that carry none; None keeps the template's default
    ("You are a helpful assistant.")."""

    language: str | None = None
    """`zh` keeps only conversations whose text is Chinese; None keeps all."""

    choice_answer: str = "both"
    """Multiple choice: `answer` (the letter only), `explained` (worked answer, then the letter;
    the letter only where a question has no explanation) or `both` (one sample of each)."""


@dataclass
class IdentityConfig:
    name: str = "Steel"
    """Model name used in self-identity samples."""

    maker: str = "the Steel developers"
    """Maker named in self-identity samples."""

    templates: str | None = None
    """JSONL of `{"question", "answer"}` templates with `{name}` and `{maker}` placeholders;
    None uses the built-in Chinese and English templates."""


@dataclass
class SFTDataConfig:
    sources: list[SFTSourceConfig] = field(default_factory=list)
    """The mixture: a list of sources (see `SFTSourceConfig`)."""

    tokenizer: str | None = None
    """Tokenizer spec ("qwen" or a directory); default: the tokenizer of the initial model."""

    cutoff_len: int = 2048
    """Maximum tokens per conversation; longer ones are truncated (never inside a chat marker)."""

    packing: bool = False
    """Pack several conversations into each row of `cutoff_len` tokens. Segment ids keep them from
    seeing each other in attention and in the Soft-MoE FFN."""

    samples_per_epoch: int | None = None
    """Conversations drawn per epoch when sources have weights; default: the total of all sources."""

    epochs: int = 4
    """Passes over the (re-drawn) mixture."""

    seed: int = 0
    """Seed of the mixture draw and the shuffle; each epoch derives its own."""

    identity: IdentityConfig = field(default_factory=IdentityConfig)
    """Settings of `format: identity` sources."""

    @property
    def block_size(self) -> int:
        """Maximum row length in tokens, under the name the trainer core uses."""
        return self.cutoff_len

    def validate(self) -> list[str]:
        """Return every problem of the data settings (empty when valid)."""
        problems = []
        if not self.sources:
            problems.append("data.sources is empty; list at least one source")
        weights = [source.weight for source in self.sources]
        if any(w is None for w in weights) and any(w is not None for w in weights):
            problems.append("set data.sources[*].weight on every source or on none")
        for index, source in enumerate(self.sources):
            where = f"data.sources[{index}]"
            if source.format not in FORMATS:
                problems.append(f"{where}.format must be one of {', '.join(FORMATS)}, not {source.format!r}")
            if source.format != "identity" and not source.path:
                problems.append(f"{where}.path is missing")
            if source.weight is not None and not source.weight > 0:
                problems.append(f"{where}.weight must be positive, not {source.weight}")
            if source.language not in (None, "zh"):
                problems.append(f"{where}.language must be zh or null, not {source.language!r}")
            if source.choice_answer not in CHOICE_VARIANTS:
                problems.append(f"{where}.choice_answer must be one of {', '.join(CHOICE_VARIANTS)}")
        if self.cutoff_len < 2:
            problems.append("data.cutoff_len must be at least 2")
        if self.epochs < 1:
            problems.append("data.epochs must be at least 1")
        if self.samples_per_epoch is not None and self.samples_per_epoch < 1:
            problems.append("data.samples_per_epoch must be at least 1")
        return problems


# ---------------------------------------------------------------------------------------------
# Record formats -> conversations


def detect_format(record: dict) -> str:
    """Name the format of one record from its fields, or raise RecordError."""
    if "messages" in record:
        return "messages"
    if "conversations" in record:
        return "sharegpt"
    if "instruction" in record and "output" in record:
        return "alpaca"
    if "question" in record and "answer" in record:
        return "multiple_choice"
    raise RecordError(
        "unknown record format",
        f"fields {sorted(record)}; expected messages, conversations, instruction+output or question+answer",
    )


def _text(value: Any, field_name: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RecordError(f"invalid field {field_name!r}", f"expected a string, got {type(value).__name__}")
    return value


def _with_system(messages: list[dict], system: str | None) -> list[dict]:
    if system and (not messages or messages[0]["role"] != "system"):
        return [{"role": "system", "content": system}] + messages
    return messages


def alpaca_messages(record: dict) -> list[dict]:
    instruction = _text(record.get("instruction"), "instruction").strip()
    extra_input = _text(record.get("input"), "input").strip()
    output = _text(record.get("output"), "output")
    prompt = f"{instruction}\n{extra_input}" if extra_input else instruction
    if not prompt:
        raise RecordError("empty instruction")

    messages = []
    history = record.get("history") or []
    if not isinstance(history, list):
        raise RecordError("invalid field 'history'", "expected a list of [user, assistant] pairs")
    for turn in history:
        if not (isinstance(turn, (list, tuple)) and len(turn) == 2):
            raise RecordError("invalid field 'history'", f"expected [user, assistant], got {turn!r}")
        messages.append({"role": "user", "content": _text(turn[0], "history")})
        messages.append({"role": "assistant", "content": _text(turn[1], "history")})
    messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": output}]
    return _with_system(messages, _text(record.get("system"), "system"))


def sharegpt_messages(record: dict) -> list[dict]:
    turns = record["conversations"]
    if not isinstance(turns, list):
        raise RecordError("invalid field 'conversations'", f"expected a list, got {type(turns).__name__}")
    messages = []
    for index, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise RecordError("invalid turn", f"turn {index} is {type(turn).__name__}, expected an object")
        speaker = turn.get("from", turn.get("role"))
        role = ROLE_ALIASES.get(str(speaker).strip().lower())
        if role is None:
            raise RecordError("unknown role", f"turn {index} is from {speaker!r}")
        messages.append({"role": role, "content": _text(turn.get("value", turn.get("content")), "value")})
    return _with_system(messages, _text(record.get("system"), "system"))


def openai_messages(record: dict) -> list[dict]:
    turns = record["messages"]
    if not isinstance(turns, list):
        raise RecordError("invalid field 'messages'", f"expected a list, got {type(turns).__name__}")
    messages = []
    for index, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise RecordError("invalid turn", f"turn {index} is {type(turn).__name__}, expected an object")
        role = ROLE_ALIASES.get(str(turn.get("role")).strip().lower())
        if role is None:
            raise RecordError("unknown role", f"turn {index} has role {turn.get('role')!r}")
        messages.append({"role": role, "content": _text(turn.get("content"), "content")})
    return messages


def _choice_options(record: dict) -> list[tuple[str, str]]:
    choices = record.get("choices", record.get("options"))
    if isinstance(choices, dict):
        return [(str(key).strip().upper(), _text(value, "choices")) for key, value in choices.items()]
    if isinstance(choices, list):
        return [(chr(ord("A") + i), _text(value, "choices")) for i, value in enumerate(choices)]
    letters = [letter for letter in "ABCDEFGH" if letter in record]
    if letters:
        return [(letter, _text(record[letter], letter)) for letter in letters]
    raise RecordError("missing field 'choices'", "expected choices, options, or fields A, B, C, ...")


def choice_messages(record: dict, variant: str) -> tuple[list[list[dict]], bool]:
    """Return the chat samples of one multiple-choice question and whether it had an explanation.

    `variant` is one of `CHOICE_VARIANTS`; a question without an explanation gives the bare-answer
    sample only.
    """
    question = _text(record.get("question"), "question").strip()
    if not question:
        raise RecordError("missing field 'question'", "a multiple-choice record needs a question")
    options = _choice_options(record)
    letters = [letter for letter, _ in options]
    answer = _text(record.get("answer"), "answer").strip().upper()
    if answer not in letters:
        raise RecordError("invalid field 'answer'", f"{answer!r} is not one of the options {letters}")
    explanation = _text(record.get("explanation", record.get("analysis")), "explanation").strip()

    # Exam data in this project is mostly Chinese (C-Eval, CMMLU), so Chinese wording is the
    # default and English questions get English wording.
    chinese = any("\u4e00" <= char <= "\u9fff" for char in question)
    option_lines = "\n".join(f"{letter}. {text.strip()}" for letter, text in options)
    if chinese:
        prompt = f"以下是一道单项选择题，请选出正确答案。\n\n{question}\n{option_lines}"
        bare, worked = f"答案：{answer}", f"{explanation}\n答案：{answer}"
    else:
        prompt = f"The following is a multiple-choice question. Choose the correct answer.\n\n{question}\n{option_lines}"
        bare, worked = f"Answer: {answer}", f"{explanation}\nAnswer: {answer}"

    answers = []
    if variant in ("answer", "both") or not explanation:
        answers.append(bare)
    if variant in ("explained", "both") and explanation:
        answers.append(worked)
    samples = [[{"role": "user", "content": prompt}, {"role": "assistant", "content": text}] for text in answers]
    return samples, bool(explanation)


def record_conversations(record: dict, source: SFTSourceConfig, counts: Counter) -> list[list[dict]]:
    """Turn one record into conversations (several for multiple choice), or raise RecordError.

    `counts` receives the number of multiple-choice questions with and without an explanation.
    """
    record_format = detect_format(record) if source.format == "auto" else source.format
    if record_format == "multiple_choice":
        conversations, explained = choice_messages(record, source.choice_answer)
        counts["with explanation" if explained else "without explanation"] += 1
    elif record_format == "alpaca":
        conversations = [alpaca_messages(record)]
    elif record_format == "sharegpt":
        conversations = [sharegpt_messages(_require(record, "conversations"))]
    else:
        conversations = [openai_messages(_require(record, "messages"))]
    return [_with_system(messages, source.system) for messages in conversations]


def _require(record: dict, field_name: str) -> dict:
    if field_name not in record:
        raise RecordError(f"missing field {field_name!r}", f"fields present: {', '.join(sorted(record))}")
    return record


# ---------------------------------------------------------------------------------------------
# Self-identity samples

# Questions and answers written for Steel; `{name}` and `{maker}` come from IdentityConfig.
IDENTITY_TEMPLATES_ZH = (
    ["你是谁？", "请介绍一下你自己。", "你叫什么名字？", "你是哪个公司或团队开发的？", "你是什么模型？",
     "你的开发者是谁？", "我该怎么称呼你？", "你好，你是ChatGPT吗？"],
    ["我是{name}，由{maker}训练的中文语言模型，可以回答问题、写作和聊天。",
     "你好！我叫{name}，是{maker}开发的人工智能助手。有什么可以帮你的吗？",
     "我是由{maker}从零开始训练的语言模型{name}，很高兴为你提供帮助。"],
)  # fmt: skip
IDENTITY_TEMPLATES_EN = (
    ["Who are you?", "What is your name?", "Who made you?", "Introduce yourself.",
     "Are you ChatGPT?"],
    ["I am {name}, a language model trained by {maker}. I can answer questions, write and chat.",
     "Hi! I'm {name}, an AI assistant built by {maker}. How can I help you?"],
)  # fmt: skip


def identity_conversations(config: IdentityConfig) -> list[list[dict]]:
    """Fill the identity templates with the configured name and maker, one conversation per pair."""
    if config.templates:
        pairs = []
        on_bad = BadRecordLog()
        for line_no, record in iter_records(config.templates, on_bad=on_bad):
            if not isinstance(record.get("question"), str) or not isinstance(record.get("answer"), str):
                raise ValueError(f"{config.templates}:{line_no}: an identity template needs 'question' and 'answer'")
            pairs.append((record["question"], record["answer"]))
        if on_bad.total:
            raise ValueError(f"{config.templates}: {on_bad.total} unreadable lines: {on_bad.examples}")
    else:
        pairs = [(q, a) for questions, answers in (IDENTITY_TEMPLATES_ZH, IDENTITY_TEMPLATES_EN)
                 for q in questions for a in answers]  # fmt: skip

    settings = {"name": config.name, "maker": config.maker}
    try:
        return [
            [{"role": "user", "content": q.format(**settings)}, {"role": "assistant", "content": a.format(**settings)}]
            for q, a in pairs
        ]
    except (KeyError, IndexError) as error:
        raise ValueError(f"identity template uses an unknown placeholder {error}; use {{name}} and {{maker}}") from None


# ---------------------------------------------------------------------------------------------
# Loading and tokenizing sources


@dataclass
class TokenizedSource:
    """The samples of one source: token ids and loss masks, concatenated, with offsets."""

    name: str
    ids: np.ndarray  # int32 [total tokens]
    mask: np.ndarray  # uint8 [total tokens], 1 = supervised target
    offsets: np.ndarray  # int64 [num_samples + 1]
    stats: dict[str, Any]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        start, end = self.offsets[index], self.offsets[index + 1]
        return self.ids[start:end], self.mask[start:end]

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def source_files(path: str | Path) -> list[Path]:
    """Return the data files of a source path: the file itself, or a directory's data files."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and data_suffix(p) in DATA_SUFFIXES)
        if not files:
            raise ValueError(f"{path}: no .jsonl, .json or .parquet files in this directory")
        return files
    raise ValueError(f"SFT source not found: {path}")


def iter_conversations(source: SFTSourceConfig, identity: IdentityConfig, stats: dict) -> Iterator[list[dict]]:
    """Yield the usable conversations of one source; when exhausted, `stats` contains the counts.

    `stats` receives `records`, `skipped` (reason -> count), `skipped_examples` and, for
    multiple-choice data, `multiple_choice_questions`.
    """
    stats.update(records=0, skipped={})
    if source.format == "identity":
        yield from identity_conversations(identity)
        return

    bad = BadRecordLog()
    choice_counts: Counter = Counter()
    for path in source_files(source.path):
        for line_no, record in iter_records(path, on_bad=bad):
            stats["records"] += 1
            try:
                found = record_conversations(record, source, choice_counts)
            except RecordError as error:
                bad(BadRecord(str(path), line_no, error.reason, error.detail))
                continue
            for messages in found:
                if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
                    bad(BadRecord(str(path), line_no, "empty assistant", "no assistant turn with text"))
                elif source.language == "zh" and not is_chinese(" ".join(m["content"] for m in messages)):
                    bad.counts["not Chinese"] += 1
                else:
                    yield messages
    stats["skipped"] = dict(bad.counts)
    if choice_counts:
        stats["multiple_choice_questions"] = dict(choice_counts)
    if bad.examples:
        stats["skipped_examples"] = bad.examples


def load_conversations(source: SFTSourceConfig, identity: IdentityConfig) -> tuple[list[list[dict]], dict]:
    """Read one source into conversations; return them with counts of what was skipped and why."""
    stats: dict = {}
    conversations = list(iter_conversations(source, identity, stats))
    return conversations, stats


def tokenize_source(
    name: str, conversations: Iterable[list[dict]], tokenizer: SteelTokenizer, cutoff_len: int, stats: dict
) -> TokenizedSource:
    """Encode conversations with the chat template; skip (and count) those left with no target.

    `stats` is read after `conversations` is exhausted, so it may be the dict that
    `iter_conversations` fills.
    """
    all_ids: list[np.ndarray] = []
    all_masks: list[np.ndarray] = []
    truncated = 0
    empty_after_truncation = 0
    for messages in conversations:
        ids, mask = encode_chat(tokenizer, messages)
        if len(ids) > cutoff_len:
            truncated += 1
            ids, mask = encode_chat(tokenizer, messages, cutoff_len=cutoff_len)
        # The first position is never a target (nothing precedes it), so it does not count.
        if not any(mask[1:]):
            empty_after_truncation += 1
            continue
        # int32 arrays, not lists: a Python int costs about 9 times the memory of its int32.
        all_ids.append(np.asarray(ids, dtype=np.int32))
        all_masks.append(np.asarray(mask, dtype=np.uint8))
        if len(all_ids) % 100_000 == 0:
            logger.info("SFT source %s: %d conversations tokenized", name, len(all_ids))

    offsets = np.zeros(len(all_ids) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(ids) for ids in all_ids])
    ids = np.concatenate(all_ids) if all_ids else np.zeros(0, dtype=np.int32)
    mask = np.concatenate(all_masks) if all_masks else np.zeros(0, dtype=np.uint8)
    # Targets exclude each sample's first position, which nothing precedes.
    target_tokens = int(mask.sum()) - int(mask[offsets[:-1]].sum()) if len(all_ids) else 0

    skipped = dict(stats.get("skipped", {}))
    if empty_after_truncation:
        skipped["empty assistant after truncation"] = empty_after_truncation
    stats = {**stats, "samples": len(all_ids), "truncated": truncated, "skipped": skipped,
             "target_tokens": target_tokens}  # fmt: skip
    return TokenizedSource(name=name, ids=ids, mask=mask, offsets=offsets, stats=stats)


def load_sources(config: SFTDataConfig, tokenizer: SteelTokenizer) -> list[TokenizedSource]:
    """Read, prepare and tokenize every source of the mixture, logging what each one skipped."""
    sources = []
    for index, source in enumerate(config.sources):
        name = source.name or (Path(source.path).name if source.path else source.format)
        stats: dict = {}
        conversations = iter_conversations(source, config.identity, stats)
        tokenized = tokenize_source(name, conversations, tokenizer, config.cutoff_len, stats)
        skipped = ", ".join(f"{reason}: {n}" for reason, n in tokenized.stats["skipped"].items()) or "none"
        logger.info(
            "SFT source %s: %d samples (%d target tokens, %d truncated to %d tokens); skipped: %s",
            name, len(tokenized), tokenized.stats["target_tokens"], tokenized.stats["truncated"],
            config.cutoff_len, skipped,
        )  # fmt: skip
        if "multiple_choice_questions" in stats:
            logger.info("SFT source %s: multiple-choice questions %s", name, stats["multiple_choice_questions"])
        if len(tokenized) == 0:
            raise ValueError(f"SFT source {name} ({source.path}) has no usable sample; skipped: {skipped}")
        sources.append(tokenized)
    return sources


# ---------------------------------------------------------------------------------------------
# Mixture, packing and batches


def _largest_remainder(total: int, weights: list[float]) -> list[int]:
    shares = np.asarray(weights, dtype=np.float64) / sum(weights) * total
    counts = np.floor(shares).astype(np.int64)
    remainder = total - int(counts.sum())
    for index in np.argsort(-(shares - counts), kind="stable")[:remainder]:
        counts[index] += 1
    return counts.tolist()


def draw_epoch(sizes: list[int], weights: list[float] | None, samples_per_epoch: int | None,
               seed: int, epoch: int) -> np.ndarray:  # fmt: skip
    """Return the (source, sample) pairs of one epoch, shuffled: an int64 array [n, 2].

    Without weights every sample appears once. With weights, source i contributes a share
    weight_i / sum(weights) of `samples_per_epoch`. A source drawn less than its size gets a
    different subset each epoch, and one drawn more repeats whole passes before a partial one.
    """
    if weights is None:
        counts = list(sizes)
    else:
        counts = _largest_remainder(samples_per_epoch or sum(sizes), weights)

    pairs = []
    for source_index, (size, count) in enumerate(zip(sizes, counts)):
        rng = np.random.default_rng([seed, epoch, source_index])
        passes = [rng.permutation(size) for _ in range(math.ceil(count / size))]
        indices = np.concatenate(passes)[:count] if passes else np.zeros(0, dtype=np.int64)
        pairs.append(np.stack([np.full(count, source_index), indices], axis=1))
    order = np.concatenate(pairs)
    return order[np.random.default_rng([seed, epoch]).permutation(len(order))]


def pack_rows(lengths: np.ndarray, capacity: int) -> list[list[int]]:
    """Group consecutive samples into rows of at most `capacity` model inputs (next fit).

    A sample of n tokens gives the model n - 1 inputs (the last token is only a target).
    Order is kept, so the epoch's shuffle decides which samples share a row.
    """
    rows: list[list[int]] = []
    used = capacity + 1
    for position, length in enumerate(lengths):
        inputs = int(length) - 1
        if used + inputs > capacity:
            rows.append([])
            used = 0
        rows[-1].append(position)
        used += inputs
    return rows


def collate_rows(rows: list[list[tuple[np.ndarray, np.ndarray]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Build one micro-batch from rows of samples; every sample is one segment of its row.

    Returns `input_ids`, `labels` (already shifted: `labels[t]` is the target after
    `input_ids[t]`, IGNORE_INDEX where the next token is not supervised, at every segment's
    last input and on padding), `attention_mask` (0 on padding), `position_ids` (restarting at
    each segment) and `segment_ids` (1, 2, ... per sample, 0 on padding).
    """
    width = max(sum(len(ids) - 1 for ids, _ in row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    segment_ids = torch.zeros((len(rows), width), dtype=torch.long)

    for row_index, row in enumerate(rows):
        start = 0
        for segment, (ids, mask) in enumerate(row, start=1):
            ids_t = torch.from_numpy(ids.astype(np.int64))
            mask_t = torch.from_numpy(mask.astype(bool))
            end = start + len(ids) - 1
            input_ids[row_index, start:end] = ids_t[:-1]
            labels[row_index, start:end] = torch.where(mask_t[1:], ids_t[1:], IGNORE_INDEX)
            attention_mask[row_index, start:end] = 1
            position_ids[row_index, start:end] = torch.arange(end - start)
            segment_ids[row_index, start:end] = segment
            start = end
    return {
        "input_ids": input_ids,
        "labels": labels,
        "attention_mask": attention_mask,
        "position_ids": position_ids,
        "segment_ids": segment_ids,
    }


class EpochBatches:
    """Optimizer steps over epochs of a weighted, shuffled mixture: the trainer's step source.

    Iterating yields `(local_batch, state)` per optimizer step. `local_batch` is a dict of tensors
    with this rank's `global_batch_size / world_size` rows on dim 0, which the trainer splits into
    micro-batches, and `state` is the JSON position after the step. `load_state_dict(state)`
    continues right after that step. The order depends on the data, the seed and the global batch
    size only, not on the world size. Subclasses define `collate` and may group samples into
    rows with `group_rows`.
    """

    def __init__(self, sizes: list[int], weights: list[float] | None, samples_per_epoch: int | None,
                 epochs: int, seed: int, global_batch_size: int, rank: int = 0, world_size: int = 1):  # fmt: skip
        if global_batch_size % world_size != 0:
            raise ValueError(f"global batch size {global_batch_size} is not a multiple of the world size {world_size}")
        self.sizes = sizes
        self.weights = weights
        self.samples_per_epoch = samples_per_epoch
        self.epochs = epochs
        self.seed = seed
        self.global_batch_size = global_batch_size
        self.rank = rank
        self.world_size = world_size
        self._rows_cache: tuple[int, list] | None = None
        self.epoch = 0
        self.step_in_epoch = 0
        self.steps_per_epoch = [math.ceil(len(self.epoch_rows(epoch)) / global_batch_size) for epoch in range(epochs)]
        self._fingerprint: str | None = None

    def group_rows(self, pairs: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
        """Group an epoch's (source, sample) pairs into rows; by default one sample per row."""
        return [[pair] for pair in pairs]

    def collate(self, rows: list[list[tuple[int, int]]]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def fingerprint_data(self) -> bytes:
        """Bytes that identify the data; with the settings they make the resume fingerprint."""
        raise NotImplementedError

    def epoch_rows(self, epoch: int) -> list[list[tuple[int, int]]]:
        """Return the rows of one epoch in training order (the latest epoch is cached)."""
        if self._rows_cache is None or self._rows_cache[0] != epoch:
            order = draw_epoch(self.sizes, self.weights, self.samples_per_epoch, self.seed, epoch)
            self._rows_cache = (epoch, self.group_rows([(int(s), int(i)) for s, i in order]))
        return self._rows_cache[1]

    @property
    def num_steps(self) -> int:
        """Optimizer steps of the whole run (all epochs)."""
        return sum(self.steps_per_epoch)

    def fingerprint(self) -> str:
        """Return a digest of the data and settings that decide the order, checked on resume."""
        if self._fingerprint is None:
            digest = hashlib.sha256(self.fingerprint_data())
            settings = [self.sizes, self.weights, self.samples_per_epoch, self.epochs, self.seed, self.global_batch_size]
            digest.update(json.dumps(settings).encode())
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint

    def step_rows(self, epoch: int, step: int) -> list[list[tuple[int, int]]]:
        """Return the global batch of one step; the last step of an epoch is filled from the epoch's start."""
        rows = self.epoch_rows(epoch)
        start = step * self.global_batch_size
        batch = rows[start : start + self.global_batch_size]
        if len(batch) < self.global_batch_size:
            # NOTE: the wrap-around repeats a few rows once per epoch so that every step has the
            # same number of rows, which FSDP and gradient accumulation require.
            batch += [rows[i % len(rows)] for i in range(self.global_batch_size - len(batch))]
        return batch

    def local_batch(self, epoch: int, step: int) -> dict[str, torch.Tensor]:
        """This rank's rows of one step, collated."""
        per_rank = self.global_batch_size // self.world_size
        return self.collate(self.step_rows(epoch, step)[self.rank * per_rank : (self.rank + 1) * per_rank])

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "fingerprint": self.fingerprint()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("fingerprint") != self.fingerprint():
            raise ValueError(
                "the training data or its settings changed since the checkpoint was written "
                f"(fingerprint {state.get('fingerprint')} != {self.fingerprint()}); resume with the same "
                "data, seed, cutoff_len, packing and global batch size, or start a new run"
            )
        self.epoch = int(state["epoch"])
        self.step_in_epoch = int(state["step_in_epoch"])

    def __iter__(self) -> Iterator[tuple[dict[str, torch.Tensor], dict[str, Any]]]:
        while self.epoch < self.epochs:
            while self.step_in_epoch < self.steps_per_epoch[self.epoch]:
                batch = self.local_batch(self.epoch, self.step_in_epoch)
                self.step_in_epoch += 1
                yield batch, self.state_dict()
            self.epoch += 1
            self.step_in_epoch = 0


class SFTBatches(EpochBatches):
    """The steps of an SFT run: rows of one sample each, or packed rows with `data.packing`.

    Each local batch is a dict for `steel.train.loss.CausalLMLoss` (see `collate_rows`).
    """

    def __init__(self, sources: list[TokenizedSource], config: SFTDataConfig, pad_id: int,
                 global_batch_size: int, rank: int = 0, world_size: int = 1):  # fmt: skip
        self.sources = sources
        self.config = config
        self.pad_id = pad_id
        self._lengths = [source.lengths() for source in sources]
        weights = None if config.sources[0].weight is None else [s.weight for s in config.sources]
        super().__init__([len(s) for s in sources], weights, config.samples_per_epoch, config.epochs,
                         config.seed, global_batch_size, rank, world_size)  # fmt: skip

    def group_rows(self, pairs: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
        if not self.config.packing:
            return super().group_rows(pairs)
        lengths = np.array([self._lengths[s][i] for s, i in pairs], dtype=np.int64)
        return [[pairs[p] for p in row] for row in pack_rows(lengths, self.config.cutoff_len)]

    def collate(self, rows: list[list[tuple[int, int]]]) -> dict[str, torch.Tensor]:
        return collate_rows([[self.sources[s].sample(i) for s, i in row] for row in rows], self.pad_id)

    def fingerprint_data(self) -> bytes:
        digest = hashlib.sha256()
        for source in self.sources:
            digest.update(source.offsets.tobytes())
            digest.update(source.ids.tobytes())
            digest.update(source.mask.tobytes())
        digest.update(json.dumps([self.config.cutoff_len, self.config.packing]).encode())
        return digest.digest()
