"""Multiple-choice scoring speed: Steel's batched scorer against a plain one-question loop.

The baseline is what a short script does: one question per forward pass, the full
[seq, vocab] logits, then the four letter scores of the last position. Steel's scorer keeps only
the logits of the last position (`logits_to_keep`) and right-pads batches. All runs score the
same 5-shot C-Eval-format prompts with the Qwen1.5 tokenizer (vocabulary 151,646) on a small
random Steel model, in the same process, and check that every variant picks the same letters.

    .venv/bin/python bench/bench_eval.py                  # prints a Markdown table
    .venv/bin/python bench/bench_eval.py --questions 16   # quick look
"""

import argparse
import time
from types import SimpleNamespace

import torch

from steel.eval import MCQuestion, score_multiple_choice
from steel.eval.adapter import as_eval_model
from steel.eval.prompts import build_prompt, get_prompt_format
from steel.eval.scorer import answer_token_ids

DIMENSIONS = dict(
    hidden_size=256,
    intermediate_size=1024,
    num_hidden_layers=4,
    num_attention_heads=8,
    num_key_value_heads=4,
    max_position_embeddings=2048,
    rope_theta=10_000.0,
    n_experts=4,
    mlp_div_ratio=4,
)


def make_questions(count: int, offset: int) -> list[MCQuestion]:
    questions = []
    for i in range(offset, offset + count):
        a, b = 3 + i, 7 + 2 * i
        value = a * b
        options = dict(zip("ABCD", map(str, (value, value + 1, value - 1, value + 10))))
        questions.append(MCQuestion(f"某工厂每天生产{a}批零件，每批{b}个，一天共生产多少个零件？", options, "A", subject="bench", id=str(i)))
    return questions


def baseline_predictions(loaded, questions, dev) -> list[str]:
    eval_model = as_eval_model(loaded)
    fmt = get_prompt_format("ceval")
    _, letter_ids = answer_token_ids(eval_model, fmt, list("ABCD"))
    predictions = []
    with torch.no_grad():
        for question in questions:
            ids = loaded.tokenizer.encode(build_prompt(fmt, question, "数学", dev).text)
            logits = loaded.model(input_ids=torch.tensor([ids])).logits[0, -1]
            scores = {letter: float(logits[token]) for letter, token in letter_ids.items()}
            predictions.append(max(scores, key=scores.get))
    return predictions


def timed(function):
    start = time.perf_counter()
    value = function()
    return value, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=48)
    parser.add_argument("--ffn-type", default="dense", choices=("dense", "soft_moe_causal"))
    args = parser.parse_args()

    from steel.model import SteelConfig, SteelForCausalLM
    from steel.tokenizer import load_tokenizer

    tokenizer = load_tokenizer("qwen")
    torch.manual_seed(0)
    model = SteelForCausalLM(SteelConfig(vocab_size=tokenizer.vocab_size, ffn_type=args.ffn_type, **DIMENSIONS)).eval()
    loaded = SimpleNamespace(model=model, tokenizer=tokenizer, chat_template=None, provenance={})
    dev = make_questions(5, 1000)
    questions = make_questions(args.questions, 0)
    length = len(tokenizer.encode(build_prompt(get_prompt_format("ceval"), questions[0], "数学", dev).text))
    print(f"{args.questions} questions, 5-shot prompts of about {length} tokens, ffn_type={args.ffn_type}, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, {torch.get_num_threads()} threads\n")

    baseline, baseline_s = timed(lambda: baseline_predictions(loaded, questions, dev))
    rows = [("baseline: one question per pass, full logits", baseline_s, baseline)]
    for batch_size in (1, 8):
        results, seconds = timed(lambda: score_multiple_choice(
            loaded, questions, prompt_format="ceval", shots=5, dev_questions=dev, subject_names={"bench": "数学"},
            batch_size=batch_size,
        ))
        rows.append((f"steel scorer, batch_size={batch_size}", seconds, [r.prediction for r in results.results]))

    print("| measurement | questions/s | ratio to baseline | same letters as baseline |")
    print("|---|---:|---:|---|")
    for name, seconds, predictions in rows:
        print(f"| {name} | {len(questions) / seconds:.2f} | {baseline_s / seconds:.2f} | {predictions == baseline} |")


if __name__ == "__main__":
    main()
