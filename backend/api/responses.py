"""OpenAI's Responses API under /v1/, /api/oai/ and /api/oai/v1/: POST responses (JSON or typed SSE events),
GET and DELETE responses/{id}.

`previous_response_id` continues at the token level (backend/api/responses_prompt.py), from the RWKV state
the previous response ended in. That state is found first in the state cache (a generation that started from
no saved state leaves its final state there, and so does the follow-up, so a chain of turns stays cheap);
when the cache has lost it, in the saved-state copy the response pinned when it finished.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from array import array
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import BaseModel

from backend.api import sse
from backend.api.edge import to_submit
from backend.api.guard import ALL_TENANTS, TENANT
from backend.api.http import PREFIXES, failed_error, json_response, read_json
from backend.api.openai import routed
from backend.api.response_store import ResponseStore, Start, Stored
from backend.api.responses_output import Emit, Output
from backend.api.responses_prompt import build_prompt
from backend.api.responses_schemas import DeletedResponse, ResponseObject, ResponseRequest
from backend.api.schemas import ApiError, parse
from backend.chat import chat_stop
from backend.messages import (
    Cancel,
    Delta,
    Done,
    DropSavedState,
    EventSink,
    Failed,
    SaveState,
    Started,
    StateSaved,
    Submit,
)
from backend.tokenizer import END_OF_TEXT

if TYPE_CHECKING:
    from backend.api.context import Server


def routes(server: Server) -> list[web.RouteDef]:
    """The Responses routes under every OpenAI prefix; the store lives as long as these routes."""
    store = ResponseStore()

    async def create(request: web.Request) -> web.StreamResponse:
        req: ResponseRequest = parse(ResponseRequest, await read_json(request))
        refuse_unsupported(req, server.config.limits.max_tokens)
        tenant = request.get(TENANT, "")
        prev = None
        if req.previous_response_id is not None and (prev := store.get(tenant, req.previous_response_id)) is None:
            raise not_found(req.previous_response_id, "previous_response_id")
        run = Run(answering(server, request, req, prev), req, tenant, prev, f"resp_{uuid.uuid4().hex}")
        await run.start()
        try:
            if req.stream:
                return await stream(request, run, store)
            await run.collect()
        finally:
            run.cancel_unless_done()  # the client went away, or a write failed
        if run.done is not None and run.done.finish_reason == "error":
            raise ApiError(500, run.done.error or "generation failed", type="server_error", code="internal")
        return json_response(await finish(run, store))

    async def retrieve(request: web.Request) -> web.Response:
        stored = store.get(request.get(TENANT, ""), request.match_info["id"])
        if stored is None:
            raise not_found(request.match_info["id"], "response_id")
        return json_response(stored.body)

    async def delete(request: web.Request) -> web.Response:
        tenant = request.get(TENANT, "")
        found, released = store.delete(tenant, request.match_info["id"])
        if not found:
            raise not_found(request.match_info["id"], "response_id")
        drop_states(server, released, tenant)
        return json_response(DeletedResponse(id=request.match_info["id"]))

    table = []
    for p in PREFIXES:
        table += [web.post(f"{p}/responses", create), web.get(f"{p}/responses/{{id}}", retrieve),
                  web.delete(f"{p}/responses/{{id}}", delete)]  # fmt: skip
    return table


def refuse_unsupported(req: ResponseRequest, max_tokens: int) -> None:
    """Fields that would change the answer and that this server cannot honour: a 400 naming them (and the
    output limit under this API's name for it, before the shared check names it max_tokens)."""
    if req.max_output_tokens is not None and req.max_output_tokens > max_tokens:
        raise ApiError(400, f"max_output_tokens: must be <= {max_tokens} (limits.max_tokens), got "
                            f"{req.max_output_tokens}", param="max_output_tokens")  # fmt: skip
    for name in ("conversation", "prompt"):
        if getattr(req, name) is not None:
            raise ApiError(400, f"{name}: not supported by this server", param=name, code="unsupported_parameter")
    if req.background:
        raise ApiError(400, "background: responses run in the foreground here; send background false",
                       param="background", code="unsupported_parameter")  # fmt: skip


def not_found(response_id: str, param: str) -> ApiError:
    return ApiError(404, f"Response with id '{response_id}' not found.", param=param, code="not_found")


def answering(server: Server, request: web.Request, req: ResponseRequest, prev: Stored | None) -> Server:
    """The model (and engine) that answers: the one `model` names, as for every OpenAI route; a follow-up
    continues with the model that answered `previous_response_id`, whose state it starts from."""
    if prev is None:
        return routed(server, request, req.model, req.user)
    first = prev.body["model"]
    view = routed(server, request, first, req.user)
    if req.model not in (None, first) and routed(server, request, req.model).model_id != view.model_id:
        raise ApiError(400, f"previous_response_id was answered by {first!r}: a follow-up continues with that "
                       "model (omit `model` or name it)", param="model", code="model_mismatch")  # fmt: skip
    return view


def drop_states(server: Server, handles: list[str], tenant: str) -> None:
    """Forget saved states no stored response needs any more (nobody waits for the answers)."""
    for handle in handles:
        server.scheduler.submit(DropSavedState(handle, tenant, EventSink()))


# ---- one response's generation, seen from the handler ----


class Run:
    """Submits one response's generation, falls back to the pinned state when the prefix cache lost the
    previous response's, and gathers the answer; cancels the generation if the handler stops early."""

    def __init__(self, server: Server, req: ResponseRequest, tenant: str, prev: Stored | None, id: str) -> None:
        self.server, self.req, self.tenant, self.id = server, req, tenant, id
        self.created = int(time.time())
        self.tools = req.tool_policy()
        self.prompt = build_prompt(server, req, self.tools, prev)
        self.sub: Submit | None = None
        self.started: Started | None = None
        self.from_state = Start()  # where the generation started; its state held from_state.fed prompt tokens
        self.text = ""  # everything written, as the scheduler sent it (stop strings cut)
        self.out_tokens: list[int] = []
        self.done: Done | None = None
        self.output = Output(server.config.chat.reasoning_format, self.tools.active)

    def stream_to(self, emit: Emit) -> None:
        """Send each change of the output as a typed event from now on."""
        self.output.emit = emit

    async def start(self) -> None:
        """Submit and wait until admitted; a refusal raises its HTTP error (before any SSE is open). A follow-up
        tries each place the previous state may be, and moves on when one does not hold it (any more)."""
        fields = {**self.req.sampler_fields(), **self.req.grammar_fields()}
        fields["stop"] = [*fields["stop"], *chat_stop(self.req.names)]
        # to_submit checks and compiles everything but the prompt, which is built here from tokens
        base = await to_submit(self.server, self.id, EventSink(), fields, prompt="", tenant=self.tenant,
                               tools=self.tools)  # fmt: skip
        p = self.prompt
        for i, start in enumerate(p.starts):
            sub = replace(base, id=f"{self.id}-{i}" if i else self.id, sink=EventSink(), tokens=p.tokens[start.fed:],
                          state=start.handle)  # fmt: skip
            event = await self._admit(sub)
            if isinstance(event, Failed):
                if event.param == "state" and i + 1 < len(p.starts):  # that saved state is gone
                    continue
                raise failed_error(event)
            better = any(later.fed > start.fed + event.cached_tokens for later in p.starts[i + 1:])
            if start.fed + event.cached_tokens < p.fed and better:  # the cache lost it here: try the next place
                await self._cancel()
                continue
            self.from_state, self.started = start, event
            return

    async def _admit(self, sub: Submit) -> Started | Failed:
        self.sub = sub
        self.server.scheduler.submit(sub)
        try:
            event = await sub.sink.get()
        except asyncio.CancelledError:
            self.server.scheduler.submit(Cancel(sub.id))
            raise
        assert isinstance(event, Started | Failed), event
        return event

    async def _cancel(self) -> None:
        """Cancel the running submit and wait for its end, so its slot is free before the next one."""
        assert self.sub is not None
        self.server.scheduler.submit(Cancel(self.sub.id))
        while not isinstance(await self.sub.sink.get(), Done | Failed):
            pass

    async def collect(self, resp: web.StreamResponse | None = None) -> None:
        """Read the generation's events until its Done; with `resp`, heartbeats keep the SSE stream alive."""
        assert self.sub is not None
        sink = self.sub.sink
        while self.done is None:
            event = await (sse.next_event(sink, resp) if resp is not None else sink.get())
            if isinstance(event, Delta):
                self.text += event.text
                self.out_tokens += event.tokens
                await self.output.feed(event.text)
            elif isinstance(event, Done):
                self.done = event
                if event.finish_reason != "error":
                    await self.output.finish(complete=self.status == "completed")

    def cancel_unless_done(self) -> None:
        if self.done is None and self.sub is not None:
            self.server.scheduler.submit(Cancel(self.sub.id))

    @property
    def status(self) -> str:
        reason = self.done.finish_reason if self.done is not None else None
        return {None: "in_progress", "error": "failed", "length": "incomplete", "cancelled": "incomplete"}.get(
            reason, "completed")  # fmt: skip

    def usage(self) -> dict[str, Any]:
        assert self.started is not None
        n_in = self.from_state.fed + self.started.prompt_tokens
        n_out = len(self.out_tokens)
        return {"input_tokens": n_in, "output_tokens": n_out, "total_tokens": n_in + n_out,
                "input_tokens_details": {"cached_tokens": self.from_state.fed + self.started.cached_tokens,
                                         "cache_write_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 0}}  # fmt: skip

    def body(self) -> dict[str, Any]:
        """The response object as it stands (in progress until the Done)."""
        req, done = self.req, self.done
        body: dict[str, Any] = {
            "id": self.id, "created_at": self.created, "status": self.status, "model": self.server.model_id,
            "output": self.output.items if done is not None else [], "instructions": req.instructions,
            "max_output_tokens": req.max_output_tokens, "previous_response_id": req.previous_response_id,
            "temperature": req.temperature, "top_p": req.top_p, "store": req.store,
            "metadata": req.metadata or {}, "user": req.user, "parallel_tool_calls": req.parallel_tool_calls,
            "tools": [t.model_dump(exclude_none=True) for t in req.tools or ()],
            "tool_choice": (req.tool_choice.model_dump() if isinstance(req.tool_choice, BaseModel)
                            else req.tool_choice or ("auto" if req.tools else "none")),
            "usage": self.usage() if done is not None else None,
        }  # fmt: skip
        if self.status == "incomplete":
            body["incomplete_details"] = {"reason": "max_output_tokens"}
        if done is not None and done.finish_reason == "error":
            body["error"] = {"code": "server_error", "message": done.error or "generation failed"}
        return ResponseObject.model_validate(body).model_dump(mode="json")


async def finish(run: Run, store: ResponseStore) -> dict[str, Any]:
    """The final response object, stored (with a pinned copy of its final state) when `store` asks."""
    body = run.body()
    if run.req.store and run.done is not None and run.done.finish_reason != "error":
        stored = await stored_response(run, body)
        drop_states(run.server, store.put(run.tenant, run.id, stored), run.tenant)
    return body


async def stored_response(run: Run, body: dict[str, Any]) -> Stored:
    assert run.sub is not None
    out = run.out_tokens
    written = run.server.tokenizer.decode(out)
    tail = written[len(run.text):] if written.startswith(run.text) else None
    tokens = array("H", run.prompt.tokens + tuple(out))
    fed = len(tokens) - 1 if out else len(tokens)
    if out and out[-1] == END_OF_TEXT:  # never fed, and a conversation goes on without it
        tokens.pop()
    # the admin key's states would be every key's (the registry shares what the admin saves): not pinned
    handle = await pin_state(run.server, run.sub.id, run.tenant) if run.tenant != ALL_TENANTS else None
    conversation = (*run.prompt.conversation, run.output.message())
    return Stored(body, run.prompt.context, conversation, tokens, fed, tail, run.from_state, handle)


async def pin_state(server: Server, generation_id: str, tenant: str) -> str | None:
    """A saved-state copy of a finished generation's final state (the prefix cache still holds it right after
    its Done, unless the cache is off or already reused); None when there is none to copy."""
    sink = EventSink()
    server.scheduler.submit(SaveState(generation_id, sink, 0, tenant))
    event = await sink.get()
    return event.handle if isinstance(event, StateSaved) else None


# ---- streaming: OpenAI's typed events ----


class EventStream:
    """Writes `event: TYPE` / `data: JSON` pairs with the sequence numbers the SDK expects."""

    def __init__(self, resp: web.StreamResponse) -> None:
        self.resp, self.seq = resp, 0

    async def emit(self, type: str, **fields: Any) -> None:
        await sse.send_event(self.resp, type, {"type": type, "sequence_number": self.seq, **fields})
        self.seq += 1


async def stream(request: web.Request, run: Run, store: ResponseStore) -> web.StreamResponse:
    resp = await sse.open_stream(request)
    out = EventStream(resp)
    await out.emit("response.created", response=run.body())
    await out.emit("response.in_progress", response=run.body())
    run.stream_to(out.emit)
    await run.collect(resp)
    assert run.done is not None
    if run.done.finish_reason == "error":
        await out.emit("response.failed", response=run.body())
        return resp
    body = await finish(run, store)
    await out.emit(f"response.{'completed' if run.status == 'completed' else 'incomplete'}", response=body)
    return resp
