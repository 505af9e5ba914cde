"""Prompt formats of C-Eval, CMMLU and MMLU, k-shot construction and fitting into the context.

A prompt is the instruction line, up to k solved examples from the dev split, then the question,
its options and the answer prefix (`答案：`, `答案是：` or `Answer:`), so the model's next token
is the answer letter exactly as the solved examples spell it.
"""

from collections.abc import Callable
from dataclasses import asdict, dataclass

from steel.eval.questions import MCQuestion


@dataclass(frozen=True)
class PromptFormat:
    name: str
    instruction: str
    """First line of every prompt; `{subject}` becomes the subject's display name."""
    question_prefix: str
    answer_prefix: str
    """Text after the options; the answer follows it (the prompt under test ends with it)."""
    answer_separator: str
    """Text between `answer_prefix` and the letter: "" for the Chinese formats, " " for MMLU."""
    example_separator: str = "\n\n"

    def to_dict(self) -> dict:
        return asdict(self)


PROMPT_FORMATS: dict[str, PromptFormat] = {
    # The format of the C-Eval authors' evaluation code.
    "ceval": PromptFormat(
        name="ceval",
        instruction="以下是中国关于{subject}考试的单项选择题，请选出其中的正确答案。",
        question_prefix="",
        answer_prefix="答案：",
        answer_separator="",
    ),
    # The format of the CMMLU authors' evaluation code.
    "cmmlu": PromptFormat(
        name="cmmlu",
        instruction="以下是关于{subject}的单项选择题，请直接给出正确答案的选项。",
        question_prefix="题目：",
        answer_prefix="答案是：",
        answer_separator="",
    ),
    # The format of the original MMLU evaluation (Hendrycks et al.).
    "mmlu": PromptFormat(
        name="mmlu",
        instruction="The following are multiple choice questions (with answers) about {subject}.",
        question_prefix="",
        answer_prefix="Answer:",
        answer_separator=" ",
    ),
    # For user-made question sets (any number of options, Chinese).
    "zh": PromptFormat(
        name="zh",
        instruction="以下是关于{subject}的单项选择题，请选出其中的正确答案。",
        question_prefix="",
        answer_prefix="答案：",
        answer_separator="",
    ),
}


def get_prompt_format(name: str) -> PromptFormat:
    try:
        return PROMPT_FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown prompt format {name!r}; expected one of {sorted(PROMPT_FORMATS)}") from None


def format_question(fmt: PromptFormat, question: MCQuestion) -> str:
    """Return the question and its options, one per line, without the answer prefix."""
    lines = [fmt.question_prefix + question.question]
    lines += [f"{letter}. {text}" for letter, text in question.options.items()]
    return "\n".join(lines) + "\n"


def format_example(fmt: PromptFormat, example: MCQuestion) -> str:
    if example.answer is None:
        raise ValueError(f"few-shot example {example.subject}/{example.id} has no answer")
    return format_question(fmt, example) + fmt.answer_prefix + fmt.answer_separator + example.answer


@dataclass
class Prompt:
    body: str
    """Instruction, examples, question and options: everything before the final answer prefix."""
    answer_prefix: str
    num_shots: int
    over_context: bool = False
    """True when even the 0-shot prompt is longer than the context; it is then truncated on the left."""

    @property
    def text(self) -> str:
        return self.body + self.answer_prefix


def build_prompt(
    fmt: PromptFormat, question: MCQuestion, subject_name: str, shots: list[MCQuestion] = ()
) -> Prompt:
    """Build the prompt for `question` with the given solved examples (in order)."""
    parts = [fmt.instruction.format(subject=subject_name)]
    parts += [format_example(fmt, example) for example in shots]
    parts.append(format_question(fmt, question))
    body = fmt.example_separator.join(parts)
    return Prompt(body=body, answer_prefix=fmt.answer_prefix, num_shots=len(shots))


def fit_prompt(
    fmt: PromptFormat,
    question: MCQuestion,
    subject_name: str,
    shots: list[MCQuestion],
    count_tokens: Callable[[Prompt], int],
    max_tokens: int,
) -> Prompt:
    """Build the prompt with as many of `shots` as fit in `max_tokens`, dropping the last ones first.

    The question itself is never dropped: when even the 0-shot prompt is too long, that prompt is
    returned with `over_context=True` and the scorer keeps its last `max_tokens` tokens.
    """
    for num_shots in range(len(shots), -1, -1):
        prompt = build_prompt(fmt, question, subject_name, shots[:num_shots])
        if count_tokens(prompt) <= max_tokens:
            return prompt
    prompt.over_context = True
    return prompt
