"""Source adapters: published corpus formats to Steel JSONL records (`steel data sources`, `convert`)."""

from steel.data.sources.base import (
    ConversionLog,
    ReadOptions,
    RecordContext,
    RecordError,
    SourceAdapter,
    get_adapter,
    list_adapters,
)

__all__ = [
    "ConversionLog",
    "ReadOptions",
    "RecordContext",
    "RecordError",
    "SourceAdapter",
    "get_adapter",
    "list_adapters",
]
