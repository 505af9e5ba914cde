"""ChatML as Qwen1.5 writes it: rendering to text and encoding to ids with a loss mask.

Each message becomes ``<|im_start|>{role}\\n{content}<|im_end|>\\n``. When the first message is not
a system message, the system turn ``You are a helpful assistant.`` comes first. With
``add_generation_prompt`` the text ends in ``<|im_start|>assistant\\n``. `render_chat` returns the
same string that `transformers` renders from Qwen1.5's ``chat_template``.

`encode_chat` builds the markers from the tokenizer's special ids and encodes each role and each
content with ``allow_special=False``, so the text ``<|im_end|><|im_start|>system`` inside a message
stays ordinary text and cannot open a turn. The supervised positions are the tokens of every
assistant content plus that turn's closing ``<|im_end|>``.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from steel.tokenizer import IM_END, IM_START, SteelTokenizer

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class _Piece:
    """A run of tokens that truncation either keeps whole (a marker) or may cut (a content)."""

    ids: list[int]
    supervised: bool
    cuttable: bool


def validate_messages(messages: Sequence[Mapping[str, object]]) -> list[dict[str, str]]:
    """Return the messages as plain ``{"role", "content"}`` dicts, or raise ValueError.

    A role must be one of `ROLES` and a content must be a string. The error names the index of
    the message at fault.
    """
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise ValueError(f"messages must be a list of {{'role', 'content'}} dicts, got {type(messages).__name__}")

    checked = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ValueError(f"message {index} must be a dict with 'role' and 'content', got {message!r}")
        role = message.get("role")
        content = message.get("content")
        if role not in ROLES:
            raise ValueError(f"message {index} has role {role!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise ValueError(f"message {index} ({role}) has content {content!r}; expected a string")
        checked.append({"role": role, "content": content})
    return checked


def _with_default_system(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    # Qwen1.5's template adds the default system turn only in front of a non-empty conversation.
    if messages and messages[0]["role"] != "system":
        return [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}] + messages
    return messages


def render_chat(messages: Sequence[Mapping[str, object]], add_generation_prompt: bool = False) -> str:
    """Render messages to ChatML text exactly as Qwen1.5's ``chat_template`` does."""
    parts = [
        f"{IM_START}{message['role']}\n{message['content']}{IM_END}\n"
        for message in _with_default_system(validate_messages(messages))
    ]
    if add_generation_prompt:
        parts.append(f"{IM_START}assistant\n")
    return "".join(parts)


def _chat_pieces(
    tokenizer: SteelTokenizer, messages: list[dict[str, str]], add_generation_prompt: bool
) -> list[_Piece]:
    try:
        im_start = tokenizer.special_ids[IM_START]
        im_end = tokenizer.special_ids[IM_END]
    except KeyError as error:
        raise ValueError(
            f"the tokenizer has no special token {error.args[0]}; chat encoding needs {IM_START} and {IM_END}"
        ) from None
    newline = tokenizer.encode("\n")

    # The header "<|im_start|>role\n" is encoded apart from the content. The prompt that ends in the
    # generation header then has the same ids in training as at inference, where the model continues
    # right after "assistant\n".
    pieces = []
    for message in _with_default_system(messages):
        is_assistant = message["role"] == "assistant"
        header = [im_start] + tokenizer.encode(message["role"] + "\n")
        pieces.append(_Piece(header, supervised=False, cuttable=False))
        pieces.append(_Piece(tokenizer.encode(message["content"]), supervised=is_assistant, cuttable=True))
        pieces.append(_Piece([im_end], supervised=is_assistant, cuttable=False))
        pieces.append(_Piece(newline, supervised=False, cuttable=False))
    if add_generation_prompt:
        pieces.append(_Piece([im_start] + tokenizer.encode("assistant\n"), supervised=False, cuttable=False))
    return pieces


def _truncate(pieces: list[_Piece], cutoff_len: int) -> list[_Piece]:
    """Keep pieces from the left within `cutoff_len` tokens, cutting only inside a content.

    A marker that does not fit whole is dropped with everything after it, so the result never
    ends in a partial ``<|im_start|>role\\n`` header.
    """
    kept = []
    room = cutoff_len
    for piece in pieces:
        if len(piece.ids) <= room:
            kept.append(piece)
            room -= len(piece.ids)
            continue
        if piece.cuttable and room > 0:
            kept.append(_Piece(piece.ids[:room], piece.supervised, cuttable=True))
        break
    return kept


def encode_chat(
    tokenizer: SteelTokenizer,
    messages: Sequence[Mapping[str, object]],
    add_generation_prompt: bool = False,
    cutoff_len: int | None = None,
) -> tuple[list[int], list[int]]:
    """Encode a conversation to token ids and a mask of supervised (assistant) positions.

    ``assistant_mask[i]`` is 1 where ``ids[i]`` is a loss target: a token of an assistant
    content or the ``<|im_end|>`` that closes an assistant turn. Headers, the system and user
    turns and the newline after each ``<|im_end|>`` are 0. Without truncation, the ids equal
    ``tokenizer.encode(render_chat(messages), allow_special=True)`` whenever no content starts
    with whitespace that the tokenizer would merge with the header's newline.

    ``cutoff_len`` keeps at most that many tokens from the start. The cut falls inside a
    content or between markers, never inside ``<|im_start|>role\\n`` or on ``<|im_end|>``.
    With ``add_generation_prompt`` a prompt longer than ``cutoff_len`` raises ValueError,
    because a prompt cut from the right would lose its generation header.
    """
    if cutoff_len is not None and cutoff_len < 1:
        raise ValueError(f"cutoff_len must be a positive number of tokens, got {cutoff_len}")

    pieces = _chat_pieces(tokenizer, validate_messages(messages), add_generation_prompt)
    if cutoff_len is not None:
        num_tokens = sum(len(piece.ids) for piece in pieces)
        if add_generation_prompt and num_tokens > cutoff_len:
            raise ValueError(
                f"the prompt has {num_tokens} tokens, more than cutoff_len={cutoff_len}; "
                "drop earlier turns or raise cutoff_len"
            )
        pieces = _truncate(pieces, cutoff_len)

    ids: list[int] = []
    assistant_mask: list[int] = []
    for piece in pieces:
        ids.extend(piece.ids)
        assistant_mask.extend([int(piece.supervised)] * len(piece.ids))
    return ids, assistant_mask
