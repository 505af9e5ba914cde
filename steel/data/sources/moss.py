"""MOSS-003-SFT as re-released by YeungNLP: one conversation of human/assistant pairs per line."""

from collections.abc import Iterable

from steel.data.sources.base import RecordContext, RecordError, SourceAdapter, make_record, optional_str, register, require
from steel.data.sources.dialogue import check_messages, message, render_dialogue


@register
class Moss003SftAdapter(SourceAdapter):
    name = "moss-003-sft"
    description = "MOSS-003-SFT (YeungNLP release) multi-turn conversations"
    input_format = 'JSONL {"conversation_id", "category", "conversation": [{"human", "assistant"}, ...]}'

    def convert(self, raw: dict, context: RecordContext) -> Iterable[dict]:
        pairs = require(raw, "conversation", list)
        messages = []
        for index, pair in enumerate(pairs):
            if not isinstance(pair, dict) or "human" not in pair or "assistant" not in pair:
                raise RecordError("invalid field 'conversation'", f"turn {index} lacks 'human' or 'assistant'")
            messages.append(message("user", str(pair["human"])))
            messages.append(message("assistant", str(pair["assistant"])))
        check_messages(messages)

        conversation_id = optional_str(raw, "conversation_id")
        record_id = f"{self.name}:{conversation_id}" if conversation_id else context.default_id()
        metadata = {"category": raw["category"]} if raw.get("category") else None
        yield make_record(self.name, record_id, render_dialogue(messages), messages=messages, metadata=metadata)
