"""An OpenAI-compatible HTTP API and the web chat page, served by FastAPI.

Routes: `GET /v1/models`, `POST /v1/chat/completions`, `POST /v1/completions` (both with
server-sent events when `stream` is true), `GET /health` and the chat page at `/`. Errors use
OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``. Besides OpenAI's fields, a
request may set `top_k`, `repetition_penalty` and `ignore_eos`, as vLLM's API does.
"""

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from steel.serve.engine import (
    FINISH_CANCELLED,
    FINISH_ERROR,
    GenerationRequest,
    GenerationUpdate,
    GenerationWorker,
    ServerBusy,
)
from steel.serve.loading import ServingModel
from steel.serve.sampling import SamplingParams
from steel.tokenizer import find_lone_surrogate
from steel.tokenizer.chat import encode_chat

logger = logging.getLogger(__name__)

# How often a request waiting for tokens checks whether its client is still connected, in seconds.
DISCONNECT_POLL_SECONDS = 0.25


@dataclass
class ServerLimits:
    """Per-request limits; a request beyond one gets a 4xx error that names the limit."""

    max_prompt_tokens: int | None = None
    """Maximum prompt length in tokens; None means the model's context length minus one."""

    max_tokens: int = 1024
    """Maximum `max_tokens` of a request, and the default for a request without one."""

    max_request_bytes: int = 1 << 20
    """Maximum size of a request body in bytes."""

    max_pending: int = 64
    """Maximum number of requests waiting for the model; more get 503."""


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code


ERROR_TYPES = {400: "invalid_request_error", 404: "not_found_error", 413: "invalid_request_error",
               422: "invalid_request_error", 503: "server_busy_error"}  # fmt: skip


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    error_type = ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def error_response(status: int, message: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, param, code), status_code=status)


# Request bodies. Unknown fields are accepted and ignored because OpenAI clients send many optional
# ones. Known fields that would change the output and that Steel cannot honour are rejected.
# Known fields are strict: "10" is not an integer and "yes" is not a boolean.
# Pydantic's strict mode still accepts an integer for a float field, so temperature 1 is valid.


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    include_usage: bool = False


class _GenerationFields(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    model: str | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logprobs: bool | int | None = None
    ignore_eos: bool = False


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    role: str
    content: str | list[dict] | None = None


class ChatCompletionRequest(_GenerationFields):
    messages: list[ChatMessage]


class CompletionRequest(_GenerationFields):
    prompt: str | list[str] | list[int]
    echo: bool = False
    suffix: str | None = None


class BodySizeLimit:
    """ASGI middleware that returns 413 for a request body larger than `max_bytes`, and 400 for one
    that is not valid UTF-8 (JSON requires UTF-8, and FastAPI's own reply names no cause).

    It reads the body before the route does, so a chunked upload without Content-Length is
    bounded too. Later `receive` calls go to the server, so the route still receives a disconnect.
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return

        message = f"the request body is larger than the limit of {self.max_bytes} bytes"
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(scope, receive, send, message)
            return

        chunks, size = [], 0
        while True:
            event = await receive()
            if event["type"] == "http.disconnect":
                return
            chunks.append(event.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._reject(scope, receive, send, message)
                return
            if not event.get("more_body", False):
                break

        body = b"".join(chunks)
        invalid_utf8 = _invalid_utf8_message(body)
        if invalid_utf8 is not None:
            logger.warning("%s %s -> 400: %s", scope["method"], scope["path"], invalid_utf8)
            await error_response(400, invalid_utf8, code="invalid_encoding")(scope, receive, send)
            return

        body_sent = False

        async def replay():
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _reject(scope, receive, send, message: str) -> None:
        logger.warning("%s %s -> 413: %s", scope["method"], scope["path"], message)
        await error_response(413, message, code="request_too_large")(scope, receive, send)


def _invalid_utf8_message(body: bytes) -> str | None:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as error:
        return (
            f"the request body is not valid JSON: byte 0x{body[error.start]:02x} at offset {error.start} "
            "is not valid UTF-8; encode the body as UTF-8"
        )
    return None


def create_app(serving: ServingModel, worker: GenerationWorker, limits: ServerLimits | None = None) -> FastAPI:
    """Build the application; the worker starts with the app's lifespan and stops with it."""
    limits = limits or ServerLimits()
    engine = worker.engine
    context = engine.context_length
    max_prompt_tokens = limits.max_prompt_tokens or (context - 1 if context else 4096)
    if context:
        max_prompt_tokens = min(max_prompt_tokens, context - 1)
    created = int(time.time())

    async def lifespan(app):
        worker.start()
        batching = "continuous" if worker.continuous_batching else "static"
        logger.info(
            "serving %s (context length %s, max batch size %d, %s batching)", serving.name, context, engine.max_batch_size, batching
        )
        yield
        worker.close()

    app = FastAPI(title="Steel", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.add_middleware(BodySizeLimit, max_bytes=limits.max_request_bytes)
    app.state.worker = worker
    app.state.limits = limits
    _add_error_handlers(app)

    @app.get("/", response_class=HTMLResponse)
    async def index():
        page = resources.files("steel.serve").joinpath("static/index.html").read_text(encoding="utf-8")
        return HTMLResponse(page)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": serving.name, "pending_requests": worker.num_pending}

    @app.get("/v1/models")
    async def list_models():
        model = {"id": serving.name, "object": "model", "created": created, "owned_by": "steel"}
        return {"object": "list", "data": [model]}

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, http_request: Request):
        _check_common(body, serving.name)
        messages = _chat_messages(body.messages)
        try:
            prompt_ids, _ = await run_in_threadpool(encode_chat, serving.tokenizer, messages, True)
        except ValueError as error:
            raise APIError(400, str(error), param="messages") from None
        generation = _prepare(body, prompt_ids, "chatcmpl")
        return await _respond(generation, http_request, chat=True)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, http_request: Request):
        _check_common(body, serving.name)
        if body.echo or body.suffix:
            raise APIError(400, "echo and suffix are not supported", param="echo" if body.echo else "suffix")
        prompt_ids = await run_in_threadpool(_completion_prompt_ids, body.prompt, serving.tokenizer, engine.vocab_size)
        generation = _prepare(body, prompt_ids, "cmpl")
        return await _respond(generation, http_request, chat=False)

    def _prepare(body: _GenerationFields, prompt_ids: list[int], id_prefix: str) -> "_Generation":
        if not prompt_ids:
            raise APIError(400, "the prompt is empty; send at least one token of text", param="prompt")
        if len(prompt_ids) > max_prompt_tokens:
            raise APIError(
                400,
                f"the prompt has {len(prompt_ids)} tokens, more than the limit of {max_prompt_tokens}; shorten it",
                param="messages" if id_prefix == "chatcmpl" else "prompt",
                code="context_length_exceeded",
            )
        params = _sampling_params(body, len(prompt_ids), limits.max_tokens, context)
        request_id = f"{id_prefix}-{uuid.uuid4().hex[:24]}"
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        return _Generation(request_id, prompt_ids, params, body.stream, include_usage)

    async def _respond(generation: "_Generation", http_request: Request, chat: bool):
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[GenerationUpdate] = asyncio.Queue()

        def on_update(update: GenerationUpdate) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, update)
            except RuntimeError:  # the event loop has closed: the server is shutting down
                pass

        request = GenerationRequest(generation.prompt_ids, generation.params, generation.request_id, on_update)
        try:
            worker.submit(request)
        except ServerBusy as error:
            raise APIError(503, str(error), code="server_busy") from None

        formatter = _ChunkFormatter(generation.request_id, serving.name, chat)
        if generation.stream:
            stream = _stream_events(request, events, http_request, formatter, generation)
            return StreamingResponse(stream, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        return await _collect(request, events, http_request, formatter, generation)

    return app


@dataclass
class _Generation:
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    stream: bool
    include_usage: bool
    started: float = 0.0

    def __post_init__(self):
        self.started = time.perf_counter()


class _ChunkFormatter:
    """Build OpenAI response objects for chat or text completions."""

    def __init__(self, request_id: str, model: str, chat: bool):
        self.request_id = request_id
        self.model = model
        self.chat = chat
        self.created = int(time.time())

    def _envelope(self, object_name: str, choices: list, usage: dict | None = None) -> dict:
        body = {"id": self.request_id, "object": object_name, "created": self.created, "model": self.model}
        body["choices"] = choices
        if usage is not None:
            body["usage"] = usage
        return body

    def chunk(self, text: str | None, finish_reason: str | None, first: bool = False) -> dict:
        if self.chat:
            if first:
                delta = {"role": "assistant", "content": ""}
            else:
                delta = {"content": text} if text else {}
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return self._envelope("chat.completion.chunk", [choice])
        choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
        return self._envelope("text_completion", [choice])

    def usage_chunk(self, usage: dict) -> dict:
        return self._envelope("chat.completion.chunk" if self.chat else "text_completion", [], usage)

    def completion(self, text: str, finish_reason: str, usage: dict) -> dict:
        if self.chat:
            message = {"role": "assistant", "content": text}
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
            return self._envelope("chat.completion", [choice], usage)
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        return self._envelope("text_completion", [choice], usage)


def _usage(update: GenerationUpdate) -> dict:
    total = update.prompt_tokens + update.completion_tokens
    return {"prompt_tokens": update.prompt_tokens, "completion_tokens": update.completion_tokens, "total_tokens": total}


def _log_finished(generation: _Generation, update: GenerationUpdate) -> None:
    latency = time.perf_counter() - generation.started
    log = logger.warning if update.finish_reason == FINISH_ERROR else logger.info
    log(
        "%s prompt_tokens=%d completion_tokens=%d finish_reason=%s latency=%.3fs%s",
        generation.request_id,
        update.prompt_tokens,
        update.completion_tokens,
        update.finish_reason,
        latency,
        f" error={update.error}" if update.error else "",
    )


async def _next_update(request: GenerationRequest, events: asyncio.Queue, http_request: Request):
    """Wait for the next update; cancel the request and return None once the client has gone."""
    while True:
        try:
            return await asyncio.wait_for(events.get(), timeout=DISCONNECT_POLL_SECONDS)
        except TimeoutError:
            if await http_request.is_disconnected():
                request.cancel()
                logger.info("%s client disconnected; generation cancelled", request.request_id)
                return None


def _sse(payload: dict | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n"


async def _stream_events(request, events, http_request, formatter: _ChunkFormatter, generation: _Generation):
    try:
        if formatter.chat:
            yield _sse(formatter.chunk(None, None, first=True))
        while True:
            update = await _next_update(request, events, http_request)
            if update is None:
                return
            if update.text:
                yield _sse(formatter.chunk(update.text, None))
            if update.finish_reason is None:
                continue

            _log_finished(generation, update)
            if update.finish_reason == FINISH_ERROR:
                yield _sse(error_body(500, f"generation failed: {update.error}", code="generation_failed"))
                return
            if update.finish_reason == FINISH_CANCELLED:
                return
            yield _sse(formatter.chunk(None, update.finish_reason))
            if generation.include_usage:
                yield _sse(formatter.usage_chunk(_usage(update)))
            yield _sse("[DONE]")
            return
    finally:
        # Also runs when the client disconnects mid-stream and the server closes this generator.
        # Cancelling a finished request does nothing.
        request.cancel()


async def _collect(request, events, http_request, formatter: _ChunkFormatter, generation: _Generation):
    parts = []
    while True:
        update = await _next_update(request, events, http_request)
        if update is None:
            return error_response(499, "the client closed the connection", code="client_closed_request")
        parts.append(update.text)
        if update.finish_reason is not None:
            break

    _log_finished(generation, update)
    if update.finish_reason == FINISH_ERROR:
        return error_response(500, f"generation failed: {update.error}", code="generation_failed")
    if update.finish_reason == FINISH_CANCELLED:
        return error_response(503, "the server is shutting down; the request was cancelled", code="cancelled")
    return JSONResponse(formatter.completion("".join(parts), update.finish_reason, _usage(update)))


def _check_common(body: _GenerationFields, served_name: str) -> None:
    if body.model is not None and body.model != served_name:
        raise APIError(404, f"model {body.model!r} not found; this server serves {served_name!r}", "model", "model_not_found")
    if body.n not in (None, 1):
        raise APIError(400, f"n={body.n} is not supported; send n=1 or leave it out", param="n")
    if body.logprobs:
        raise APIError(400, "logprobs are not supported", param="logprobs")
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(body, name):
            raise APIError(400, f"{name} is not supported; use repetition_penalty", param=name)


def _chat_messages(messages: list[ChatMessage]) -> list[dict[str, str]]:
    if not messages:
        raise APIError(400, "messages must contain at least one message", param="messages")
    converted = []
    for index, message in enumerate(messages):
        # OpenAI's newer "developer" role plays the part of the system message.
        role = "system" if message.role == "developer" else message.role
        if role not in ("system", "user", "assistant"):
            raise APIError(400, f"messages[{index}].role {message.role!r} is not supported; use system, user or assistant", "messages")
        text = _message_text(message.content, index)
        _check_text(text, f"messages[{index}].content", "messages")
        converted.append({"role": role, "content": text})
    return converted


def _check_text(text: str, field: str, param: str) -> None:
    """Reject text with a lone surrogate, such as JSON's "\\udcff" escape, because no tokenizer can encode it."""
    position = find_lone_surrogate(text)
    if position is not None:
        raise APIError(
            400,
            f"{field} is not valid Unicode text: character {position} is the lone surrogate "
            f"{ascii(text[position])}; send the text itself, encoded as UTF-8",
            param=param,
            code="invalid_encoding",
        )


def _message_text(content: str | list[dict] | None, index: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for part in content:
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise APIError(400, f"messages[{index}].content: only text parts are supported, got {part.get('type')!r}", "messages")
        texts.append(part["text"])
    return "".join(texts)


def _completion_prompt_ids(prompt: str | list, tokenizer, vocab_size: int) -> list[int]:
    if isinstance(prompt, str):
        _check_text(prompt, "prompt", "prompt")
        return tokenizer.encode(prompt)
    if prompt and all(isinstance(item, int) for item in prompt):
        invalid = [token_id for token_id in prompt if not 0 <= token_id < vocab_size]
        if invalid:
            raise APIError(400, f"prompt token ids {invalid[:5]} are outside the vocabulary [0, {vocab_size})", "prompt")
        return list(prompt)
    if len(prompt) == 1:
        _check_text(prompt[0], "prompt[0]", "prompt")
        return tokenizer.encode(prompt[0])
    raise APIError(400, f"send one prompt per request, got {len(prompt)}", param="prompt")


def _sampling_params(body: _GenerationFields, num_prompt_tokens: int, max_tokens_limit: int, context: int | None) -> SamplingParams:
    room = context - num_prompt_tokens if context else max_tokens_limit
    requested = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    if requested is None:
        max_new_tokens = min(max_tokens_limit, room)
    elif requested > max_tokens_limit:
        raise APIError(400, f"max_tokens={requested} is more than this server's limit of {max_tokens_limit}", "max_tokens")
    elif requested > room:
        raise APIError(
            400,
            f"the context length is {context} tokens, but the prompt has {num_prompt_tokens} and max_tokens is "
            f"{requested}; lower max_tokens or shorten the prompt",
            "max_tokens",
            "context_length_exceeded",
        )
    else:
        max_new_tokens = requested

    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    params = SamplingParams(
        max_new_tokens=max_new_tokens,
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        top_k=body.top_k or 0,
        repetition_penalty=1.0 if body.repetition_penalty is None else body.repetition_penalty,
        seed=body.seed,
        stop=stop,
        ignore_eos=body.ignore_eos,
    )
    problems = params.problems()
    if problems:
        raise APIError(400, "; ".join(problems).replace("max_new_tokens", "max_tokens"))
    return params


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, error: APIError):
        logger.warning("%s %s -> %d: %s", request.method, request.url.path, error.status, error.message)
        return error_response(error.status, error.message, error.param, error.code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError):
        problems = error.errors()
        if any(problem.get("type") == "json_invalid" for problem in problems):
            status, message, param = 400, "the request body is not valid JSON", None
        else:
            status = 422
            message, param = _describe_validation_problems(problems)
        code = None
        if param is not None:
            code = "missing_required_parameter" if problems[0].get("type") == "missing" else "invalid_type"
        logger.warning("%s %s -> %d: %s", request.method, request.url.path, status, message)
        return error_response(status, message, param, code)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        logger.warning("%s %s -> %d: %s", request.method, request.url.path, error.status_code, error.detail)
        return error_response(error.status_code, str(error.detail))

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, error: Exception):
        logger.exception("%s %s failed", request.method, request.url.path)
        return error_response(500, f"internal error: {type(error).__name__}", code="internal_error")


# Pydantic adds the member type of a union ("str", "list[str]") to the location of each member's
# error. These parts are not fields, so the field path leaves them out.
_UNION_MEMBER_NAMES = frozenset({"str", "int", "float", "bool", "dict", "list", "none"})
MAX_REPORTED_PROBLEMS = 10


def _field_path(location: tuple) -> str:
    """Format a pydantic error location as `messages[0].role`, or `body` for the whole body."""
    path = ""
    for part in location:
        if part == "body" and not path:
            continue
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in _UNION_MEMBER_NAMES or not part.isidentifier():
            continue
        else:
            path += f".{part}" if path else part
    return path or "body"


def _json_excerpt(value, limit: int = 60) -> str:
    """Show a received value as JSON, so that "10" reads as a string and 10 as a number."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _join_reasons(messages: list[str]) -> str:
    """Join the messages of a union's members: "Input should be a valid string or a valid list"."""
    unique = list(dict.fromkeys(messages))
    prefix = "Input should be "
    if len(unique) > 1 and all(message.startswith(prefix) for message in unique):
        return prefix + " or ".join(message[len(prefix):] for message in unique)
    return " or ".join(unique)


def _describe_validation_problems(problems: list[dict]) -> tuple[str, str]:
    """Join the problems into one message, one clause per field, and return it with the first field."""
    if not problems:
        return "the request body is invalid", "body"
    by_path: dict[str, list[dict]] = {}
    for problem in problems:
        by_path.setdefault(_field_path(problem["loc"]), []).append(problem)

    clauses = []
    for path, field_problems in list(by_path.items())[:MAX_REPORTED_PROBLEMS]:
        reasons = _join_reasons([problem["msg"] for problem in field_problems])
        first = field_problems[0]
        if first.get("type") == "missing":
            clauses.append(f"{path}: {reasons}")
        else:
            clauses.append(f"{path}: {reasons}, got {_json_excerpt(first.get('input'))}")
    return "; ".join(clauses), next(iter(by_path))
