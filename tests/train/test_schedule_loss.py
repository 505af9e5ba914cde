import pytest
import torch
import torch.nn.functional as F

from steel.train.loss import IGNORE_INDEX, CausalLMLoss, chunked_cross_entropy, chunked_label_logprobs
from steel.train.schedule import LRSchedule


def test_schedule_warmup_then_cosine_to_zero():
    schedule = LRSchedule(max_lr=3e-4, warmup_steps=2000, max_steps=10_000)
    assert schedule(0) == pytest.approx(3e-4 / 2000)
    assert schedule(999) == pytest.approx(3e-4 * 1000 / 2000)
    assert schedule(1999) == pytest.approx(3e-4)
    assert schedule(2000) == pytest.approx(3e-4)
    assert schedule(6000) == pytest.approx(1.5e-4)
    assert schedule(10_000) == pytest.approx(0.0, abs=1e-12)
    assert schedule(20_000) == pytest.approx(0.0, abs=1e-12)


def test_schedule_linear_and_constant():
    linear = LRSchedule(max_lr=1.0, warmup_steps=0, max_steps=10, decay="linear", min_lr_ratio=0.1)
    assert linear(5) == pytest.approx(0.55)
    constant = LRSchedule(max_lr=1.0, warmup_steps=2, max_steps=10, decay="constant")
    assert constant(9) == 1.0


def test_chunked_cross_entropy_matches_full():
    torch.manual_seed(0)
    hidden = torch.randn(3, 7, 16, requires_grad=True)
    weight = torch.randn(50, 16, requires_grad=True)
    labels = torch.randint(0, 50, (3, 7))
    labels[0, :3] = IGNORE_INDEX

    chunked = chunked_cross_entropy(hidden, weight, labels, chunk_size=4)
    (chunked * 0.5).backward()
    grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None

    full = F.cross_entropy((hidden @ weight.t()).reshape(-1, 50), labels.reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="sum")
    (full * 0.5).backward()
    assert torch.allclose(chunked, full, rtol=1e-6)
    assert torch.allclose(grads[0], hidden.grad, rtol=1e-5, atol=1e-6)
    assert torch.allclose(grads[1], weight.grad, rtol=1e-5, atol=1e-6)
    assert torch.count_nonzero(grads[0][0, :3]) == 0  # positions without a target get no gradient


def test_chunked_loss_without_grad():
    hidden, weight = torch.randn(5, 8), torch.randn(11, 8)
    labels = torch.tensor([1, 2, IGNORE_INDEX, 4, 5])
    with torch.no_grad():
        value = chunked_cross_entropy(hidden, weight, labels, chunk_size=2)
    expected = F.cross_entropy(hidden @ weight.t(), labels, ignore_index=IGNORE_INDEX, reduction="sum")
    assert torch.allclose(value, expected, rtol=1e-6)


def test_chunked_loss_bfloat16_autocast():
    torch.manual_seed(0)
    hidden = torch.randn(6, 16, requires_grad=True)
    weight = torch.randn(40, 16, requires_grad=True)
    labels = torch.randint(0, 40, (6,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = chunked_cross_entropy(hidden, weight, labels, chunk_size=4)
    value.backward()
    expected = F.cross_entropy(hidden @ weight.t(), labels, reduction="sum")
    assert value.dtype == torch.float32
    assert torch.allclose(value, expected, rtol=2e-2)
    assert hidden.grad.dtype == torch.float32
    assert weight.grad.dtype == torch.float32


def test_label_logprobs_match_log_softmax():
    torch.manual_seed(0)
    hidden = torch.randn(2, 5, 8)
    weight = torch.randn(20, 8)
    labels = torch.randint(0, 20, (2, 5))
    labels[1, 0] = IGNORE_INDEX
    logprobs = chunked_label_logprobs(hidden, weight, labels, chunk_size=3)
    expected = torch.gather((hidden @ weight.t()).log_softmax(-1), 2, labels.clamp(min=0)[..., None])[..., 0]
    expected[1, 0] = 0.0
    assert logprobs.shape == labels.shape
    assert torch.allclose(logprobs, expected, atol=1e-5)


def test_chunk_never_holds_all_logits(monkeypatch):
    # Every matmul inside the loss sees at most chunk_size rows.
    seen = []
    import steel.train.loss as loss_module

    original = loss_module._chunk_loss_and_grads

    def recording(hidden, weight, labels):
        seen.append(hidden.shape[0])
        return original(hidden, weight, labels)

    monkeypatch.setattr(loss_module, "_chunk_loss_and_grads", recording)
    hidden = torch.randn(2, 100, 4, requires_grad=True)
    loss = chunked_cross_entropy(hidden, torch.randn(30, 4), torch.zeros(2, 100, dtype=torch.long), chunk_size=64)
    loss.backward()
    assert seen == [64, 64, 64, 8]
    assert hidden.grad.shape == hidden.shape


def test_causal_lm_loss_counts_targets():
    loss = CausalLMLoss()
    assert loss.count(torch.zeros(3, 9, dtype=torch.long)) == 24
    labels = torch.full((2, 4), IGNORE_INDEX)
    labels[0, 1:] = 5
    assert loss.count({"input_ids": torch.zeros(2, 4, dtype=torch.long), "labels": labels}) == 3
