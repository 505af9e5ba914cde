"""Dialogue records: role names, end-of-turn markers and the plain-text rendering.

Dialogue sources keep their turns as `messages` (`[{"role", "content"}]`, roles `system`, `user`,
`assistant`) so the tokenizer can render them with real chat-template ids, and also get a plain-text
rendering in `text` for stages that read text only. The rendering keeps every turn in full.
"""

from steel.data.langid import detect_language
from steel.data.sources.base import RecordError

ROLE_ALIASES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "prompter": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "bot": "assistant",
}

# End-of-turn markers that some releases of MOSS-style data leave at the end of a turn. Each is
# removed as a whole string: `str.rstrip("<eoa>")` would also eat a final "a", "o", "e" or ">".
END_OF_TURN_MARKERS = ("<eoh>", "<eoa>", "<eom>", "<eoc>", "<eot>", "<|endoftext|>")

ROLE_LABELS = {
    "zh": {"system": "系统", "user": "用户", "assistant": "助手"},
    "en": {"system": "System", "user": "User", "assistant": "Assistant"},
}


def normalize_role(role: str) -> str:
    try:
        return ROLE_ALIASES[role.strip().lower()]
    except KeyError:
        raise RecordError("unknown role", f"{role!r}; expected one of {', '.join(ROLE_ALIASES)}") from None


def clean_turn(content: str) -> str:
    """Strip surrounding whitespace and trailing end-of-turn markers (as whole strings)."""
    content = content.strip()
    removed = True
    while removed:
        removed = False
        for marker in END_OF_TURN_MARKERS:
            if content.endswith(marker):
                content = content.removesuffix(marker).rstrip()
                removed = True
    return content


def message(role: str, content: str) -> dict:
    return {"role": normalize_role(role), "content": clean_turn(content)}


def check_messages(messages: list[dict]) -> list[dict]:
    """Validate a converted conversation: at least one user and one assistant turn, none empty."""
    roles = [m["role"] for m in messages]
    if "user" not in roles or "assistant" not in roles:
        raise RecordError("incomplete dialogue", f"roles {roles}; need a user and an assistant turn")
    for index, m in enumerate(messages):
        if not m["content"]:
            raise RecordError("empty turn", f"turn {index} ({m['role']}) is empty")
    return messages


def render_dialogue(messages: list[dict]) -> str:
    """Render turns as `角色：内容` paragraphs (English labels for English dialogue)."""
    language = detect_language(" ".join(m["content"] for m in messages))
    labels = ROLE_LABELS["en" if language == "en" else "zh"]
    separator = ": " if language == "en" else "："
    return "\n\n".join(f"{labels[m['role']]}{separator}{m['content']}" for m in messages)
