"""FLOPs per token of a Steel configuration, counted with `torch.utils.flop_counter`.

6N (six FLOPs per parameter per token) is wrong for both Soft MoE variants. The faithful one runs
its experts on n_experts * slots_per_expert slots per sequence, so their cost per token shrinks
as the sequence grows. The causal one runs them on that many slots per position. Counting the
real forward (and backward) pass covers every variant. The model is built
on the meta device, so even `steel-1b` is counted in about a second without allocating weights.
"""

import torch
from torch.utils.flop_counter import FlopCounterMode

from steel.model.modeling_steel import SteelConfig, SteelForCausalLM


def count_flops(config: SteelConfig, seq_len: int, batch_size: int = 1, training: bool = True) -> int:
    """Count the FLOPs of one pass over [batch_size, seq_len] tokens (forward, plus backward if training).

    Counted ops are matrix multiplications and attention (`FlopCounterMode`'s registry);
    element-wise work (norms, softmaxes, activations) is not counted, as in the usual MFU formula.
    The count includes the full attention score matrix, not only its causal half.
    """
    config = SteelConfig.from_dict(config.to_dict())
    config._attn_implementation = "sdpa"
    with torch.device("meta"):
        model = SteelForCausalLM(config)
        input_ids = torch.zeros(batch_size, seq_len, dtype=torch.long)
    model.train(training)

    counter = FlopCounterMode(display=False)
    with counter:
        if training:
            loss = model(input_ids, labels=input_ids, use_cache=False).loss
            loss.backward()
        else:
            with torch.no_grad():
                model(input_ids, use_cache=False)
    return int(counter.get_total_flops())


def flops_per_token(config: SteelConfig, seq_len: int, training: bool = True) -> float:
    """FLOPs per token of a training step (forward + backward) or of a forward pass, at `seq_len`."""
    return count_flops(config, seq_len, batch_size=1, training=training) / seq_len
