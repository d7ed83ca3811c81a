"""Reasoning output: a model that thinks first (RWKV7-G1: `<think>...</think>` before the answer) gets its
thinking split off into `reasoning_content`, the answer left in `content`.

`reasoning_format` (llama.cpp's names): "deepseek" splits, "none" leaves the text as it came. The split: when
the answer begins (after blank space) with `<think>`, what lies between it and `</think>` is the reasoning
(as written, not trimmed) and what follows, less its leading blank space, is the content; without `</think>`
(cut by max_tokens) everything after `<think>` is reasoning. An answer that does not begin with `<think>` is
all content. Streamed and whole answers are split by the same code, so their parts agree.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

OPEN = "<think>"
CLOSE = "</think>"
NO_THINKING = f" {OPEN}\n{CLOSE}"  # after the assistant's cue: an empty, closed think block ("fake think")

ReasoningFormat = Literal["deepseek", "none"]


@dataclass(frozen=True)
class Part:
    """A piece of the answer: reasoning or content."""

    text: str
    reasoning: bool


def split_reasoning(text: str, fmt: ReasoningFormat = "deepseek") -> tuple[str | None, str]:
    """(reasoning or None when the answer did not think, content)."""
    stream = ReasoningStream(fmt)
    parts = [*stream.feed(text), *stream.finish()]
    reasoning = "".join(p.text for p in parts if p.reasoning)
    content = "".join(p.text for p in parts if not p.reasoning)
    return (reasoning if stream.thought else None), content


class ReasoningStream:
    """Splits streamed text into reasoning and content parts, holding back only text that may still become a
    tag (or the blank space before the answer)."""

    def __init__(self, fmt: ReasoningFormat = "deepseek") -> None:
        self.state: Literal["start", "thinking", "after", "content"] = "start" if fmt == "deepseek" else "content"
        self.buffer = ""
        self.thought = False  # the answer opened a think block

    def feed(self, text: str) -> Iterator[Part]:
        self.buffer += text
        while (part := self._step()) is not None:
            if part.text:
                yield part

    def finish(self) -> Iterator[Part]:
        """At the end: held-back text is what the state says it is (a blank answer stays as it came)."""
        if self.buffer and self.state != "after":
            yield Part(self.buffer, self.state == "thinking")
        self.buffer = ""

    def _step(self) -> Part | None:
        if self.state == "start":
            return self._start()
        if self.state == "thinking":
            return self._thinking()
        if self.state == "after":
            rest = self.buffer.lstrip()
            if not rest:
                return None
            self.state, self.buffer = "content", rest
        return self._flush(False) if self.buffer else None

    def _start(self) -> Part | None:
        head = self.buffer.lstrip()
        if head.startswith(OPEN):
            self.state, self.thought, self.buffer = "thinking", True, head[len(OPEN):]
            return Part("", True)
        if OPEN.startswith(head):
            return None  # still may become "<think>"
        self.state = "content"
        return self._flush(False)

    def _thinking(self) -> Part | None:
        at = self.buffer.find(CLOSE)
        if at >= 0:
            part = Part(self.buffer[:at], True)
            self.state, self.buffer = "after", self.buffer[at + len(CLOSE):]
            return part
        keep = next((n for n in range(min(len(CLOSE) - 1, len(self.buffer)), 0, -1)
                     if CLOSE.startswith(self.buffer[-n:])), 0)  # fmt: skip
        ready = self.buffer[: len(self.buffer) - keep]
        if not ready:
            return None
        self.buffer = self.buffer[len(ready):]
        return Part(ready, True)

    def _flush(self, reasoning: bool) -> Part:
        part, self.buffer = Part(self.buffer, reasoning), ""
        return part
