"""`steel chat`, `steel generate` and `steel serve` on the tiny model; chat and serve run as real subprocesses."""

import io
import os
import signal
import subprocess
import sys
import time

import httpx
import openai
import pytest

from steel.cli import main

from serve_testing import free_port

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
    assert "Uvicorn running on" in output
    assert "\x1b[" not in output  # no colour codes in a redirected log


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
    # The directory is named `run`, so the id is the parent's name and the recorded stage.
    assert serving.name == f"{tmp_path.name}-sft"


@pytest.mark.parametrize("extra,continuous", [([], True), (["--static-batching"], False)], ids=["default", "static"])
def test_serve_batching_option(tiny_model_dir, monkeypatch, extra, continuous):
    # In-process with uvicorn.run replaced: the option only changes how the worker is built.
    import uvicorn

    apps = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: apps.append(app))

    assert main(["serve", str(tiny_model_dir), "--port", "0", *extra]) == 0

    assert len(apps) == 1
    assert apps[0].state.worker.continuous_batching is continuous


GBK_HELLO = "你好\n".encode("gbk")


def _stdin(data: bytes, errors: str) -> io.TextIOWrapper:
    return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors=errors)


@pytest.mark.parametrize("errors", ["strict", "surrogateescape"])
def test_generate_rejects_gbk_stdin(tmp_path, monkeypatch, capsys, errors):
    # The model path does not exist: the input is checked before any model loads.
    monkeypatch.setattr(sys, "stdin", _stdin(GBK_HELLO, errors))
    with pytest.raises(SystemExit) as raised:
        main(["generate", str(tmp_path / "absent"), "--prompt", "-"])
    assert raised.value.code == 2
    message = capsys.readouterr().err
    assert "standard input is not valid UTF-8 (byte 0xc4" in message
    assert "iconv" in message


def test_generate_rejects_gbk_argument(tmp_path, capsys):
    # Python decodes a command-line argument's invalid bytes with surrogateescape.
    prompt = GBK_HELLO.decode("utf-8", "surrogateescape")
    for option in ("--prompt", "--stop"):
        arguments = ["--prompt", prompt] if option == "--prompt" else ["--prompt", "ok", "--stop", prompt]
        with pytest.raises(SystemExit) as raised:
            main(["generate", str(tmp_path / "absent"), *arguments])
        assert raised.value.code == 2
        assert f"{option} is not valid UTF-8 (byte 0xc4 at character 0)" in capsys.readouterr().err


def test_generate_gbk_subprocess_exits_2(tiny_model_dir):
    # Real bytes through a real pipe, decoded by the interpreter's own standard input.
    result = subprocess.run(
        [sys.executable, "-m", "steel", "generate", str(tiny_model_dir), "--prompt", "-"],
        input=GBK_HELLO, capture_output=True, env=ENV, timeout=180,
    )
    assert result.returncode == 2
    assert b"standard input is not valid UTF-8" in result.stderr
    assert b"Traceback" not in result.stderr


@pytest.mark.parametrize("arguments,source", [(["--prompt", ""], "with --prompt"), (["--prompt", "-"], "on standard input")])
def test_generate_empty_prompt_before_load(tmp_path, monkeypatch, capsys, arguments, source):
    monkeypatch.setattr(sys, "stdin", _stdin(b"", "strict"))
    with pytest.raises(SystemExit) as raised:
        main(["generate", str(tmp_path / "absent"), *arguments])
    assert raised.value.code == 2
    assert f"the prompt is empty; pass some text {source}" in capsys.readouterr().err


def test_chat_gbk_stdin_exits_2(tiny_model_dir, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", _stdin("hello\n".encode() + GBK_HELLO, "surrogateescape"))
    assert main(["chat", str(tiny_model_dir), "--temperature", "0"]) == 2
    captured = capsys.readouterr()
    # The valid first line gets its reply before the invalid second line ends the chat.
    assert "Hi there!" in captured.out
    assert "steel chat: standard input is not valid UTF-8 (byte 0xc4" in captured.err


def test_chat_gbk_system_rejected(tmp_path, capsys):
    system = GBK_HELLO.decode("utf-8", "surrogateescape")
    with pytest.raises(SystemExit) as raised:
        main(["chat", str(tmp_path / "absent"), "--system", system])
    assert raised.value.code == 2
    assert "--system is not valid UTF-8" in capsys.readouterr().err


def test_chat_terminal_skips_invalid_line(loaded, monkeypatch):
    # At a terminal, an invalid line gets a message and the conversation goes on.
    from steel.serve.chat import run_chat
    from steel.serve.engine import Engine
    from steel.serve.sampling import SamplingParams

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    lines = iter(["\udcc4\udce3", "hello"])

    def fake_input(prompt):
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    monkeypatch.setattr("builtins.input", fake_input)
    stdout = io.StringIO()
    engine = Engine(loaded.model, loaded.tokenizer)
    assert run_chat(engine, SamplingParams(temperature=0, max_new_tokens=20), stdin=Terminal(), stdout=stdout) == 0
    output = stdout.getvalue()
    assert "the terminal input is not valid UTF-8 (byte 0xc4 at character 0)" in output
    assert "This line is skipped." in output
    assert "Hi there!" in output


@pytest.mark.parametrize("parts,stage,expected", [
    (("runs", "sft"), "sft", "sft"),
    (("demo-run", "sft", "run"), "sft", "sft"),
    (("base", "run"), "pretrain", "base-pretrain"),
    (("base", "run"), None, "base"),
    (("exports", "chat", "model"), "dpo", "chat-dpo"),
    (("demo-run", "sft", "run", "checkpoints", "step-00000007"), "sft", "sft-step-00000007"),
], ids=["plain", "demo", "stage-added", "no-stage", "export", "checkpoint"])
def test_default_model_name(tmp_path, parts, stage, expected):
    from steel.serve.loading import default_model_name

    directory = tmp_path.joinpath(*parts)
    directory.mkdir(parents=True)
    if "checkpoints" in parts:
        (directory / "checkpoint.json").write_text("{}")
    assert default_model_name(str(directory), {"stage": stage}) == expected


@pytest.mark.parametrize("port", ["99999", "-1", "http"])
def test_serve_rejects_invalid_port(tmp_path, capsys, port):
    with pytest.raises(SystemExit) as raised:
        main(["serve", str(tmp_path / "absent"), "--port", port])
    assert raised.value.code == 2
    assert "argument --port: invalid port" in capsys.readouterr().err


def test_serve_busy_port_fails_before_load(tmp_path):
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        # The model path does not exist, so reaching the loader would give another message.
        with pytest.raises(SystemExit) as raised:
            main(["serve", str(tmp_path / "absent"), "--port", str(port)])
    message = str(raised.value)
    assert f"cannot listen on 127.0.0.1:{port}" in message
    assert "--port" in message
