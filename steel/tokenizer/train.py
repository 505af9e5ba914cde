"""Train a byte-level BPE tokenizer with Hugging Face `tokenizers` on JSONL text.

The result uses Qwen's pre-tokenisation pattern, no normalizer (so `decode(encode(s)) == s` for
every Unicode string) and the special tokens `<|endoftext|>`, `<|im_start|>`, `<|im_end|>` at ids
0, 1 and 2. It is saved as a Hugging Face directory that `AutoTokenizer.from_pretrained` and
`load_tokenizer` load, with Qwen1.5's chat template, plus `steel_tokenizer.json` with a `training`
record (requested and trained vocabulary size, documents, characters, minimum pair frequency).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from steel.data.manifest import write_json_atomic
from steel.tokenizer import ENDOFTEXT, IM_END, IM_START, SPECIAL_TOKENS
from steel.tokenizer.hf import STEEL_METADATA_FILE

log = logging.getLogger(__name__)

MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)


@dataclass
class TrainConfig:
    """Settings of `steel tokenizer train`."""

    inputs: list[Path]
    output: Path
    vocab_size: int
    text_field: str = "text"
    min_frequency: int = 2
    """A pair must occur at least this often to become a merge."""
    max_docs: int | None = None
    """Train on the first this many documents only."""


def iter_texts(inputs: list[Path], text_field: str, max_docs: int | None = None) -> Iterator[str]:
    """Yield the non-empty `text_field` strings of JSONL/JSON/Parquet files; other records are skipped."""
    from steel.data.io import CONVERT_REMEDY, BadRecordLog, iter_records

    bad = BadRecordLog()
    num_docs = 0
    for path in inputs:
        for _, record in iter_records(path, on_bad=bad, remedy=CONVERT_REMEDY):
            text = record.get(text_field)
            if not isinstance(text, str) or not text.strip():
                bad.counts[f"missing or empty field {text_field!r}"] += 1
                continue
            yield text
            num_docs += 1
            if max_docs is not None and num_docs >= max_docs:
                return
    if bad.total:
        log.warning("skipped %d records: %s", bad.total, dict(bad.counts))
    if num_docs == 0:
        raise ValueError(f"no documents with a {text_field!r} field in {', '.join(map(str, inputs))}")


def build_trainable_tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE

    from steel.tokenizer.qwen import QWEN_PATTERN

    tokenizer = Tokenizer(BPE(fuse_unk=False, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def train_tokenizer(config: TrainConfig) -> Path:
    """Train on `config.inputs` and write a Hugging Face tokenizer directory to `config.output`."""
    from tokenizers import AddedToken, pre_tokenizers, trainers

    from steel.tokenizer.qwen import QWEN_CHAT_TEMPLATE

    if config.vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(f"vocab_size must be at least {MIN_VOCAB_SIZE} (256 bytes + 3 special tokens), got {config.vocab_size}")

    tokenizer = build_trainable_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=config.vocab_size,
        min_frequency=config.min_frequency,
        special_tokens=[AddedToken(token, special=True, normalized=False) for token in SPECIAL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus_stats = {"documents": 0, "characters": 0}
    texts = iter_texts(config.inputs, config.text_field, config.max_docs)
    tokenizer.train_from_iterator(_count_texts(texts, corpus_stats), trainer=trainer)

    training = {
        "requested_vocab_size": config.vocab_size,
        "trained_vocab_size": tokenizer.get_vocab_size(),
        "min_frequency": config.min_frequency,
        **corpus_stats,
    }
    warn_if_vocab_short(training)

    output = config.output
    output.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(output / "tokenizer.json"))
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": IM_END,
        "pad_token": ENDOFTEXT,
        "unk_token": None,
        "additional_special_tokens": [IM_START, IM_END],
        "chat_template": QWEN_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "split_special_tokens": False,
        "model_max_length": 32768,
    }
    (output / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2, ensure_ascii=False) + "\n")
    special_tokens_map = {key: tokenizer_config[key] for key in ("eos_token", "pad_token", "additional_special_tokens")}
    (output / "special_tokens_map.json").write_text(json.dumps(special_tokens_map, indent=2) + "\n")
    # The name and identity come from the directory, as for any Hugging Face directory, because this
    # metadata file sets neither. The training record is informational.
    write_json_atomic(output / STEEL_METADATA_FILE, {"training": training})
    log.info("trained a %d-token BPE tokenizer into %s", tokenizer.get_vocab_size(), output)
    return output


def _count_texts(texts: Iterator[str], stats: dict[str, int]) -> Iterator[str]:
    for text in texts:
        stats["documents"] += 1
        stats["characters"] += len(text)
        yield text


def warn_if_vocab_short(training: dict) -> bool:
    """Log a warning and return True when BPE stopped below the requested vocabulary size.

    The trainer stops early when no remaining pair occurs `min_frequency` times, which happens
    when the corpus is too small or too repetitive for the requested size.
    """
    requested, trained = training["requested_vocab_size"], training["trained_vocab_size"]
    if trained >= requested:
        return False
    log.warning(
        "the corpus (%d documents, %d characters) yields only %d of the %d requested tokens, because no "
        "remaining pair occurs %d times. Train on more text, lower --min-frequency, or ask for --vocab-size %d or less.",
        training["documents"], training["characters"], trained, requested, training["min_frequency"], trained,
    )
    return True
