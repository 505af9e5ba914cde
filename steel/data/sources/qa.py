"""Question-answer corpora, kept as two-turn dialogue: Baidu Baike Q&A and Zhihu-KOL."""

import json
from collections.abc import Iterable

from steel.data.sources.base import RecordContext, SourceAdapter, make_record, optional_str, register, require
from steel.data.sources.dialogue import check_messages, message, render_dialogue


def qa_record(source: str, record_id: str, question: str, answer: str, metadata: dict | None) -> dict:
    messages = check_messages([message("user", question), message("assistant", answer)])
    return make_record(source, record_id, render_dialogue(messages), messages=messages, metadata=metadata)


@register
class BaiduBaikeQaAdapter(SourceAdapter):
    name = "baidubaike-qa"
    description = "Baidu Baike Q&A; the question is the title plus its description"
    input_format = 'JSONL {"qid", "category", "title", "desc", "answer"}'

    def convert(self, raw: dict, context: RecordContext) -> Iterable[dict]:
        title = require(raw, "title")
        answer = require(raw, "answer")
        description = optional_str(raw, "desc").strip()
        question = f"{title.strip()}\n{description}" if description and description != title.strip() else title

        qid = optional_str(raw, "qid")
        metadata = {"category": raw["category"]} if raw.get("category") else None
        record_id = f"{self.name}:{qid}" if qid else context.default_id()
        yield qa_record(self.name, record_id, question, answer, metadata)


@register
class ZhihuKolAdapter(SourceAdapter):
    name = "zhihu-kol"
    description = "Zhihu-KOL question-answer pairs"
    input_format = "Parquet INSTRUCTION, RESPONSE, SOURCE, METADATA (a JSON string)"
    columns = ["INSTRUCTION", "RESPONSE", "SOURCE", "METADATA"]

    def convert(self, raw: dict, context: RecordContext) -> Iterable[dict]:
        question = require(raw, "INSTRUCTION")
        answer = require(raw, "RESPONSE")
        metadata: dict = {"source": raw["SOURCE"]} if raw.get("SOURCE") else {}
        raw_metadata = raw.get("METADATA")
        if raw_metadata:
            try:
                metadata.update(json.loads(raw_metadata))
            except (TypeError, json.JSONDecodeError):
                metadata["metadata"] = raw_metadata  # kept verbatim when it is not JSON

        # The release stores question and answer ids as floats (357137111.0); they are integers.
        for key, value in metadata.items():
            if key.endswith("_id") and isinstance(value, float) and value.is_integer():
                metadata[key] = int(value)
        answer_id = metadata.get("answer_id")
        record_id = f"{self.name}:{answer_id}" if answer_id else context.default_id()
        yield qa_record(self.name, record_id, question, answer, metadata)
