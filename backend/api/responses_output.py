"""A response's output items as its text arrives: reasoning, then the message, then function calls, split by
chat_answer.AnswerStream (the same reading of the text as chat completions). Each change can go out as the
typed stream event OpenAI's SDK accumulates, so a streamed response adds up to the whole one; the whole one
is built by the same code with no events sent."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from backend.chat import Message
from backend.chat_answer import AnswerDelta, AnswerStream
from backend.reasoning import ReasoningFormat
from backend.tool_calls import ArgumentsDelta, CallEnd, CallStart, ToolCall

Emit = Callable[..., Awaitable[None]]  # emit(event type, **fields)


async def _silent(type: str, **fields: Any) -> None:
    """No stream: the output is only gathered."""


class Output:
    def __init__(self, reasoning_format: ReasoningFormat, tools: bool, emit: Emit = _silent) -> None:
        self.answer = AnswerStream(reasoning_format, tools)
        self.emit = emit
        self.items: list[dict[str, Any]] = []
        self.open: dict[str, Any] | None = None  # the reasoning or message item text goes into now
        self.calls: dict[int, dict[str, Any]] = {}  # the answer's call index -> its item

    async def feed(self, text: str) -> None:
        await self._apply(self.answer.feed(text))

    async def finish(self, complete: bool) -> None:
        """The text is all there: close every item (a call cut short ends `incomplete`)."""
        await self._apply(self.answer.finish())
        await self._close_open(complete)
        for item in self.calls.values():
            if item["status"] == "in_progress":
                await self._close_call(item, "incomplete")

    def message(self) -> Message:
        """The answer as a conversation turn, for the next prompt."""
        text = "".join(c["text"] for i in self.items if i["type"] == "message" for c in i["content"])
        calls = tuple(ToolCall(i["call_id"], i["name"], i["arguments"]) for i in self.items
                      if i["type"] == "function_call")  # fmt: skip
        return Message("assistant", text, tool_calls=calls)

    async def _apply(self, delta: AnswerDelta) -> None:
        if delta.reasoning:
            await self._text("reasoning", delta.reasoning)
        if delta.content:
            await self._text("message", delta.content)
        for event in delta.calls:
            if isinstance(event, CallStart):
                await self._close_open(True)
                await self._add({"type": "function_call", "id": f"fc_{uuid.uuid4().hex}", "call_id": event.id,
                                 "name": event.name, "arguments": "", "status": "in_progress"})  # fmt: skip
                self.calls[event.index] = self.items[-1]
            elif isinstance(event, ArgumentsDelta):
                item = self.calls[event.index]
                item["arguments"] += event.text
                await self.emit("response.function_call_arguments.delta", delta=event.text, **self._where(item))
            elif isinstance(event, CallEnd):
                await self._close_call(self.calls[event.index], "completed")

    async def _text(self, kind: str, text: str) -> None:
        """Append to the open item of this kind, opening it (and closing another) first."""
        if self.open is None or self.open["type"] != kind:
            await self._close_open(True)
            if kind == "message":
                await self._add({"type": "message", "id": f"msg_{uuid.uuid4().hex}", "status": "in_progress",
                                 "role": "assistant", "content": []})  # fmt: skip
                part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            else:
                await self._add({"type": "reasoning", "id": f"rs_{uuid.uuid4().hex}", "status": "in_progress",
                                 "summary": [], "content": []})  # fmt: skip
                part = {"type": "reasoning_text", "text": ""}
            self.open = self.items[-1]
            self.open["content"].append(part)
            await self.emit("response.content_part.added", part=dict(part), content_index=0, **self._where(self.open))
        self.open["content"][0]["text"] += text
        name = "response.output_text.delta" if kind == "message" else "response.reasoning_text.delta"
        extra = {"logprobs": []} if kind == "message" else {}
        await self.emit(name, delta=text, content_index=0, **extra, **self._where(self.open))

    async def _close_open(self, complete: bool) -> None:
        item, self.open = self.open, None
        if item is None:
            return
        part, where = item["content"][0], {"content_index": 0, **self._where(item)}
        if item["type"] == "message":
            await self.emit("response.output_text.done", text=part["text"], logprobs=[], **where)
        else:
            await self.emit("response.reasoning_text.done", text=part["text"], **where)
        await self.emit("response.content_part.done", part=dict(part), **where)
        item["status"] = "completed" if complete else "incomplete"
        await self.emit("response.output_item.done", output_index=where["output_index"], item=item)

    async def _close_call(self, item: dict[str, Any], status: str) -> None:
        item["status"] = status
        await self.emit("response.function_call_arguments.done", arguments=item["arguments"], name=item["name"],
                        **self._where(item))  # fmt: skip
        await self.emit("response.output_item.done", output_index=self.items.index(item), item=item)

    async def _add(self, item: dict[str, Any]) -> None:
        self.items.append(item)
        await self.emit("response.output_item.added", output_index=len(self.items) - 1, item=dict(item))

    def _where(self, item: dict[str, Any]) -> dict[str, Any]:
        return {"item_id": item["id"], "output_index": self.items.index(item)}
