"""Losses for the trainer core: chunked cross-entropy over hidden states, and the loss objects.

A training stage gives the trainer a *loss object* (see `TrainLoss`). The trainer calls it once per
micro-batch inside the (possibly FSDP-sharded) root module and divides the summed results by the
number of units in the whole step. The loss of an optimizer step is therefore the mean over every
target token of every micro-batch on every rank, not a mean of per-micro-batch means.

The output layer is applied in chunks of `chunk_size` tokens, so the `tokens x vocabulary` logits
of a micro-batch (8 x 2048 x 151,936 float32 values are 10 GB) never exist at once. The
cross-entropy computes each chunk's gradients right away (nothing is recomputed in backward), and
the per-token log-probabilities for DPO use activation checkpointing per chunk.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100


class TrainLoss(Protocol):
    """What a training stage (pretraining, SFT, DPO) supplies to `steel.train.trainer.Trainer`.

    `count(micro_batch)` returns how many units the micro-batch contributes to the step's mean
    (target tokens for language modelling, preference pairs for DPO). It must not need the model.

    `__call__(model, micro_batch)` runs the forward pass and returns a dict with `loss_sum`, the
    loss summed over those units (a scalar tensor with gradient), and optionally more scalar tensors
    that are also sums over the units (for example `chosen_reward_sum`). The trainer sums every
    entry over micro-batches and ranks and divides by the total count before logging it.
    The model is the unwrapped `transformers` causal LM; its parameters are already gathered
    when the trainer calls the loss, so the loss may call any of its submodules.
    """

    def count(self, micro_batch: Any) -> int: ...

    def __call__(self, model: torch.nn.Module, micro_batch: Any) -> dict[str, torch.Tensor]: ...


def decoder_of(model: torch.nn.Module) -> torch.nn.Module:
    """Return the decoder stack of a `transformers` causal LM (the part that yields hidden states)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if decoder is None or decoder is model:
        decoder = getattr(model, getattr(model, "base_model_prefix", "model"), None)
    if decoder is None:
        raise ValueError(f"cannot find the decoder of {type(model).__name__}; it has no get_decoder()")
    return decoder


def output_weight(model: torch.nn.Module) -> torch.Tensor:
    head = model.get_output_embeddings()
    if head is None or getattr(head, "bias", None) is not None:
        raise ValueError(f"{type(model).__name__} needs a bias-free output layer for the chunked loss")
    return head.weight


def hidden_states(model: torch.nn.Module, input_ids: torch.Tensor, **kwargs) -> torch.Tensor:
    """Run the decoder and return the final hidden states [batch, seq, hidden]."""
    outputs = decoder_of(model)(input_ids=input_ids, use_cache=False, **kwargs)
    return outputs.last_hidden_state


def _chunk_loss_and_grads(
    hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return the summed cross-entropy of one chunk and its gradients for hidden and weight."""
    valid = labels != IGNORE_INDEX
    safe_labels = torch.where(valid, labels, torch.zeros_like(labels))
    log_probs = torch.log_softmax((hidden @ weight.t()).float(), dim=-1)
    target_log_probs = torch.gather(log_probs, 1, safe_labels[:, None])[:, 0]
    loss_sum = -(target_log_probs * valid).sum()

    # d(loss_sum)/d(logits) = softmax - one_hot(label), zero on positions without a target. The
    # mask is applied to the [chunk, hidden] operands rather than to the [chunk, vocab] gradient,
    # which saves a pass over the largest tensor and a device sync per chunk.
    grad_logits = log_probs.exp_()
    grad_logits[torch.arange(len(labels), device=labels.device), safe_labels] -= 1.0
    if not torch.is_autocast_enabled(hidden.device.type):
        grad_logits = grad_logits.to(weight.dtype)  # under autocast the matmuls pick their own dtype
    mask = valid[:, None].to(hidden.dtype)
    grad_hidden = (grad_logits @ weight) * mask
    grad_weight = (grad_logits.t() @ (hidden * mask)).float()
    return loss_sum, grad_hidden, grad_weight


class _LinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of `hidden @ weight.T`, with the gradients computed chunk by chunk in forward.

    Each chunk's logits exist only while that chunk is processed. The backward pass only scales the
    stored gradients, so no logits are recomputed.
    """

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk_size: int):
        loss_sum = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        needs_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        for start in range(0, hidden.shape[0], chunk_size):
            end = start + chunk_size
            if needs_grad:
                chunk_loss, chunk_grad_hidden, chunk_grad_weight = _chunk_loss_and_grads(
                    hidden[start:end], weight, labels[start:end]
                )
                grad_hidden[start:end] = chunk_grad_hidden.to(grad_hidden.dtype)
                grad_weight += chunk_grad_weight
            else:
                chunk_loss = _chunk_cross_entropy_sum(hidden[start:end], weight, labels[start:end])
            loss_sum += chunk_loss
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        return loss_sum

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        return (
            grad_hidden * grad_output.to(grad_hidden.dtype),
            (grad_weight * grad_output).to(ctx.weight_dtype),
            None,
            None,
        )


def _chunk_cross_entropy_sum(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits = (hidden @ weight.t()).float()
    return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum")


def _chunk_label_logprobs(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits = (hidden @ weight.t()).float()
    safe_labels = labels.clamp(min=0)
    logprobs = torch.gather(logits.log_softmax(-1), 1, safe_labels[:, None])[:, 0]
    return torch.where(labels == IGNORE_INDEX, torch.zeros_like(logprobs), logprobs)


def chunked_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk_size: int = 1024
) -> torch.Tensor:
    """Return the summed cross-entropy of `labels` under logits `hidden @ weight.T`, chunk by chunk.

    hidden: [..., D]; weight: [V, D]; labels: [...] with IGNORE_INDEX for positions without a target.
    At most `chunk_size` rows of logits exist at a time, in forward and backward alike.
    """
    hidden = hidden.reshape(-1, hidden.shape[-1])
    return _LinearCrossEntropy.apply(hidden, weight, labels.reshape(-1), chunk_size)


def chunked_label_logprobs(
    hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk_size: int = 1024
) -> torch.Tensor:
    """Return log p(label) at every position (0 where the label is IGNORE_INDEX), shaped like labels.

    The building block of sequence log-likelihoods (DPO), computed chunk by chunk like
    `chunked_cross_entropy`.
    """
    shape = labels.shape
    hidden = hidden.reshape(-1, hidden.shape[-1])
    labels = labels.reshape(-1)
    pieces = [
        checkpoint(_chunk_label_logprobs, hidden[start : start + chunk_size], weight,
                   labels[start : start + chunk_size], use_reentrant=False)
        for start in range(0, hidden.shape[0], chunk_size)
    ]
    return torch.cat(pieces).reshape(shape)


class CausalLMLoss:
    """Next-token cross-entropy for pretraining (and SFT, whose batches mask prompt tokens).

    A micro-batch is either a LongTensor [batch, block_size + 1] of packed tokens (inputs are all but
    the last column, targets all but the first), or a dict with `input_ids` and `labels` of the same
    shape (targets already shifted, IGNORE_INDEX where no target) and optional `attention_mask`,
    `position_ids` and `segment_ids`, which are passed to the model.
    """

    def __init__(self, chunk_size: int = 1024):
        self.chunk_size = chunk_size

    @staticmethod
    def split_inputs(micro_batch: Any) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        if isinstance(micro_batch, torch.Tensor):
            return micro_batch[:, :-1], micro_batch[:, 1:], {}
        extra = {k: v for k, v in micro_batch.items() if k not in ("input_ids", "labels")}
        return micro_batch["input_ids"], micro_batch["labels"], extra

    def count(self, micro_batch: Any) -> int:
        _, labels, _ = self.split_inputs(micro_batch)
        return int((labels != IGNORE_INDEX).sum())

    def __call__(self, model: torch.nn.Module, micro_batch: Any) -> dict[str, torch.Tensor]:
        input_ids, labels, extra = self.split_inputs(micro_batch)
        hidden = hidden_states(model, input_ids, **extra)
        loss_sum = chunked_cross_entropy(hidden, output_weight(model), labels, self.chunk_size)
        return {"loss_sum": loss_sum}
