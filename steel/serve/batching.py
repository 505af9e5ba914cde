"""The state of a batch that decodes with a KV cache, and the cache edits continuous batching needs.

Every row's real tokens are right-aligned: a row starts with left padding, then its prompt, then
the tokens it generated. A decoding step appends one column for every row, so the alignment
holds. Rows leave with `select`, which also drops left padding that no remaining row needs.
New rows join with `merge`, which left-pads the shorter cache so both have the same length.
The attention mask hides every padding column and position ids count only real tokens, so a
row's tokens do not depend on the other rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from steel.serve.engine import _Row


def can_merge(cache) -> bool:
    """Return whether rows of another cache of the same model can be joined to `cache`.

    Only a DynamicCache whose layers are plain `DynamicLayer`s qualifies: a sliding-window,
    static or quantized layer keeps keys in a layout that left padding would break. A Steel
    cache's causal Soft MoE running sums are batch-first tensors without a sequence axis, so
    they join by concatenation.
    """
    from transformers.cache_utils import DynamicCache, DynamicLayer

    layers = getattr(cache, "layers", None)
    if not isinstance(cache, DynamicCache) or not layers:
        return False
    return all(type(layer) is DynamicLayer and layer.is_initialized for layer in layers)


@dataclass
class CachedBatch:
    """Rows that decode together, their KV cache, attention mask [rows, cache length] and last positions [rows, 1]."""

    rows: list[_Row]
    cache: object
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    device: torch.device
    """The device of the cache; the mask and positions stay on the CPU."""

    def step(self, logits: torch.Tensor) -> None:
        """Sample one token for every unfinished row from `logits` [rows, vocab_size]."""
        for row, row_logits in zip(self.rows, logits):
            if not row.finished:
                row.step(row_logits)

    def without_finished(self) -> CachedBatch | None:
        """Drop finished rows from the batch and the cache; return None when no row is left.

        A cache without `batch_select_indices` keeps every row, and finished rows are skipped.
        """
        running = [index for index, row in enumerate(self.rows) if not row.finished]
        if not running:
            return None
        if len(running) == len(self.rows) or not hasattr(self.cache, "batch_select_indices"):
            return self
        self.cache.batch_select_indices(torch.tensor(running, device=self.device))
        self.rows = [self.rows[index] for index in running]
        self.attention_mask = self.attention_mask[running]
        self.position_ids = self.position_ids[running]
        self._trim_left_padding()
        return self

    def merge(self, other: CachedBatch) -> CachedBatch:
        """Append the rows of `other`; both caches must pass `can_merge`."""
        length = max(self.attention_mask.shape[1], other.attention_mask.shape[1])
        for layer, other_layer in zip(self.cache.layers, other.cache.layers, strict=True):
            layer.keys = _concat_left_padded(layer.keys, other_layer.keys, length, dim=-2)
            layer.values = _concat_left_padded(layer.values, other_layer.values, length, dim=-2)
        _merge_ffn_states(self.cache, other.cache)

        self.attention_mask = _concat_left_padded(self.attention_mask, other.attention_mask, length, dim=1)
        self.position_ids = torch.cat([self.position_ids, other.position_ids])
        self.rows = self.rows + other.rows
        return self

    def _trim_left_padding(self) -> None:
        # Columns that are padding in every row hold no information, so the cache can shed them.
        first_real = int(self.attention_mask.any(dim=0).int().argmax())
        if first_real == 0 or not can_merge(self.cache):
            return
        for layer in self.cache.layers:
            layer.keys = layer.keys[..., first_real:, :]
            layer.values = layer.values[..., first_real:, :]
        self.attention_mask = self.attention_mask[:, first_real:]


def _concat_left_padded(first: torch.Tensor, second: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    """Left-pad both tensors with zeros to `length` along `dim`, then stack their rows (dim 0)."""
    return torch.cat([_left_pad(first, length, dim), _left_pad(second, length, dim)])


def _left_pad(tensor: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    missing = length - tensor.shape[dim]
    if missing == 0:
        return tensor
    # F.pad lists (before, after) pairs from the last dimension backwards.
    dims_after = tensor.dim() - 1 - (dim % tensor.dim())
    return F.pad(tensor, (0, 0) * dims_after + (missing, 0))


def _merge_ffn_states(cache, other) -> None:
    """Concatenate the per-layer causal Soft MoE running sums (batch first) of two Steel caches."""
    states = getattr(cache, "steel_ffn_states", None)
    other_states = getattr(other, "steel_ffn_states", None)
    if not states and not other_states:
        return
    if not states or not other_states or len(states) != len(other_states):
        raise ValueError("cannot merge a cache with causal Soft MoE running sums into one without them")
    for state, other_state in zip(states, other_states):
        if set(state) != set(other_state):
            raise ValueError(f"causal Soft MoE states differ: {sorted(state)} and {sorted(other_state)}")
        for key in state:
            state[key] = torch.cat([state[key], other_state[key]])
