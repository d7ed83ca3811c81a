"""An assistant's answer text -> its reasoning, content and tool calls, streamed or whole.

The reasoning split (backend/reasoning.py) comes first, since a model thinks before it answers or calls; the
content after the thinking is then read for tool calls (backend/tool_calls.py) when the request allowed any.
A whole answer is split by the same streaming code, so streamed pieces always add up to the whole answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from backend.reasoning import ReasoningFormat, ReasoningStream
from backend.tool_calls import ContentDelta, ToolCall, ToolCallStream, ToolEvent, completed_calls


@dataclass
class AnswerDelta:
    """What one piece of generated text adds: reasoning, content, and tool-call events (in order)."""

    reasoning: str = ""
    content: str = ""
    calls: list[ToolEvent] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.reasoning or self.content or self.calls)


@dataclass(frozen=True)
class Answer:
    reasoning: str | None  # None: the model did not think
    content: str | None  # None: only tool calls (and blank text) were written
    tool_calls: tuple[ToolCall, ...]


class AnswerStream:
    """One branch's answer as it streams. `tools`: the request allowed calls, so the content is read for them."""

    def __init__(self, reasoning_format: ReasoningFormat, tools: bool) -> None:
        self.reasoning = ReasoningStream(reasoning_format)
        self.tools = ToolCallStream() if tools else None

    def feed(self, text: str) -> AnswerDelta:
        return self._collect(self.reasoning.feed(text), final=False)

    def finish(self) -> AnswerDelta:
        return self._collect(self.reasoning.finish(), final=True)

    def _collect(self, parts, final: bool) -> AnswerDelta:
        out = AnswerDelta()
        for part in parts:
            if part.reasoning:
                out.reasoning += part.text
            else:
                self._content(part.text, out)
        if final and self.tools is not None:
            self._events(self.tools.finish(), out)
        return out

    def _content(self, text: str, out: AnswerDelta) -> None:
        if self.tools is None:
            out.content += text
        else:
            self._events(self.tools.feed(text), out)

    def _events(self, events, out: AnswerDelta) -> None:
        for e in events:
            if isinstance(e, ContentDelta):
                out.content += e.text
            else:
                out.calls.append(e)


def split_answer(text: str, reasoning_format: ReasoningFormat, tools: bool) -> Answer:
    """The whole answer's parts; an unfinished last call (cut by max_tokens) is dropped."""
    stream = AnswerStream(reasoning_format, tools)
    first, last = stream.feed(text), stream.finish()
    done = completed_calls(first.calls + last.calls)
    content = first.content + last.content
    reasoning = first.reasoning + last.reasoning if stream.reasoning.thought else None
    return Answer(reasoning, None if tools and not content else content, tuple(done))
