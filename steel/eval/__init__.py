"""Evaluation: C-Eval, CMMLU and MMLU multiple choice, perplexity, contamination and reports.

The Python entry points that other stages (the demo, notebooks) call:

- `score_multiple_choice(loaded_model, questions, mode=...)` scores any list of `MCQuestion`
  (2 to N options) through the same scorer that the benchmarks use;
- `evaluate_perplexity(loaded_model, texts)` returns loss, perplexity and bits per character.

Heavy modules (torch, transformers) load only when one of these is used.
"""

from steel.eval.questions import MCQuestion

__all__ = ["MCQuestion", "score_multiple_choice", "evaluate_perplexity"]


def __getattr__(name: str):
    if name == "score_multiple_choice":
        from steel.eval.scorer import score_multiple_choice

        return score_multiple_choice
    if name == "evaluate_perplexity":
        from steel.eval.perplexity import evaluate_perplexity

        return evaluate_perplexity
    raise AttributeError(f"module 'steel.eval' has no attribute {name!r}")
