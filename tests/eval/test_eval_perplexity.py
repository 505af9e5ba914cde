import math

import pytest
import torch

from steel.eval import evaluate_perplexity

DOCUMENTS = ["钢铁是这样炼成的。" * 12, "短文本", "The answer is C."]


def _reference_nll(loaded, text):
    # One full forward pass over <|endoftext|> + text: the loss transformers computes from labels.
    tokenizer = loaded.tokenizer
    ids = torch.tensor([[tokenizer.special_ids["<|endoftext|>"]] + tokenizer.encode(text)])
    with torch.no_grad():
        loss = loaded.model(input_ids=ids, labels=ids).loss
    return float(loss) * (ids.shape[1] - 1), ids.shape[1] - 1


def test_perplexity_matches_full_forward(dense_model):
    result = evaluate_perplexity(dense_model, DOCUMENTS, batch_size=2)
    pieces = [_reference_nll(dense_model, text) for text in DOCUMENTS]
    total_nll = sum(nll for nll, _ in pieces)
    num_tokens = sum(count for _, count in pieces)
    num_chars = sum(len(text) for text in DOCUMENTS)
    assert result["num_tokens"] == num_tokens
    assert result["num_chars"] == num_chars
    assert result["loss"] == pytest.approx(total_nll / num_tokens, rel=1e-5)
    assert result["ppl"] == pytest.approx(math.exp(total_nll / num_tokens), rel=1e-5)
    assert result["bits_per_char"] == pytest.approx(total_nll / math.log(2) / num_chars, rel=1e-5)
    assert result["bits_per_byte"] < result["bits_per_char"]


def test_sliding_window_scores_every_token_once(dense_model):
    full = evaluate_perplexity(dense_model, DOCUMENTS)
    for block_size, stride in ((32, 8), (32, 31), (64, 32)):
        windowed = evaluate_perplexity(dense_model, DOCUMENTS, block_size=block_size, stride=stride, batch_size=3)
        assert windowed["num_tokens"] == full["num_tokens"]
        assert windowed["block_size"] == block_size
        # Less context per token changes the loss a little but not wildly for a random model.
        assert windowed["loss"] == pytest.approx(full["loss"], rel=0.05)


def test_token_ids_equal_texts(dense_model):
    ids = [dense_model.tokenizer.encode(text) for text in DOCUMENTS]
    from_text = evaluate_perplexity(dense_model, DOCUMENTS)
    from_ids = evaluate_perplexity(dense_model, ids)
    assert from_ids["loss"] == pytest.approx(from_text["loss"], rel=1e-6)
    assert from_ids["num_chars"] == from_text["num_chars"]


def test_invalid_window_is_rejected(dense_model):
    with pytest.raises(ValueError, match="stride"):
        evaluate_perplexity(dense_model, DOCUMENTS, block_size=16, stride=16)
    with pytest.raises(ValueError, match="no tokens"):
        evaluate_perplexity(dense_model, [""])
