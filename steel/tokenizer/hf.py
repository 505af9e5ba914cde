"""Any Hugging Face tokenizer directory as a `SteelTokenizer` (trained BPE, other base models, exports).

Encoding goes through the `tokenizers` backend with `encode_special_tokens` set, so special-token
text inside data stays ordinary text unless the caller allows it. A directory written by Steel
carries `steel_tokenizer.json` (name, embedding rows, identity); an exported Qwen1.5 directory
whose `tokenizer.json` is unchanged keeps the identity of `"qwen"`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

from steel.resources import sha256_file
from steel.tokenizer import ENDOFTEXT, IM_END, SPECIAL_TOKENS, SteelTokenizer, find_lone_surrogate

log = logging.getLogger(__name__)

STEEL_METADATA_FILE = "steel_tokenizer.json"
# Files that decide the ids; their sha256 is the identity of a directory without Steel metadata.
TOKEN_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "added_tokens.json", "tokenizer.model")
COPIED_FILES = TOKEN_FILES + (
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    STEEL_METADATA_FILE,
)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: invalid JSON at line {error.lineno}: {error.msg}") from error


def _token_content(value) -> str | None:
    # tokenizer_config.json stores a special token as a string or as an AddedToken dict.
    if isinstance(value, dict):
        return value.get("content")
    return value


def directory_sha256(directory: Path) -> str:
    """sha256 over the names and contents of the id-defining files present in `directory`."""
    digest = hashlib.sha256()
    for name in TOKEN_FILES:
        path = directory / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + sha256_file(path).encode() + b"\0")
    return digest.hexdigest()


def _check_encodable(texts: list) -> None:
    # The tokenizers backend rejects a lone surrogate with "TypeError: TextInputSequence must be
    # str", which names neither the text nor the cause.
    for index, text in enumerate(texts):
        position = find_lone_surrogate(text) if isinstance(text, str) else None
        if position is not None:
            where = f"text {index}, " if len(texts) > 1 else ""
            raise ValueError(
                f"cannot encode {where}character {position} ({ascii(text[position])}): a lone surrogate is not "
                "valid Unicode text; it usually comes from input bytes that are not valid UTF-8"
            )


class HFTokenizer(SteelTokenizer):
    """A tokenizer read from a Hugging Face directory (`tokenizer.json`, or files transformers converts)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise FileNotFoundError(f"tokenizer directory {self.directory} not found")
        self._backend = self._load_backend()
        self.config = self._read_config()
        self.chat_template = self._read_chat_template()
        self.special_ids = self._find_special_ids()
        self._eos_token = _token_content(self.config.get("eos_token"))
        self._pad_token = _token_content(self.config.get("pad_token"))

        metadata_path = self.directory / STEEL_METADATA_FILE
        metadata = _read_json(metadata_path) if metadata_path.is_file() else {}
        # Without Steel metadata the name is the absolute directory, so that manifests and
        # checkpoints can load the tokenizer again from any working directory.
        self.name = metadata.get("name") or str(self.directory.resolve())
        num_tokens = self._backend.get_vocab_size(with_added_tokens=True)
        self.vocab_size = max(int(metadata.get("vocab_size", 0)), num_tokens)
        self._identity = self._resolve_identity(metadata)

    def _load_backend(self):
        from tokenizers import Tokenizer

        tokenizer_json = self.directory / "tokenizer.json"
        if tokenizer_json.is_file():
            backend = Tokenizer.from_file(str(tokenizer_json))
        else:
            # vocab.json + merges.txt (or a sentencepiece model): transformers converts to a fast tokenizer.
            from transformers import AutoTokenizer

            backend = AutoTokenizer.from_pretrained(str(self.directory)).backend_tokenizer
        backend.no_padding()
        backend.no_truncation()
        return backend

    def _read_config(self) -> dict:
        path = self.directory / "tokenizer_config.json"
        return _read_json(path) if path.is_file() else {}

    def _read_chat_template(self) -> str | None:
        template_file = self.directory / "chat_template.jinja"
        if template_file.is_file():
            return template_file.read_text(encoding="utf-8")
        template = self.config.get("chat_template")
        return template if isinstance(template, str) else None

    def _find_special_ids(self) -> dict[str, int]:
        """Map the Qwen chat tokens present, then every other special added token (`</s>`, ...)."""
        special_ids = {}
        for token in SPECIAL_TOKENS:
            token_id = self._backend.token_to_id(token)
            if token_id is not None:
                special_ids[token] = token_id
        for token_id, added in sorted(self._backend.get_added_tokens_decoder().items()):
            if added.special:
                special_ids.setdefault(added.content, token_id)
        return special_ids

    def _resolve_identity(self, metadata: dict) -> dict:
        identity = metadata.get("identity")
        tokenizer_json = self.directory / "tokenizer.json"
        recorded = metadata.get("tokenizer_json_sha256")
        if identity and recorded and tokenizer_json.is_file() and sha256_file(tokenizer_json) == recorded:
            return dict(identity)
        if identity:
            log.warning("%s: tokenizer.json changed since Steel wrote it; using the files' own hash", self.directory)
        return {"name": self.name, "sha256": directory_sha256(self.directory), "vocab_size": self.vocab_size}

    def __getstate__(self) -> dict:
        return {"directory": str(self.directory)}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["directory"])

    @property
    def eos_id(self) -> int:
        for token in (IM_END, self._eos_token, ENDOFTEXT):
            if token is not None and self._backend.token_to_id(token) is not None:
                return self._backend.token_to_id(token)
        raise ValueError(f"{self.directory}: the tokenizer has no end-of-sequence token")

    @property
    def pad_id(self) -> int:
        for token in (self._pad_token, ENDOFTEXT, self._eos_token):
            if token is not None and self._backend.token_to_id(token) is not None:
                return self._backend.token_to_id(token)
        return self.eos_id

    # NOTE: encode_special_tokens is a setting of the shared backend, so threads that call encode
    # with different allow_special values at the same time can see each other's setting.
    def encode(self, text: str, allow_special: bool = False) -> list[int]:
        """Encode `text`; raise ValueError when it contains a lone surrogate, which has no UTF-8 form."""
        self._backend.encode_special_tokens = not allow_special
        try:
            return self._backend.encode(text, add_special_tokens=False).ids
        except TypeError:
            _check_encodable([text])
            raise

    def encode_batch(self, texts: list[str], allow_special: bool = False) -> list[list[int]]:
        self._backend.encode_special_tokens = not allow_special
        texts = list(texts)
        try:
            encodings = self._backend.encode_batch(texts, add_special_tokens=False)
        except TypeError:
            _check_encodable(texts)
            raise
        return [encoding.ids for encoding in encodings]

    def decode(self, ids: list[int]) -> str:
        return self._backend.decode([int(i) for i in ids], skip_special_tokens=False)

    def identity(self) -> dict:
        return dict(self._identity)

    def to_hf(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(self.directory))

    def save_pretrained(self, directory: str | Path) -> Path:
        """Copy the tokenizer files; a config without a chat template gets Qwen1.5's."""
        from steel.tokenizer.qwen import QWEN_CHAT_TEMPLATE

        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        for name in COPIED_FILES:
            source = self.directory / name
            if source.is_file() and source.resolve() != (target / name).resolve():
                shutil.copyfile(source, target / name)

        if self.chat_template is None:
            config = dict(self.config, chat_template=QWEN_CHAT_TEMPLATE)
            (target / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
        return target
