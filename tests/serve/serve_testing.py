"""A tiny chat model for the serving tests, built and trained in a few seconds.

The tokenizer is a byte-level BPE with so few merges that every Chinese character spans several
tokens, so streaming must hold back partial characters. The model is a two-layer Qwen2 decoder
trained until it repeats a few fixed conversations, so its greedy replies are known in advance.
"""

import socket
import threading
import time
from pathlib import Path

import torch

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# Qwen1.5's chat template, as its tokenizer_config.json ships it.
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# (user message, the reply the model learns). Replies mix Chinese and ASCII on purpose.
CONVERSATIONS = [
    ("你好", "你好，世界！"),
    ("hello", "Hi there!"),
    ("天气怎么样？", "今天天气很好。"),
]
BASE_TEXT = "钢铁是这样炼成的。Steel is made like this."


def build_tokenizer(directory: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = ["system user assistant You are a helpful assistant.", BASE_TEXT]
    corpus += [f"{user} {reply}" for user, reply in CONVERSATIONS]
    tokenizer.train_from_iterator(corpus, trainer=trainer)

    hf_tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    hf_tokenizer.chat_template = CHAT_TEMPLATE
    hf_tokenizer.save_pretrained(directory)
    return hf_tokenizer


def training_texts() -> list[str]:
    texts = [BASE_TEXT + "<|endoftext|>"]
    for user, reply in CONVERSATIONS:
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
        # A second, invented turn after the reply teaches the model to go on past <|im_end|>,
        # which the engine must never show.
        follow_up = "<|im_start|>user\nhello<|im_end|>\n"
        texts.append(_render(messages) + follow_up)
    return texts


def _render(messages: list[dict]) -> str:
    text = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    for message in messages:
        text += f"<|im_start|>{message['role']}\n{message['content']}<|im_end|>\n"
    return text


def build_model(directory: Path, hf_tokenizer, max_position_embeddings: int = 4096):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    im_end_id = hf_tokenizer.convert_tokens_to_ids("<|im_end|>")
    config = Qwen2Config(
        vocab_size=len(hf_tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_position_embeddings,
        eos_token_id=im_end_id,
        bos_token_id=None,
        pad_token_id=hf_tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = Qwen2ForCausalLM(config)

    batch = [hf_tokenizer.encode(text) for text in training_texts()]
    block_size = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), block_size), hf_tokenizer.pad_token_id)
    labels = torch.full((len(batch), block_size), -100)
    for row, ids in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(ids)] = torch.tensor(ids)

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(150):
        loss = model(input_ids=input_ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    assert loss.item() < 0.05, f"the tiny test model did not memorise its texts (loss {loss.item():.3f})"

    model.save_pretrained(directory)
    return model


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RunningServer:
    """A real uvicorn server on 127.0.0.1, run in a thread of the test process."""

    def __init__(self, app):
        import uvicorn

        self.app = app
        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=30)
