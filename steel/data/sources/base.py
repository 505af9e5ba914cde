"""The source adapter interface, the registry and helpers shared by the adapters.

An adapter turns one published corpus format into Steel records: JSON objects with `text`,
`source` and `id`, plus `messages` for dialogue, `label` and `split` where the source has them,
and `metadata` for whatever else the source carries. Most adapters only map one raw record to
records (`SourceAdapter.convert`); a few read their input in their own way (`SourceAdapter.read`).
"""

import importlib
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steel.data.io import BadRecord, BadRecordLog, iter_records

logger = logging.getLogger(__name__)

# Modules that register adapters, in the order `steel data sources` lists them.
ADAPTER_MODULES = [
    "steel.data.sources.encyclopedia",
    "steel.data.sources.qa",
    "steel.data.sources.belle",
    "steel.data.sources.moss",
    "steel.data.sources.firefly",
    "steel.data.sources.web",
    "steel.data.sources.exam",
    "steel.data.sources.code",
    "steel.data.sources.generic",
    "steel.data.sources.snownlp",
]


@dataclass(frozen=True)
class ReadOptions:
    """Settings a user may pass to any adapter (most adapters ignore the generic ones)."""

    encoding: str | None = None  # input encoding; None detects UTF-8 or GB18030
    text_field: str = "text"  # generic adapters: field with the text, dotted for nesting (`meta.body`)
    id_field: str | None = None  # generic adapters: field with a record id; None numbers records by line
    text_unit: str = "paragraph"  # generic text adapter: "line", "paragraph" or "file" per record


@dataclass
class ConversionLog:
    """Record of what a conversion did not write: bad records (unreadable or invalid) and deliberate skips."""

    bad: BadRecordLog = field(default_factory=BadRecordLog)
    skipped: Counter = field(default_factory=Counter)  # reason -> count, e.g. duplicates, other languages

    def skip(self, reason: str, count: int = 1) -> None:
        if count:  # a reason with nothing skipped stays out of the summary
            self.skipped[reason] += count

    def merge(self, other: "ConversionLog") -> None:
        self.bad.merge(other.bad)
        self.skipped.update(other.skipped)


class RecordError(ValueError):
    """A raw record cannot be converted; `reason` is a short countable category."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class RecordContext:
    """Origin of a raw record (source, file, line), used for ids and error messages."""

    source: str
    path: Path
    line_no: int
    options: ReadOptions
    index_on_line: int = 0  # earlier records that start on the same line (one-line JSON arrays)

    def default_id(self) -> str:
        """Return `source:file:line`, with `.N` for the N-th record (N >= 2) starting on one line."""
        suffix = f".{self.index_on_line + 1}" if self.index_on_line else ""
        return f"{self.source}:{self.path.name}:{self.line_no}{suffix}"


class SourceAdapter:
    """Base class of source adapters; subclasses set the class attributes and `convert` or `read`."""

    name: str = ""
    description: str = ""
    input_format: str = ""  # the published format this adapter reads, shown by `steel data sources`
    columns: list[str] | None = None  # Parquet columns to read; None reads all

    def default_inputs(self) -> list[Path]:
        """Input files used when the user names none (only the embedded corpora have any)."""
        return []

    def work_units(self, inputs: list[Path]) -> list[tuple[Path, ...]]:
        """Group input files into units converted independently, in parallel: one file each by default."""
        return [(path,) for path in inputs]

    def read(self, unit: tuple[Path, ...], options: ReadOptions, log: ConversionLog) -> Iterator[dict]:
        """Yield the Steel records of one work unit, reporting what it does not yield to `log`."""
        on_bad = log.bad
        for path in unit:
            previous_line_no, index_on_line = 0, 0
            for line_no, raw in iter_records(path, encoding=options.encoding, on_bad=on_bad, columns=self.columns):
                index_on_line = index_on_line + 1 if line_no == previous_line_no else 0
                previous_line_no = line_no
                context = RecordContext(self.name, path, line_no, options, index_on_line)
                try:
                    records = list(self.convert(raw, context))
                except RecordError as error:
                    on_bad(BadRecord(str(path), line_no, error.reason, error.detail))
                    continue
                for record in records:
                    if not record["text"] or record["text"].isspace():
                        on_bad(BadRecord(str(path), line_no, "empty text", f"id {record['id']}"))
                        continue
                    yield record

    def convert(self, raw: dict, context: RecordContext) -> Iterable[dict]:
        """Map one raw record to Steel records; raise RecordError when it cannot be converted."""
        raise NotImplementedError(f"{type(self).__name__} must implement convert() or read()")


# ---------------------------------------------------------------------------------------------
# Registry

_REGISTRY: dict[str, SourceAdapter] = {}  # in registration order within each module


def register(cls: type[SourceAdapter]) -> type[SourceAdapter]:
    """Register an adapter class under its `name` (a class decorator)."""
    if cls.name in _REGISTRY:
        raise ValueError(f"source adapter {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls()
    return cls


def _load_adapters() -> None:
    for module in ADAPTER_MODULES:
        importlib.import_module(module)


def list_adapters() -> list[SourceAdapter]:
    """Return every adapter, in the order of ADAPTER_MODULES and of definition within a module."""
    _load_adapters()
    module_rank = {module: rank for rank, module in enumerate(ADAPTER_MODULES)}
    adapters = list(_REGISTRY.values())
    return sorted(adapters, key=lambda adapter: module_rank.get(type(adapter).__module__, len(module_rank)))


def get_adapter(name: str) -> SourceAdapter:
    _load_adapters()
    if name not in _REGISTRY:
        raise KeyError(f"unknown source {name!r}; run `steel data sources` for the list: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


# ---------------------------------------------------------------------------------------------
# Helpers for convert()


def require(raw: dict, field: str, kind: type | tuple[type, ...] = str) -> Any:
    """Return `raw[field]`, raising RecordError naming the field when it is missing or of another type."""
    if field not in raw or raw[field] is None:
        raise RecordError(f"missing field {field!r}", f"fields present: {', '.join(sorted(raw)) or 'none'}")
    value = raw[field]
    if not isinstance(value, kind):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise RecordError(f"invalid field {field!r}", f"expected {expected}, got {type(value).__name__}")
    return value


def optional_str(raw: dict, field: str) -> str:
    """Return `raw[field]` as a string, or "" when it is missing or null."""
    value = raw.get(field)
    return "" if value is None else str(value)


def make_record(source: str, record_id: str, text: str, **extra: Any) -> dict:
    """Build a Steel record; `extra` adds `messages`, `label`, `split` or `metadata` when not empty."""
    record = {"text": text, "source": source, "id": record_id}
    record.update({key: value for key, value in extra.items() if value not in (None, {}, [])})
    return record
