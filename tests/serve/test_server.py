"""The OpenAI-compatible server, driven over real HTTP on 127.0.0.1 by the `openai` client and httpx."""

import json
import threading
import time

import httpx
import openai
import pytest

from steel.serve.decoding import REPLACEMENT_CHARACTER
from steel.serve.engine import FINISH_CANCELLED, Engine, GenerationWorker
from steel.serve.server import ServerLimits, create_app

from serve_testing import CONVERSATIONS, RunningServer

MAX_TOKENS_LIMIT = 4000


@pytest.fixture(scope="module")
def server(loaded):
    engine = Engine(loaded.model, loaded.tokenizer, max_batch_size=4)
    limits = ServerLimits(max_prompt_tokens=200, max_tokens=MAX_TOKENS_LIMIT, max_request_bytes=4096)
    app = create_app(loaded, GenerationWorker(engine, max_pending=16), limits)
    with RunningServer(app) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0, timeout=60)


def chat(client, loaded, text: str, **kwargs):
    messages = [{"role": "user", "content": text}]
    return client.chat.completions.create(model=loaded.name, messages=messages, temperature=0, **kwargs)


def post(server, path: str, body: bytes, **kwargs) -> httpx.Response:
    headers = {"content-type": "application/json"}
    return httpx.post(server.base_url + path, content=body, headers=headers, timeout=60, **kwargs)


def assert_openai_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    return error


def test_models_lists_served_model(client, loaded):
    models = client.models.list()
    assert [model.id for model in models.data] == [loaded.name]


def test_health_reports_ok(server):
    response = httpx.get(server.base_url + "/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_chat_completion_non_streaming(client, loaded):
    completion = chat(client, loaded, "你好")
    assert completion.choices[0].message.content == "你好，世界！"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.completion_tokens > 0
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


def test_chat_completion_streaming(client, loaded):
    chunks = list(chat(client, loaded, "你好", stream=True, stream_options={"include_usage": True}))
    deltas = [chunk.choices[0].delta.content for chunk in chunks if chunk.choices and chunk.choices[0].delta.content]
    finish_reasons = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices]

    # Every Chinese character of the reply spans several tokens; each arrives whole, once.
    assert len(deltas) >= 4
    assert all(REPLACEMENT_CHARACTER not in delta for delta in deltas)
    assert "".join(deltas) == "你好，世界！"
    assert finish_reasons[-1] == "stop"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage.completion_tokens > 0
    assert len({chunk.id for chunk in chunks}) == 1


def test_completion_non_streaming(client, loaded):
    completion = client.completions.create(model=loaded.name, prompt="钢铁", max_tokens=8, temperature=0)
    # Eight tokens end inside a character, which the text leaves out rather than show as U+FFFD.
    assert completion.choices[0].text == "是这样"
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 8


def test_completion_streaming(client, loaded):
    stream = client.completions.create(model=loaded.name, prompt="钢铁", max_tokens=40, temperature=0, stream=True)
    chunks = list(stream)
    text = "".join(chunk.choices[0].text for chunk in chunks)
    assert text == "是这样炼成的。Steel is made like this."
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_stop_sequence_and_extra_sampling_fields(client, loaded):
    completion = chat(client, loaded, "hello", stop=["there"], extra_body={"top_k": 5, "repetition_penalty": 1.0})
    assert completion.choices[0].message.content == "Hi "


def test_concurrent_requests_match_single(client, loaded):
    expected = {user: reply for user, reply in CONVERSATIONS}
    users = [user for user, _ in CONVERSATIONS] * 3
    replies: dict[int, str] = {}

    def ask(index: int, user: str) -> None:
        replies[index] = chat(client, loaded, user).choices[0].message.content

    threads = [threading.Thread(target=ask, args=(index, user)) for index, user in enumerate(users)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert [replies.get(index) for index in range(len(users))] == [expected[user] for user in users]


@pytest.mark.parametrize("body", [b"{not json", b'{"messages": [', b"\xff\xfe"], ids=["syntax", "truncated", "bytes"])
def test_malformed_json_gets_400(server, body):
    error = assert_openai_error(post(server, "/v1/chat/completions", body), 400)
    assert "JSON" in error["message"]


@pytest.mark.parametrize("body,field", [
    (b"[1, 2]", "body"),
    (b'{"messages": "hi"}', "messages"),
    (b'{"messages": [{"content": "hi"}]}', "role"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": "many"}', "max_tokens"),
], ids=["not-object", "messages-string", "missing-role", "max-tokens-string"])  # fmt: skip
def test_invalid_fields_get_422(server, body, field):
    error = assert_openai_error(post(server, "/v1/chat/completions", body), 422)
    assert field in error["message"]


CHAT_MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.mark.parametrize("path,fields,param,received", [
    ("/v1/chat/completions", {"max_tokens": "10"}, "max_tokens", '"10"'),
    ("/v1/chat/completions", {"max_tokens": 10.5}, "max_tokens", "10.5"),
    ("/v1/chat/completions", {"temperature": "0.5"}, "temperature", '"0.5"'),
    ("/v1/chat/completions", {"stream": "yes"}, "stream", '"yes"'),
    ("/v1/chat/completions", {"ignore_eos": 1}, "ignore_eos", "1"),
    ("/v1/chat/completions", {"seed": True}, "seed", "true"),
    ("/v1/chat/completions", {"stream_options": {"include_usage": "yes"}}, "stream_options.include_usage", '"yes"'),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "5"),
    ("/v1/completions", {"prompt": "hi", "top_k": "40"}, "top_k", '"40"'),
], ids=["max-tokens-string", "max-tokens-float", "temperature-string", "stream-string", "ignore-eos-int",
        "seed-bool", "include-usage-string", "content-int", "top-k-string"])  # fmt: skip
def test_loosely_typed_fields_get_422(server, path, fields, param, received):
    body = {"messages": CHAT_MESSAGES} if path == "/v1/chat/completions" else {}
    body.update(fields)

    error = assert_openai_error(post(server, path, json.dumps(body).encode()), 422)

    assert error["param"] == param
    assert error["code"] == "invalid_type"
    assert error["message"].startswith(f"{param}: ")
    assert f"got {received}" in error["message"]


def test_missing_field_names_param(server):
    error = assert_openai_error(post(server, "/v1/chat/completions", b'{"messages": [{"content": "hi"}]}'), 422)

    assert error["param"] == "messages[0].role"
    assert error["code"] == "missing_required_parameter"


def test_union_field_error_is_one_clause(server):
    body = {"messages": CHAT_MESSAGES, "stop": 5}

    error = assert_openai_error(post(server, "/v1/chat/completions", json.dumps(body).encode()), 422)

    assert error["param"] == "stop"
    assert error["message"] == "stop: Input should be a valid string or a valid list, got 5"


def test_integer_temperature_is_accepted(server):
    body = {"messages": CHAT_MESSAGES, "temperature": 0, "top_p": 1, "repetition_penalty": 1, "max_tokens": 3}

    response = post(server, "/v1/chat/completions", json.dumps(body).encode())

    assert response.status_code == 200
    assert response.json()["usage"]["completion_tokens"] <= 3


def test_prompt_over_limit_gets_400(client, loaded):
    with pytest.raises(openai.BadRequestError) as raised:
        chat(client, loaded, "钢铁" * 100)
    assert raised.value.code == "context_length_exceeded"
    assert "200" in raised.value.message


def test_max_tokens_over_limit_gets_400(client, loaded):
    with pytest.raises(openai.BadRequestError) as raised:
        chat(client, loaded, "你好", max_tokens=MAX_TOKENS_LIMIT + 1)
    assert raised.value.param == "max_tokens"


def test_body_over_limit_gets_413(server):
    big = json.dumps({"messages": [{"role": "user", "content": "x" * 5000}]}).encode()
    assert_openai_error(post(server, "/v1/chat/completions", big), 413)

    # A chunked upload without Content-Length is limited as well.
    chunked = post(server, "/v1/chat/completions", iter([big[:3000], big[3000:]]))
    assert_openai_error(chunked, 413)


@pytest.mark.parametrize("extra,param", [
    ({"n": 2}, "n"),
    ({"logprobs": True}, "logprobs"),
    ({"temperature": -1}, None),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages"),
], ids=["n", "logprobs", "temperature", "no-messages", "tool-role"])  # fmt: skip
def test_unsupported_values_get_400(server, extra, param):
    body = {"messages": [{"role": "user", "content": "hi"}], **extra}
    error = assert_openai_error(post(server, "/v1/chat/completions", json.dumps(body).encode()), 400)
    assert error["param"] == param


def test_empty_prompt_gets_400(server):
    error = assert_openai_error(post(server, "/v1/completions", b'{"prompt": ""}'), 400)
    assert error["param"] == "prompt"


def test_gbk_body_gets_400(server):
    body = json.dumps({"messages": [{"role": "user", "content": "你好"}]}, ensure_ascii=False).encode("gbk")
    error = assert_openai_error(post(server, "/v1/chat/completions", body), 400)
    assert "not valid UTF-8" in error["message"]
    assert error["code"] == "invalid_encoding"


@pytest.mark.parametrize("path,body,param,field", [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "\udcff"}]}, "messages", "messages[0].content"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "text", "text": "a\ud800"}]}]},
     "messages", "messages[0].content"),
    ("/v1/completions", {"prompt": "ok \udcff"}, "prompt", "prompt"),
    ("/v1/completions", {"prompt": ["\udcff"]}, "prompt", "prompt[0]"),
], ids=["chat", "chat-parts", "completion", "completion-list"])
def test_lone_surrogate_gets_400(server, path, body, param, field):
    # json.dumps writes a lone surrogate as the escape \udcff, which is valid JSON.
    error = assert_openai_error(post(server, path, json.dumps(body).encode()), 400)
    assert error["param"] == param
    assert error["code"] == "invalid_encoding"
    assert error["message"].startswith(f"{field} is not valid Unicode text")


def test_unknown_model_gets_404(client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hi"}])


def test_unknown_route_gets_openai_error(server):
    assert_openai_error(httpx.get(server.base_url + "/v1/nothing"), 404)


def test_disconnect_stops_generation(server, loaded):
    worker = server.app.state.worker
    body = {
        "model": loaded.name,
        "prompt": "钢铁",
        "max_tokens": MAX_TOKENS_LIMIT - 10,
        "ignore_eos": True,
        "stream": True,
    }
    with httpx.Client(base_url=server.base_url, timeout=60) as http:
        with http.stream("POST", "/v1/completions", json=body) as response:
            assert response.status_code == 200
            first_event = next(line for line in response.iter_lines() if line.startswith("data: "))
    request_id = json.loads(first_event.removeprefix("data: "))["id"]

    deadline = time.monotonic() + 60
    result = None
    while result is None and time.monotonic() < deadline:
        result = next((r for r in list(worker.recent) if r.request_id == request_id), None)
        time.sleep(0.05)
    assert result is not None, "the request did not finish after its client disconnected"
    assert result.finish_reason == FINISH_CANCELLED
    assert result.completion_tokens < MAX_TOKENS_LIMIT - 10


def test_index_page_has_no_external_assets(server):
    response = httpx.get(server.base_url + "/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "/v1/chat/completions" in page
    for marker in ("http://", "https://", "//cdn", "@import"):
        assert marker not in page


def test_full_queue_gets_503(loaded):
    # One request runs, one waits in a queue of size 1, and the third is turned away.
    hook = loaded.model.register_forward_hook(lambda *_: time.sleep(0.02))
    worker = GenerationWorker(Engine(loaded.model, loaded.tokenizer, max_batch_size=1), max_pending=1)
    running_body = {"prompt": "钢铁", "max_tokens": 500, "ignore_eos": True, "stream": True}
    waiting_body = {"prompt": "钢铁", "max_tokens": 2}
    server = RunningServer(create_app(loaded, worker))
    try:
        with server, httpx.Client(base_url=server.base_url, timeout=60) as http:
            with http.stream("POST", "/v1/completions", json=running_body) as running:
                # Keep the line iterator referenced: once it is garbage-collected, httpx closes the stream.
                lines = running.iter_lines()
                next(line for line in lines if line.startswith("data: "))

                url = server.base_url + "/v1/completions"
                waiting = threading.Thread(target=httpx.post, args=(url,), kwargs={"json": waiting_body, "timeout": 60})
                waiting.start()
                deadline = time.monotonic() + 30
                while worker.num_pending < 1 and time.monotonic() < deadline:
                    time.sleep(0.01)

                assert worker.num_pending == 1
                rejected = http.post("/v1/completions", json=waiting_body)
            waiting.join(timeout=60)
    finally:
        hook.remove()

    error = assert_openai_error(rejected, 503)
    assert error["code"] == "server_busy"
