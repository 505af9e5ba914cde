"""Sampling settings and the choice of the next token from one row of logits."""

import math
from dataclasses import dataclass, field

import torch


@dataclass
class SamplingParams:
    """Sampling settings of one request: how it picks tokens and when it stops."""

    max_new_tokens: int = 256
    """Maximum number of tokens to generate; generation may stop earlier at an end token."""

    temperature: float = 0.7
    """Softmax temperature; 0 picks the most likely token (greedy decoding)."""

    top_p: float = 0.9
    """Nucleus sampling: keep the smallest set of tokens whose probabilities sum to at least top_p."""

    top_k: int = 0
    """Keep only the k most likely tokens; 0 keeps all."""

    repetition_penalty: float = 1.0
    """Divide positive logits (multiply negative ones) of tokens already in the prompt or output
    by this factor (CTRL, Keskar et al. 2019); 1.0 turns it off."""

    seed: int | None = None
    """Seed of this request's random generator; None draws a fresh one."""

    stop: tuple[str, ...] = ()
    """Strings that end the output; the matched string is not returned."""

    ignore_eos: bool = False
    """Keep generating past end tokens until max_new_tokens (for benchmarks)."""

    def problems(self) -> list[str]:
        """Return every invalid field as a message that names it and its valid range."""
        found = []
        if self.max_new_tokens < 1:
            found.append(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if not (0.0 <= self.temperature <= 100.0) or math.isnan(self.temperature):
            found.append(f"temperature must be between 0 and 100, got {self.temperature}")
        if not (0.0 < self.top_p <= 1.0):
            found.append(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            found.append(f"top_k must be 0 (off) or positive, got {self.top_k}")
        if not (0.0 < self.repetition_penalty <= 10.0):
            found.append(f"repetition_penalty must be in (0, 10], got {self.repetition_penalty}")
        if any(not text for text in self.stop):
            found.append("stop strings must not be empty")
        # torch.Generator.manual_seed takes a 64-bit integer; a larger seed would fail mid-generation.
        if self.seed is not None and not (-(2**63) <= self.seed < 2**64):
            found.append(f"seed must be a 64-bit integer (between -2**63 and 2**64 - 1), got {self.seed}")
        return found


@dataclass
class SamplerState:
    """Per-request sampling state: the random generator and the set of tokens seen so far."""

    params: SamplingParams
    generator: torch.Generator
    seen: torch.Tensor = field(repr=False)

    @classmethod
    def create(cls, params: SamplingParams, prompt_ids: list[int], vocab_size: int) -> "SamplerState":
        generator = torch.Generator()
        if params.seed is None:
            generator.seed()
        else:
            generator.manual_seed(params.seed)
        seen = torch.zeros(vocab_size, dtype=torch.bool)
        if params.repetition_penalty != 1.0 and prompt_ids:
            seen[torch.tensor(prompt_ids)] = True
        return cls(params=params, generator=generator, seen=seen)

    def observe(self, token_id: int) -> None:
        if self.params.repetition_penalty != 1.0:
            self.seen[token_id] = True


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalized, logits)


def filter_top_k(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    if top_k <= 0 or top_k >= logits.numel():
        return logits
    kth_value = torch.topk(logits, top_k).values[-1]
    return logits.masked_fill(logits < kth_value, float("-inf"))


def filter_top_p(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    if top_p >= 1.0:
        return logits
    sorted_logits, sorted_indices = torch.sort(logits, descending=True)
    cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)

    # Drop a token when the tokens before it already reach top_p, so the most likely one always stays.
    drop_sorted = (cumulative - torch.softmax(sorted_logits, dim=-1)) >= top_p
    drop = torch.zeros_like(drop_sorted).scatter(0, sorted_indices, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample_next_token(logits: torch.Tensor, state: SamplerState) -> int:
    """Pick the next token id from one row of logits [vocab_size]."""
    params = state.params
    logits = logits.float()
    if params.repetition_penalty != 1.0:
        logits = apply_repetition_penalty(logits, state.seen, params.repetition_penalty)

    if params.temperature == 0.0 or params.top_k == 1:
        return int(torch.argmax(logits))

    logits = logits / params.temperature
    logits = filter_top_k(logits, params.top_k)
    logits = filter_top_p(logits, params.top_p)
    probabilities = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probabilities, num_samples=1, generator=state.generator))
