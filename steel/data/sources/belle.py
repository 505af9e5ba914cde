"""BELLE instruction data: `train_2M_CN` (instruction/input/output) and `train_3.5M_CN` (conversations)."""

from collections.abc import Iterable

from steel.data.sources.base import RecordContext, RecordError, SourceAdapter, make_record, optional_str, register, require
from steel.data.sources.dialogue import check_messages, message, render_dialogue


@register
class Belle2MAdapter(SourceAdapter):
    name = "belle-2m"
    description = "BELLE train_2M_CN; the user turn is the instruction followed by the input"
    input_format = 'JSONL {"instruction", "input", "output"}'

    def convert(self, raw: dict, context: RecordContext) -> Iterable[dict]:
        instruction = require(raw, "instruction")
        output = require(raw, "output")
        extra_input = optional_str(raw, "input").strip()
        prompt = f"{instruction.strip()}\n{extra_input}" if extra_input else instruction

        messages = check_messages([message("user", prompt), message("assistant", output)])
        yield make_record(self.name, context.default_id(), render_dialogue(messages), messages=messages)


@register
class Belle35MAdapter(SourceAdapter):
    name = "belle-3.5m"
    description = "BELLE train_3.5M_CN multi-turn conversations"
    input_format = 'JSONL {"id", "conversations": [{"from": "human"|"assistant", "value"}]}'

    def convert(self, raw: dict, context: RecordContext) -> Iterable[dict]:
        turns = require(raw, "conversations", list)
        messages = []
        for index, turn in enumerate(turns):
            if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
                raise RecordError("invalid field 'conversations'", f"turn {index} lacks 'from' or 'value'")
            messages.append(message(str(turn["from"]), str(turn["value"])))
        check_messages(messages)

        native_id = optional_str(raw, "id")
        record_id = f"{self.name}:{native_id}" if native_id else context.default_id()
        yield make_record(self.name, record_id, render_dialogue(messages), messages=messages)
