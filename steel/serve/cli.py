"""`steel generate`, `steel chat` and `steel serve`."""

import argparse
import ipaddress
import logging
import socket
import sys
from typing import NoReturn

from steel.serve.sampling import SamplingParams

logger = logging.getLogger(__name__)


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a run directory, a checkpoint directory or an exported model directory")
    parser.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda:0 (default: cuda when available)")
    parser.add_argument(
        "--dtype", choices=["float32", "bfloat16", "float16"], default=None, help="dtype of the weights (default float32)"
    )


def _add_sampling_arguments(parser: argparse.ArgumentParser, max_new_tokens: int) -> None:
    group = parser.add_argument_group("sampling")
    group.add_argument("--temperature", type=float, default=0.7, help="softmax temperature; 0 = greedy (default 0.7)")
    group.add_argument("--top-p", type=float, default=0.9, help="nucleus sampling probability mass (default 0.9)")
    group.add_argument("--top-k", type=int, default=0, help="keep only the k most likely tokens; 0 = off (default)")
    group.add_argument(
        "--repetition-penalty", type=float, default=1.0, help="penalty for tokens already seen; 1.0 = off (default)"
    )
    group.add_argument(
        "--max-new-tokens", type=int, default=max_new_tokens, help=f"maximum tokens per reply (default {max_new_tokens})"
    )
    group.add_argument("--seed", type=int, default=None, help="random seed for reproducible sampling")


def _sampling_params(args: argparse.Namespace, stop: tuple[str, ...] = ()) -> SamplingParams:
    params = SamplingParams(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
        stop=stop,
    )
    problems = params.problems()
    if problems:
        options = "; ".join(problem.replace("_", "-") for problem in problems)
        raise SystemExit(f"invalid sampling options: {options}")
    return params


def _load(args: argparse.Namespace, name: str | None = None):
    from steel.serve.loading import load_for_serving

    try:
        return load_for_serving(args.model, name=name, dtype=args.dtype, device=args.device)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"cannot load {args.model}: {error}") from None


def _engine(serving, max_batch_size: int = 1):
    from steel.serve.engine import Engine

    return Engine(serving.model, serving.tokenizer, max_batch_size=max_batch_size)


def generate_parser(parser: argparse.ArgumentParser) -> None:
    _add_model_arguments(parser)
    parser.add_argument("--prompt", required=True, help="text to continue; '-' reads it from standard input")
    parser.add_argument("--stop", action="append", default=[], help="stop at this string (repeatable)")
    _add_sampling_arguments(parser, max_new_tokens=128)


def _exit_invalid_input(message: str) -> NoReturn:
    """Print a usage error and exit with code 2, as argparse does for invalid arguments."""
    print(message, file=sys.stderr)
    raise SystemExit(2)


def _read_prompt(args: argparse.Namespace) -> str:
    from steel.tokenizer.user_text import InvalidTextError, check_text, read_all

    try:
        if args.prompt == "-":
            prompt = read_all(sys.stdin)
        else:
            prompt = check_text(args.prompt, "--prompt")
        for stop in args.stop:
            check_text(stop, "--stop")
    except InvalidTextError as error:
        _exit_invalid_input(f"steel generate: {error}")
    if not prompt:
        source = "on standard input" if args.prompt == "-" else "with --prompt"
        _exit_invalid_input(f"steel generate: the prompt is empty; pass some text {source}")
    return prompt


def generate(args: argparse.Namespace) -> int:
    """Continue a prompt with a base model, streaming the text to standard output."""
    from steel.serve.engine import FINISH_ERROR, GenerationRequest

    prompt = _read_prompt(args)
    params = _sampling_params(args, stop=tuple(args.stop))
    serving = _load(args)
    engine = _engine(serving)

    prompt_ids = serving.tokenizer.encode(prompt)
    if not prompt_ids:
        raise SystemExit("the prompt is empty; pass some text with --prompt")

    def write(update) -> None:
        sys.stdout.write(update.text)
        sys.stdout.flush()

    result = engine.generate([GenerationRequest(prompt_ids, params, on_update=write)])[0]
    print()
    logger.info(
        "prompt_tokens=%d completion_tokens=%d finish_reason=%s",
        result.prompt_tokens,
        result.completion_tokens,
        result.finish_reason,
    )
    return 1 if result.finish_reason == FINISH_ERROR else 0


def chat_parser(parser: argparse.ArgumentParser) -> None:
    _add_model_arguments(parser)
    parser.add_argument("--system", default=None, help="system prompt (default: the chat template's own)")
    _add_sampling_arguments(parser, max_new_tokens=512)


def chat(args: argparse.Namespace) -> int:
    """Chat with a model in the terminal; /reset, /system TEXT and /exit control the conversation."""
    from steel.serve.chat import run_chat
    from steel.tokenizer.user_text import InvalidTextError, check_text

    if args.system is not None:
        try:
            check_text(args.system, "--system")
        except InvalidTextError as error:
            _exit_invalid_input(f"steel chat: {error}")
    params = _sampling_params(args)
    serving = _load(args)
    engine = _engine(serving)
    # Logging goes to stderr; keep the chat itself free of it after start-up.
    steel_logger = logging.getLogger("steel")
    level = steel_logger.level
    steel_logger.setLevel(logging.WARNING)
    try:
        return run_chat(engine, params, system=args.system)
    finally:
        steel_logger.setLevel(level)


def serve_parser(parser: argparse.ArgumentParser) -> None:
    _add_model_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only)")
    parser.add_argument("--port", type=_port, default=8000, help="TCP port, 0 to 65535 (default 8000; 0 picks a free one)")
    parser.add_argument(
        "--name",
        default=None,
        help="model id that /v1/models lists (default: the directory name; for a directory named `run`, "
        "the parent directory's name and the training stage)",
    )
    parser.add_argument("--max-batch-size", type=int, default=8, help="requests decoded together (default 8)")
    parser.add_argument(
        "--max-prompt-tokens", type=int, default=None, help="maximum prompt length in tokens (default: context length - 1)"
    )
    parser.add_argument(
        "--max-tokens", type=int, default=1024, help="largest max_tokens a request may ask for, and its default (1024)"
    )
    parser.add_argument(
        "--max-request-bytes", type=int, default=1 << 20, help="largest request body in bytes (default 1 MiB)"
    )
    parser.add_argument("--max-pending", type=int, default=64, help="requests that may wait in the queue (default 64)")
    parser.add_argument(
        "--batch-window-ms",
        type=float,
        default=20.0,
        help="how long an idle server waits for more requests to batch with the first, in ms (default 20)",
    )
    parser.add_argument(
        "--static-batching",
        action="store_true",
        help="let requests that arrive during a batch wait for the whole batch to end "
        "(default: they join it between decoding steps)",
    )


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {value!r}: expected an integer from 0 to 65535") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {port}: expected an integer from 0 to 65535")
    return port


def _check_port_free(host: str, port: int) -> None:
    """Bind `host:port` once and release it, so that a busy port fails before the model loads.

    NOTE: another process can still take the port between this check and uvicorn's bind.
    """
    if port == 0:
        return
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise SystemExit(f"cannot resolve --host {host}: {error.strerror}") from None
    family, kind, protocol, _, address = addresses[0]
    with socket.socket(family, kind, protocol) as sock:
        # uvicorn binds with SO_REUSEADDR (asyncio create_server), so a port in TIME_WAIT counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as error:
            raise SystemExit(
                f"cannot listen on {host}:{port}: {error.strerror}; pick another port with --port "
                "(0 picks a free one) or stop the process that uses it"
            ) from None


def serve(args: argparse.Namespace) -> int:
    """Serve the OpenAI-compatible API and the web chat page until interrupted."""
    import uvicorn

    from steel.serve.engine import GenerationWorker
    from steel.serve.server import ServerLimits, create_app

    problems = [
        f"--{name.replace('_', '-')} must be at least 1, got {value}"
        for name in ("max_batch_size", "max_tokens", "max_request_bytes", "max_pending")
        if (value := getattr(args, name)) < 1
    ]
    if args.batch_window_ms < 0:
        problems.append(f"--batch-window-ms must not be negative, got {args.batch_window_ms}")
    if args.max_prompt_tokens is not None and args.max_prompt_tokens < 1:
        problems.append(f"--max-prompt-tokens must be at least 1, got {args.max_prompt_tokens}")
    if problems:
        raise SystemExit("; ".join(problems))
    if not _is_loopback(args.host):
        logger.warning("binding to %s exposes the server beyond this machine; it has no authentication", args.host)
    _check_port_free(args.host, args.port)

    serving = _load(args, name=args.name)
    engine = _engine(serving, max_batch_size=args.max_batch_size)
    limits = ServerLimits(
        max_prompt_tokens=args.max_prompt_tokens,
        max_tokens=args.max_tokens,
        max_request_bytes=args.max_request_bytes,
        max_pending=args.max_pending,
    )
    worker = GenerationWorker(
        engine,
        max_pending=args.max_pending,
        batch_window_s=args.batch_window_ms / 1000,
        continuous_batching=not args.static_batching,
    )
    app = create_app(serving, worker, limits)
    # Colour codes only on a terminal: a redirected server log stays plain text.
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", use_colors=sys.stderr.isatty())
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
