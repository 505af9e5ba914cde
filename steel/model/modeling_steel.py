"""Steel: a Qwen1.5-style decoder whose feed-forward network is a Soft Mixture of Experts.

This file is self-contained (it imports only torch and transformers) because `save_pretrained`
copies it verbatim into model directories, so that `AutoModelForCausalLM.from_pretrained(dir,
trust_remote_code=True)` runs it where the `steel` package is not installed.

FFN variants (`SteelConfig.ffn_type`):

- `soft_moe`: the Soft MoE of the released Steel-LLM. Every slot is a softmax-weighted mix of all
  tokens of the sequence, future ones included, so the model is not causal.
- `soft_moe_causal`: the slots of position t mix only tokens 0..t (a cumulative softmax over the
  token axis), so the model is causal and a KV cache plus a per-slot running state reproduces
  the full forward pass.
- `dense`: a SwiGLU FFN; the model is then numerically a Qwen2 model.

Mixing contract: attention and the Soft MoE respect the same boundaries. Padding positions
(`attention_mask == 0`) get no dispatch weight and produce zero FFN output, and tokens of
different packed segments (`segment_ids`) never interact.
"""

import logging
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

logger = logging.getLogger(__name__)

FFN_TYPES = ("soft_moe", "soft_moe_causal", "dense")
EXPERT_TYPES = ("double_swiglu", "swiglu")

# Values of the released Steel-LLM config.json that this file implements; the original code
# has other FFN and expert types, which are rejected by name.
RELEASED_FFN_TYPES = {"softmoe_v3": "soft_moe"}
RELEASED_MLP_TYPES = {"senet": "double_swiglu"}


class SteelConfig(PretrainedConfig):
    """Configuration of a Steel model.

    Besides the usual decoder fields, it selects the FFN:

    - `ffn_type`: `"soft_moe"` (released, non-causal), `"soft_moe_causal"` or `"dense"`.
    - `expert_type`: `"double_swiglu"` (the released expert, two gated layers) or `"swiglu"`.
    - `n_experts`, `slots_per_expert`: Soft MoE size; each sequence (or, for `soft_moe_causal`,
      each position) runs the experts on `n_experts * slots_per_expert` slots.
    - `mlp_div_ratio`: expert width is `intermediate_size // mlp_div_ratio`. The dense FFN uses
      `intermediate_size` itself.
    - `soft_moe_cached_decoding`: lets a `soft_moe` model decode with a KV cache. This reproduces
      the released code's cached decoding, which computes a different function than the full
      forward pass the model was trained with. The default recomputes the prefix at every step.

    A released Steel-LLM `config.json` (`model_type: "qwen2"` with `FFN_type` and `mlp_type`)
    is translated on load: `FFN_type: "softmoe_v3"` becomes `ffn_type="soft_moe"` and
    `mlp_type: "senet"` becomes `expert_type="double_swiglu"`.
    """

    model_type = "steel"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(
        self,
        vocab_size: int = 151936,
        hidden_size: int = 1792,
        intermediate_size: int = 1792,
        num_hidden_layers: int = 18,
        num_attention_heads: int = 32,
        num_key_value_heads: int | None = None,
        max_position_embeddings: int = 2048,
        rope_theta: float = 1_000_000.0,
        rms_norm_eps: float = 1e-6,
        initializer_range: float = 0.02,
        attention_dropout: float = 0.0,
        tie_word_embeddings: bool = False,
        use_cache: bool = True,
        ffn_type: str = "soft_moe_causal",
        expert_type: str = "double_swiglu",
        n_experts: int = 6,
        slots_per_expert: int = 1,
        mlp_div_ratio: int = 4,
        soft_moe_cached_decoding: bool = False,
        pad_token_id: int | None = None,
        bos_token_id: int | None = None,
        eos_token_id: int | None = None,
        **kwargs,
    ):
        released_ffn = kwargs.pop("FFN_type", None)
        released_mlp = kwargs.pop("mlp_type", None)
        if released_ffn is not None:
            if released_ffn not in RELEASED_FFN_TYPES:
                raise ValueError(
                    f"FFN_type {released_ffn!r} of the released Steel-LLM code is not supported; "
                    f"supported: {sorted(RELEASED_FFN_TYPES)}"
                )
            ffn_type = RELEASED_FFN_TYPES[released_ffn]
        if released_mlp is not None:
            if released_mlp not in RELEASED_MLP_TYPES:
                raise ValueError(
                    f"mlp_type {released_mlp!r} of the released Steel-LLM code is not supported; "
                    f"supported: {sorted(RELEASED_MLP_TYPES)}"
                )
            expert_type = RELEASED_MLP_TYPES[released_mlp]
        hidden_act = kwargs.pop("hidden_act", "silu")
        if hidden_act != "silu":
            raise ValueError(f"hidden_act {hidden_act!r} is not supported; Steel uses 'silu'")
        # Qwen2 fields that a released config.json carries and Steel does not use.
        for key in ("max_window_layers", "sliding_window", "use_sliding_window", "layer_types"):
            kwargs.pop(key, None)

        if ffn_type not in FFN_TYPES:
            raise ValueError(f"ffn_type {ffn_type!r} is not one of {FFN_TYPES}")
        if expert_type not in EXPERT_TYPES:
            raise ValueError(f"expert_type {expert_type!r} is not one of {EXPERT_TYPES}")
        if num_key_value_heads is None:
            num_key_value_heads = num_attention_heads
        if hidden_size % num_attention_heads != 0:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_attention_heads {num_attention_heads}")
        if num_attention_heads % num_key_value_heads != 0:
            raise ValueError(
                f"num_attention_heads {num_attention_heads} is not divisible by num_key_value_heads {num_key_value_heads}"
            )
        if ffn_type != "dense" and intermediate_size // mlp_div_ratio < 1:
            raise ValueError(f"intermediate_size {intermediate_size} // mlp_div_ratio {mlp_div_ratio} is below 1")

        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        self.max_position_embeddings = max_position_embeddings
        self.rope_theta = float(rope_theta)
        self.rms_norm_eps = rms_norm_eps
        self.initializer_range = initializer_range
        self.attention_dropout = attention_dropout
        self.use_cache = use_cache
        self.ffn_type = ffn_type
        self.expert_type = expert_type
        self.n_experts = n_experts
        self.slots_per_expert = slots_per_expert
        self.mlp_div_ratio = mlp_div_ratio
        self.soft_moe_cached_decoding = soft_moe_cached_decoding
        self.hidden_act = hidden_act
        self.pad_token_id = pad_token_id
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs):
        """Read config.json; a released Steel-LLM config (`model_type: qwen2` with `FFN_type`) reads as `steel`."""
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        if config_dict.get("model_type") == "qwen2" and "FFN_type" in config_dict:
            config_dict = {**config_dict, "model_type": cls.model_type}
        return config_dict, kwargs

    @property
    def is_causal(self) -> bool:
        """False for `soft_moe`, whose one-pass logits at t depend on tokens after t."""
        return self.ffn_type != "soft_moe"

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def expert_size(self) -> int:
        return self.intermediate_size // self.mlp_div_ratio


# ---------------------------------------------------------------------------------------------
# Normalisation, rotary embedding, attention


class SteelRMSNorm(nn.Module):
    """RMSNorm computed in float32, then cast back to the input dtype."""

    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        input_dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(input_dtype)


def rope_cos_sin(position_ids: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Return RoPE cos and sin [batch, seq, head_dim] in float32 (rotate-half layout)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=position_ids.device, dtype=torch.float32) / head_dim))
    freqs = position_ids.float()[..., None] * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [batch, heads, seq, head_dim] in float32 and return it in x's dtype."""
    cos, sin = cos[:, None], sin[:, None]
    x32 = x.float()
    return (x32 * cos + rotate_half(x32) * sin).to(x.dtype)


def eager_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain attention; attention_mask is a boolean [batch, 1, q, k] mask (True = attend) or None (causal)."""
    n_rep = query.shape[1] // key.shape[1]
    key = key.repeat_interleave(n_rep, dim=1)
    value = value.repeat_interleave(n_rep, dim=1)
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is None:
        q_len, k_len = query.shape[2], key.shape[2]
        attention_mask = torch.ones(q_len, k_len, dtype=torch.bool, device=query.device).tril(k_len - q_len)
    scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return output, weights


class SteelAttention(nn.Module):
    """Grouped-query attention with q/k/v biases, no o bias and RoPE, through transformers' attention interface."""

    def __init__(self, config: SteelConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = True
        self.q_proj = nn.Linear(config.hidden_size, config.num_attention_heads * self.head_dim, bias=True)
        self.k_proj = nn.Linear(config.hidden_size, config.num_key_value_heads * self.head_dim, bias=True)
        self.v_proj = nn.Linear(config.hidden_size, config.num_key_value_heads * self.head_dim, bias=True)
        self.o_proj = nn.Linear(config.num_attention_heads * self.head_dim, config.hidden_size, bias=False)

    def forward(
        self,
        hidden_states: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None,
        past_key_values: Cache | None,
        **kwargs,
    ) -> torch.Tensor:
        batch_size, seq_len, _ = hidden_states.shape
        shape = (batch_size, seq_len, -1, self.head_dim)
        query = self.q_proj(hidden_states).view(shape).transpose(1, 2)
        key = self.k_proj(hidden_states).view(shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(shape).transpose(1, 2)

        cos, sin = rope
        query, key = apply_rope(query, cos, sin), apply_rope(key, cos, sin)
        if past_key_values is not None:
            key, value = past_key_values.update(key, value, self.layer_idx)

        attention: Callable = eager_attention
        if self.config._attn_implementation != "eager":
            attention = ALL_ATTENTION_FUNCTIONS[self.config._attn_implementation]
        output, _ = attention(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.config.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )
        return self.o_proj(output.reshape(batch_size, seq_len, -1))


# ---------------------------------------------------------------------------------------------
# Feed-forward networks


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)): the dense FFN, and the standard expert option."""

    def __init__(self, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DoubleSwiGLU(nn.Module):
    """The released expert: h = silu(gate_up(s)) * up(s); out = silu(gate_down(h)) * down(h), no biases."""

    def __init__(self, hidden_size: int, expert_size: int):
        super().__init__()
        self.gate_up_proj = nn.Linear(hidden_size, expert_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, expert_size, bias=False)
        self.gate_down_proj = nn.Linear(expert_size, hidden_size, bias=False)
        self.down_proj = nn.Linear(expert_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.gate_up_proj(x)) * self.up_proj(x)
        return F.silu(self.gate_down_proj(h)) * self.down_proj(h)


class SoftMoE(nn.Module):
    """Soft Mixture of Experts, faithful (`causal=False`) or causal (`causal=True`).

    Tokens and router columns are L2-normalised, so every router logit lies in [-|scale|, |scale|].
    Dispatch weights are a softmax over the token axis and combine weights a softmax over the
    n_experts * slots_per_expert slots of a token, both in float32.
    """

    def __init__(self, config: SteelConfig, causal: bool):
        super().__init__()
        self.causal = causal
        self.n_experts = config.n_experts
        self.slots_per_expert = config.slots_per_expert
        self.hidden_size = config.hidden_size
        self.phi = nn.Parameter(torch.empty(config.hidden_size, config.n_experts, config.slots_per_expert))
        self.scale = nn.Parameter(torch.ones(1))
        expert_class = DoubleSwiGLU if config.expert_type == "double_swiglu" else SwiGLU
        self.experts = nn.ModuleList(expert_class(config.hidden_size, config.expert_size) for _ in range(config.n_experts))

    def router_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the normalised tokens (input dtype) and the float32 logits [batch, seq, n_experts, slots_per_expert]."""
        x_norm = F.normalize(x.float(), dim=-1)
        phi = F.normalize(self.phi.float(), dim=0) * self.scale.float()
        logits = torch.einsum("btd,dnp->btnp", x_norm, phi)
        return x_norm.to(x.dtype), logits

    def run_experts(self, slots: torch.Tensor) -> torch.Tensor:
        """Apply expert j to slots[..., j, :, :]; slots is [..., n_experts, slots_per_expert, hidden]."""
        return torch.stack([expert(slots[..., j, :, :]) for j, expert in enumerate(self.experts)], dim=-3)

    def combine(self, logits: torch.Tensor, slot_outputs: torch.Tensor, token_valid: torch.Tensor) -> torch.Tensor:
        """Mix slot outputs [batch, seq, n, p, d] per token with the softmax over its n*p logits."""
        batch_size, seq_len = logits.shape[:2]
        weights = F.softmax(logits.reshape(batch_size, seq_len, -1), dim=-1).to(slot_outputs.dtype)
        slot_outputs = slot_outputs.reshape(batch_size, seq_len, -1, self.hidden_size)
        output = torch.einsum("bts,btsd->btd", weights, slot_outputs)
        return output * token_valid[..., None].to(output.dtype)

    def forward(
        self,
        x: torch.Tensor,
        token_valid: torch.Tensor,
        segment_index: torch.Tensor | None,
        state: dict | None = None,
    ) -> torch.Tensor:
        if self.causal:
            return self._forward_causal(x, token_valid, segment_index, state)
        return self._forward_full(x, token_valid, segment_index)

    def _forward_full(self, x: torch.Tensor, token_valid: torch.Tensor, segment_index: torch.Tensor | None) -> torch.Tensor:
        """Faithful Soft MoE: the slots of a segment mix all of its real tokens, earlier and later ones."""
        x_norm, logits = self.router_logits(x)
        if segment_index is None:
            return self._forward_full_unpacked(x_norm, logits, token_valid)

        batch_size = x.shape[0]
        num_segments = int(segment_index.max()) + 1

        # Softmax over the tokens of each segment: per-segment max, exp, per-segment sums.
        masked = logits.masked_fill(~token_valid[..., None, None], -math.inf)
        index = segment_index[..., None, None].expand_as(logits)
        segment_max = torch.full(
            (batch_size, num_segments, *logits.shape[2:]), -math.inf, dtype=logits.dtype, device=x.device
        )
        segment_max = segment_max.scatter_reduce(1, index, masked, reduce="amax", include_self=True)
        segment_max = torch.where(torch.isfinite(segment_max), segment_max, 0.0).detach()
        exp = torch.exp(masked - segment_max.gather(1, index))
        denominator = torch.zeros_like(segment_max).scatter_add(1, index, exp)
        dispatch = exp / denominator.gather(1, index).clamp_min(torch.finfo(exp.dtype).tiny)

        # slots[b, s] = sum over the tokens t of segment s of dispatch[b, t] * x_norm[b, t].
        weighted = dispatch.to(x.dtype)[..., None] * x_norm[:, :, None, None, :]
        slots = x.new_zeros(batch_size, num_segments, self.n_experts, self.slots_per_expert, self.hidden_size)
        slots = _segment_sum(weighted, segment_index, slots)
        slot_outputs = self.run_experts(slots)

        per_token = slot_outputs.gather(1, segment_index[..., None, None, None].expand(-1, -1, *slot_outputs.shape[2:]))
        return self.combine(logits, per_token, token_valid)

    def _forward_full_unpacked(self, x_norm: torch.Tensor, logits: torch.Tensor, token_valid: torch.Tensor) -> torch.Tensor:
        """Faithful Soft MoE over whole rows: the same function with matmuls in place of scatters."""
        batch_size, seq_len = logits.shape[:2]
        masked = logits.masked_fill(~token_valid[..., None, None], -math.inf)
        row_max = masked.amax(dim=1, keepdim=True)
        row_max = torch.where(torch.isfinite(row_max), row_max, 0.0).detach()
        exp = torch.exp(masked - row_max)
        dispatch = exp / exp.sum(dim=1, keepdim=True).clamp_min(torch.finfo(exp.dtype).tiny)

        slots = torch.einsum("btnp,btd->bnpd", dispatch.to(x_norm.dtype), x_norm)
        slot_outputs = self.run_experts(slots).reshape(batch_size, -1, self.hidden_size)

        combine = F.softmax(logits.reshape(batch_size, seq_len, -1), dim=-1).to(slot_outputs.dtype)
        output = torch.einsum("bts,bsd->btd", combine, slot_outputs)
        return output * token_valid[..., None].to(output.dtype)

    def _forward_causal(
        self, x: torch.Tensor, token_valid: torch.Tensor, segment_index: torch.Tensor | None, state: dict | None
    ) -> torch.Tensor:
        """Causal Soft MoE: the slots of position t mix the real tokens of its segment up to t.

        The running sums use the fixed reference |scale|, an upper bound of every logit, so
        exp(logit - |scale|) is in [exp(-2|scale|), 1] and the cumulative sums never overflow.
        NOTE: for |scale| above about 43, exp(-2|scale|) underflows float32 and the lowest-scoring
        tokens lose their (tiny) weight; a slot whose every token underflows outputs zero.
        `state` (a decoding cache) carries each slot's running maximum, denominator and
        weighted sum of the tokens seen so far, relative to that maximum.
        """
        x_norm, logits = self.router_logits(x)
        reference = self.scale.detach().abs().float()
        exp = torch.exp(logits - reference) * token_valid[..., None, None]
        weighted = exp[..., None] * x_norm.float()[:, :, None, None, :]

        denominator = _segment_cumsum(exp, segment_index)
        numerator = _segment_cumsum(weighted, segment_index)
        if state is not None and "running_max" in state:
            carry = torch.exp(state["running_max"] - reference)  # 0 where the running max is -inf
            denominator = denominator + (carry * state["denominator"])[:, None]
            numerator = numerator + (carry[..., None] * state["numerator"])[:, None]
        if state is not None:
            _update_causal_state(state, logits, token_valid, denominator[:, -1], numerator[:, -1], reference)

        # A slot that has seen no real token yet (left padding) has a zero numerator and
        # denominator; the clamp turns it into a zero slot instead of NaN.
        slots = (numerator / denominator.clamp_min(torch.finfo(denominator.dtype).tiny)[..., None]).to(x.dtype)
        slot_outputs = self.run_experts(slots)
        return self.combine(logits, slot_outputs, token_valid)


def _segment_sum(values: torch.Tensor, segment_index: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Sum values [batch, seq, ...] into out [batch, segments, ...] by segment_index [batch, seq]."""
    index = segment_index.reshape(*segment_index.shape, *([1] * (values.dim() - 2))).expand_as(values)
    return out.scatter_add(1, index, values)


def _segment_cumsum(values: torch.Tensor, segment_index: torch.Tensor | None) -> torch.Tensor:
    """Cumulative sum over the sequence axis (dim 1) that restarts at each segment start.

    With segments, the sum is taken over the whole row and the sum before each segment start is
    subtracted. That difference is computed in float64, because in float32 the rounding error of
    the earlier segments' sums (about 1e-4 in the logits after 2000 tokens) would leak across
    segments.
    """
    if segment_index is None:
        return values.cumsum(dim=1)
    total = values.double().cumsum(dim=1)
    seq_len = segment_index.shape[1]
    positions = torch.arange(seq_len, device=segment_index.device).expand_as(segment_index)
    is_start = torch.ones_like(segment_index, dtype=torch.bool)
    is_start[:, 1:] = segment_index[:, 1:] != segment_index[:, :-1]
    start = torch.where(is_start, positions, 0).cummax(dim=1).values
    # The sum before a segment is the cumulative sum at its start minus the start's own value.
    before = torch.cat([torch.zeros_like(total[:, :1]), total[:, :-1]], dim=1)
    index = start.reshape(*start.shape, *([1] * (values.dim() - 2))).expand_as(values)
    return (total - before.gather(1, index)).to(values.dtype)


def _update_causal_state(
    state: dict,
    logits: torch.Tensor,
    token_valid: torch.Tensor,
    denominator: torch.Tensor,
    numerator: torch.Tensor,
    reference: torch.Tensor,
) -> None:
    """Store the running max, and the denominator and numerator rescaled to it, after the last position."""
    step_max = logits.masked_fill(~token_valid[..., None, None], -math.inf).amax(dim=1)
    running_max = torch.maximum(state.get("running_max", torch.full_like(step_max, -math.inf)), step_max)
    rescale = torch.where(torch.isfinite(running_max), torch.exp(reference - running_max), 0.0)
    state["running_max"] = running_max.detach()
    state["denominator"] = (denominator * rescale).detach()
    state["numerator"] = (numerator * rescale[..., None]).detach()


class SteelDecoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: SteelConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.self_attn = SteelAttention(config, layer_idx)
        if config.ffn_type == "dense":
            self.mlp = SwiGLU(config.hidden_size, config.intermediate_size)
        else:
            self.mlp = SoftMoE(config, causal=config.ffn_type == "soft_moe_causal")
        self.input_layernorm = SteelRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = SteelRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(
        self,
        hidden_states: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None,
        token_valid: torch.Tensor,
        segment_index: torch.Tensor | None,
        past_key_values: Cache | None = None,
        ffn_state: dict | None = None,
        **kwargs,
    ) -> torch.Tensor:
        residual = hidden_states
        hidden_states = self.self_attn(self.input_layernorm(hidden_states), rope, attention_mask, past_key_values, **kwargs)
        hidden_states = residual + hidden_states

        residual = hidden_states
        hidden_states = self.post_attention_layernorm(hidden_states)
        if isinstance(self.mlp, SoftMoE):
            hidden_states = self.mlp(hidden_states, token_valid, segment_index, ffn_state)
        else:
            hidden_states = self.mlp(hidden_states)
        return residual + hidden_states


# ---------------------------------------------------------------------------------------------
# Models


class SteelPreTrainedModel(PreTrainedModel):
    config_class = SteelConfig
    config: SteelConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["SteelDecoderLayer"]
    _skip_keys_device_placement = ["past_key_values"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        from transformers import initialization as init

        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, SteelRMSNorm):
            init.ones_(module.weight)
        elif isinstance(module, SoftMoE):
            init.normal_(module.phi, mean=0.0, std=1.0 / math.sqrt(module.hidden_size))
            init.ones_(module.scale)


def _segment_index(segment_ids: torch.Tensor) -> torch.Tensor:
    """Renumber segment ids [batch, seq] to 0, 1, 2, ... in order of appearance along each row.

    A new segment starts wherever the id changes, so equal ids in separate runs count as
    separate segments, the same way attention sees them.
    """
    change = torch.zeros_like(segment_ids, dtype=torch.long)
    change[:, 1:] = (segment_ids[:, 1:] != segment_ids[:, :-1]).long()
    return change.cumsum(dim=1)


def _positions_from_boundaries(token_valid: torch.Tensor, segment_index: torch.Tensor | None, offset: int) -> torch.Tensor:
    """Position ids counting real tokens only, restarting at each segment start."""
    positions = _segment_cumsum(token_valid.long(), segment_index) - 1
    return positions.clamp_min(0) + offset


class SteelModel(SteelPreTrainedModel):
    """The decoder stack; `forward` returns the final normalised hidden states (no logits)."""

    def __init__(self, config: SteelConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(SteelDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = SteelRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        segment_ids: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if kwargs.pop("output_attentions", None):
            raise ValueError("output_attentions is not supported by Steel; attention weights are not returned")
        kwargs.pop("return_dict", None)
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        batch_size, seq_len = inputs_embeds.shape[:2]
        device = inputs_embeds.device

        use_cache = self._resolve_use_cache(use_cache, past_key_values, segment_ids)
        if use_cache and past_key_values is None:
            past_key_values = SteelCache()
        past_len = past_key_values.get_seq_length() if past_key_values is not None else 0

        full_mask = None
        if attention_mask is not None:
            if attention_mask.dim() != 2:
                raise ValueError(f"attention_mask must be [batch, seq] (1 = real token), got shape {tuple(attention_mask.shape)}")
            full_mask = attention_mask.bool()
            if full_mask.shape[1] != past_len + seq_len:
                raise ValueError(
                    f"attention_mask covers {full_mask.shape[1]} positions, expected past {past_len} + new {seq_len}"
                )
        token_valid = full_mask[:, -seq_len:] if full_mask is not None else torch.ones(batch_size, seq_len, dtype=torch.bool, device=device)
        segment_index = _segment_index(segment_ids.to(device)) if segment_ids is not None else None

        if position_ids is None:
            if past_len > 0 and full_mask is not None:
                position_ids = (full_mask.long().cumsum(dim=1) - 1).clamp_min(0)[:, -seq_len:]
            elif full_mask is not None or segment_index is not None:
                position_ids = _positions_from_boundaries(token_valid, segment_index, past_len)
            else:
                position_ids = torch.arange(past_len, past_len + seq_len, device=device)[None].expand(batch_size, -1)
        position_ids = position_ids.expand(batch_size, -1) if position_ids.shape[0] == 1 else position_ids
        rope = rope_cos_sin(position_ids, self.config.head_dim, self.config.rope_theta)

        attn_mask = self._attention_mask(full_mask, segment_index, batch_size, seq_len, past_len, device)
        if segment_index is not None and self.config._attn_implementation.startswith("flash"):
            # transformers' flash path finds packed sequences where these position ids restart at 0.
            kwargs["position_ids"] = _positions_from_boundaries(torch.ones_like(token_valid), segment_index, 0)
        ffn_states = _ffn_states(past_key_values, self.config) if use_cache and self.config.ffn_type == "soft_moe_causal" else None

        hidden_states = inputs_embeds
        all_hidden_states: list[torch.Tensor] = []
        for layer in self.layers:
            if output_hidden_states:
                all_hidden_states.append(hidden_states)
            ffn_state = ffn_states[layer.layer_idx] if ffn_states is not None else None
            hidden_states = layer(
                hidden_states,
                rope,
                attn_mask,
                token_valid,
                segment_index,
                past_key_values=past_key_values if use_cache else None,
                ffn_state=ffn_state,
                **kwargs,
            )
        hidden_states = self.norm(hidden_states)
        if output_hidden_states:
            # As in transformers' decoders: the embeddings, each layer's input, and the final normed output.
            all_hidden_states.append(hidden_states)
        return BaseModelOutputWithPast(
            last_hidden_state=hidden_states,
            past_key_values=past_key_values if use_cache else None,
            hidden_states=tuple(all_hidden_states) if output_hidden_states else None,
        )

    def _resolve_use_cache(self, use_cache: bool | None, past_key_values: Cache | None, segment_ids: torch.Tensor | None) -> bool:
        has_past = past_key_values is not None and past_key_values.get_seq_length() > 0
        if segment_ids is not None:
            if has_past:
                raise ValueError("segment_ids cannot be combined with a non-empty past_key_values cache")
            return False
        if use_cache is None:
            use_cache = self.config.use_cache and not self.training
        use_cache = bool(use_cache) or past_key_values is not None
        if use_cache and self.config.ffn_type == "soft_moe" and not self.config.soft_moe_cached_decoding:
            if has_past:
                raise ValueError(
                    "a soft_moe model decodes without a KV cache because its FFN mixes the whole sequence; "
                    "recompute the prefix, or set config.soft_moe_cached_decoding=True to reproduce the "
                    "released code's cached decoding (a different function than the trained one)"
                )
            return False
        return use_cache

    def _attention_mask(
        self,
        full_mask: torch.Tensor | None,
        segment_index: torch.Tensor | None,
        batch_size: int,
        seq_len: int,
        past_len: int,
        device: torch.device,
    ) -> torch.Tensor | None:
        """Build the attention mask for the configured kernel; None means plain causal attention."""
        if full_mask is not None and bool(full_mask.all()):
            full_mask = None
        flash = self.config._attn_implementation.startswith("flash")
        # Without a mask, sdpa aligns its causal mask to the top-left corner. That is right only
        # when there is no past or a single query. Flash kernels align it to the bottom right.
        if full_mask is None and segment_index is None and (past_len == 0 or seq_len == 1 or flash):
            return None
        if flash:
            # NOTE: this branch is not exercised by the CPU test suite. Flash kernels see packed
            # segments only through position ids that restart at 0 in each segment.
            if segment_index is not None:
                if full_mask is not None:
                    raise ValueError("flash attention does not take padding and segment_ids together; use sdpa")
                return None
            return full_mask.long()

        key_len = past_len + seq_len
        query_pos = torch.arange(past_len, key_len, device=device)
        key_pos = torch.arange(key_len, device=device)
        allowed = (key_pos[None, :] <= query_pos[:, None])[None, None].expand(batch_size, 1, -1, -1)
        if full_mask is not None:
            allowed = allowed & full_mask[:, None, None, :]
        if segment_index is not None:
            allowed = allowed & (segment_index[:, None, :, None] == segment_index[:, None, None, :])
        # A padding query attends to itself only, so its row is never empty (an empty row gives NaN).
        diagonal = (key_pos[None, :] == query_pos[:, None])[None, None]
        return allowed | diagonal


class SteelCache(DynamicCache):
    """A DynamicCache that also reorders, selects and repeats the causal Soft MoE running states.

    The states live in `steel_ffn_states` (one dict per layer with `running_max`, `denominator`
    and `numerator`, batch first). A plain DynamicCache works for greedy and sampled decoding;
    beam search and `num_return_sequences` need this class, which `generate` supplies.
    """

    def _map_states(self, function) -> None:
        for state in getattr(self, "steel_ffn_states", None) or []:
            for key in list(state):
                state[key] = function(state[key])

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        super().reorder_cache(beam_idx)
        self._map_states(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_repeat_interleave(self, repeats: int) -> None:
        super().batch_repeat_interleave(repeats)
        self._map_states(lambda t: t.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        super().batch_select_indices(indices)
        self._map_states(lambda t: t[indices])

    def crop(self, tokens_to_remove: int) -> None:
        if getattr(self, "steel_ffn_states", None):
            raise NotImplementedError("the causal Soft MoE running sums cannot drop tokens, so this cache cannot be cropped")
        super().crop(tokens_to_remove)


def _ffn_states(cache: Cache, config: SteelConfig) -> list[dict]:
    """Per-layer causal Soft MoE running states, kept on the cache object beside the KV tensors."""
    states = getattr(cache, "steel_ffn_states", None)
    if states is None or cache.get_seq_length() == 0:
        states = [{} for _ in range(config.num_hidden_layers)]
        cache.steel_ffn_states = states
    return states


class SteelForCausalLM(SteelPreTrainedModel, GenerationMixin):
    """Steel decoder with a language-model head.

    `model.model(...)` returns the final hidden states without logits, and `model.lm_head` maps
    them to logits, so a trainer can compute a chunked cross-entropy itself.
    """

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: SteelConfig):
        super().__init__(config)
        self.model = SteelModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        segment_ids: torch.LongTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """Run the decoder; with `labels` [batch, seq] also return the mean next-token loss.

        Labels are shifted inside (position t predicts labels[t + 1]); positions labelled -100 are
        ignored.
        """
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            segment_ids=segment_ids,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, keep, :])

        loss = None
        if labels is not None:
            shift_logits = logits[:, :-1, :].float() if logits.shape[1] == labels.shape[1] else None
            if shift_logits is None:
                raise ValueError("labels need logits for every position; do not combine labels with logits_to_keep")
            loss = F.cross_entropy(
                shift_logits.reshape(-1, shift_logits.shape[-1]), labels[:, 1:].reshape(-1).to(logits.device), ignore_index=-100
            )
        return CausalLMOutputWithPast(
            loss=loss, logits=logits, past_key_values=outputs.past_key_values, hidden_states=outputs.hidden_states
        )

    @torch.no_grad()
    def generate(self, *args, **kwargs):
        """`GenerationMixin.generate`; a `soft_moe` model decodes without a KV cache unless opted in.

        The faithful Soft MoE mixes all tokens of the sequence, so the default recomputes the
        whole prefix at each step, as in training. With `config.soft_moe_cached_decoding=True`
        it decodes with a KV cache and feeds only new tokens through the FFN, which reproduces
        the released code's cached decoding but is a different function.
        """
        if self.config.ffn_type == "soft_moe":
            if self.config.soft_moe_cached_decoding:
                logger.warning(
                    "soft_moe cached decoding: every step's Soft MoE sees only the new token, so the "
                    "logits differ from a full forward pass over the same text"
                )
            else:
                kwargs["use_cache"] = False
        if self.config.ffn_type == "soft_moe_causal" and kwargs.get("use_cache", True) and kwargs.get("past_key_values") is None:
            kwargs["past_key_values"] = SteelCache()
        return super().generate(*args, **kwargs)


SteelConfig.register_for_auto_class()
SteelForCausalLM.register_for_auto_class("AutoModelForCausalLM")

__all__ = ["SteelCache", "SteelConfig", "SteelModel", "SteelForCausalLM", "SteelPreTrainedModel"]
