"""The Qwen1.5 tokenizer, offline: tiktoken over the BPE ranks shipped in the `dashscope` package.

It gives the same ids as Hugging Face's `Qwen2Tokenizer` (transformers 5.17) built from Qwen1.5's
`vocab.json`/`merges.txt`. Both use the same pre-tokenisation pattern and put the three special
tokens after the 151,643 ranks. The Hugging Face tokenizer has an NFC normalizer and tiktoken has
none, so this module applies NFC before BPE. The model's embedding has 151,936 rows; ids 151,646 and above have no token.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import unicodedata
from pathlib import Path

from steel.resources import package_file, sha256_file
from steel.tokenizer import ENDOFTEXT, IM_END, IM_START, SteelTokenizer

# Qwen's pre-tokenisation: English contractions, letter runs with one leading non-letter, single
# digits, punctuation runs, newlines and other whitespace.
QWEN_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
QWEN_NUM_RANKS = 151_643
QWEN_SPECIAL_IDS = {ENDOFTEXT: 151_643, IM_START: 151_644, IM_END: 151_645}
QWEN_VOCAB_SIZE = 151_936  # embedding rows of Qwen1.5 models, a multiple of 128

# Qwen1.5's chat template (ChatML). A conversation without a system message gets the default
# system prompt "You are a helpful assistant."; every turn ends with <|im_end|> and a newline.
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}"
    "{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
QWEN_DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
QWEN_MODEL_MAX_LENGTH = 32_768


@functools.cache
def load_qwen_ranks() -> dict[bytes, int]:
    """Read the 151,643 BPE ranks (base64 token, rank per line) from the pinned `dashscope` file."""
    path = package_file("qwen.tiktoken")
    ranks: dict[bytes, int] = {}
    with open(path, "rb") as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    if len(ranks) != QWEN_NUM_RANKS:
        raise ValueError(f"{path}: expected {QWEN_NUM_RANKS} ranks, found {len(ranks)}")
    return ranks


def _nfc(text: str) -> str:
    # is_normalized is a fast scan; most text is already NFC and is returned unchanged.
    return text if unicodedata.is_normalized("NFC", text) else unicodedata.normalize("NFC", text)


class QwenTokenizer(SteelTokenizer):
    """Qwen1.5's tokenizer on tiktoken; `to_hf()` and `save_pretrained()` give the Hugging Face form."""

    name = "qwen"
    vocab_size = QWEN_VOCAB_SIZE

    def __init__(self) -> None:
        import tiktoken

        self.special_ids = dict(QWEN_SPECIAL_IDS)
        self.chat_template = QWEN_CHAT_TEMPLATE
        self._encoding = tiktoken.Encoding(
            "qwen",
            pat_str=QWEN_PATTERN,
            mergeable_ranks=load_qwen_ranks(),
            special_tokens=self.special_ids,
        )
        self._num_tokens = QWEN_NUM_RANKS + len(self.special_ids)

    def __getstate__(self) -> dict:
        # A tiktoken Encoding is rebuilt in the receiving process rather than serialised.
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    def encode(self, text: str, allow_special: bool = False) -> list[int]:
        text = _nfc(text)
        if allow_special:
            return self._encoding.encode(text, allowed_special="all")
        return self._encoding.encode_ordinary(text)

    def encode_batch(self, texts: list[str], allow_special: bool = False, num_threads: int = 8) -> list[list[int]]:
        texts = [_nfc(text) for text in texts]
        if allow_special:
            return self._encoding.encode_batch(texts, num_threads=num_threads, allowed_special="all")
        return self._encoding.encode_ordinary_batch(texts, num_threads=num_threads)

    def decode(self, ids: list[int]) -> str:
        # Ids without a token (151,646 .. 151,935 are embedding padding) decode to nothing, as in
        # the Hugging Face tokenizer; invalid UTF-8 becomes U+FFFD.
        ids = [int(i) for i in ids if 0 <= int(i) < self._num_tokens]
        return self._encoding.decode(ids, errors="replace")

    def decode_bytes(self, ids: list[int]) -> bytes:
        return self._encoding.decode_bytes([int(i) for i in ids if 0 <= int(i) < self._num_tokens])

    def identity(self) -> dict:
        return {"name": self.name, "sha256": qwen_identity_sha256(), "vocab_size": self.vocab_size}

    def to_hf(self):
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast(
            tokenizer_object=build_qwen_backend(),
            **_qwen_tokenizer_config(),
        )

    def save_pretrained(self, directory: str | Path) -> Path:
        return export_qwen(directory)


@functools.cache
def qwen_identity_sha256() -> str:
    """sha256 over everything that decides Qwen's ids: the ranks, the pattern, NFC and the specials."""
    definition = {
        "ranks_sha256": sha256_file(package_file("qwen.tiktoken")),
        "pattern": QWEN_PATTERN,
        "normalization": "NFC",
        "special_ids": QWEN_SPECIAL_IDS,
    }
    return hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()


@functools.cache
def bytes_to_unicode() -> dict[int, str]:
    """Byte-level BPE's printable stand-in character for each of the 256 byte values (GPT-2's table)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    table = {byte: chr(byte) for byte in printable}
    shift = 0
    for byte in range(256):
        if byte not in table:
            table[byte] = chr(256 + shift)
            shift += 1
    return table


def _split_by_lower_ranks(token: bytes, ranks: dict[bytes, int]) -> tuple[bytes, bytes]:
    """Replay BPE on `token` with only the ranks below its own; the last two parts form its merge."""
    max_rank = ranks[token]
    parts = [bytes([b]) for b in token]
    while len(parts) > 2:
        best_index, best_rank = -1, max_rank
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < best_rank:
                best_index, best_rank = i, rank
        if best_index < 0:
            break
        parts[best_index : best_index + 2] = [parts[best_index] + parts[best_index + 1]]
    if len(parts) != 2:
        raise ValueError(f"token {token!r} (rank {max_rank}) cannot be built from two lower-ranked tokens")
    return parts[0], parts[1]


@functools.cache
def qwen_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level vocabulary and merges rebuilt from the ranks, in rank order (takes a few seconds)."""
    ranks = load_qwen_ranks()
    byte_chars = bytes_to_unicode()

    def to_text(token: bytes) -> str:
        return "".join(byte_chars[b] for b in token)

    vocab = {to_text(token): rank for token, rank in ranks.items()}
    merges = []
    for token, _rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) > 1:
            left, right = _split_by_lower_ranks(token, ranks)
            merges.append((to_text(left), to_text(right)))
    return vocab, merges


def build_qwen_backend():
    """Build a `tokenizers.Tokenizer` equal to Hugging Face's Qwen1.5 tokenizer from the ranks."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE

    vocab, merges = qwen_vocab_and_merges()
    backend = Tokenizer(BPE(vocab=dict(vocab), merges=list(merges), fuse_unk=False, byte_fallback=False))
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(
        [AddedToken(token, special=True, normalized=False) for token in sorted(QWEN_SPECIAL_IDS, key=QWEN_SPECIAL_IDS.get)]
    )
    added = {token: backend.token_to_id(token) for token in QWEN_SPECIAL_IDS}
    if added != QWEN_SPECIAL_IDS:
        raise AssertionError(f"special tokens got ids {added}, expected {QWEN_SPECIAL_IDS}")
    return backend


def _qwen_tokenizer_config() -> dict:
    return {
        "bos_token": None,
        "eos_token": IM_END,
        "pad_token": ENDOFTEXT,
        "unk_token": None,
        "additional_special_tokens": [IM_START, IM_END],
        "chat_template": QWEN_CHAT_TEMPLATE,
        "model_max_length": QWEN_MODEL_MAX_LENGTH,
        "clean_up_tokenization_spaces": False,
        "split_special_tokens": False,
    }


def qwen_tokenizer_config_json() -> dict:
    """Return the `tokenizer_config.json` of an exported Qwen1.5 tokenizer directory."""
    added_tokens_decoder = {
        str(token_id): {
            "content": token,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for token, token_id in QWEN_SPECIAL_IDS.items()
    }
    return {
        "add_prefix_space": False,
        "added_tokens_decoder": added_tokens_decoder,
        **_qwen_tokenizer_config(),
        "errors": "replace",
        "tokenizer_class": "Qwen2Tokenizer",
    }


def _write_text_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)


def export_qwen(directory: str | Path) -> Path:
    """Write Qwen1.5's tokenizer as a Hugging Face directory: tokenizer.json, vocab.json, merges.txt, config."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab, merges = qwen_vocab_and_merges()

    backend = build_qwen_backend()
    _write_text_atomic(directory / "tokenizer.json", backend.to_str(pretty=False))
    _write_text_atomic(directory / "vocab.json", json.dumps(vocab, ensure_ascii=False))
    _write_text_atomic(directory / "merges.txt", "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))

    config = qwen_tokenizer_config_json()
    _write_text_atomic(directory / "tokenizer_config.json", json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    special_tokens_map = {key: config[key] for key in ("eos_token", "pad_token", "additional_special_tokens")}
    _write_text_atomic(directory / "special_tokens_map.json", json.dumps(special_tokens_map, indent=2) + "\n")

    # Loading this directory back keeps the name, the 151,936 embedding rows and the identity of "qwen".
    metadata = {
        "name": "qwen",
        "vocab_size": QWEN_VOCAB_SIZE,
        "identity": QwenTokenizer().identity(),
        "tokenizer_json_sha256": sha256_file(directory / "tokenizer.json"),
    }
    _write_text_atomic(directory / "steel_tokenizer.json", json.dumps(metadata, indent=2) + "\n")
    return directory
