from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from steel.eval import MCQuestion, score_multiple_choice
from steel.eval.adapter import as_eval_model
from steel.eval.benchmarks import get_benchmark
from steel.eval.loaders import load_split
from steel.eval.prompts import build_prompt, get_prompt_format
from steel.eval.scorer import answer_token_ids

FIXTURES = Path(__file__).parent / "fixtures"
CEVAL_SUBJECTS = ["computer_network", "marxism", "law", "physician"]
CMMLU_SUBJECTS = ["agronomy", "ancient_chinese", "astronomy", "arts"]


class AlwaysLetterModel(torch.nn.Module):
    """Puts the highest next-token score on one token id at every position."""

    def __init__(self, vocab_size: int, token_id: int):
        super().__init__()
        self.config = SimpleNamespace(max_position_embeddings=4096, model_type="controlled")
        self.vocab_size = vocab_size
        self.token_id = token_id
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.batch_sizes = []

    def forward(self, input_ids, attention_mask=None, logits_to_keep=0):
        self.batch_sizes.append(input_ids.shape[0])
        logits = torch.zeros(*input_ids.shape, self.vocab_size)
        logits[..., self.token_id] = 5.0
        if isinstance(logits_to_keep, torch.Tensor):
            logits = logits[:, logits_to_keep]
        return SimpleNamespace(logits=logits)


class ScriptedChatModel(torch.nn.Module):
    """`generate` replies with a fixed text per question, found by the question text in the prompt."""

    def __init__(self, tokenizer, replies: dict[str, str]):
        super().__init__()
        self.config = SimpleNamespace(max_position_embeddings=4096, model_type="controlled")
        self.tokenizer = tokenizer
        self.replies = replies
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def generate(self, input_ids, attention_mask, generation_config):
        new_rows = []
        for ids, mask in zip(input_ids, attention_mask):
            prompt = self.tokenizer.decode(ids[mask.bool()].tolist())
            reply = next(text for question, text in self.replies.items() if question in prompt)
            new_rows.append(self.tokenizer.encode(reply) + [self.tokenizer.eos_id])
        width = max(len(row) for row in new_rows)
        padded = [row + [self.tokenizer.pad_id] * (width - len(row)) for row in new_rows]
        return torch.cat([input_ids, torch.tensor(padded)], dim=1)


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    from steel.tokenizer import load_tokenizer

    return load_tokenizer(tokenizer_dir)


def _loaded(model, tokenizer):
    return SimpleNamespace(model=model, tokenizer=tokenizer, chat_template=None, provenance={})


def _ceval(split, subjects=CEVAL_SUBJECTS):
    return load_split("ceval", FIXTURES / "ceval", split, subjects).questions


def _flat(by_subject):
    return [question for questions in by_subject.values() for question in questions]


def _always(tokenizer, letter, fmt="ceval"):
    context, ids = answer_token_ids(as_eval_model(_loaded(AlwaysLetterModel(1, 0), tokenizer)), get_prompt_format(fmt), list("ABCD"))
    return AlwaysLetterModel(tokenizer.vocab_size, ids[letter])


def test_always_a_model_aggregates_ceval(tokenizer):
    benchmark = get_benchmark("ceval")
    results = score_multiple_choice(
        _loaded(_always(tokenizer, "A"), tokenizer),
        _flat(_ceval("val")),
        prompt_format="ceval",
        shots=5,
        dev_questions=_ceval("dev"),
        subject_names={key: s.name for key, s in benchmark.subjects.items()},
        categories=benchmark.categories,
    )
    summary = results.summary
    assert [r.prediction for r in results.results] == ["A"] * 12
    assert summary["overall"]["correct"] == 6
    assert summary["overall"]["total"] == 12
    assert summary["overall"]["accuracy"] == pytest.approx(0.5)
    assert summary["subjects"]["computer_network"]["accuracy"] == pytest.approx(2 / 3)
    assert summary["subjects"]["marxism"]["accuracy"] == pytest.approx(1 / 3)
    assert summary["subjects"]["law"]["accuracy"] == 0.0
    assert summary["subjects"]["physician"]["accuracy"] == 1.0
    assert list(summary["categories"]) == ["STEM", "Social Science", "Humanities", "Other"]
    assert summary["categories"]["STEM"]["accuracy"] == pytest.approx(2 / 3)
    assert summary["categories"]["Humanities"]["correct"] == 0
    assert summary["categories"]["Other"]["total"] == 3
    assert all(r.num_shots == 5 for r in results.results)


def test_always_b_model_on_cmmlu_groups(tokenizer):
    benchmark = get_benchmark("cmmlu")
    questions = _flat(load_split("cmmlu", FIXTURES / "cmmlu", "test", CMMLU_SUBJECTS).questions)
    results = score_multiple_choice(
        _loaded(_always(tokenizer, "B", "cmmlu"), tokenizer), questions, prompt_format="cmmlu",
        categories=benchmark.categories,
    )
    categories = results.summary["categories"]
    # Answers: agronomy AB, ancient_chinese AA, astronomy CD, arts AC; only agronomy's second is B.
    assert results.summary["overall"]["correct"] == 1
    assert categories["Other"]["accuracy"] == 0.5
    assert categories["China specific"]["total"] == 2
    assert categories["China specific"]["accuracy"] == 0.0
    assert categories["Social Science"]["total"] == 2
    assert list(categories) == ["STEM", "Humanities", "Social Science", "Other", "China specific"]


def test_unanswered_questions_count_in_no_accuracy(tokenizer):
    results = score_multiple_choice(_loaded(_always(tokenizer, "B"), tokenizer), _flat(_ceval("test")), prompt_format="ceval")
    overall = results.summary["overall"]
    assert overall["unanswered"] == 8
    assert overall["total"] == 0
    assert overall["accuracy"] is None
    assert all(r.prediction == "B" for r in results.results)


def test_answer_ids_are_the_few_shot_tokens(tokenizer):
    eval_model = as_eval_model(_loaded(AlwaysLetterModel(1, 0), tokenizer))
    for name in ("ceval", "cmmlu", "mmlu"):
        fmt = get_prompt_format(name)
        context, ids = answer_token_ids(eval_model, fmt, list("ABCD"))
        question = _ceval("val")["law"][0]
        body = build_prompt(fmt, question, "法学", _ceval("dev")["law"][:2]).body
        for letter in "ABCD":
            answered = tokenizer.encode(body + fmt.answer_prefix + fmt.answer_separator + letter)
            assert answered == tokenizer.encode(body) + context + [ids[letter]]


@pytest.mark.parametrize("variant, modes", [
    ("causal_model", ("logits", "option-logprob")),
    ("dense_model", ("logits", "option-logprob", "option-logprob-norm")),
])
def test_batched_scores_equal_single(variant, modes, request):
    model = request.getfixturevalue(variant)
    questions = _flat(_ceval("val"))[::5]
    for mode in modes:
        single = score_multiple_choice(model, questions, mode, prompt_format="ceval", batch_size=1)
        batched = score_multiple_choice(model, questions, mode, prompt_format="ceval", batch_size=4)
        for one, many in zip(single.results, batched.results):
            assert one.prediction == many.prediction
            for letter in one.scores:
                assert one.scores[letter] == pytest.approx(many.scores[letter], abs=1e-4)


def test_noncausal_model_one_sequence_per_pass(noncausal_model):
    calls = []
    hook = noncausal_model.model.register_forward_pre_hook(lambda m, args, kwargs: calls.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
    try:
        results = score_multiple_choice(noncausal_model, _flat(_ceval("val"))[:2], "option-logprob", prompt_format="ceval", batch_size=8)
    finally:
        hook.remove()
    assert len(results.results) == 2
    assert calls == [1] * 8  # 2 questions x 4 options, each alone


def test_two_option_custom_set(dense_model):
    questions = [
        MCQuestion("这部电影太好看了！", {"A": "正面", "B": "负面"}, "A", subject="情感分析", category="sentiment"),
        MCQuestion("质量很差，不推荐。", {"A": "正面", "B": "负面"}, "B", subject="情感分析", category="sentiment"),
        MCQuestion("物流很快，满意。", {"A": "正面", "B": "负面"}, "A", subject="情感分析", category="sentiment"),
    ]
    for mode in ("logits", "option-logprob"):
        results = score_multiple_choice(dense_model, questions, mode)
        assert [set(r.scores) for r in results.results] == [{"A", "B"}] * 3
        correct = sum(r.prediction == q.answer for r, q in zip(results.results, questions))
        assert results.summary["overall"]["correct"] == correct
        assert results.summary["categories"]["sentiment"]["total"] == 3
        assert results.answer_token_ids is None or set(results.answer_token_ids) == {"A", "B"}


def test_generate_counts_unparseable(tokenizer):
    questions = _flat(_ceval("val", ["marxism"]))  # answers A, B, C
    replies = {
        questions[0].question: "答案是A",
        questions[1].question: "我不确定。",
        questions[2].question: "正确答案：（Ｄ）",
    }
    loaded = _loaded(ScriptedChatModel(tokenizer, replies), tokenizer)
    results = score_multiple_choice(loaded, questions, "generate", prompt_format="ceval", batch_size=2)
    assert [r.prediction for r in results.results] == ["A", None, "D"]
    assert [r.output for r in results.results] == ["答案是A", "我不确定。", "正确答案：（Ｄ）"]
    assert results.summary["overall"]["unparseable"] == 1
    assert results.summary["overall"]["correct"] == 1
    assert results.summary["subjects"]["marxism"]["unparseable"] == 1


def test_generate_fuzzy_match_leaves_nothing_unparseable(tokenizer):
    questions = _flat(_ceval("val", ["marxism"]))
    replies = {q.question: f"结果是{q.options['B']}" for q in questions}
    loaded = _loaded(ScriptedChatModel(tokenizer, replies), tokenizer)
    results = score_multiple_choice(loaded, questions, "generate", prompt_format="ceval", fuzzy_match=True)
    assert [r.prediction for r in results.results] == ["B", "B", "B"]
    assert [r.extraction for r in results.results] == ["fuzzy"] * 3
    assert results.summary["overall"]["unparseable"] == 0


def test_generate_batched_equals_single(dense_model):
    questions = _flat(_ceval("val"))[::4]
    single = score_multiple_choice(dense_model, questions, "generate", prompt_format="ceval", batch_size=1, max_new_tokens=4)
    batched = score_multiple_choice(dense_model, questions, "generate", prompt_format="ceval", batch_size=3, max_new_tokens=4)
    assert [r.output for r in single.results] == [r.output for r in batched.results]


def test_shots_dropped_when_over_context(dense_model):
    questions = _flat(_ceval("val", ["law"]))
    full = score_multiple_choice(dense_model, questions, prompt_format="ceval", shots=5, dev_questions=_ceval("dev"))
    budget = max(len(dense_model.tokenizer.encode(build_prompt(get_prompt_format("ceval"), q, "law", _ceval("dev")["law"][:2]).text)) for q in questions) + 1
    short = score_multiple_choice(dense_model, questions, prompt_format="ceval", shots=5, dev_questions=_ceval("dev"), max_length=budget)
    assert [r.num_shots for r in full.results] == [5, 5, 5]
    assert all(r.num_shots < 5 for r in short.results)
    assert not any(r.over_context for r in short.results)


def test_chat_encoding_follows_model_template(tokenizer):
    messages = [{"role": "user", "content": "3加2等于多少？"}]
    qwen_like = as_eval_model(SimpleNamespace(model=AlwaysLetterModel(1, 0), tokenizer=tokenizer, chat_template=None))
    from steel.tokenizer.chat import encode_chat

    assert qwen_like.encode_chat(messages) == encode_chat(tokenizer, messages, add_generation_prompt=True)[0]

    template = "{% for m in messages %}[{{ m.role }}]{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}"
    other = as_eval_model(SimpleNamespace(model=AlwaysLetterModel(1, 0), tokenizer=tokenizer, chat_template=template))
    assert other.encode_chat(messages) == tokenizer.encode("[user]3加2等于多少？\n[assistant]", allow_special=True)
