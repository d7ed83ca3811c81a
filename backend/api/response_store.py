"""Stored Responses (/v1/responses with `store`), per API key and bounded: what GET returns, and what a
follow-up with `previous_response_id` needs to continue from the RWKV state instead of re-reading the
conversation. A response id another key made is unknown here, as a missing one is."""

from __future__ import annotations

from array import array
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from backend.chat import Message
from backend.tool_calls import Tool

RESPONSES_PER_TENANT = 256  # stored responses a key keeps; the oldest go first
TOKENS_PER_TENANT = 1 << 22  # their conversations' tokens (2 bytes each: 8 MiB a key)
PINNED_PER_TENANT = 8  # saved RWKV states (host copies) a key's newest responses hold: the state registry keeps
# SAVED_STATES for every key and door together, so Responses traffic must leave room for WebSocket saves


@dataclass(frozen=True)
class Start:
    """A state a generation may start from: a saved-state handle (None: the default initial state) and how many
    of the conversation's tokens it holds. The state cache files states under the start they grew from."""

    handle: str | None = None
    fed: int = 0


@dataclass(frozen=True)
class Context:
    """What a prompt holds besides its turns; a follow-up continues from the state only when it is the same."""

    instructions: str | None
    tools: tuple[Tool, ...]
    names: tuple[tuple[str, str], ...]
    thinking: bool | None


@dataclass
class Stored:
    body: dict[str, Any]  # the response object, as GET returns it
    context: Context  # instructions, tools, names, thinking: a follow-up continues only under the same
    conversation: tuple[Message, ...]  # every turn up to and with this answer; instructions are not a turn
    tokens: array = field(repr=False)  # 'H': every token the model read or wrote, in order
    fed: int  # how many of `tokens` its final state holds (the last token written is never fed)
    tail: str | None  # text written after the answer's visible end (a stop string), which the state has read;
    # None: the written tokens do not decode to the answer, so the conversation goes on as text only
    start: Start  # where its generation started: the state cache keeps its final state under that start
    handle: str | None = None  # a saved state holding tokens[:fed]


class ResponseStore:
    """tenant -> response id -> Stored, oldest first. Putting and deleting answer the saved-state handles
    that no longer belong to any response, for the caller to drop in the scheduler."""

    def __init__(self) -> None:
        self._by_tenant: dict[str, OrderedDict[str, Stored]] = {}

    def get(self, tenant: str, response_id: str) -> Stored | None:
        return self._by_tenant.get(tenant, OrderedDict()).get(response_id)

    def put(self, tenant: str, response_id: str, stored: Stored) -> list[str]:
        kept = self._by_tenant.setdefault(tenant, OrderedDict())
        kept[response_id] = stored
        released: list[str] = []
        while len(kept) > RESPONSES_PER_TENANT or sum(len(s.tokens) for s in kept.values()) > TOKENS_PER_TENANT:
            _, old = kept.popitem(last=False)
            released += [old.handle] if old.handle else []
            if not kept:
                break
        pinned = [s for s in kept.values() if s.handle]
        for s in pinned[: max(0, len(pinned) - PINNED_PER_TENANT)]:
            released.append(s.handle)  # type: ignore[arg-type]
            s.handle = None  # a follow-up to it falls back to the prefix cache, then to a full prefill
        return released

    def delete(self, tenant: str, response_id: str) -> tuple[bool, list[str]]:
        stored = self._by_tenant.get(tenant, OrderedDict()).pop(response_id, None)
        if stored is None:
            return False, []
        return True, [stored.handle] if stored.handle else []
