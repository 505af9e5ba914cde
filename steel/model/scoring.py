"""Causal next-token logits for every variant, including the non-causal `soft_moe`.

In one full pass, a `soft_moe` model's logits at position t already depend on tokens after t.
A loss or perplexity from that pass is therefore not a language-model score: report it as non-causal.
`causal_logits` recomputes each prefix instead (T forward passes for T positions), which is what
decoding sees; use it on small evaluation sets.
"""

import torch

from steel.model.modeling_steel import SteelForCausalLM


@torch.no_grad()
def causal_logits(
    model: SteelForCausalLM, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Return logits [batch, seq, vocab] where position t sees only tokens 0..t.

    For causal variants this is one forward pass. For `soft_moe` every prefix is run separately
    (right padding only: padding after a row's last real token is masked out).
    """
    if model.config.is_causal:
        return model(input_ids, attention_mask=attention_mask, use_cache=False).logits

    seq_len = input_ids.shape[1]
    columns = []
    for end in range(1, seq_len + 1):
        mask = attention_mask[:, :end] if attention_mask is not None else None
        columns.append(model(input_ids[:, :end], attention_mask=mask, use_cache=False).logits[:, -1])
    return torch.stack(columns, dim=1)
