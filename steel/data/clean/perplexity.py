"""Perplexity scoring for `perplexity_filter`: a causal LM that Steel loads, or a user's KenLM file.

No model can be downloaded by Steel, so the filter needs one of:
- `model: PATH`, anything `steel.train.load_model` accepts (a run, a checkpoint, an exported
  Hugging Face directory), scored on the first `max_tokens` tokens of each document;
- `kenlm: PATH`, an ARPA or binary KenLM model (needs the `kenlm` package) over jieba words joined
  by spaces, one sentence per line, as KenLM models of Chinese are usually trained.
Without either, the filter is skipped with a warning and the statistics say so.
"""

import importlib.util
import logging
import math
from functools import cache
from pathlib import Path
from typing import Any

from steel.data.clean.text import TextView, split_sentences

logger = logging.getLogger(__name__)

KENLM_INSTALL = "pip install 'steel[kenlm]' (it compiles the kenlm package, which needs cmake and a C++ compiler)"
NOT_CONFIGURED = (
    "no language model configured: set `model:` (a Steel run, checkpoint or exported directory) "
    "or `kenlm:` (a KenLM .arpa/.bin file) on perplexity_filter to enable it"
)


@cache
def _load_causal_lm(spec: str):
    from steel.train import load_model

    loaded = load_model(spec)
    loaded.model.eval()
    return loaded


def causal_lm_perplexity(view: TextView, model: str, max_tokens: int = 512) -> float:
    """exp(mean next-token loss) of the document's first `max_tokens` tokens under `model`."""
    import torch

    loaded = _load_causal_lm(model)
    ids = loaded.tokenizer.encode(view.text)[:max_tokens]
    if len(ids) < 2:
        return math.inf
    input_ids = torch.tensor([ids], dtype=torch.long)
    with torch.no_grad():
        logits = loaded.model(input_ids=input_ids).logits.float()
    loss = torch.nn.functional.cross_entropy(logits[0, :-1], input_ids[0, 1:])
    return math.exp(loss.item())


@cache
def _load_kenlm(path: str):
    try:
        import kenlm
    except ImportError as error:
        raise SystemExit(f"perplexity_filter: `kenlm: {path}` needs the kenlm package: {KENLM_INSTALL}") from error
    return kenlm.Model(path)


def kenlm_perplexity(view: TextView, kenlm: str) -> float:
    """Document perplexity under a KenLM model: 10 ** (-total log10 probability / number of tokens)."""
    model = _load_kenlm(kenlm)
    log10_prob, num_tokens = 0.0, 0
    for sentence in split_sentences(view.text):
        words = " ".join(TextView(sentence).words("jieba"))
        if not words:
            continue
        log10_prob += model.score(words, bos=True, eos=True)
        num_tokens += len(words.split()) + 1  # + the end-of-sentence token
    return 10.0 ** (-log10_prob / num_tokens) if num_tokens else math.inf


def build_perplexity(entry: dict[str, Any], where: str):
    """Return (statistic, its keyword arguments, skip reason or None) for a perplexity_filter entry."""
    entry.pop("lang", None)  # Data-Juicer picks a KenLM model by language; Steel takes the file itself
    model = entry.pop("model", None)
    kenlm = entry.pop("kenlm", None)
    max_tokens = int(entry.pop("max_tokens", 512))
    if entry:
        raise ValueError(f"{where}: unknown parameter(s) {', '.join(sorted(entry))}; valid: kenlm, lang, max_ppl, max_tokens, model")
    if model and kenlm:
        raise ValueError(f"{where}: set either `model` or `kenlm`, not both")
    if model:
        return causal_lm_perplexity, {"model": str(model), "max_tokens": max_tokens}, None
    if kenlm:
        _check_kenlm(str(kenlm), where)
        return kenlm_perplexity, {"kenlm": str(kenlm)}, None
    logger.warning("%s: perplexity_filter is skipped: %s", where, NOT_CONFIGURED)
    return None, {}, NOT_CONFIGURED


def _check_kenlm(path: str, where: str) -> None:
    """Raise ValueError before any document is read if the KenLM model cannot be loaded."""
    if importlib.util.find_spec("kenlm") is None:
        raise ValueError(f"{where}: `kenlm: {path}` needs the kenlm package, which is not installed: {KENLM_INSTALL}")
    if not Path(path).is_file():
        raise ValueError(f"{where}: KenLM model file {path} not found; give the path of an .arpa or binary KenLM file")
