"""Encyclopedia corpora: filtered Chinese Wikipedia and Baidu Baike."""

from collections.abc import Iterable

from steel.data.sources.base import RecordContext, RecordError, SourceAdapter, make_record, optional_str, register, require


@register
class WikipediaCnAdapter(SourceAdapter):
    name = "wikipedia-cn"
    description = "Chinese Wikipedia, filtered (wikipedia-cn-20230720-filtered)"
    input_format = 'JSON array of {"completion", "source"} (JSONL also accepted)'

    def convert(self, raw: dict, context: RecordContext) -> Iterable[dict]:
        text = require(raw, "completion")
        metadata = {"source": raw["source"]} if raw.get("source") else None
        yield make_record(self.name, context.default_id(), text, metadata=metadata)


@register
class BaiduBaikeAdapter(SourceAdapter):
    name = "baidubaike"
    description = "Baidu Baike 5.63M entries; text is title, summary, then each section's title and content"
    input_format = 'JSONL {"title", "summary", "sections": [{"title", "content"}], "tags", "url"}'

    def convert(self, raw: dict, context: RecordContext) -> Iterable[dict]:
        title = require(raw, "title")
        parts = [title, optional_str(raw, "summary")]
        sections = raw.get("sections") or []
        if not isinstance(sections, list):
            raise RecordError("invalid field 'sections'", f"expected a list, got {type(sections).__name__}")
        for index, section in enumerate(sections):
            if not isinstance(section, dict):
                raise RecordError("invalid field 'sections'", f"section {index} is {type(section).__name__}, not an object")
            parts.append(optional_str(section, "title"))
            parts.append(optional_str(section, "content"))

        text = "\n".join(part.strip() for part in parts if part and part.strip())
        url = optional_str(raw, "url")
        metadata = {"title": title, "url": url or None, "tags": raw.get("tags") or None}
        record_id = f"{self.name}:{url}" if url else context.default_id()
        yield make_record(self.name, record_id, text, metadata={k: v for k, v in metadata.items() if v})
