"""The multiple-choice scorer: one code path for C-Eval, CMMLU, MMLU and user-made question sets.

Modes:

- `logits`: the prompt ends with the answer prefix (`答案：`); each option letter is scored by the
  model's next-token log-probability of that letter's token id, the id the solved examples use
  (see `answer_token_ids`). The highest score wins.
- `option-logprob`: each option's whole text is scored by its summed token log-probability after
  the answer prefix; `option-logprob-norm` divides that sum by the option's length in characters.
- `generate`: the prompt goes into the chat template as the user turn, the model replies greedily
  and the letter is extracted from the reply (`steel.eval.extraction`). An unparseable reply counts
  as wrong and is reported; with `fuzzy_match` it is matched against the option texts instead.

Batches are exact: sequences are right-padded and a causal model's token t never sees later
positions, so padding does not change any question's scores. A model with the non-causal Soft MoE
(`ffn_type == "soft_moe"`) mixes all positions of a sequence, so it gets one sequence per forward
pass. Generation left-pads a batch and relies on the attention mask and the position ids that
`generate` derives from it.
"""

import inspect
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import torch
from tqdm import tqdm

from steel.eval.adapter import EvalModel, as_eval_model
from steel.eval.extraction import extract_letter, match_option_text
from steel.eval.prompts import Prompt, PromptFormat, fit_prompt, get_prompt_format
from steel.eval.questions import MCQuestion
from steel.eval.results import QuestionResult, summarize

logger = logging.getLogger(__name__)

MODES = ("logits", "option-logprob", "option-logprob-norm", "generate")


@dataclass
class ScoringConfig:
    mode: str = "logits"
    prompt_format: str = "zh"
    """A name in `steel.eval.prompts.PROMPT_FORMATS`."""
    shots: int = 0
    """Solved dev examples per prompt; fewer are used when the prompt would not fit."""
    batch_size: int = 8
    """Sequences per forward pass; a non-causal model always gets 1."""
    max_length: int | None = None
    """Prompt budget in tokens; default: the model's `max_position_embeddings`."""
    max_new_tokens: int = 32
    """Generation budget per reply (generate mode)."""
    system_prompt: str | None = None
    """System turn for generate mode; None keeps the chat template's default system prompt."""
    fuzzy_match: bool = False
    """Generate mode: map a reply without a readable letter to the closest option text."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown scoring mode {self.mode!r}; expected one of {MODES}")
        if self.shots < 0:
            raise ValueError(f"shots must be >= 0, got {self.shots}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        get_prompt_format(self.prompt_format)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class MCResults:
    results: list[QuestionResult]
    config: dict
    answer_token_ids: dict[str, int] | None
    """Letter to token id scored in logits mode (None in other modes)."""
    elapsed_s: float
    categories: tuple[str, ...] = ()
    summary: dict = field(init=False)

    def __post_init__(self) -> None:
        self.summary = summarize(self.results, self.categories)

    @property
    def accuracy(self) -> float | None:
        return self.summary["overall"]["accuracy"]

    @property
    def questions_per_second(self) -> float:
        return len(self.results) / self.elapsed_s if self.elapsed_s > 0 else float("inf")


def score_multiple_choice(
    loaded_model,
    questions: list[MCQuestion],
    mode: str = "logits",
    *,
    prompt_format: str = "zh",
    shots: int = 0,
    dev_questions: dict[str, list[MCQuestion]] | list[MCQuestion] | None = None,
    subject_names: dict[str, str] | None = None,
    batch_size: int = 8,
    max_length: int | None = None,
    max_new_tokens: int = 32,
    system_prompt: str | None = None,
    fuzzy_match: bool = False,
    categories: tuple[str, ...] = (),
    progress: bool = False,
) -> MCResults:
    """Score multiple-choice questions (2 to 26 options each) with a loaded model.

    `loaded_model` is the trainer's `LoadedModel`. Few-shot examples come from `dev_questions`
    (per subject, or one list for every subject). `subject_names` maps a question's `subject` to the
    name written into the instruction line (default: the subject itself). Returns per-question
    results and `summary` (overall, per-category and per-subject accuracy).
    """
    config = ScoringConfig(
        mode=mode,
        prompt_format=prompt_format,
        shots=shots,
        batch_size=batch_size,
        max_length=max_length,
        max_new_tokens=max_new_tokens,
        system_prompt=system_prompt,
        fuzzy_match=fuzzy_match,
    )
    return MultipleChoiceScorer(as_eval_model(loaded_model), config).score(
        questions, dev_questions, subject_names, categories, progress
    )


class MultipleChoiceScorer:
    def __init__(self, eval_model: EvalModel, config: ScoringConfig):
        self.eval_model = eval_model
        self.config = config
        self.format: PromptFormat = get_prompt_format(config.prompt_format)
        self.max_length = config.max_length or eval_model.max_length
        self.batch_size = config.batch_size if eval_model.is_causal else 1
        if config.batch_size > 1 and not eval_model.is_causal:
            logger.info("non-causal %s model: scoring one sequence per forward pass", eval_model.ffn_type)

    def score(
        self,
        questions: list[MCQuestion],
        dev_questions: dict[str, list[MCQuestion]] | list[MCQuestion] | None = None,
        subject_names: dict[str, str] | None = None,
        categories: tuple[str, ...] = (),
        progress: bool = False,
    ) -> MCResults:
        start = time.perf_counter()
        prompts = [self._prompt(question, dev_questions, subject_names or {}) for question in questions]
        answer_ids = None
        bar = tqdm(total=len(questions), unit="q", desc=f"scoring ({self.config.mode})", disable=not progress)
        with torch.no_grad():
            if self.config.mode == "logits":
                answer_ids = self._answer_ids(questions)
                results = self._score_letters(questions, prompts, answer_ids, bar)
            elif self.config.mode == "generate":
                results = self._score_generate(questions, prompts, bar)
            else:
                results = self._score_options(questions, prompts, bar)
        bar.close()
        elapsed = time.perf_counter() - start
        return MCResults(
            results=results,
            config=self.config.to_dict() | {"prompt": self.format.to_dict(), "max_length": self.max_length},
            answer_token_ids=answer_ids,
            elapsed_s=elapsed,
            categories=tuple(categories),
        )

    # --- prompts -------------------------------------------------------------------------------

    def _prompt(self, question: MCQuestion, dev_questions, subject_names: dict[str, str]) -> Prompt:
        shots = self._shots_for(question, dev_questions)
        subject_name = subject_names.get(question.subject, question.subject)
        return fit_prompt(self.format, question, subject_name, shots, self._prompt_length, self.max_length)

    def _shots_for(self, question: MCQuestion, dev_questions) -> list[MCQuestion]:
        if self.config.shots == 0:
            return []
        if dev_questions is None:
            raise ValueError(f"{self.config.shots}-shot prompts need dev_questions")
        pool = dev_questions if isinstance(dev_questions, list) else dev_questions.get(question.subject, [])
        if len(pool) < self.config.shots:
            raise ValueError(
                f"subject {question.subject!r} has {len(pool)} dev example(s), fewer than shots={self.config.shots}"
            )
        return pool[: self.config.shots]

    def _prompt_length(self, prompt: Prompt) -> int:
        if self.config.mode == "generate":
            return len(self.eval_model.encode_chat(self._messages(prompt))) + self.config.max_new_tokens
        length = len(self.eval_model.encode(prompt.text))
        if self.config.mode != "logits":
            # Room for the longest option is checked per question in _score_options.
            return length
        return length + 1

    def _messages(self, prompt: Prompt) -> list[dict[str, str]]:
        messages = [{"role": "user", "content": prompt.text}]
        if self.config.system_prompt is not None:
            messages.insert(0, {"role": "system", "content": self.config.system_prompt})
        return messages

    # --- logits mode ---------------------------------------------------------------------------

    def _answer_ids(self, questions: list[MCQuestion]) -> dict[str, int]:
        letters = max((q.letters for q in questions), key=len, default=["A", "B"])
        context_ids, letter_ids = answer_token_ids(self.eval_model, self.format, letters)
        self._answer_context_ids = context_ids
        return letter_ids

    def _score_letters(self, questions, prompts, answer_ids, bar) -> list[QuestionResult]:
        sequences = [self._encode_answer_context(prompt) for prompt in prompts]
        results: list[QuestionResult | None] = [None] * len(questions)
        for indices in self._batches(sequences):
            batch = [sequences[i] for i in indices]
            last_positions = [len(ids) - 1 for ids in batch]
            log_probs = self._log_probs_at(batch, [[p] for p in last_positions])
            for row, index in enumerate(indices):
                question = questions[index]
                scores = {
                    letter: float(log_probs[row][0][answer_ids[letter]]) for letter in question.letters
                }
                results[index] = self._result(question, prompts[index], max(scores, key=scores.get), scores=scores)
            bar.update(len(indices))
        return results

    def _encode_answer_context(self, prompt: Prompt) -> list[int]:
        # The body is encoded alone and the answer prefix appended as the ids `answer_token_ids`
        # derived, so the letter ids that follow are exactly the ones the solved examples teach.
        ids = self.eval_model.encode(prompt.body) + self._answer_context_ids
        return ids[-self.max_length :]

    # --- option-logprob modes ------------------------------------------------------------------

    def _score_options(self, questions, prompts, bar) -> list[QuestionResult]:
        rows: list[tuple[int, str, list[int], int]] = []  # question index, letter, ids, context length
        for index, (question, prompt) in enumerate(zip(questions, prompts)):
            context = self.eval_model.encode(prompt.body) + self.eval_model.encode(prompt.answer_prefix)
            for letter, text in question.options.items():
                continuation = self.eval_model.encode(self.format.answer_separator + text)
                if not continuation:
                    raise ValueError(f"question {question.subject}/{question.id}: option {letter} is empty")
                if len(continuation) >= self.max_length:
                    raise ValueError(
                        f"question {question.subject}/{question.id}: option {letter} has {len(continuation)} tokens, "
                        f"no room for context in max_length={self.max_length}"
                    )
                ids = (context + continuation)[-self.max_length :]
                rows.append((index, letter, ids, len(ids) - len(continuation)))

        sums: dict[tuple[int, str], float] = {}
        finished = [0] * len(questions)
        for indices in self._batches([row[2] for row in rows]):
            batch = [rows[i][2] for i in indices]
            # Position t predicts token t + 1, so a continuation starting at c is read from c - 1 on.
            positions = [list(range(rows[i][3] - 1, len(rows[i][2]) - 1)) for i in indices]
            log_probs = self._log_probs_at(batch, positions)
            for row, i in enumerate(indices):
                question_index, letter, ids, context_length = rows[i]
                targets = torch.tensor(ids[context_length:])
                sums[question_index, letter] = float(log_probs[row].gather(1, targets[:, None]).sum())
                finished[question_index] += 1
                if finished[question_index] == len(questions[question_index].options):
                    bar.update(1)

        results = []
        for index, (question, prompt) in enumerate(zip(questions, prompts)):
            scores = {}
            for letter, text in question.options.items():
                score = sums[index, letter]
                if self.config.mode == "option-logprob-norm":
                    score /= max(len(text), 1)
                scores[letter] = score
            results.append(self._result(question, prompt, max(scores, key=scores.get), scores=scores))
        return results

    # --- generate mode -------------------------------------------------------------------------

    def _score_generate(self, questions, prompts, bar) -> list[QuestionResult]:
        from transformers import GenerationConfig

        tokenizer = self.eval_model.tokenizer
        generation_config = GenerationConfig(
            do_sample=False,
            max_new_tokens=self.config.max_new_tokens,
            eos_token_id=self.eval_model.stop_ids,
            pad_token_id=tokenizer.pad_id,
        )
        budget = self.max_length - self.config.max_new_tokens
        if budget < 1:
            raise ValueError(f"max_new_tokens={self.config.max_new_tokens} leaves no room for a prompt in max_length={self.max_length}")
        # A prompt flagged over_context is cut on the left, like in the other modes.
        sequences = [self.eval_model.encode_chat(self._messages(prompt))[-budget:] for prompt in prompts]
        results: list[QuestionResult | None] = [None] * len(questions)
        for indices in self._batches(sequences):
            replies = self._generate([sequences[i] for i in indices], generation_config)
            for index, reply in zip(indices, replies):
                results[index] = self._generated_result(questions[index], prompts[index], reply)
            bar.update(len(indices))
        return results

    def _generate(self, batch: list[list[int]], generation_config) -> list[str]:
        pad_id = self.eval_model.tokenizer.pad_id
        width = max(len(ids) for ids in batch)
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(batch):
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention_mask[row, width - len(ids) :] = 1
        device = self.eval_model.device
        output = self.eval_model.model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            generation_config=generation_config,
        )
        stop_ids = set(self.eval_model.stop_ids)
        replies = []
        for row in output[:, width:].tolist():
            end = next((i for i, token in enumerate(row) if token in stop_ids), len(row))
            replies.append(self.eval_model.decode(row[:end]))
        return replies

    def _generated_result(self, question: MCQuestion, prompt: Prompt, reply: str) -> QuestionResult:
        extraction = extract_letter(reply, question.letters)
        letter, method = extraction.letter, extraction.method
        if letter is None and self.config.fuzzy_match:
            letter, method = match_option_text(reply, question.options), "fuzzy"
        return self._result(question, prompt, letter, output=reply, extraction=method)

    # --- shared --------------------------------------------------------------------------------

    def _result(self, question: MCQuestion, prompt: Prompt, prediction: str | None, **extra) -> QuestionResult:
        return QuestionResult(
            id=question.id,
            subject=question.subject,
            category=question.category,
            groups=question.groups,
            answer=question.answer,
            prediction=prediction,
            num_shots=prompt.num_shots,
            over_context=prompt.over_context,
            **extra,
        )

    def _batches(self, sequences: list[list[int]]) -> Iterator[list[int]]:
        """Yield index batches, longest sequences first, so padded batches waste little."""
        order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
        for start in range(0, len(order), self.batch_size):
            yield order[start : start + self.batch_size]

    def _log_probs_at(self, batch: list[list[int]], positions: list[list[int]]) -> list[torch.Tensor]:
        """Run one right-padded batch; return, per row, log-softmax rows [len(positions[row]), vocab]."""
        return forward_log_probs(self.eval_model, batch, positions)


def forward_log_probs(eval_model: EvalModel, batch: list[list[int]], positions: list[list[int]]) -> list[torch.Tensor]:
    """Right-pad `batch`, run the model once and return float32 log-probabilities at `positions`.

    Only the logits of the requested positions are computed when the model's forward accepts
    `logits_to_keep` (a full [batch, seq, vocab] tensor can take gigabytes at a 150k vocabulary).
    """
    model = eval_model.model
    pad_id = eval_model.tokenizer.pad_id
    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ids in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1

    device = eval_model.device
    kept = sorted({p for row in positions for p in row})
    kwargs = {}
    if _accepts_logits_to_keep(model):
        kwargs["logits_to_keep"] = torch.tensor(kept, device=device)
        column = {position: i for i, position in enumerate(kept)}
    else:
        column = {position: position for position in kept}
    if not bool(attention_mask.all()):
        # Without padding the mask is left out, which lets the model take its plain causal path.
        kwargs["attention_mask"] = attention_mask.to(device)
    logits = model(input_ids=input_ids.to(device), **kwargs).logits

    outputs = []
    for row, row_positions in enumerate(positions):
        columns = torch.tensor([column[p] for p in row_positions], device=logits.device)
        outputs.append(torch.log_softmax(logits[row, columns].float(), dim=-1).cpu())
    return outputs


def _accepts_logits_to_keep(model: torch.nn.Module) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def answer_token_ids(
    eval_model: EvalModel, fmt: PromptFormat, letters: list[str]
) -> tuple[list[int], dict[str, int]]:
    """Return the answer-prefix ids the prompt ends with and each letter's token id after them.

    The ids come from encoding the answer line as the solved examples write it (`答案：C`,
    `Answer: C`): the common leading ids of all letters' answer lines are the prompt's end, and
    each letter must then add exactly one token. A tokenizer that merges the prefix with some
    letters (so that the prefix is shorter for all) still works; one where a letter takes two
    tokens raises ValueError, and the option-logprob modes are the way to score with it.
    """
    encodings = {
        letter: eval_model.encode(fmt.answer_prefix + fmt.answer_separator + letter) for letter in letters
    }
    common = _common_prefix_length(list(encodings.values()))
    context = encodings[letters[0]][:common]
    letter_ids = {}
    for letter, ids in encodings.items():
        if len(ids) != common + 1:
            pieces = [eval_model.decode([i]) for i in ids[common:]]
            raise ValueError(
                f"answer letter {letter!r} after {fmt.answer_prefix!r} is {len(ids) - common} tokens {pieces} "
                "in this tokenizer, so next-token scoring cannot compare letters; use mode option-logprob"
            )
        letter_ids[letter] = ids[-1]
    if len(set(letter_ids.values())) != len(letter_ids):
        raise ValueError(f"answer letters share token ids {letter_ids}; the tokenizer cannot tell them apart")
    return context, letter_ids


def _common_prefix_length(sequences: list[list[int]]) -> int:
    length = 0
    for column in zip(*sequences):
        if any(token != column[0] for token in column):
            break
        length += 1
    return length
