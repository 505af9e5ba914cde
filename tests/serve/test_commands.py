"""`steel chat`, `steel generate` and `steel serve` on the tiny model; chat and serve run as real subprocesses."""

import os
import signal
import subprocess
import sys
import time

import httpx
import openai
import pytest

from steel.cli import main

from conftest import free_port

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"}


def steel(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "steel", *args],
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=ENV,
        timeout=180,
    )


def test_chat_repl_through_stdin(tiny_model_dir):
    script = "你好\n/reset\n天气怎么样？\n/nonsense\n/system 你是助手\n/exit\nhello\n"
    result = steel("chat", str(tiny_model_dir), "--temperature", "0", stdin=script)
    assert result.returncode == 0, result.stderr
    lines = [line.removeprefix(">>> ") for line in result.stdout.splitlines() if line.startswith(">>> ")]

    assert lines[0] == "你好，世界！"
    assert lines[1] == "(conversation cleared)"
    # After /reset the second question is answered as the first of a conversation.
    assert lines[2] == "今天天气很好。"
    assert lines[3] == "unknown command /nonsense"
    assert "(system prompt set to 你是助手; conversation cleared)" in result.stdout
    # The model learned an invented user turn after each reply; it must not be printed.
    assert "<|im_start|>" not in result.stdout
    assert "user" not in result.stdout
    # /exit ends the chat, so the line after it gets no reply.
    assert "Hi there!" not in result.stdout


def test_generate_continues_prompt(tiny_model_dir, capsys):
    # In-process: `steel chat` and `steel serve` already cover start-up in a subprocess.
    args = ["generate", str(tiny_model_dir), "--prompt", "钢铁", "--temperature", "0", "--max-new-tokens", "40"]
    assert main(args) == 0
    assert capsys.readouterr().out == "是这样炼成的。Steel is made like this.\n"


def test_generate_rejects_bad_options(tiny_model_dir):
    with pytest.raises(SystemExit) as raised:
        main(["generate", str(tiny_model_dir), "--prompt", "x", "--top-p", "0", "--top-k", "-1"])
    assert "top-p must be in (0, 1]" in str(raised.value)
    assert "top-k must be 0 (off) or positive" in str(raised.value)


def test_missing_model_is_clear_error(tmp_path):
    with pytest.raises(SystemExit) as raised:
        main(["chat", str(tmp_path / "absent")])
    assert "absent" in str(raised.value)
    assert "not found" in str(raised.value)


def test_serve_answers_openai_client(tiny_model_dir):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "steel", "serve", str(tiny_model_dir), "--port", str(port), "--name", "tiny"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        env=ENV,
    )
    try:
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline, "steel serve did not start within 120 s"
            try:
                if httpx.get(base_url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)

        client = openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0)
        messages = [{"role": "user", "content": "hello"}]
        completion = client.chat.completions.create(model="tiny", messages=messages, temperature=0)
        assert completion.choices[0].message.content == "Hi there!"
        assert "Steel" in httpx.get(base_url + "/").text
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)

    assert process.returncode == 0, output
    # Each request is logged with its id, token counts and latency.
    assert f"{completion.id} prompt_tokens={completion.usage.prompt_tokens} completion_tokens=" in output
    assert "latency=" in output


def test_generate_from_run_directory(tiny_model_dir, loaded, tmp_path, capsys):
    # A run directory as the trainer writes it: checkpoints/step-N with weights, config and tokenizer.
    import torch

    from steel.train import checkpoint
    from steel.train.distributed import DistributedEnv

    def write_tokenizer(directory):
        loaded.tokenizer.save_pretrained(directory / "tokenizer")
        return {"tokenizer": loaded.tokenizer.identity(), "tokenizer_spec": "tokenizer"}

    env = DistributedEnv(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
    optimizer = torch.optim.AdamW(loaded.model.parameters())
    run_dir = tmp_path / "run"
    checkpoint.save_checkpoint(
        run_dir, 7, loaded.model, optimizer, {"stage": "sft"}, env, keep_last=1, write_extra=write_tokenizer
    )

    assert main(["generate", str(run_dir), "--prompt", "钢铁", "--temperature", "0"]) == 0
    assert capsys.readouterr().out == "是这样炼成的。Steel is made like this.\n"

    from steel.serve.loading import load_for_serving

    serving = load_for_serving(str(run_dir))
    assert serving.provenance["kind"] == "checkpoint"
    assert serving.provenance["step"] == 7
    assert serving.name == "run"


@pytest.mark.parametrize("extra,continuous", [([], True), (["--static-batching"], False)], ids=["default", "static"])
def test_serve_batching_option(tiny_model_dir, monkeypatch, extra, continuous):
    # In-process with uvicorn.run replaced: the option only changes how the worker is built.
    import uvicorn

    apps = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: apps.append(app))

    assert main(["serve", str(tiny_model_dir), "--port", "0", *extra]) == 0

    assert len(apps) == 1
    assert apps[0].state.worker.continuous_batching is continuous
