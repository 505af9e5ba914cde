"""Streaming readers and atomic writers for the data pipeline.

Readers never load a whole file. They accept JSONL, a JSON array, Parquet and plain text, each
optionally compressed with gzip (`.gz`) or Zstandard (`.zst`), in UTF-8 (with or without a byte
order mark) or GBK/GB18030, with Unix or Windows line ends. A record that cannot be read (invalid
bytes, malformed JSON, a JSON value that is not an object, a truncated last line) does not stop the
file: it is handed to `on_bad` as a `BadRecord` naming the file and line, and reading continues.

Writers write to a temporary name beside the target and rename it into place when closed without
an error, so a crash never leaves a half-written file under the final name.
"""

import codecs
import gzip
import io
import json
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import zlib

import zstandard

logger = logging.getLogger(__name__)

ENCODING_SNIFF_BYTES = 1 << 16
READ_CHUNK_BYTES = 1 << 20
MAX_EXAMPLES_PER_REASON = 5
# Encoding detection gives up above this many invalid sequences in the sniffed bytes.
MAX_INVALID_BYTES = 4
MAX_INVALID_FRACTION = 0.01

# Fixes for a file whose encoding was not detected, where NAME is the file's real encoding. A reader
# raises with ICONV_REMEDY unless its caller passes its own `remedy`.
ICONV_REMEDY = "convert the file to UTF-8 first, e.g. `iconv -f NAME -t UTF-8 FILE > NEW_FILE`"
CONVERT_REMEDY = (
    "convert the file to UTF-8 first, with `steel data convert --source jsonl --encoding NAME FILE --output DIR` "
    "(its records keep the text under `text`) or `iconv -f NAME -t UTF-8 FILE > NEW_FILE`"
)
ENCODING_OPTION_REMEDY = "pass --encoding NAME"


@dataclass(frozen=True)
class BadRecord:
    """One input record that could not be read or converted."""

    path: str
    line_no: int  # 1-based line of a text file, or 1-based row of a Parquet file
    reason: str  # short, countable category, e.g. "malformed JSON" or "missing field 'text'"
    detail: str = ""  # the parser's message or an excerpt of the record

    def __str__(self) -> str:
        detail = f": {self.detail}" if self.detail else ""
        return f"{self.path}:{self.line_no}: {self.reason}{detail}"


@dataclass
class BadRecordLog:
    """Counts bad records by reason and keeps the first few of each; usable as `on_bad`."""

    max_examples: int = MAX_EXAMPLES_PER_REASON
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def __call__(self, bad: BadRecord) -> None:
        self.counts[bad.reason] += 1
        kept = self.examples.setdefault(bad.reason, [])
        if len(kept) < self.max_examples:
            kept.append(str(bad))
            logger.warning("skipped %s", bad)  # only the first few of each reason, to keep logs readable

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def merge(self, other: "BadRecordLog") -> None:
        self.counts.update(other.counts)
        for reason, examples in other.examples.items():
            kept = self.examples.setdefault(reason, [])
            kept.extend(examples[: max(0, self.max_examples - len(kept))])

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "by_reason": dict(self.counts), "examples": self.examples}


def _log_bad(bad: BadRecord) -> None:
    logger.warning("skipped %s", bad)


@dataclass(frozen=True)
class SkippedFile:
    """An input file left out as a whole: why, and what the user can do about it."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


class UndetectableEncodingError(ValueError):
    """A text file that is neither UTF-8 (with or without BOM) nor GBK/GB18030.

    `remedy` is what the user can do, in the terms of the command that read the file.
    """

    def __init__(self, path: str | Path, reason: str, remedy: str = ICONV_REMEDY):
        self.path = str(path)
        self.reason = reason
        self.remedy = remedy
        super().__init__(f"{path}: {reason}; {remedy}.")


# ---------------------------------------------------------------------------------------------
# Bytes and encodings


RAW_CHUNK_BYTES = 1 << 16  # also the most compressed data lost before corrupt bytes


class DecompressingReader:
    """A reader of gzip or Zstandard files, member after member, that ends at damaged bytes.

    The standard readers raise on a truncated or corrupt file and drop what their buffered read had
    already decompressed, and Zstandard's stream reader treats a file cut inside a frame as a clean
    end. This reader returns every byte that decompresses, then `read` returns b"" as at the end of
    the file and `damage` describes the damage, for the caller to report as a bad record.
    """

    def __init__(self, path: Path, new_decompressor: Callable[[], Any]):
        self.raw = open(path, "rb")
        self.new_decompressor = new_decompressor
        self.decompressor = new_decompressor()
        self.buffer = bytearray()
        self.at_eof = False
        self.damage: str | None = None

    def read(self, size: int = -1) -> bytes:
        while not self.at_eof and (size < 0 or len(self.buffer) < size):
            self._decompress_more()
        size = len(self.buffer) if size < 0 else min(size, len(self.buffer))
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def _decompress_more(self) -> None:
        if self.decompressor.eof:
            compressed = self.decompressor.unused_data or self.raw.read(RAW_CHUNK_BYTES)
            if not compressed:
                self.at_eof = True  # the last member ended cleanly
                return
            self.decompressor = self.new_decompressor()
        else:
            compressed = self.raw.read(RAW_CHUNK_BYTES)
            if not compressed:
                self._end("the file ends inside a compressed block (truncated)")
                return
        try:
            self.buffer += self.decompressor.decompress(compressed)
        except (zlib.error, zstandard.ZstdError) as error:
            self._end(f"corrupt compressed data ({error})")

    def _end(self, damage: str) -> None:
        self.damage = damage
        self.at_eof = True

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> "DecompressingReader":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def open_binary(path: str | Path) -> IO[bytes]:
    """Open a file for reading bytes, decompressing `.gz` and `.zst` transparently.

    A compressed file is read through a `DecompressingReader`, so a truncated download ends the
    file early (see `damage_record`) rather than raising in the middle of a run.
    """
    path = Path(path)
    if path.suffix == ".gz":
        return DecompressingReader(path, lambda: zlib.decompressobj(wbits=31))  # 31: gzip header and trailer
    if path.suffix == ".zst":
        return DecompressingReader(path, lambda: zstandard.ZstdDecompressor().decompressobj())
    return open(path, "rb")


def damage_record(path: str | Path, f: IO[bytes], lines_read: int) -> BadRecord | None:
    """Return a bad record for a compressed file that ended at damaged bytes, else None."""
    damage = getattr(f, "damage", None)
    if damage is None:
        return None
    detail = f"{damage}; reading stopped after {lines_read} line(s), the rest of the file is lost"
    return BadRecord(str(path), lines_read + 1, "damaged compressed file", detail)


def data_suffix(path: str | Path) -> str:
    """Return the format suffix of a path without its compression suffix (`a.jsonl.gz` -> `.jsonl`)."""
    path = Path(path)
    if path.suffix in (".gz", ".zst"):
        path = path.with_suffix("")
    return path.suffix.lower()


def undetectable_encodings(paths: list[str | Path], remedy: str) -> list[SkippedFile]:
    """Return the text files whose encoding is neither UTF-8 nor GBK/GB18030 (Parquet is not checked).

    `remedy` is the calling command's fix, e.g. ENCODING_OPTION_REMEDY. It ends each reason, except
    for a file that needs another fix (UTF-16).
    """
    return detect_encodings(paths, remedy)[1]


def detect_encodings(paths: list[str | Path], remedy: str) -> tuple[dict[str, str | None], list[SkippedFile]]:
    """Detect the encoding of each input file, as `detect_encoding` does.

    Returns the codec name of every readable file by path (None for Parquet, which has no text
    encoding) and a `SkippedFile` for every text file whose encoding was not detected, whose reason
    ends with `remedy` (or with the UTF-16 fix).
    """
    encodings: dict[str, str | None] = {}
    skipped = []
    for path in paths:
        if data_suffix(path) == ".parquet":
            encodings[str(path)] = None
            continue
        try:
            encodings[str(path)] = detect_encoding(path, remedy=remedy)
        except UndetectableEncodingError as error:
            skipped.append(SkippedFile(str(path), f"{error.reason}; {error.remedy}"))
    return encodings, skipped


def detect_encoding(path: str | Path, remedy: str = ICONV_REMEDY) -> str:
    """Detect UTF-8 (with or without BOM) or GB18030 (a superset of GBK) from the start of a file.

    Returns a Python codec name. Raises UndetectableEncodingError (a ValueError) for a UTF-16 byte
    order mark, or when the first 64 KiB has more than 4 invalid sequences and more than 1% invalid
    bytes in both codecs. `remedy` ends the error message: the calling command's fix.
    """
    with open_binary(path) as f:
        head = f.read(ENCODING_SNIFF_BYTES)
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise UndetectableEncodingError(path, "UTF-16 is not supported", remedy="convert the file to UTF-8 first")

    # An incremental decoder accepts a multi-byte character cut at the end of the sample. A few
    # invalid bytes (one corrupt record) should not change the verdict, so when neither codec
    # decodes cleanly the one with fewer replacement characters wins.
    errors_by_encoding = {}
    for encoding in ("utf-8", "gb18030"):
        decoded = codecs.getincrementaldecoder(encoding)(errors="replace").decode(head, final=False)
        literal_replacement_chars = head.count("\ufffd".encode(encoding))
        errors_by_encoding[encoding] = decoded.count("\ufffd") - literal_replacement_chars
        if errors_by_encoding[encoding] == 0:
            return encoding

    encoding = min(errors_by_encoding, key=errors_by_encoding.get)
    if errors_by_encoding[encoding] > max(MAX_INVALID_BYTES, MAX_INVALID_FRACTION * len(head)):
        reason = (
            f"the encoding was not detected: the first {len(head)} bytes are neither UTF-8 (with or without BOM) "
            f"nor GBK/GB18030 ({errors_by_encoding[encoding]} invalid sequences as {encoding})"
        )
        raise UndetectableEncodingError(path, reason, remedy)
    return encoding


def iter_lines(
    path: str | Path,
    encoding: str | None = None,
    on_bad: Callable[[BadRecord], None] | None = None,
    remedy: str = ICONV_REMEDY,
) -> Iterator[tuple[int, str]]:
    """Yield `(line_no, line)` for every line, without its line end (`\\n` or `\\r\\n`).

    Lines are split on bytes before decoding, which is safe for UTF-8 and GB18030 because neither
    uses the byte 0x0A inside a multi-byte character. A line with invalid bytes is reported to
    `on_bad` and skipped, and the rest of the file is still read. Blank lines are yielded too.
    Without `encoding`, an undetected one raises UndetectableEncodingError ending in `remedy`.
    """
    on_bad = on_bad or _log_bad
    encoding = check_line_encoding(encoding) if encoding else detect_encoding(path, remedy)
    with open_binary(path) as f:
        line_no = 0
        for line_no, raw in enumerate(_iter_byte_lines(f), start=1):
            try:
                line = raw.removesuffix(b"\r").decode(encoding)
            except UnicodeDecodeError as error:
                on_bad(BadRecord(str(path), line_no, f"invalid {encoding} bytes", str(error)))
                continue
            # A byte order mark is dropped even when the caller named plain "utf-8".
            yield line_no, line.removeprefix("\ufeff") if line_no == 1 else line
        if damaged := damage_record(path, f, line_no):
            on_bad(damaged)


def check_line_encoding(encoding: str) -> str:
    """Return `encoding` if lines of it can be split on the byte 0x0A, else raise ValueError."""
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        raise ValueError(f"unknown encoding {encoding!r}; use a Python codec name such as utf-8 or gbk") from None
    if name.startswith(("utf-16", "utf-32")):
        raise ValueError(f"encoding {encoding!r} is not supported; convert the file to UTF-8 first")
    return encoding


def _iter_byte_lines(f: IO[bytes]) -> Iterator[bytes]:
    # Chunked splitting works for every stream, including Zstandard readers without readline().
    pieces: list[bytes] = []
    while chunk := f.read(READ_CHUNK_BYTES):
        lines = chunk.split(b"\n")
        if len(lines) == 1:
            pieces.append(chunk)
            continue
        lines[0] = b"".join(pieces) + lines[0]
        pieces = [lines.pop()]
        yield from lines
    tail = b"".join(pieces)
    if tail:
        yield tail


# ---------------------------------------------------------------------------------------------
# Records


def iter_records(
    path: str | Path,
    encoding: str | None = None,
    on_bad: Callable[[BadRecord], None] | None = None,
    columns: list[str] | None = None,
    remedy: str = ICONV_REMEDY,
) -> Iterator[tuple[int, dict]]:
    """Yield `(line_no, record)` for every JSON object in a JSONL, JSON-array or Parquet file.

    The format is chosen by content, not by name, for JSON: a file whose first non-blank character
    is `[` is read as one JSON array, anything else as JSON Lines (several corpora publish JSONL
    under a `.json` name). Parquet is chosen by the `.parquet` suffix; `columns` limits what is read
    there. Bad records go to `on_bad` (default: a logged warning) and reading continues. Without
    `encoding`, an undetected one raises UndetectableEncodingError ending in `remedy`, the calling
    command's fix (e.g. ENCODING_OPTION_REMEDY where it has that option).
    """
    on_bad = on_bad or _log_bad
    if data_suffix(path) == ".parquet":
        yield from iter_parquet(path, columns=columns)
        return

    encoding = check_line_encoding(encoding) if encoding else detect_encoding(path, remedy)
    if _non_blank_prefix(path, encoding, 1) == "[":
        yield from iter_json_array(path, encoding=encoding, on_bad=on_bad, remedy=remedy)
    else:
        yield from iter_jsonl(path, encoding=encoding, on_bad=on_bad, remedy=remedy)


def _non_blank_prefix(path: str | Path, encoding: str, num_chars: int) -> str:
    """Return the first `num_chars` characters of a text file that are not whitespace or a BOM."""
    return _read_non_blank_prefix(path, encoding, num_chars)[0]


def _read_non_blank_prefix(path: str | Path, encoding: str, num_chars: int) -> tuple[str, bool]:
    """Return the prefix as `_non_blank_prefix` does, and whether a compressed file ended at damage."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
    prefix = ""
    with open_binary(path) as f:
        while chunk := f.read(4096):
            for char in decoder.decode(chunk):
                if char in "\ufeff \t\r\n":
                    continue
                prefix += char
                if len(prefix) == num_chars:
                    return prefix, False
        return prefix, getattr(f, "damage", None) is not None


def is_empty_input(path: str | Path, encoding: str | None = None) -> bool:
    """Return whether a data file has no records: no Parquet rows, only whitespace, or `[]`.

    Reads only the start of a text file. Raises like `iter_records` for a file it cannot read.
    """
    if data_suffix(path) == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows == 0

    encoding = check_line_encoding(encoding) if encoding else detect_encoding(path)
    prefix, damaged = _read_non_blank_prefix(path, encoding, 3)
    # A damaged compressed file is not empty: its reader reports the damage as a bad record.
    return prefix in ("", "[]") and not damaged


def iter_jsonl(
    path: str | Path,
    encoding: str | None = None,
    on_bad: Callable[[BadRecord], None] | None = None,
    remedy: str = ICONV_REMEDY,
) -> Iterator[tuple[int, dict]]:
    """Yield `(line_no, record)` for every JSON object line; blank lines are skipped."""
    on_bad = on_bad or _log_bad
    pending: tuple[int, str] | None = None

    # One line of look-ahead shows whether a malformed line is the last one (a truncated write).
    for line_no, line in iter_lines(path, encoding=encoding, on_bad=on_bad, remedy=remedy):
        if pending is not None:
            yield from _parse_json_line(path, *pending, is_last=False, on_bad=on_bad)
        pending = (line_no, line) if line.strip() else None
    if pending is not None:
        yield from _parse_json_line(path, *pending, is_last=True, on_bad=on_bad)


def _parse_json_line(path, line_no: int, line: str, is_last: bool, on_bad) -> Iterator[tuple[int, dict]]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        reason = "truncated last line" if is_last else "malformed JSON"
        on_bad(BadRecord(str(path), line_no, reason, f"{error.msg}: column {error.colno}"))
        return
    if not isinstance(record, dict):
        on_bad(BadRecord(str(path), line_no, "not a JSON object", f"got {type(record).__name__}"))
        return
    yield line_no, record


def iter_json_array(
    path: str | Path,
    encoding: str | None = None,
    on_bad: Callable[[BadRecord], None] | None = None,
    remedy: str = ICONV_REMEDY,
) -> Iterator[tuple[int, dict]]:
    """Yield `(line_no, element)` for each object of a top-level JSON array, streaming.

    `line_no` is the line where the element starts. After a malformed element the reader resumes
    at the next line that starts with `{` at the same indentation, so pretty-printed arrays
    recover. The skipped span is reported as one bad record. A malformed element of a one-line
    array ends the file, reported as a truncated array.
    """
    on_bad = on_bad or _log_bad
    encoding = check_line_encoding(encoding) if encoding else detect_encoding(path, remedy)
    with open_binary(path) as f:
        reader = _JsonArrayReader(f, str(path), encoding, on_bad)
        yield from reader
        if damaged := damage_record(path, f, reader.line_no - 1):
            on_bad(damaged)


class _JsonArrayReader:
    """Incremental parser of a top-level JSON array over a decoded text buffer.

    `buffer[start:]` is the unread text. Reading a chunk drops the consumed prefix, so memory stays
    near the size of the largest element plus one chunk.
    """

    # NOTE: invalid bytes inside a JSON array become U+FFFD rather than a bad record, because the
    # array is decoded in chunks and a chunk has no record boundary to attribute the error to.

    def __init__(self, f: IO[bytes], path: str, encoding: str, on_bad: Callable[[BadRecord], None]):
        self.f = f
        self.path = path
        self.on_bad = on_bad
        self.text_decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
        self.json_decoder = json.JSONDecoder()
        self.buffer = ""
        self.start = 0
        self.line_no = 1  # line of buffer[start]
        self.column = 0  # column of buffer[start], the indentation of an element starting there
        self.at_eof = False

    def fill(self) -> bool:
        """Append one chunk of text; return False when the file was already exhausted."""
        if self.at_eof:
            return False
        chunk = self.f.read(READ_CHUNK_BYTES)
        self.buffer = self.buffer[self.start :] + self.text_decoder.decode(chunk, final=not chunk)
        self.start = 0
        self.at_eof = not chunk
        return True

    def advance(self, index: int) -> None:
        """Mark `buffer[start:index]` as consumed, keeping the line and column of the new start."""
        last_newline = self.buffer.rfind("\n", self.start, index)
        self.line_no += self.buffer.count("\n", self.start, index)
        self.column = index - last_newline - 1 if last_newline != -1 else self.column + index - self.start
        self.start = index

    def peek(self) -> str:
        """Return the next character that is not whitespace or a BOM, or "" at the end of the file."""
        while True:
            index = self.start
            while index < len(self.buffer) and self.buffer[index] in "\ufeff \t\r\n":
                index += 1
            self.advance(index)
            if self.start < len(self.buffer) or not self.fill():
                return self.buffer[self.start : self.start + 1]

    def report(self, reason: str, detail: str) -> None:
        self.on_bad(BadRecord(self.path, self.line_no, reason, detail))

    def __iter__(self) -> Iterator[tuple[int, dict]]:
        if self.peek() != "[":
            self.report("not a JSON array", "the file does not start with '['")
            return
        self.advance(self.start + 1)

        while True:
            char = self.peek()
            if char == ",":
                self.advance(self.start + 1)
                char = self.peek()
            if char == "":
                self.report("truncated JSON array", "the file ends before the closing ']'")
                return
            if char == "]":
                self.advance(self.start + 1)
                if self.peek():
                    self.report("extra data after the JSON array", "everything after the closing ']' was not read")
                return

            element, end = self.decode_element()
            if element is _MALFORMED:
                if not self.skip_malformed():
                    return
                continue
            if isinstance(element, dict):
                yield self.line_no, element
            else:
                self.report("not a JSON object", f"got {type(element).__name__}")
            self.advance(end)

    def decode_element(self) -> tuple[Any, int]:
        # A parse error at the end of the buffer (or in an unterminated string) may only mean the
        # element continues in the next chunk. Doubling the text read per retry keeps a long element
        # at O(n log n) parse work rather than one re-parse per chunk.
        while True:
            try:
                return self.json_decoder.raw_decode(self.buffer, self.start)
            except json.JSONDecodeError as error:
                incomplete = error.pos >= len(self.buffer) - 1 or error.msg.startswith("Unterminated string")
                if not incomplete or self.at_eof:
                    return _MALFORMED, 0
                wanted = 2 * (len(self.buffer) - self.start) + READ_CHUNK_BYTES
                while len(self.buffer) - self.start < wanted and self.fill():
                    pass

    def skip_malformed(self) -> bool:
        """Report the element at `start` and move to the next one; return False at the end of the file."""
        element_line_no, element_column = self.line_no, self.column
        resume = self.next_object_start(element_column)
        if resume is None:
            self.report("truncated JSON array", "the last element is incomplete or malformed")
            return False
        self.on_bad(BadRecord(self.path, element_line_no, "malformed JSON", "could not parse the array element here"))
        self.advance(resume)
        return True

    def next_object_start(self, column: int) -> int | None:
        """Return the index of the next `{` that starts a line at `column`, or None at the end of the file."""
        search_from = self.start + 1
        while True:
            newline = self.buffer.find("\n", search_from)
            while newline != -1:
                index = newline + 1
                while index < len(self.buffer) and self.buffer[index] in " \t\r":
                    index += 1
                if index == len(self.buffer):
                    break  # the indentation may continue in the next chunk
                if self.buffer[index] == "{" and index - newline - 1 == column:
                    return index
                newline = self.buffer.find("\n", newline + 1)
            offset = (newline if newline != -1 else len(self.buffer)) - self.start
            if not self.fill():
                return None
            search_from = self.start + offset


_MALFORMED = object()


def iter_parquet(path: str | Path, columns: list[str] | None = None, batch_size: int = 1024) -> Iterator[tuple[int, dict]]:
    """Yield `(row_no, row)` for every row of a Parquet file, one record batch in memory at a time."""
    import pyarrow.parquet as pq

    parquet_file = pq.ParquetFile(path)
    if columns is not None:
        # Absent columns are left out rather than failing the read, so that each row reaches the
        # adapter, whose error then names the missing field and lists the fields present.
        present = set(parquet_file.schema_arrow.names)
        columns = [name for name in columns if name in present] or None
    row_no = 0
    for batch in parquet_file.iter_batches(batch_size=batch_size, columns=columns):
        for row in batch.to_pylist():
            row_no += 1
            yield row_no, row


# ---------------------------------------------------------------------------------------------
# Writers


def check_output_dir(path: str | Path) -> None:
    """Raise ValueError when the output path `path` exists but is not a directory."""
    if Path(path).exists() and not Path(path).is_dir():
        raise ValueError(f"the output path {path} is a file, not a directory; give a new --output directory")


def make_output_dir(path: str | Path) -> Path:
    """Create the output directory `path` with its parents; raise ValueError naming it when that fails."""
    path = Path(path)
    check_output_dir(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"cannot create the output directory {path}: {error.strerror}; give another --output") from None
    return path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` and rename it to `path` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    temp_path = Path(temp_name)
    os.chmod(temp_path, 0o666 & ~_current_umask())  # mkstemp creates 0600; give the usual file mode
    try:
        yield temp_path
        os.replace(temp_path, path)
    finally:
        temp_path.unlink(missing_ok=True)


def give_usual_file_modes(directory: str | Path) -> None:
    """Set every file under `directory` to the mode a plain `open` gives (0644 under umask 022).

    safetensors writes its files as 0600, which other users of a shared machine cannot read.
    """
    mode = 0o666 & ~_current_umask()
    for path in Path(directory).rglob("*"):
        if path.is_file() and not path.is_symlink():
            os.chmod(path, mode)


def _current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


class JsonlWriter:
    """Writes one JSON object per line (UTF-8, non-ASCII kept as is) and counts them."""

    def __init__(self, stream: IO[str]):
        self._stream = stream
        self.num_records = 0

    def write(self, record: dict) -> None:
        self._stream.write(json.dumps(record, ensure_ascii=False))
        self._stream.write("\n")
        self.num_records += 1


@contextmanager
def open_output(path: str | Path, compresslevel: int | None = None) -> Iterator[JsonlWriter]:
    """Open a JSONL file for writing, compressed by suffix (`.gz`, `.zst`), renamed into place on success."""
    path = Path(path)
    with atomic_path(path) as temp_path:
        if path.suffix == ".gz":
            raw = gzip.open(temp_path, "wb", compresslevel=compresslevel or 6)
        elif path.suffix == ".zst":
            file = open(temp_path, "wb")
            raw = zstandard.ZstdCompressor(level=compresslevel or 3).stream_writer(file, closefd=True)
        else:
            raw = open(temp_path, "wb")
        with io.TextIOWrapper(raw, encoding="utf-8", newline="\n") as stream:
            yield JsonlWriter(stream)


def write_json(path: str | Path, obj: Any) -> None:
    """Write `obj` as indented UTF-8 JSON, atomically."""
    with atomic_path(path) as temp_path:
        temp_path.write_text(json.dumps(obj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
