"""Generic adapters for corpora without their own: JSONL, JSON, Parquet and plain text.

The record adapters take the text from `--text-field` (dotted for nested objects, e.g.
`meta.body`) and the id from `--id-field` when given. Other top-level fields go to `metadata`.
The text adapter makes one record per line, per paragraph (lines up to a blank line), or per file.
"""

from collections.abc import Iterable, Iterator
from pathlib import Path

from steel.data.io import iter_lines
from steel.data.sources.base import (
    ConversionLog,
    ReadOptions,
    RecordContext,
    RecordError,
    SourceAdapter,
    make_record,
    register,
)


def get_field(raw: dict, dotted_name: str) -> object:
    """Return the value at a dotted path such as `meta.body`, raising RecordError when absent."""
    value: object = raw
    for part in dotted_name.split("."):
        if not isinstance(value, dict) or part not in value or value[part] is None:
            raise RecordError(f"missing field {dotted_name!r}", f"fields present: {', '.join(sorted(raw)) or 'none'}")
        value = value[part]
    return value


class GenericRecordAdapter(SourceAdapter):
    def convert(self, raw: dict, context: RecordContext) -> Iterable[dict]:
        options = context.options
        text = get_field(raw, options.text_field)
        if not isinstance(text, str):
            raise RecordError(f"invalid field {options.text_field!r}", f"expected a string, got {type(text).__name__}")

        record_id = context.default_id()
        if options.id_field:
            record_id = f"{self.name}:{get_field(raw, options.id_field)}"
        top_level_text_field = options.text_field.split(".")[0]
        metadata = {key: value for key, value in raw.items() if key != top_level_text_field and value is not None}
        yield make_record(self.name, record_id, text, metadata=metadata)


@register
class JsonlAdapter(GenericRecordAdapter):
    name = "jsonl"
    description = "any JSON Lines corpus; text from --text-field, id from --id-field"
    input_format = "JSONL, one object per line (.gz/.zst accepted)"


@register
class JsonAdapter(GenericRecordAdapter):
    name = "json"
    description = "any JSON-array corpus; text from --text-field, id from --id-field"
    input_format = "a JSON array of objects, streamed (.gz/.zst accepted)"


@register
class ParquetAdapter(GenericRecordAdapter):
    name = "parquet"
    description = "any Parquet corpus; text from --text-field, id from --id-field"
    input_format = "Parquet with a string column"


@register
class TextAdapter(SourceAdapter):
    name = "text"
    description = "plain text; one record per paragraph (default), line or file (--text-unit)"
    input_format = "UTF-8 or GBK text (.gz/.zst accepted)"

    def read(self, unit: tuple[Path, ...], options: ReadOptions, log: ConversionLog) -> Iterator[dict]:
        if options.text_unit not in ("line", "paragraph", "file"):
            raise ValueError(f"--text-unit must be line, paragraph or file, got {options.text_unit!r}")
        for path in unit:
            for first_line, text in self._iter_units(path, options, log):
                yield make_record(self.name, f"{self.name}:{path.name}:{first_line}", text)

    def _iter_units(self, path: Path, options: ReadOptions, log: ConversionLog) -> Iterator[tuple[int, str]]:
        lines = iter_lines(path, encoding=options.encoding, on_bad=log.bad)
        if options.text_unit == "line":
            yield from ((line_no, line) for line_no, line in lines if line.strip())
            return

        block: list[str] = []
        first_line = 0
        for line_no, line in lines:
            if options.text_unit == "paragraph" and not line.strip():
                if block:
                    yield first_line, "\n".join(block)
                block = []
                continue
            if not block:
                first_line = line_no
            block.append(line)
        if options.text_unit == "file":
            block = _strip_blank_edges(block)
        if block and "".join(block).strip():
            yield first_line, "\n".join(block)


def _strip_blank_edges(lines: list[str]) -> list[str]:
    start = next((i for i, line in enumerate(lines) if line.strip()), len(lines))
    end = len(lines) - next((i for i, line in enumerate(reversed(lines)) if line.strip()), len(lines))
    return lines[start:end]
