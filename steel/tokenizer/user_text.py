"""Text that users type or pipe in: decode it, and reject bytes that are not valid in its encoding.

Python decodes command-line arguments, and standard input under the C locale, with the
surrogateescape error handler, so an invalid byte 0xXY arrives as the lone surrogate U+DCXY. No
tokenizer can encode such text, so the commands reject it where it enters, with a hint.
"""

import sys
from typing import TextIO

from steel.tokenizer import find_lone_surrogate

ENCODING_HINT = "switch the terminal to UTF-8 or convert the text with iconv, e.g. `iconv -f GBK -t UTF-8`"


class InvalidTextError(ValueError):
    """User text that is not valid in the expected encoding; the message names the source and the fix."""


def describe_invalid_text(source: str, text: str, position: int, encoding: str = "UTF-8") -> str:
    """Build the error message for `text` whose character at `position` is a lone surrogate."""
    code = ord(text[position])
    if 0xDC80 <= code <= 0xDCFF:
        detail = f"byte 0x{code - 0xDC00:02x} at character {position}"
    else:
        detail = f"lone surrogate {ascii(text[position])} at character {position}"
    return f"{source} is not valid {encoding} ({detail}); {ENCODING_HINT}"


def check_text(text: str, source: str) -> str:
    """Return `text` unchanged, or raise InvalidTextError when it contains a lone surrogate."""
    position = find_lone_surrogate(text)
    if position is not None:
        raise InvalidTextError(describe_invalid_text(source, text, position))
    return text


def _encoding_name(stream: TextIO) -> str:
    encoding = getattr(stream, "encoding", None) or "UTF-8"
    return "UTF-8" if encoding.lower().replace("-", "").replace("_", "") == "utf8" else encoding


def _decode_error_message(source: str, error: UnicodeDecodeError, stream: TextIO) -> str:
    byte = error.object[error.start]
    return f"{source} is not valid {_encoding_name(stream)} (byte 0x{byte:02x}); {ENCODING_HINT}"


def read_all(stream: TextIO | None = None, source: str = "standard input") -> str:
    """Read `stream` (default: standard input) to the end as checked text."""
    stream = stream or sys.stdin
    try:
        text = stream.read()
    except UnicodeDecodeError as error:
        raise InvalidTextError(_decode_error_message(source, error, stream)) from None
    return check_text(text, source)


def read_line(stream: TextIO, source: str = "standard input") -> str:
    """Read one line of checked text from `stream`; an empty string means the end of input."""
    try:
        line = stream.readline()
    except UnicodeDecodeError as error:
        raise InvalidTextError(_decode_error_message(source, error, stream)) from None
    return check_text(line, source)


def read_terminal_line(prompt: str) -> str:
    """Read one line of checked text with `input()`; raises EOFError at the end of input."""
    try:
        line = input(prompt)
    except UnicodeDecodeError as error:
        raise InvalidTextError(_decode_error_message("the terminal input", error, sys.stdin)) from None
    return check_text(line, "the terminal input")
