"""Tokenizers: the Qwen1.5 tokenizer (tiktoken), trained byte-level BPE and any Hugging Face directory.

`load_tokenizer(spec)` returns a `SteelTokenizer`. `spec` is `"qwen"` or a Hugging Face tokenizer
directory. Heavy dependencies (tiktoken, tokenizers, transformers) load only when a tokenizer is
built, so importing this package stays cheap.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END)


class SteelTokenizer(abc.ABC):
    """The tokenizer interface shared by data, training, evaluation and serving.

    Special-token text inside an input string is ordinary text unless `allow_special=True`:
    special ids only ever come from the caller, never from data.

    Text with a lone surrogate (see `find_lone_surrogate`) has no UTF-8 form: a Hugging Face
    tokenizer raises ValueError for it, and the Qwen tokenizer encodes it as U+FFFD, as tiktoken
    does. Callers that take text from users check it first.
    """

    name: str
    vocab_size: int
    """Rows the model's embedding needs: at least the largest id + 1."""
    special_ids: dict[str, int]
    """`<|endoftext|>`, `<|im_start|>` and `<|im_end|>` to their ids."""

    @abc.abstractmethod
    def encode(self, text: str, allow_special: bool = False) -> list[int]: ...

    def encode_batch(self, texts: list[str], allow_special: bool = False) -> list[list[int]]:
        return [self.encode(text, allow_special=allow_special) for text in texts]

    @abc.abstractmethod
    def decode(self, ids: list[int]) -> str: ...

    @abc.abstractmethod
    def identity(self) -> dict:
        """Name and sha256 of the files that define the tokens, recorded in manifests and checkpoints."""

    @abc.abstractmethod
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write a Hugging Face tokenizer directory that `AutoTokenizer.from_pretrained` loads."""

    @abc.abstractmethod
    def to_hf(self) -> PreTrainedTokenizerFast:
        """Return the same tokenizer as a transformers `PreTrainedTokenizerFast`."""

    @property
    def eos_id(self) -> int:
        """The end-of-turn id (`<|im_end|>`), as in Qwen1.5's chat tokenizer.

        Documents in token shards end with the manifest's separator id instead, which is
        `<|endoftext|>` by default; callers that need one or the other use `special_ids`.
        """
        return self.special_ids[IM_END]

    @property
    def pad_id(self) -> int:
        """The padding id (`<|endoftext|>`). Losses mask padding by position, never by this id."""
        return self.special_ids[ENDOFTEXT]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, vocab_size={self.vocab_size})"


def find_lone_surrogate(text: str) -> int | None:
    """Return the index of the first lone surrogate in `text`, or None when UTF-8 can encode it all.

    Python decodes bytes that are not valid in the input's encoding to the lone surrogates
    U+DC80..U+DCFF (the surrogateescape error handler, used for command-line arguments and
    often for standard input). JSON's "\\udcff" escape gives one too.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        return error.start
    return None


def load_tokenizer(spec: str | Path) -> SteelTokenizer:
    """Build a tokenizer from `"qwen"` or a Hugging Face tokenizer directory."""
    if str(spec) == "qwen":
        from steel.tokenizer.qwen import QwenTokenizer

        return QwenTokenizer()

    path = Path(spec)
    if path.is_dir():
        from steel.tokenizer.hf import HFTokenizer

        return HFTokenizer(path)
    raise ValueError(f"unknown tokenizer {str(spec)!r}: use 'qwen' or a Hugging Face tokenizer directory")


__all__ = ["ENDOFTEXT", "IM_END", "IM_START", "SPECIAL_TOKENS", "SteelTokenizer", "find_lone_surrogate", "load_tokenizer"]
