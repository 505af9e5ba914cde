"""Turn a growing list of token ids into text deltas that only ever contain whole characters.

A byte-level tokenizer may split one UTF-8 character (a Chinese character is three bytes) across
several tokens. Decoding such a prefix yields U+FFFD, so the decoder keeps those tokens back
until the character is complete. Stop strings are held back the same way while the text could
still turn into one.
"""

from typing import Protocol

REPLACEMENT_CHARACTER = "\ufffd"


class Decoder(Protocol):
    def decode(self, ids: list[int]) -> str: ...


class IncrementalDecoder:
    """Decode one token at a time, returning only text that no later token can change.

    Each step decodes the tokens since the last emitted text twice, with and without the newest
    token, and returns the difference once it no longer ends in U+FFFD. The window stays short,
    so a step costs a few tokens of decoding, not the whole output.
    """

    def __init__(self, tokenizer: Decoder):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0

    def add(self, token_id: int) -> str:
        self.ids.append(token_id)
        prefix_text = self.tokenizer.decode(self.ids[self.prefix_offset : self.read_offset])
        new_text = self.tokenizer.decode(self.ids[self.prefix_offset :])
        if len(new_text) <= len(prefix_text) or new_text.endswith(REPLACEMENT_CHARACTER):
            return ""

        self.prefix_offset = self.read_offset
        self.read_offset = len(self.ids)
        return new_text[len(prefix_text) :]

    def flush(self) -> str:
        """Return the text still held back; a truly incomplete character comes out as U+FFFD."""
        prefix_text = self.tokenizer.decode(self.ids[self.prefix_offset : self.read_offset])
        new_text = self.tokenizer.decode(self.ids[self.prefix_offset :])
        self.prefix_offset = self.read_offset = len(self.ids)
        return new_text[len(prefix_text) :]


class StopStringFilter:
    """Pass text through until one of the stop strings appears, and cut the output before it."""

    def __init__(self, stop: tuple[str, ...] | list[str]):
        self.stop = tuple(stop)
        self.buffer = ""

    def push(self, text: str) -> tuple[str, bool]:
        """Add text; return the text that is safe to emit and whether a stop string matched."""
        if not self.stop:
            return text, False

        self.buffer += text
        match_positions = [position for stop in self.stop if (position := self.buffer.find(stop)) >= 0]
        if match_positions:
            emitted = self.buffer[: min(match_positions)]
            self.buffer = ""
            return emitted, True

        held = self._longest_partial_match()
        emitted = self.buffer[: len(self.buffer) - held]
        self.buffer = self.buffer[len(self.buffer) - held :]
        return emitted, False

    def flush(self) -> str:
        """Return the held-back text once generation ends without a stop string."""
        text, self.buffer = self.buffer, ""
        return text

    def _longest_partial_match(self) -> int:
        """Length of the longest buffer suffix that is a proper prefix of some stop string."""
        longest = 0
        for stop in self.stop:
            for length in range(min(len(stop) - 1, len(self.buffer)), longest, -1):
                if self.buffer.endswith(stop[:length]):
                    longest = length
                    break
        return longest
