"""Web text corpora: SkyPile-150B and the text part of WanJuan 1.0."""

from collections.abc import Iterable

from steel.data.sources.base import RecordContext, SourceAdapter, make_record, optional_str, register, require


@register
class SkyPileAdapter(SourceAdapter):
    name = "skypile"
    description = "SkyPile-150B Chinese web text"
    input_format = 'JSONL {"text"}'

    def convert(self, raw: dict, context: RecordContext) -> Iterable[dict]:
        yield make_record(self.name, context.default_id(), require(raw, "text"))


@register
class WanJuanTextAdapter(SourceAdapter):
    name = "wanjuan-text"
    description = "WanJuan 1.0 text (Chinese and English); fields other than content go to metadata"
    input_format = 'JSONL {"id", "content", ...}'

    def convert(self, raw: dict, context: RecordContext) -> Iterable[dict]:
        text = require(raw, "content")
        native_id = optional_str(raw, "id")
        record_id = f"{self.name}:{native_id}" if native_id else context.default_id()
        metadata = {key: value for key, value in raw.items() if key not in ("id", "content") and value is not None}
        yield make_record(self.name, record_id, text, metadata=metadata)
