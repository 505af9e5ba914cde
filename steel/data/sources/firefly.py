"""Firefly-1.1M: single-turn Chinese instruction data in 23 task kinds."""

from collections.abc import Iterable

from steel.data.sources.base import RecordContext, SourceAdapter, make_record, register, require
from steel.data.sources.dialogue import check_messages, message, render_dialogue


@register
class FireflyAdapter(SourceAdapter):
    name = "firefly"
    description = "Firefly-1.1M instructions (the task kind goes to metadata)"
    input_format = 'JSONL {"kind", "input", "target"}'

    def convert(self, raw: dict, context: RecordContext) -> Iterable[dict]:
        messages = check_messages([message("user", require(raw, "input")), message("assistant", require(raw, "target"))])
        metadata = {"kind": raw["kind"]} if raw.get("kind") else None
        yield make_record(self.name, context.default_id(), render_dialogue(messages), messages=messages, metadata=metadata)
