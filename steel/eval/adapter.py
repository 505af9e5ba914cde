"""The view of a loaded model that evaluation needs: ids in, scores or text out.

`as_eval_model` accepts the trainer's `LoadedModel` (fields `model`, `tokenizer`, `chat_template`,
`provenance`) or any object with those fields whose tokenizer is a `SteelTokenizer`. `EvalModel`
provides what the scorer needs: the context length, whether questions may share a padded batch,
and the encoding of a conversation.
"""

import logging
from dataclasses import dataclass, field

import torch

logger = logging.getLogger(__name__)

# Models with `config.ffn_type` in this set mix all tokens of a sequence in their FFN (the released
# Steel-LLM Soft MoE), so the output at position t depends on later tokens. Such a model is run on
# one unpadded sequence at a time.
NON_CAUSAL_FFN_TYPES = {"soft_moe"}


@dataclass
class EvalModel:
    model: torch.nn.Module
    tokenizer: object
    """A `SteelTokenizer`: `encode(text, allow_special=False)`, `decode(ids)`, `eos_id`, `pad_id`, `special_ids`."""
    chat_template: str | None = None
    provenance: dict = field(default_factory=dict)
    _hf_tokenizer: object = field(default=None, repr=False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def config(self):
        return getattr(self.model, "config", None)

    @property
    def ffn_type(self) -> str | None:
        return getattr(self.config, "ffn_type", None)

    @property
    def is_causal(self) -> bool:
        """True when no token's output depends on later tokens, so right padding is exact."""
        return self.ffn_type not in NON_CAUSAL_FFN_TYPES

    @property
    def max_length(self) -> int:
        """Context length in tokens: `max_position_embeddings` of the model config."""
        length = getattr(self.config, "max_position_embeddings", None)
        if not length:
            raise ValueError("the model config has no max_position_embeddings; pass max_length explicitly")
        return int(length)

    @property
    def stop_ids(self) -> list[int]:
        """Ids that end a generated answer: `<|im_end|>` and `<|endoftext|>` where the tokenizer has them."""
        ids = {self.tokenizer.eos_id}
        ids.update(self.tokenizer.special_ids.get(name) for name in ("<|im_end|>", "<|endoftext|>"))
        ids.discard(None)
        return sorted(ids)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        """Encode a conversation ending in the assistant header, ready for generation.

        Qwen1.5 ChatML is encoded as SFT encodes it, with markers from special ids. A model whose
        own `chat_template` renders the conversation differently (another model family) gets its
        template's text, encoded with special tokens allowed.
        """
        from steel.tokenizer.chat import encode_chat, render_chat

        if self.chat_template is not None and hasattr(self.tokenizer, "to_hf"):
            if self._hf_tokenizer is None:
                self._hf_tokenizer = self.tokenizer.to_hf()
            text = self._hf_tokenizer.apply_chat_template(
                messages, chat_template=self.chat_template, tokenize=False, add_generation_prompt=True
            )
            if text != render_chat(messages, add_generation_prompt=True):
                return self.tokenizer.encode(text, allow_special=True)
        ids, _ = encode_chat(self.tokenizer, messages, add_generation_prompt=True)
        return ids

    def describe(self) -> dict:
        """Model facts recorded in every result file."""
        tokenizer_identity = self.tokenizer.identity() if hasattr(self.tokenizer, "identity") else {}
        return {
            "provenance": dict(self.provenance),
            "model_type": getattr(self.config, "model_type", type(self.model).__name__),
            "ffn_type": self.ffn_type,
            "causal": self.is_causal,
            "max_length": getattr(self.config, "max_position_embeddings", None),
            "num_parameters": sum(p.numel() for p in self.model.parameters()),
            "dtype": str(next(self.model.parameters()).dtype).removeprefix("torch."),
            "tokenizer": tokenizer_identity,
        }


def as_eval_model(loaded) -> EvalModel:
    """Wrap a `LoadedModel` (or an `EvalModel`, returned as is) for evaluation."""
    if isinstance(loaded, EvalModel):
        return loaded
    for name in ("model", "tokenizer"):
        if not hasattr(loaded, name):
            raise TypeError(f"expected a LoadedModel with .model and .tokenizer, got {type(loaded).__name__} without .{name}")
    loaded.model.eval()
    return EvalModel(
        model=loaded.model,
        tokenizer=loaded.tokenizer,
        chat_template=getattr(loaded, "chat_template", None),
        provenance=dict(getattr(loaded, "provenance", None) or {}),
    )
