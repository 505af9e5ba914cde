"""A terminal chat: multi-turn history, streamed replies and a few slash commands."""

import sys
from typing import TextIO

from steel.serve.engine import FINISH_LENGTH, Engine, GenerationRequest, GenerationUpdate
from steel.serve.sampling import SamplingParams
from steel.tokenizer.user_text import InvalidTextError, read_line, read_terminal_line
from steel.tokenizer.chat import encode_chat

HELP = """commands:
  /reset        forget the conversation
  /system TEXT  set the system prompt and start a new conversation (/system alone restores the default)
  /exit         leave (Ctrl-D works too)"""

PROMPT = ">>> "


class ChatSession:
    """The conversation so far and the system prompt that opens it."""

    def __init__(self, system: str | None = None):
        self.system = system
        self.turns: list[dict[str, str]] = []

    def messages(self) -> list[dict[str, str]]:
        opening = [{"role": "system", "content": self.system}] if self.system else []
        return opening + self.turns

    def reset(self) -> None:
        self.turns.clear()


def run_chat(
    engine: Engine,
    params: SamplingParams,
    system: str | None = None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
) -> int:
    """Read user lines from `stdin` and stream the model's replies to `stdout` until /exit or end of input.

    Returns the exit code: 0, or 2 when piped input is not valid text. A terminal line that is not
    valid text is skipped with a message, and the conversation goes on.
    """
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    session = ChatSession(system)
    interactive = stdin.isatty()
    print(f"Chat started. Type a message, or /help for commands. Max {params.max_new_tokens} new tokens.", file=stdout)

    while True:
        try:
            line = _read_line(stdin, stdout, interactive)
        except InvalidTextError as error:
            if not interactive:
                print(file=stdout)
                print(f"steel chat: {error}", file=sys.stderr)
                return 2
            print(f"{error}. This line is skipped.", file=stdout)
            continue
        if line is None:
            print(file=stdout)
            return 0
        line = line.strip()
        if not line:
            continue
        if line.startswith("/"):
            if _run_command(line, session, stdout):
                continue
            return 0
        _reply(engine, params, session, line, stdout)


def _read_line(stdin: TextIO, stdout: TextIO, interactive: bool) -> str | None:
    if interactive:
        try:
            return read_terminal_line(PROMPT)
        except EOFError:
            return None
    print(PROMPT, end="", file=stdout, flush=True)
    line = read_line(stdin)
    return line or None


def _run_command(line: str, session: ChatSession, stdout: TextIO) -> bool:
    """Run a slash command; return False when the chat should end."""
    command, _, argument = line.partition(" ")
    if command in ("/exit", "/quit"):
        return False
    if command == "/reset":
        session.reset()
        print("(conversation cleared)", file=stdout)
    elif command == "/system":
        session.system = argument.strip() or None
        session.reset()
        shown = session.system if session.system else "the default"
        print(f"(system prompt set to {shown}; conversation cleared)", file=stdout)
    else:
        if command != "/help":
            print(f"unknown command {command}", file=stdout)
        print(HELP, file=stdout)
    return True


def _reply(engine: Engine, params: SamplingParams, session: ChatSession, text: str, stdout: TextIO) -> None:
    session.turns.append({"role": "user", "content": text})
    prompt_ids, _ = encode_chat(engine.tokenizer, session.messages(), add_generation_prompt=True)
    if engine.context_length is not None and len(prompt_ids) >= engine.context_length:
        session.turns.pop()
        print(
            f"(the conversation has {len(prompt_ids)} tokens, the model's context is {engine.context_length}; "
            "use /reset to start over)",
            file=stdout,
        )
        return

    def write(update: GenerationUpdate) -> None:
        if update.text:
            stdout.write(update.text)
            stdout.flush()

    try:
        result = engine.generate([GenerationRequest(prompt_ids, params, on_update=write)])[0]
    except KeyboardInterrupt:
        session.turns.pop()
        print("\n(interrupted; this turn is forgotten)", file=stdout)
        return

    print(file=stdout)
    if result.finish_reason == FINISH_LENGTH:
        print(f"(reply cut at {result.completion_tokens} tokens; raise --max-new-tokens for longer ones)", file=stdout)
    session.turns.append({"role": "assistant", "content": result.text})
