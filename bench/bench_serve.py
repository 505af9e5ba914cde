"""Benchmark serving: generation tokens/s against `transformers`' generate(), and server throughput.

Part 1 decodes the same prompt with the same model in one run. The baseline is `transformers`'
`generate()` (greedy, KV cache). Steel's engine runs with its KV cache, then recomputing the
prefix at every step (the path of the faithful `soft_moe` variant), then on a batch of prompts
to show what batching adds.

Part 2 starts `steel serve`'s app with uvicorn on 127.0.0.1 and sends streaming chat requests
from N concurrent clients, reporting completion tokens/s against one client.

Part 3 replays one arrival schedule of requests with mixed lengths against the generation worker.
Static and continuous batching take turns on the same schedule, and the table reports the
throughput and latency of each, with continuous batching's throughput as a ratio to static.

    python bench/bench_serve.py                      # steel-small preset, Qwen1.5 tokenizer
    python bench/bench_serve.py --clients 1 4 8 --requests-per-client 3
    python bench/bench_serve.py --parts batching     # part 3 only

The model has random weights: speed does not depend on them, and `ignore_eos` fixes the output
length so every run decodes the same number of tokens.
"""

import argparse
import asyncio
import json
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from steel.serve.engine import Engine, GenerationRequest, GenerationWorker  # noqa: E402
from steel.serve.loading import ServingModel  # noqa: E402
from steel.serve.sampling import SamplingParams  # noqa: E402

PROMPT = "钢铁是这样炼成的。请用三句话介绍一下 Soft Mixture of Experts 的想法，并说明它为什么适合小模型。"


def build_model(preset: str, ffn_type: str, vocab_size: int) -> torch.nn.Module:
    from steel.model import SteelForCausalLM, get_preset

    config = get_preset(preset)
    config.vocab_size = vocab_size
    config.ffn_type = ffn_type
    torch.manual_seed(0)
    return SteelForCausalLM(config).eval()


def bench_generation(model, tokenizer, new_tokens: int, batch_size: int, repeat: int) -> list[tuple[str, float]]:
    prompt_ids = tokenizer.encode(PROMPT)
    params = SamplingParams(temperature=0.0, max_new_tokens=new_tokens, ignore_eos=True)
    cached = Engine(model, tokenizer, max_batch_size=batch_size)
    uncached = Engine(model, tokenizer, use_kv_cache=False)

    def run_transformers():
        with torch.inference_mode():
            output = model.generate(
                torch.tensor([prompt_ids]), max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False
            )
        assert output.shape[1] == len(prompt_ids) + new_tokens

    def run_engine(engine, num_prompts):
        results = engine.generate([GenerationRequest(prompt_ids, params) for _ in range(num_prompts)])
        assert all(result.completion_tokens == new_tokens for result in results)

    # (name, function, tokens per call, timed repeats). Recomputing the prefix is slow, so it runs once.
    runs = [
        ("transformers generate(), KV cache, batch 1", run_transformers, new_tokens, repeat),
        ("Steel engine, KV cache, batch 1", lambda: run_engine(cached, 1), new_tokens, repeat),
        ("Steel engine, prefix recomputed each step, batch 1", lambda: run_engine(uncached, 1), new_tokens, 1),
        (f"Steel engine, KV cache, batch {batch_size}", lambda: run_engine(cached, batch_size),
         new_tokens * batch_size, repeat),
    ]  # fmt: skip

    # One warm-up of each cached path, so lazy initialisation is not timed. The timed runs take
    # turns, so a change in machine load mid-run affects every measurement alike.
    run_transformers()
    run_engine(cached, 1)
    best = {name: float("inf") for name, *_ in runs}
    for round_index in range(repeat):
        for name, function, _, num_repeats in runs:
            if round_index < num_repeats:
                started = time.perf_counter()
                function()
                best[name] = min(best[name], time.perf_counter() - started)
    return [(name, tokens / best[name]) for name, _, tokens, _ in runs]


async def _client(base_url: str, model_name: str, num_requests: int, max_tokens: int) -> int:
    import httpx

    body = {
        "model": model_name,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "temperature": 0.8,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    completion_tokens = 0
    async with httpx.AsyncClient(base_url=base_url, timeout=300) as http:
        for _ in range(num_requests):
            async with http.stream("POST", "/v1/chat/completions", json=body) as response:
                response.raise_for_status()
                async for line in response.aiter_lines():
                    if line.startswith("data: {") and '"usage"' in line:
                        completion_tokens += json.loads(line[6:])["usage"]["completion_tokens"]
    return completion_tokens


def bench_server(model, tokenizer, clients: list[int], requests_per_client: int, max_tokens: int, max_batch_size: int):
    import socket

    import uvicorn

    from steel.serve.server import ServerLimits, create_app

    serving = ServingModel(model=model, tokenizer=tokenizer, chat_template=None, name="bench")
    worker = GenerationWorker(Engine(model, tokenizer, max_batch_size=max_batch_size), max_pending=256)
    app = create_app(serving, worker, ServerLimits(max_tokens=max_tokens))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)

    base_url = f"http://127.0.0.1:{port}"
    rows = []
    try:
        for num_clients in clients:

            async def run_all():
                tasks = [_client(base_url, "bench", requests_per_client, max_tokens) for _ in range(num_clients)]
                return sum(await asyncio.gather(*tasks))

            started = time.perf_counter()
            total_tokens = asyncio.run(run_all())
            elapsed = time.perf_counter() - started
            rows.append((num_clients, num_clients * requests_per_client, total_tokens, elapsed))
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    return rows


def _replay(worker: GenerationWorker, prompt_ids: list[int], lengths: list[int], gap_s: float) -> dict:
    """Submit one request every `gap_s` seconds; return latencies, time to first text and the total time."""
    submitted, first_text, finished = {}, {}, {}
    done = threading.Event()

    def on_update(update):
        now = time.perf_counter()
        if update.text:
            first_text.setdefault(update.request_id, now)
        if update.finish_reason is not None:
            finished[update.request_id] = now
            if len(finished) == len(lengths):
                done.set()

    started = time.perf_counter()
    for index, length in enumerate(lengths):
        delay = started + index * gap_s - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        params = SamplingParams(temperature=0.0, max_new_tokens=length, ignore_eos=True)
        request_id = f"r{index}"
        submitted[request_id] = time.perf_counter()
        worker.submit(GenerationRequest(prompt_ids, params, request_id=request_id, on_update=on_update))
    if not done.wait(timeout=1800):
        raise RuntimeError(f"only {len(finished)} of {len(lengths)} requests finished within 30 minutes")

    latencies = sorted(finished[request_id] - submitted[request_id] for request_id in submitted)
    waits = [first_text[request_id] - submitted[request_id] for request_id in submitted if request_id in first_text]
    return {
        "seconds": max(finished.values()) - started,
        "mean_latency": sum(latencies) / len(latencies),
        "p90_latency": latencies[int(0.9 * (len(latencies) - 1))],
        "mean_first_text": sum(waits) / len(waits),
    }


def bench_batching(model, tokenizer, num_requests: int, max_batch_size: int, gap_s: float, repeat: int):
    """Replay the same arrivals with static and continuous batching; keep each mode's best total time."""
    prompt_ids = tokenizer.encode(PROMPT)
    # Short and long requests alternate, so under static batching short ones wait for long ones.
    lengths = [(8, 64, 16, 48, 24, 96, 12, 32)[index % 8] for index in range(num_requests)]
    engine = Engine(model, tokenizer, max_batch_size=max_batch_size)
    engine.generate([GenerationRequest(prompt_ids, SamplingParams(temperature=0.0, max_new_tokens=4))])  # warm-up

    best: dict[str, dict] = {}
    for _ in range(repeat):
        for mode in ("static", "continuous"):
            worker = GenerationWorker(engine, max_pending=num_requests, continuous_batching=mode == "continuous")
            worker.start()
            try:
                measured = _replay(worker, prompt_ids, lengths, gap_s)
            finally:
                worker.close()
            if mode not in best or measured["seconds"] < best[mode]["seconds"]:
                best[mode] = measured
    return sum(lengths), best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="steel-small", help="model preset (default steel-small)")
    parser.add_argument("--ffn-type", default="soft_moe_causal", choices=["soft_moe_causal", "dense"])
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens decoded per prompt (default 64)")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts in the batched run (default 8)")
    parser.add_argument("--repeat", type=int, default=3, help="timed repeats; the best is kept (default 3)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8], help="concurrent clients (default 1 4 8)")
    parser.add_argument("--requests-per-client", type=int, default=2, help="requests each client sends (default 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--parts", nargs="+", default=["generation", "server", "batching"],
                        choices=["generation", "server", "batching"], help="parts to run (default: all three)")
    parser.add_argument("--batching-requests", type=int, default=16, help="requests in part 3 (default 16)")
    parser.add_argument("--arrival-gap-ms", type=float, default=100.0,
                        help="time between two arrivals in part 3, in ms (default 100)")
    args = parser.parse_args()

    from steel.tokenizer import load_tokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    tokenizer = load_tokenizer("qwen")
    model = build_model(args.preset, args.ffn_type, tokenizer.vocab_size)
    num_parameters = sum(parameter.numel() for parameter in model.parameters())
    print(f"model: {args.preset} ({args.ffn_type}), {num_parameters / 1e6:.1f}M parameters, "
          f"{torch.get_num_threads()} torch threads, prompt {len(tokenizer.encode(PROMPT))} tokens")

    if "generation" in args.parts:
        print(f"\n## Generation ({args.new_tokens} new tokens, greedy, best of {args.repeat})\n")
        rows = bench_generation(model, tokenizer, args.new_tokens, args.batch_size, args.repeat)
        baseline = rows[0][1]
        print("| measurement | tokens/s | ratio to transformers generate() |\n|---|---:|---:|")
        for name, rate in rows:
            print(f"| {name} | {rate:,.1f} | {rate / baseline:.2f} |")

    if "server" in args.parts:
        print(f"\n## Server ({args.requests_per_client} streaming chat requests per client, {args.new_tokens} tokens each)\n")
        server_rows = bench_server(
            model, tokenizer, args.clients, args.requests_per_client, args.new_tokens, args.batch_size
        )
        single_rate = server_rows[0][2] / server_rows[0][3]
        print("| clients | requests | completion tokens | seconds | tokens/s | ratio to 1 client |\n|---:|---:|---:|---:|---:|---:|")
        for num_clients, num_requests, tokens, elapsed in server_rows:
            rate = tokens / elapsed
            print(f"| {num_clients} | {num_requests} | {tokens} | {elapsed:.1f} | {rate:,.1f} | {rate / single_rate:.2f} |")

    if "batching" in args.parts:
        print(f"\n## Continuous against static batching ({args.batching_requests} requests, one every "
              f"{args.arrival_gap_ms:g} ms, max batch size {args.batch_size}, best of {args.repeat})\n")
        total_tokens, best = bench_batching(
            model, tokenizer, args.batching_requests, args.batch_size, args.arrival_gap_ms / 1000, args.repeat
        )
        static = best["static"]
        print("| batching | seconds | tokens/s | mean latency s | p90 latency s | mean time to first text s | "
              "tokens/s ratio to static |\n|---|---:|---:|---:|---:|---:|---:|")
        for mode in ("static", "continuous"):
            measured = best[mode]
            rate = total_tokens / measured["seconds"]
            print(f"| {mode} | {measured['seconds']:.1f} | {rate:,.1f} | {measured['mean_latency']:.2f} | "
                  f"{measured['p90_latency']:.2f} | {measured['mean_first_text']:.2f} | "
                  f"{static['seconds'] / measured['seconds']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
