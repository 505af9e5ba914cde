"""Forward+backward speed, peak memory and FLOPs per token of each Steel FFN variant on CPU.

The baseline is transformers' own `Qwen2ForCausalLM` with the same dimensions, measured in the
same run. Each model runs in its own child process, so its peak resident memory (ru_maxrss) is
its own. The models are measured in turn, `--rounds` times, and the median is reported. Tokens
per CPU-second (process time) is reported beside wall-clock tokens/s because it is far less
sensitive to other processes sharing the machine.

    .venv/bin/python bench/bench_model.py              # prints a Markdown table
    .venv/bin/python bench/bench_model.py --rounds 1 --steps 3 --seq-len 128   # quick look
"""

import argparse
import json
import multiprocessing
import resource
import statistics
import time

import torch
import torch.nn.functional as F

DIMENSIONS = dict(
    vocab_size=8192,
    hidden_size=256,
    intermediate_size=1024,
    num_hidden_layers=4,
    num_attention_heads=8,
    num_key_value_heads=4,
    max_position_embeddings=1024,
    rope_theta=10_000.0,
)
SOFT_MOE = dict(n_experts=4, slots_per_expert=1, mlp_div_ratio=4)
MODELS = ("qwen2", "dense", "soft_moe", "soft_moe_causal")


def build_model(name: str, device: str = "cpu", attention: str = "sdpa"):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from steel.model import SteelConfig, SteelForCausalLM

    with torch.device(device):
        if name == "qwen2":
            dims = {k: v for k, v in DIMENSIONS.items() if k != "rope_theta"}
            config = Qwen2Config(**dims, rope_parameters={"rope_type": "default", "rope_theta": DIMENSIONS["rope_theta"]})
            config._attn_implementation = attention
            return Qwen2ForCausalLM(config)
        config = SteelConfig(**DIMENSIONS, **SOFT_MOE, ffn_type=name)
        config._attn_implementation = attention
        return SteelForCausalLM(config)


def count_flops_per_token(name: str, seq_len: int) -> float:
    """Matmul FLOPs of a training step per token, counted on one real CPU sequence.

    Qwen2's mask code calls .item(), so it cannot run on the meta device that
    `steel.model.flops` uses. Eager attention is used because FlopCounterMode does not count the
    fused CPU sdpa kernel. Every model gets the same loss.
    """
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model(name, attention="eager").train()
    input_ids = torch.zeros(1, seq_len, dtype=torch.long)
    counter = FlopCounterMode(display=False)
    with counter:
        logits = model(input_ids, use_cache=False).logits
        F.cross_entropy(logits[:, :-1].flatten(0, 1), input_ids[:, 1:].flatten()).backward()
    return counter.get_total_flops() / seq_len


def current_rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def measure(name: str, batch_size: int, seq_len: int, steps: int, threads: int, queue) -> None:
    """Child process: time `steps` forward+backward passes after one warm-up step."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(name).train()
    input_ids = torch.randint(0, DIMENSIONS["vocab_size"], (batch_size, seq_len))
    rss_before = current_rss_mib()

    def step() -> None:
        loss = model(input_ids, labels=input_ids, use_cache=False).loss
        loss.backward()
        model.zero_grad(set_to_none=True)

    step()
    start, start_cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    elapsed, elapsed_cpu = time.perf_counter() - start, time.process_time() - start_cpu

    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    parameters = sum(p.numel() for p in model.parameters())
    queue.put(
        dict(
            tokens_per_second=steps * batch_size * seq_len / elapsed,
            tokens_per_cpu_second=steps * batch_size * seq_len / elapsed_cpu,
            peak_rss_mib=peak_mib,
            peak_over_model_mib=peak_mib - rss_before,
            parameters=parameters,
        )
    )


def run_in_child(name: str, args: argparse.Namespace) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(
        target=measure, args=(name, args.batch_size, args.seq_len, args.steps, args.threads, queue), daemon=True
    )
    process.start()
    result = queue.get(timeout=1800)
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5, help="timed forward+backward steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per model; the median is reported")
    parser.add_argument("--threads", type=int, default=2, help="torch threads in each child")
    parser.add_argument("--json", action="store_true", help="print the raw results as JSON")
    args = parser.parse_args()

    runs: dict[str, list[dict]] = {name: [] for name in MODELS}
    for round_index in range(args.rounds):
        for name in MODELS:
            runs[name].append(run_in_child(name, args))
            latest = runs[name][-1]
            print(
                f"round {round_index + 1}/{args.rounds} {name}: {latest['tokens_per_second']:.0f} tokens/s, "
                f"{latest['tokens_per_cpu_second']:.0f} tokens/CPU-s",
                flush=True,
            )

    results = {}
    for name in MODELS:
        results[name] = {
            key: statistics.median(run[key] for run in runs[name]) for key in runs[name][0]
        }
        results[name]["flops_per_token"] = count_flops_per_token(name, args.seq_len)
        results[name]["tokens_per_cpu_second_all"] = [round(run["tokens_per_cpu_second"]) for run in runs[name]]

    if args.json:
        print(json.dumps(results, indent=2))
    baseline = results["qwen2"]
    print(
        f"\nbatch {args.batch_size} x seq_len {args.seq_len}, {args.steps} steps x {args.rounds} rounds, "
        f"{args.threads} threads, torch {torch.__version__}"
    )
    print(
        "| model | parameters | tokens/s (fwd+bwd) | vs Qwen2 | tokens/CPU-s | vs Qwen2 | "
        "peak RSS over model (MiB) | vs Qwen2 | train FLOPs/token | vs Qwen2 | 6N |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in MODELS:
        result = results[name]
        label = "Qwen2ForCausalLM (transformers)" if name == "qwen2" else f"Steel {name}"
        print(
            f"| {label} | {result['parameters']:,} | {result['tokens_per_second']:.0f} | "
            f"{result['tokens_per_second'] / baseline['tokens_per_second']:.2f} | {result['tokens_per_cpu_second']:.0f} | "
            f"{result['tokens_per_cpu_second'] / baseline['tokens_per_cpu_second']:.2f} | {result['peak_over_model_mib']:.0f} | "
            f"{result['peak_over_model_mib'] / baseline['peak_over_model_mib']:.2f} | {result['flops_per_token']:.3g} | "
            f"{result['flops_per_token'] / baseline['flops_per_token']:.2f} | {6 * result['parameters']:.3g} |"
        )


if __name__ == "__main__":
    main()
