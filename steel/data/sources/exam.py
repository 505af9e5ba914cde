"""WanJuan 1.0 exam questions, converted to chat samples for SFT.

Every question yields a sample that asks for the answer only and, when the record has a worked
answer (`answer_detail`), a second sample that asks for the reasoning and then the answer. A
question with options is posed as multiple choice (`A. ...` lines); one without options (fill in
the blank, short answer) is posed as it is. Prompts are Chinese, or English when the question is.
"""

from collections.abc import Iterable

from steel.data.langid import detect_language
from steel.data.sources.base import RecordContext, RecordError, SourceAdapter, make_record, optional_str, register, require
from steel.data.sources.dialogue import check_messages, message, render_dialogue

OPTION_FIELDS = {"A": "option_a", "B": "option_b", "C": "option_c", "D": "option_d", "E": "option_e"}
QUESTION_FIELDS = {"id", "q_main", "std_ans", "answer_detail", *OPTION_FIELDS.values()}

PROMPTS = {
    "zh": {
        "choice": "以下是一道选择题，请直接给出正确选项。",
        "choice_detail": "以下是一道选择题，请先给出解题过程，再给出正确选项。",
        "open": "请回答下面的问题，直接给出答案。",
        "open_detail": "请回答下面的问题，先给出解题过程，再给出答案。",
        "answer": "答案：",
    },
    "en": {
        "choice": "The following is a multiple-choice question. Give the letter of the correct option.",
        "choice_detail": "The following is a multiple-choice question. Explain your reasoning, then give the correct option.",
        "open": "Answer the following question.",
        "open_detail": "Answer the following question. Explain your reasoning, then give the answer.",
        "answer": "Answer: ",
    },
}


def format_answer(value: object) -> str:
    """Return the standard answer as text; a list of options (`["A", "C"]`) becomes "AC"."""
    if isinstance(value, list):
        return "".join(str(item).strip() for item in value)
    return str(value).strip()


@register
class WanJuanExamAdapter(SourceAdapter):
    name = "wanjuan-exam"
    description = "WanJuan 1.0 exam questions as chat samples, with and without the worked answer"
    input_format = 'JSONL {"q_main", "option_a".."option_e", "std_ans", "answer_detail", ...}'

    def convert(self, raw: dict, context: RecordContext) -> Iterable[dict]:
        question = require(raw, "q_main").strip()
        if "std_ans" not in raw or raw["std_ans"] in (None, "", []):
            raise RecordError("missing field 'std_ans'", "the question has no standard answer")
        answer = format_answer(raw["std_ans"])
        detail = optional_str(raw, "answer_detail").strip()

        options = [(letter, optional_str(raw, field).strip()) for letter, field in OPTION_FIELDS.items()]
        options = [(letter, text) for letter, text in options if text]
        language = "en" if detect_language(question) == "en" else "zh"
        prompts = PROMPTS[language]
        kind = "choice" if options else "open"
        body = "\n".join([question] + [f"{letter}. {text}" for letter, text in options])

        native_id = optional_str(raw, "id")
        base_id = f"{self.name}:{native_id}" if native_id else context.default_id()
        metadata = {key: value for key, value in raw.items() if key not in QUESTION_FIELDS and value not in (None, "")}
        metadata["answer"] = answer

        samples = [("answer-only", prompts[kind], f"{prompts['answer']}{answer}")]
        if detail:
            samples.append(("worked", prompts[f"{kind}_detail"], f"{detail}\n{prompts['answer']}{answer}"))
        for variant, instruction, reply in samples:
            messages = check_messages([message("user", f"{instruction}\n\n{body}"), message("assistant", reply)])
            yield make_record(
                self.name,
                f"{base_id}:{variant}",
                render_dialogue(messages),
                messages=messages,
                metadata={**metadata, "variant": variant},
            )
