"""Loss, perplexity and bits per character over held-out text, with a sliding window.

Each document is encoded and preceded by `<|endoftext|>` (the separator between documents in
token shards), so its first token is predicted too. A document longer than the window is scored in
windows of `block_size` tokens that advance by `stride` (below `block_size`): every token is
predicted exactly once, with at least `block_size - stride` tokens of context after the first window.

`loss` is the mean negative log-likelihood per predicted token in nats and `ppl = exp(loss)`.
Both depend on the tokenizer; `bits_per_char` (total bits over the characters of the text) and
`bits_per_byte` (over its UTF-8 bytes) compare models with different tokenizers.
"""

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from steel.eval.adapter import EvalModel, as_eval_model

logger = logging.getLogger(__name__)

# Model types whose logits are exactly `get_output_embeddings()(model.model(...).last_hidden_state)`,
# so the loss can be computed in chunks of positions instead of materialising [batch, seq, vocab].
_PLAIN_HEAD_MODEL_TYPES = {"steel", "qwen2", "qwen3", "llama", "mistral"}
_CHUNK_POSITIONS = 1024


@dataclass
class _Window:
    document: int
    ids: list[int]
    num_targets: int
    """The last `num_targets` tokens of `ids` are scored; the ones before are context only."""


def evaluate_perplexity(
    loaded_model,
    documents: list[str] | list[list[int]],
    *,
    block_size: int | None = None,
    stride: int | None = None,
    batch_size: int = 4,
    progress: bool = False,
) -> dict:
    """Return loss, perplexity and bits per character of `documents` (texts or token-id lists).

    `block_size` defaults to the model's context length and `stride` to half of it.
    """
    eval_model = as_eval_model(loaded_model)
    block_size = block_size or eval_model.max_length
    stride = stride or max(block_size // 2, 1)
    if not 1 <= stride < block_size:
        raise ValueError(f"stride must be at least 1 and below block_size={block_size}, got {stride}")
    if block_size < 2:
        raise ValueError(f"block_size must be at least 2 tokens, got {block_size}")
    if not eval_model.is_causal:
        logger.warning(
            "the %s FFN mixes all positions of a window, so each token's prediction also sees later "
            "tokens and this perplexity is lower than a causal model's would be",
            eval_model.ffn_type,
        )
        batch_size = 1

    encoded, num_chars, num_bytes = _encode_documents(eval_model, documents)
    windows = [window for index, ids in enumerate(encoded) for window in _windows(index, ids, block_size, stride)]

    total_nll = 0.0
    num_tokens = 0
    order = sorted(range(len(windows)), key=lambda i: -len(windows[i].ids))
    with torch.no_grad():
        for start in tqdm(range(0, len(order), batch_size), desc="perplexity", unit="batch", disable=not progress):
            batch = [windows[i] for i in order[start : start + batch_size]]
            total_nll += _batch_nll(eval_model, batch)
            num_tokens += sum(window.num_targets for window in batch)

    if num_tokens == 0:
        raise ValueError("no tokens to score: every document is empty")
    loss = total_nll / num_tokens
    return {
        "loss": loss,
        "ppl": math.exp(loss),
        "bits_per_char": total_nll / math.log(2) / num_chars if num_chars else None,
        "bits_per_byte": total_nll / math.log(2) / num_bytes if num_bytes else None,
        "num_documents": len(encoded),
        "num_tokens": num_tokens,
        "num_chars": num_chars,
        "num_bytes": num_bytes,
        "block_size": block_size,
        "stride": stride,
        "causal": eval_model.is_causal,
    }


def _encode_documents(eval_model: EvalModel, documents) -> tuple[list[list[int]], int, int]:
    separator = eval_model.tokenizer.special_ids.get("<|endoftext|>")
    encoded = []
    num_chars = num_bytes = 0
    for document in documents:
        if isinstance(document, str):
            text, ids = document, eval_model.encode(document)
        else:
            ids = [int(token) for token in document]
            text = eval_model.decode(ids)
        num_chars += len(text)
        num_bytes += len(text.encode("utf-8"))
        # Without a separator token the first token has no context and is not scored.
        encoded.append(([separator] if separator is not None else []) + ids)
    return encoded, num_chars, num_bytes


def _windows(document: int, ids: list[int], block_size: int, stride: int) -> list[_Window]:
    # The first window scores all its tokens but ids[0], the separator. Each later window ends
    # `stride` tokens further and scores only those new tokens, with the rest as context.
    end = min(block_size, len(ids))
    windows = [_Window(document, ids[:end], end - 1)] if end > 1 else []
    scored_until = end
    while scored_until < len(ids):
        end = min(scored_until + stride, len(ids))
        windows.append(_Window(document, ids[end - block_size : end], end - scored_until))
        scored_until = end
    return windows


def _batch_nll(eval_model: EvalModel, batch: list[_Window]) -> float:
    """Summed negative log-likelihood of the scored tokens of a right-padded batch of windows."""
    model = eval_model.model
    device = eval_model.device
    width = max(len(window.ids) for window in batch)
    input_ids = torch.full((len(batch), width), eval_model.tokenizer.pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    targets = torch.full((len(batch), width), -100, dtype=torch.long)
    for row, window in enumerate(batch):
        length = len(window.ids)
        input_ids[row, :length] = torch.tensor(window.ids)
        attention_mask[row, :length] = 1
        # Position t predicts token t + 1; only the window's last num_targets tokens are targets.
        targets[row, length - 1 - window.num_targets : length - 1] = torch.tensor(window.ids[length - window.num_targets :])
    input_ids, targets = input_ids.to(device), targets.to(device)
    # Without padding the mask is left out, which lets the model take its plain causal path.
    attention_mask = attention_mask.to(device) if not bool(attention_mask.all()) else None

    if getattr(eval_model.config, "model_type", None) in _PLAIN_HEAD_MODEL_TYPES and hasattr(model, "model"):
        hidden = model.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        head = model.get_output_embeddings()
        total = torch.zeros((), dtype=torch.float64, device=device)
        for start in range(0, width, _CHUNK_POSITIONS):
            chunk = slice(start, start + _CHUNK_POSITIONS)
            logits = head(hidden[:, chunk]).float()
            total += F.cross_entropy(logits.flatten(0, 1), targets[:, chunk].flatten(), ignore_index=-100, reduction="sum")
        return float(total)

    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits.float()
    return float(F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum"))
