"""The only things that cross between the asyncio handlers and the engine thread: frozen messages and a sink.

In (handler -> scheduler): Submit, Score, Cancel, Update, SaveState; for admin work WriteWeights, SwapModel,
AddInitialState, RemoveInitialState, StoreState, ReadSavedState, ListSavedStates, DropSavedState.
Out (scheduler -> handler, through the request's EventSink): Started, Delta, Updated, Done, Failed,
StateSaved, Embedded, Scored; Answered for admin work. No closure crosses: each message says what may happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from backend.grammar.matcher import Grammar
from backend.sampling.params import SamplerParams

_batch = threading.local()  # .pending: events held by batched_delivery() in this thread


@contextlib.contextmanager
def batched_delivery() -> Iterator[None]:
    """Events put from this thread inside the block reach each event loop in one wake-up at its end
    (a step at 256 streams puts 256 deltas: one self-pipe write each cost ~30 us of the engine thread).
    Each sink still sees its events in order, and every event of the block before any later one."""
    pending: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue, Any]]] = {}
    _batch.pending = pending
    try:
        yield
    finally:
        _batch.pending = None
        for loop, items in pending.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is listening any more
                loop.call_soon_threadsafe(_put_all, items)


def _put_all(items: list[tuple[asyncio.Queue, Any]]) -> None:
    for queue, event in items:
        queue.put_nowait(event)


class EventSink:
    """Delivers scheduler events into one asyncio queue, from any thread."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()

    def put(self, event: Any) -> None:
        pending = getattr(_batch, "pending", None)
        if pending is not None:
            pending.setdefault(self._loop, []).append((self._queue, event))
            return
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is listening any more
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)

    async def get(self) -> Any:
        return await self._queue.get()

    def get_nowait(self) -> Any:
        """The next waiting event, or raise asyncio.QueueEmpty."""
        return self._queue.get_nowait()


# ---- in ----


@dataclass(frozen=True)
class Submit:
    id: str  # unique among the server's live requests
    tokens: tuple[int, ...]  # the prompt, already tokenized
    params: SamplerParams
    sink: EventSink = field(repr=False)
    n: int = 1  # branches forked from one prefill
    state: str | None = None  # a saved-state handle or initial-state id ("": zero state); None: the default
    embed: bool = False  # prefill only, then answer Embedded
    grammar: Grammar | None = None  # every branch's output must follow it; it ends them when complete
    tenant: str = ""  # the API key's namespace (api/guard.py): its saved states and prefix cache only
    submitted_at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class Score:
    """Rank continuations (chooses): the scheduler plans it like a prompt, step by step (backend/chooses.py)."""

    id: str
    context: tuple[int, ...]
    choices: tuple[tuple[int, ...], ...]
    sink: EventSink = field(repr=False)
    state: str | None = None  # as Submit.state
    calibrate: bool = False
    tenant: str = ""
    top: int | None = None  # also report each choice token's logprob and its `top` best alternatives (echo)


@dataclass(frozen=True)
class Cancel:
    id: str


@dataclass(frozen=True)
class Update:
    id: str
    changes: tuple[tuple[str, Any], ...]  # (param, value) pairs, applied from the next token on


@dataclass(frozen=True)
class SaveState:
    id: str
    sink: EventSink = field(repr=False)
    branch: int = 0
    tenant: str = ""


# ---- admin in: answered on `sink` with Answered, or Failed (id "") when refused ----


@dataclass(frozen=True)
class WriteWeights:
    """LoRA switch: rewrite these tensors in place between two steps; running sessions go on with them. With
    `drain`, only once no session runs (new ones queue meanwhile), failing `model_busy` after `deadline`."""

    tensors: Mapping[str, np.ndarray] = field(repr=False)
    sink: EventSink = field(repr=False)
    drain: bool = False
    deadline: float | None = None  # time.monotonic()


@dataclass(frozen=True)
class SwapModel:
    """Serve another model once no session runs. `model` is what the scheduler's engine source builds from (read
    off the engine thread); `fallback` describes the model served now, rebuilt if the new one fails to load.
    `states` are (id, layers, default) of the initial states to register on the new model, `previous` those
    to register again on the old one after a failure."""

    model: Any = field(repr=False)
    fallback: Any = field(repr=False)
    states: tuple[tuple[str, tuple[np.ndarray, ...], bool], ...] = field(repr=False)
    previous: tuple[tuple[str, tuple[np.ndarray, ...], bool], ...] = field(repr=False)
    sink: EventSink = field(repr=False)
    deadline: float | None = None

    drain = True


@dataclass(frozen=True)
class AddInitialState:
    state_id: str
    layers: tuple[np.ndarray, ...] = field(repr=False)
    default: bool
    sink: EventSink = field(repr=False)


@dataclass(frozen=True)
class RemoveInitialState:
    state_id: str
    sink: EventSink = field(repr=False)


@dataclass(frozen=True)
class StoreState:
    """Keep a state (an imported file) under a new saved-state handle; answered with the handle."""

    layers: tuple[np.ndarray, ...] = field(repr=False)
    tenant: str
    sink: EventSink = field(repr=False)


@dataclass(frozen=True)
class ReadSavedState:
    """A saved state's layers (host copies), or None when `tenant` sees no such handle."""

    handle: str
    tenant: str
    sink: EventSink = field(repr=False)


@dataclass(frozen=True)
class ListSavedStates:
    """handle -> bytes of the saved states `tenant` sees."""

    tenant: str
    sink: EventSink = field(repr=False)


@dataclass(frozen=True)
class DropSavedState:
    """Forget a saved state; answered True, or False when `tenant` sees no such handle."""

    handle: str
    tenant: str
    sink: EventSink = field(repr=False)


AdminMessage = (WriteWeights | SwapModel | AddInitialState | RemoveInitialState | StoreState | ReadSavedState
                | ListSavedStates | DropSavedState)  # fmt: skip


# ---- out ----


@dataclass(frozen=True)
class Started:
    id: str
    prompt_tokens: int
    cached_tokens: int
    params: SamplerParams


@dataclass(frozen=True)
class TokenLogprob:
    token: int
    logprob: float
    top: tuple[tuple[int, float], ...]


@dataclass(frozen=True)
class Delta:
    id: str
    branch: int
    text: str
    tokens: tuple[int, ...]
    logprobs: tuple[TokenLogprob, ...] | None = None


@dataclass(frozen=True)
class Updated:
    id: str
    params: SamplerParams
    at_token: int


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0


@dataclass(frozen=True)
class Timings:
    queue_ms: float
    prefill_ms: float
    decode_tok_per_s: float


@dataclass(frozen=True)
class Done:
    """Always the last event of a branch. finish_reason: stop, length, cancelled, grammar, error."""

    id: str
    branch: int
    finish_reason: str
    text: str
    usage: Usage
    timings: Timings
    error: str | None = None  # the message when finish_reason == "error"


@dataclass(frozen=True)
class Failed:
    """A request refused before it started: no Started and no Done follow."""

    id: str
    code: str  # overloaded, invalid_request, unknown_id, internal
    message: str
    param: str | None = None


@dataclass(frozen=True)
class StateSaved:
    id: str
    handle: str
    bytes: int


@dataclass(frozen=True)
class Scored:
    id: str
    log_likelihood: tuple[float, ...]  # log p(choice | context), per choice
    neutral: tuple[float, ...] | None  # log p(choice | neutral context) when calibrating
    tokens_fed: int
    tokens: tuple[tuple[TokenLogprob, ...], ...] = ()  # per choice, each token's logprob: when Score.top is set


@dataclass(frozen=True)
class Answered:
    """An admin message's result."""

    value: Any = None


@dataclass(frozen=True)
class Embedded:
    id: str
    vector: tuple[float, ...]
    prompt_tokens: int
