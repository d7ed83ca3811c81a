"""/api/ws: the AI00 WebSocket protocol v1 (shared/ws-protocol.md).

One reader loop turns frames into scheduler messages; one writer task per socket sends the scheduler's
events, merging the deltas that piled up while the client read slowly (never dropping text). A bad frame
is answered with an `error` event and the socket lives on.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import WSCloseCode, WSMsgType, web
from pydantic import ValidationError

from backend.api.edge import to_submit
from backend.api.guard import TENANT
from backend.api.limits import check_sampler_fields
from backend.api.schemas import (
    CLIENT_FRAME,
    CLIENT_FRAME_TYPES,
    ApiError,
    CancelFrame,
    DeltaFrame,
    DoneFrame,
    DoneTimings,
    DoneUsage,
    EffectiveParams,
    ErrorFrame,
    GenerateFrame,
    GenerationStartedFrame,
    ModelSummary,
    OutFrame,
    PingFrame,
    PongFrame,
    ServerInfo,
    SessionCreatedFrame,
    SessionLimits,
    SessionUpdateFrame,
    StateSavedFrame,
    StateSaveFrame,
    TokenLogprobOut,
    UpdatedFrame,
    UpdateFrame,
    describe,
    request_grammar,
)
from backend.grammar.json_schema import nesting_depth
from backend.messages import (
    Cancel,
    Delta,
    Done,
    EventSink,
    Failed,
    SaveState,
    Started,
    StateSaved,
    Update,
    Updated,
)
from backend.sampling.params import SamplerParams

if TYPE_CHECKING:
    from backend.api.context import Server

log = logging.getLogger("ai00.ws")

PROTOCOL = "ai00.v1"
_FINISHED_KEPT = 256  # finished ids a socket remembers for state.save
# Bytes of events waiting for one socket's writer (replies and deltas alike). A client that reads slower
# than its generations and pings produce passes it and is closed with 1008 instead of growing our memory.
OUTBOUND_LIMIT_BYTES = 4 << 20
MAX_DATA_DEPTH = 32  # nesting of a ping's `data` (orjson writes at most 254 levels)
_ECHO_CHARS = 64  # client text quoted back in an error message
_sockets = itertools.count()


def routes(server: Server) -> list[web.RouteDef]:
    async def handle(request: web.Request) -> web.WebSocketResponse:
        # aiohttp's own limit only guards memory; over max_message_bytes we answer too_large and go on
        ws = web.WebSocketResponse(
            protocols=(PROTOCOL,), heartbeat=30.0, max_msg_size=4 * server.config.limits.max_message_bytes
        )
        await ws.prepare(request)
        server.websockets.add(ws)
        try:
            await Connection(server, ws, request.transport, request.get(TENANT, "")).run()
        finally:
            server.websockets.discard(ws)
        return ws

    return [web.get("/api/ws", handle)]


@dataclass
class _Live:
    id: str  # the client's id
    key: str  # the scheduler's id
    remaining: int  # branches without a `done` yet
    started: bool = False


class WsError(Exception):
    """A refusal, as the `error` frame that answers it."""

    def __init__(self, code: str, message: str, id: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.frame = ErrorFrame(id=id, code=code, message=message, param=param)

    def text(self) -> str:
        return self.frame.to_json().decode()


class Connection:
    def __init__(self, server: Server, ws: web.WebSocketResponse,
                 transport: asyncio.BaseTransport | None = None, tenant: str = "") -> None:  # fmt: skip
        self.ws, self.transport, self.tenant = ws, transport, tenant
        self.sink = BoundedSink(OUTBOUND_LIMIT_BYTES, self.overflowed)  # scheduler events and our replies, in order
        self.prefix = f"ws{next(_sockets)}-"
        self.server = server.route(None, self.prefix)  # the socket is a session: its generations share an engine
        self.seq = itertools.count()
        self.live: dict[str, _Live] = {}  # client id -> generation
        self.by_key: dict[str, _Live] = {}
        self.finished: OrderedDict[str, str] = OrderedDict()  # client id -> key, for state.save after done
        self.defaults: dict[str, Any] = {}

    async def run(self) -> None:
        writer = asyncio.create_task(self.write_loop())
        self.reply(self.session_created())
        try:
            async for msg in self.ws:
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    await self.on_frame(msg.data)
                elif msg.type is WSMsgType.ERROR:
                    break
        finally:
            self.cancel_all()
            writer.cancel()

    def cancel_all(self) -> None:
        for live in list(self.live.values()):  # a closed socket cancels all of its generations
            self.server.scheduler.submit(Cancel(live.key))

    def reply(self, frame: OutFrame) -> None:
        """Queue a frame of ours, serialized now: a frame that cannot be written becomes an `internal` error."""
        try:
            text = frame.to_json().decode()
        except (TypeError, ValueError, orjson.JSONEncodeError) as e:
            text = WsError("internal", f"reply not serializable: {e}", getattr(frame, "id", None)).text()
        self.sink.put(text)

    def overflowed(self) -> None:
        """The client stopped reading: end its generations and close with a code that says why."""
        log.warning("websocket: more than %d bytes waiting for a client that does not read; closing it",
                    OUTBOUND_LIMIT_BYTES)  # fmt: skip
        self.cancel_all()
        asyncio.get_running_loop().create_task(self.close_slow_reader())

    async def close_slow_reader(self) -> None:
        message = f"slow reader: more than {OUTBOUND_LIMIT_BYTES} bytes waiting".encode()
        try:
            await asyncio.wait_for(self.ws.close(code=WSCloseCode.POLICY_VIOLATION, message=message), 5.0)
        except (TimeoutError, ConnectionError, RuntimeError):
            pass
        finally:
            if isinstance(self.transport, asyncio.Transport):
                self.transport.abort()  # the close frame may sit behind the unread bytes: drop the connection

    def session_created(self) -> SessionCreatedFrame:
        s, limits = self.server, self.server.config.limits
        return SessionCreatedFrame(
            server=ServerInfo(name="ai00-server-py", version=s.version),
            model=ModelSummary(**s.model_summary()),
            limits=SessionLimits(max_batch=s.scheduler.max_batch, max_tokens=limits.max_tokens,
                                 max_message_bytes=limits.max_message_bytes,
                                 max_n=min(limits.max_n, s.scheduler.max_batch)),
            defaults=EffectiveParams(**SamplerParams.resolve({}, s.sampler_defaults).as_dict()),
        )  # fmt: skip

    # ---- reading ----

    async def on_frame(self, data: str | bytes) -> None:
        """One client frame: dispatched, or answered with an `error` event. Nothing a frame holds may end the
        socket, its writer or its other generations."""
        frame: dict[str, Any] = {}
        try:
            size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8"))
            if size > self.server.config.limits.max_message_bytes:
                raise WsError(
                    "too_large", f"frame of {size} bytes, limit {self.server.config.limits.max_message_bytes}"
                )
            if isinstance(data, bytes):
                raise WsError("invalid_request", "binary frames are not part of the protocol; send JSON text")
            try:
                frame = orjson.loads(data)
            except orjson.JSONDecodeError as e:
                raise WsError("invalid_json", f"not JSON: {e}") from None
            if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
                raise WsError(
                    "invalid_request", "a frame is a JSON object with a string `type`", param="type"
                )
            if frame["type"] not in CLIENT_FRAME_TYPES:
                raise WsError("unknown_type", f"unknown type '{frame['type'][:_ECHO_CHARS]}'", param="type")
            try:
                parsed = CLIENT_FRAME.validate_python(frame)
            except ValidationError as e:
                message, param = describe(e, drop_tag=True)
                raise WsError("invalid_request", message, param=param) from None
            await self.dispatch(parsed)
        except WsError as e:
            if e.frame.id is None and isinstance(frame, dict) and isinstance(frame.get("id"), str):
                e.frame.id = frame["id"][:_ECHO_CHARS]
            self.reply(e.frame)
        except ApiError as e:
            self.reply(WsError("invalid_request", e.message, _id_of(frame), e.param).frame)
        except Exception as e:  # a bug met by one frame: that frame fails, the socket goes on
            log.exception("websocket frame failed")
            self.reply(WsError("internal", f"internal error: {type(e).__name__}", _id_of(frame)).frame)

    async def dispatch(self, f: Any) -> None:
        scheduler = self.server.scheduler
        if isinstance(f, GenerateFrame):
            await self.generate(f)
        elif isinstance(f, UpdateFrame):
            changes = f.params.set_fields(keep_none=True)
            for key in ("bnf_schema", "json_schema"):
                if key in changes:
                    raise WsError("invalid_request", f"params.{key}: a generation's grammar cannot change; "
                                  "start a new generation", f.id, f"params.{key}")
            check_sampler_fields(changes, self.server.config.limits, "params.", self.server.tokenizer.vocab_size)
            scheduler.submit(Update(self.live_of(f.id).key, tuple(changes.items())))
        elif isinstance(f, CancelFrame):
            targets = list(self.live.values()) if f.id == "*" else [self.live_of(f.id)]
            for live in targets:
                scheduler.submit(Cancel(live.key))
        elif isinstance(f, StateSaveFrame):
            key = self.live[f.id].key if f.id in self.live else self.finished.get(f.id)
            if key is None:
                raise WsError("unknown_id", f"no generation '{f.id}' on this socket", f.id, "id")
            scheduler.submit(SaveState(key, self.sink, f.branch, self.tenant))
        elif isinstance(f, PingFrame):
            if nesting_depth(f.data) > MAX_DATA_DEPTH:
                raise WsError("invalid_request", f"data: nests deeper than {MAX_DATA_DEPTH} levels", param="data")
            self.reply(PongFrame(data=f.data))
        elif isinstance(f, SessionUpdateFrame) and f.model is not None:
            self.use_model(f.model)
        if isinstance(f, SessionUpdateFrame) and f.defaults is not None:
            fields = f.defaults.set_fields()
            check_sampler_fields(fields, self.server.config.limits, "defaults.", self.server.tokenizer.vocab_size)
            # refuse a bad grammar now, not at every generate
            await request_grammar({**self.defaults, **fields}, self.server.compile_grammar, "defaults.")
            self.defaults.update(fields)

    def use_model(self, name: str) -> None:
        """Later generations run on the model `name` (the default for an unknown one, unless strict)."""
        if self.live:  # their cancels and updates must reach the engines they run on
            raise WsError("invalid_request", "model: change the model once no generation is live", param="model")
        try:
            self.server = self.server.route(name, self.prefix)
        except ApiError as e:
            raise WsError("invalid_request", e.message, param="model") from None

    def live_of(self, id: str) -> _Live:
        if id not in self.live:
            raise WsError("unknown_id", f"no live generation '{id}' on this socket", id, "id")
        return self.live[id]

    async def generate(self, f: GenerateFrame) -> None:
        if f.id in self.live:
            raise WsError("duplicate_id", f"id '{f.id}' is already live on this socket", f.id, "id")
        fields = {**self.defaults, **(f.params.set_fields() if f.params else {})}
        key = f"{self.prefix}{next(self.seq)}"
        sub = await to_submit(self.server, key, self.sink, fields, prompt=f.prompt, messages=f.messages, names=f.names,
                              n=f.n, state=f.state, tenant=self.tenant, prefix="params.")  # fmt: skip
        if f.id in self.live:  # the same id sent again while this grammar compiled
            raise WsError("duplicate_id", f"id '{f.id}' is already live on this socket", f.id, "id")
        live = _Live(f.id, key, f.n)
        self.live[f.id] = self.by_key[key] = live
        self.server.scheduler.submit(sub)

    # ---- writing ----

    async def write_loop(self) -> None:
        """Send events in order; whatever piled up meanwhile goes out with consecutive deltas merged."""
        try:
            while True:
                batch = [await self.sink.get()]
                while True:
                    try:
                        batch.append(self.sink.get_nowait())
                    except asyncio.QueueEmpty:
                        break
                for event in coalesce(batch):
                    for text in self.texts_of(event):
                        await self.ws.send_str(text)
        except (ConnectionResetError, RuntimeError):  # socket closed under us; run() cancels the work
            pass

    def texts_of(self, event: Any) -> list[str]:
        """The event's frames as text; a bug in shaping one event costs that event an `internal` error, never
        the writer (which would leave the socket open and silent)."""
        if isinstance(event, str):
            return [event]
        try:
            return [frame.to_json().decode() for frame in self.frames_of(event)]
        except Exception as e:
            log.exception("websocket: event %s could not be written", type(event).__name__)
            live = self.by_key.get(getattr(event, "id", ""))
            return [WsError("internal", f"internal error: {type(e).__name__}", live.id if live else None).text()]

    def frames_of(self, event: Any) -> list[OutFrame]:
        live = self.by_key.get(event.id)
        if live is None:
            return []
        id = live.id
        if isinstance(event, Started):
            live.started = True
            return [GenerationStartedFrame(id=id, prompt_tokens=event.prompt_tokens, cached_tokens=event.cached_tokens,
                                           params=EffectiveParams(**event.params.as_dict()))]  # fmt: skip
        if isinstance(event, Delta):
            logprobs = None if event.logprobs is None else [
                TokenLogprobOut(token=t.token, logprob=t.logprob, top=list(t.top)) for t in event.logprobs]
            return [DeltaFrame(id=id, branch=event.branch, text=event.text, tokens=list(event.tokens),
                               logprobs=logprobs)]  # fmt: skip
        if isinstance(event, Updated):
            return [UpdatedFrame(id=id, params=EffectiveParams(**event.params.as_dict()), at_token=event.at_token)]
        if isinstance(event, Done):
            return self.done_frames(live, event)
        if isinstance(event, StateSaved):
            return [StateSavedFrame(id=id, handle=event.handle, bytes=event.bytes)]
        if isinstance(event, Failed):
            if event.code != "unknown_id":  # a refused generate: it never became live
                self.forget(live)
            return [WsError(event.code, event.message, id, event.param).frame]
        return []

    def done_frames(self, live: _Live, d: Done) -> list[OutFrame]:
        frames: list[OutFrame] = []
        if d.finish_reason == "error":
            frames.append(WsError("internal", d.error or "generation failed", live.id).frame)
        frames.append(DoneFrame(
            id=live.id, branch=d.branch, finish_reason=d.finish_reason, text=d.text,
            usage=DoneUsage(prompt_tokens=d.usage.prompt_tokens, completion_tokens=d.usage.completion_tokens,
                            cached_tokens=d.usage.cached_tokens),
            timings=DoneTimings(queue_ms=round(d.timings.queue_ms, 3), prefill_ms=round(d.timings.prefill_ms, 3),
                                decode_tok_per_s=round(d.timings.decode_tok_per_s, 3)),
        ))  # fmt: skip
        live.remaining -= 1
        if live.remaining == 0:
            self.forget(live)
            self.finished[live.id] = live.key
            while len(self.finished) > _FINISHED_KEPT:
                self.by_key.pop(self.finished.popitem(last=False)[1], None)
        return frames

    def forget(self, live: _Live) -> None:
        if self.live.get(live.id) is live:
            del self.live[live.id]
        # by_key stays until the socket ends: late events (state.saved) still find their client id


def _id_of(frame: Any) -> str | None:
    return frame["id"][:_ECHO_CHARS] if isinstance(frame, dict) and isinstance(frame.get("id"), str) else None


class BoundedSink(EventSink):
    """An EventSink that counts the bytes waiting in it; past `limit` it calls `overflow` once and from then
    on keeps nothing (the socket is being closed)."""

    def __init__(self, limit: int, overflow: Callable[[], None]) -> None:
        super().__init__()
        self._queue = _CountingQueue(limit, overflow)


class _CountingQueue(asyncio.Queue):
    def __init__(self, limit: int, overflow: Callable[[], None]) -> None:
        super().__init__()
        self.limit, self.overflow, self.waiting, self.closed = limit, overflow, 0, False

    def _put(self, item: Any) -> None:
        if self.closed:
            return
        self.waiting += event_bytes(item)
        if self.waiting > self.limit:
            self.closed = True
            self._queue.clear()
            self.waiting = 0
            self.overflow()
            return
        super()._put(item)

    def _get(self) -> Any:
        item = super()._get()
        self.waiting -= event_bytes(item)
        return item


def event_bytes(event: Any) -> int:
    """About what an event will take once written (a frame's envelope is ~100 bytes)."""
    if isinstance(event, str):
        return len(event)
    if isinstance(event, Delta):
        return 100 + 4 * len(event.text) + 8 * len(event.tokens) + (200 * len(event.logprobs or ()))
    if isinstance(event, Done):
        return 300 + 4 * len(event.text)
    return 300


def coalesce(events: list[Any]) -> list[Any]:
    """Merge the deltas of each generation branch that piled up (text and tokens concatenated, nothing dropped);
    any other event of that generation keeps its place after them."""
    out: list[Any] = []
    open_delta: dict[tuple[str, int], int] = {}  # (id, branch) -> index in `out` of a delta still mergeable
    for e in events:
        if isinstance(e, Delta):
            i = open_delta.get((e.id, e.branch))
            if i is None:
                open_delta[(e.id, e.branch)] = len(out)
                out.append(e)
            else:
                p = out[i]
                logprobs = (
                    None
                    if p.logprobs is None and e.logprobs is None
                    else (p.logprobs or ()) + (e.logprobs or ())
                )
                out[i] = Delta(e.id, e.branch, p.text + e.text, p.tokens + e.tokens, logprobs)
        else:
            eid = getattr(e, "id", None)
            open_delta = {k: v for k, v in open_delta.items() if k[0] != eid}
            out.append(e)
    return out
