"""OpenAI-compatible routes under /v1/, /api/oai/ and /api/oai/v1/: validate -> Submit -> JSON or SSE.

Embeddings are last-token pooled: the vector is the final layer's channel-mix input (its ln2 output) after
the whole input was fed, L2-normalized, n_embd floats. RWKV is recurrent, so the last position has seen
every token; the same input always gives the same vector.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from aiohttp import web

from backend.api import sse
from backend.api.completions import PromptToken, best_branches, completion_submits, echo_text, prompt_logprobs
from backend.api.edge import answer_of, given_tokens, prompt_tokens, to_embed, to_submit
from backend.api.guard import TENANT
from backend.api.http import PREFIXES, failed_error, json_response, read_json
from backend.api.schemas import (
    ApiError,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    EmbeddingData,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
    ModelCard,
    ModelList,
    parse,
)
from backend.chat_answer import Answer, AnswerStream, split_answer
from backend.messages import Cancel, Delta, Done, Embedded, EventSink, Failed, Started, Submit
from backend.reasoning import ReasoningFormat
from backend.tool_calls import ArgumentsDelta, CallEnd, CallStart, ToolEvent

if TYPE_CHECKING:
    from backend.api.context import Server



SESSION_HEADER = "X-Session-Id"  # a conversation's key: its follow-ups go to the engine holding its state


def routed(server: Server, request: web.Request, model: str | None, user: str | None = None) -> Server:
    """The server as this request's model sees it; the session key is the X-Session-Id header, else `user`."""
    return server.route(model, request.headers.get(SESSION_HEADER) or user)


def routes(root: Server) -> list[web.RouteDef]:
    """The OpenAI routes, under both prefixes."""

    async def models(request: web.Request) -> web.Response:
        return json_response(ModelList(data=[ModelCard(**card) for card in root.model_cards()]))

    async def model(request: web.Request) -> web.Response:
        card = next((c for c in root.model_cards() if c["id"] == request.match_info["id"]), None)
        if card is None:
            raise ApiError(
                404, f"model '{request.match_info['id']}' not found", param="model", code="model_not_found"
            )
        return json_response(ModelCard(**card))

    def final_response(gen: Generation, kind: type[CompletionResponse | ChatCompletionResponse],
                       choices: list[dict[str, Any]]) -> web.Response:  # fmt: skip
        """The non-streaming answer's envelope, shared by completions and chat completions."""
        return json_response(kind.model_validate({"id": gen.id, "created": gen.created,
                                                  "model": gen.server.model_id, "choices": choices,
                                                  "usage": gen.usage()}))  # fmt: skip

    async def completions(request: web.Request) -> web.StreamResponse:
        """Every prompt x n choices; best_of keeps the best n of its candidates; echo puts each prompt (and, with
        logprobs, its tokens' logprobs) before its choices' text (backend/api/completions.py)."""
        req: CompletionRequest = parse(CompletionRequest, await read_json(request))
        server = routed(root, request, req.model, req.user)
        # best_of ranks candidates by their token logprobs: computed even when the client did not ask for them
        # (a stream, where best_of can only equal n, sends its choices unranked, as they come)
        ranked = req.best_of is not None and not req.stream
        logprobs = (req.logprobs or 0) if ranked else req.logprobs
        fields = {**req.sampler_fields(), "stop": req.stop_list(), "logprobs": logprobs, **req.grammar_fields()}
        subs = await completion_submits(server, req, f"cmpl-{uuid.uuid4().hex}", fields, request.get(TENANT, ""))
        gen = Generation(server, subs[0], tuple(subs[1:]))
        echoes = [echo_text(server, p) if req.echo else "" for p in req.prompts()]
        want_prompt_logprobs = req.echo and req.logprobs is not None
        scoring = [prompt_logprobs(server, sub, req.logprobs or 0) for sub in subs] if want_prompt_logprobs else []
        if req.stream:  # the prompt's logprobs go out with each choice's first chunk
            prompt_lps = await all_or_none(scoring) if scoring else [[] for _ in subs]
            echo = [(echoes[i], prompt_lps[i]) for i in range(len(subs)) for _ in range(req.n)]
            return await stream(request, gen, completion_chunk, req.stream_options, echo)
        _, *prompt_lps = await all_or_none([gen.collect(), *scoring])
        choices = []
        for i in range(len(subs)):
            first = i * req.candidates
            kept = best_branches(gen.logprobs[first : first + req.candidates], req.n) if ranked else range(req.n)
            for j, b in enumerate(kept):
                lps = [*(prompt_lps[i] if prompt_lps else ()), *gen.logprobs[first + b]]
                choices.append({"index": i * req.n + j, "text": echoes[i] + gen.texts[first + b],
                                "finish_reason": finish_reason(gen.dones[first + b]),
                                "logprobs": completion_logprobs(server, lps) if req.logprobs is not None else None})
        return final_response(gen, CompletionResponse, choices)

    async def chat_completions(request: web.Request) -> web.StreamResponse:
        req: ChatCompletionRequest = parse(ChatCompletionRequest, await read_json(request))
        server = routed(root, request, req.model, req.user)
        top = (req.top_logprobs or 0) if req.logprobs else None
        fields = {**req.sampler_fields(), "stop": req.stop_list(), "logprobs": top, **req.grammar_fields()}
        tools, fmt = req.tool_policy(), req.reasoning_format or server.config.chat.reasoning_format
        sub = await to_submit(server, f"chatcmpl-{uuid.uuid4().hex}", EventSink(), fields, messages=req.messages,
                              names=req.names, n=req.n, state=req.state, tenant=request.get(TENANT, ""),
                              tools=tools, thinking=req.thinking())  # fmt: skip
        gen = Generation(server, sub)
        if req.stream:
            return await stream(request, gen, ChatChunks(fmt, tools.active), req.stream_options)
        await gen.collect()
        choices = []
        for b in range(req.n):
            answer = split_answer(gen.texts[b], fmt, tools.active)
            choices.append({"index": b, "message": chat_message(answer),
                            "finish_reason": chat_finish(gen.dones[b], bool(answer.tool_calls)),
                            "logprobs": chat_logprobs(server, gen.logprobs[b]) if req.logprobs else None})  # fmt: skip
        return final_response(gen, ChatCompletionResponse, choices)

    async def embeddings(request: web.Request) -> web.Response:
        req: EmbeddingRequest = parse(EmbeddingRequest, await read_json(request))
        server = routed(root, request, req.model, req.user)
        if req.dimensions is not None and req.dimensions != server.n_embd:
            raise ApiError(400, f"dimensions: this model gives {server.n_embd}", param="dimensions")
        inputs = req.input if isinstance(req.input, list) else [req.input]
        if inputs and isinstance(inputs[0], int):
            inputs = [inputs]
        token_lists = [prompt_tokens(server, x, f"input.{i}") if isinstance(x, str)
                       else given_tokens(server, x, f"input.{i}") for i, x in enumerate(inputs)]  # fmt: skip
        results = await all_or_none([answer_of(server, to_embed(f"emb-{uuid.uuid4().hex}", tokens), Embedded)
                                     for tokens in token_lists])  # fmt: skip
        data = [EmbeddingData(index=i, embedding=encode_vector(r.vector) if req.encoding_format == "base64"
                              else list(r.vector)) for i, r in enumerate(results)]  # fmt: skip
        n_prompt = sum(r.prompt_tokens for r in results)
        usage = EmbeddingUsage(prompt_tokens=n_prompt, total_tokens=n_prompt)
        return json_response(EmbeddingResponse(data=data, model=server.model_id, usage=usage))

    table = []
    for p in PREFIXES:
        table += [
            web.get(f"{p}/models", models),
            web.get(f"{p}/models/{{id}}", model),
            web.post(f"{p}/completions", completions),
            web.post(f"{p}/chat/completions", chat_completions),
            web.post(f"{p}/embeddings", embeddings),
        ]
    return table


# ---- request -> Submit ----


async def all_or_none(jobs: list[Coroutine[Any, Any, Any]]) -> list[Any]:
    """Every job's result; when one fails, the others are cancelled (their scheduler work with them)."""
    tasks = [asyncio.ensure_future(job) for job in jobs]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


# ---- one generation, seen from a handler ----


@dataclass
class Generation:
    """Submits a request (with `more`: several, sharing `sub`'s sink, as a completions list of prompts) and
    gathers its events; cancels what still runs if the handler stops early. Choice i * n + b is branch b of the
    i-th submit."""

    server: Server
    sub: Submit
    more: tuple[Submit, ...] = ()
    created: int = field(default_factory=lambda: int(time.time()))
    started: Started | None = None
    cached: int = 0  # prompt tokens the prefix cache held, over every submit
    texts: list[str] = field(default_factory=list)
    logprobs: list[list] = field(default_factory=list)
    dones: list[Done | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        k = self.sub.n * len(self.subs)
        self.texts, self.logprobs, self.dones = [""] * k, [[] for _ in range(k)], [None] * k
        self._order = {s.id: i for i, s in enumerate(self.subs)}

    @property
    def id(self) -> str:
        return self.sub.id

    @property
    def subs(self) -> tuple[Submit, ...]:
        return (self.sub, *self.more)

    def choice(self, event: Delta | Done) -> int:
        """The choice index of a branch's event."""
        return self._order[event.id] * self.sub.n + event.branch

    async def events(self, next_event=None) -> AsyncIterator[Started | Delta | Done]:
        """Every event until each branch is done; a refusal raises ApiError. Events are held until every submit
        has started (a refusal comes before a submit's Started, never after), so that a refused prompt of a list
        is still a plain JSON error, not a stream cut short."""
        for sub in self.subs:
            self.server.scheduler.submit(sub)
        remaining, unstarted, held = len(self.texts), len(self.subs), []
        try:
            while remaining:
                event = await (next_event() if next_event else self.sub.sink.get())
                if isinstance(event, Failed):
                    raise failed_error(event)
                if isinstance(event, Started):
                    self.started = self.started or event
                    self.cached += event.cached_tokens
                    unstarted -= 1
                elif isinstance(event, Delta):
                    self.texts[self.choice(event)] += event.text
                    self.logprobs[self.choice(event)] += event.logprobs or ()
                elif isinstance(event, Done):
                    self.dones[self.choice(event)] = event
                    remaining -= 1
                held.append(event)
                if not unstarted:
                    for e in held:
                        yield e
                    held.clear()
        finally:
            if remaining:
                for sub in self.subs:
                    self.server.scheduler.submit(Cancel(sub.id))

    async def collect(self) -> None:
        async for _ in self.events():
            pass
        self.raise_on_error()

    def raise_on_error(self) -> None:
        for d in self.dones:
            if d is not None and d.finish_reason == "error":
                raise ApiError(500, d.error or "generation failed", type="server_error", code="internal")

    def usage(self) -> dict[str, Any]:
        prompt = sum(len(s.tokens) for s in self.subs)
        completion = sum(d.usage.completion_tokens for d in self.dones if d)
        cached = self.cached
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
        }


def finish_reason(done: Done | None) -> str | None:
    """OpenAI's names: a grammar that completed is a normal stop; a generation the server cut (shutdown after
    the drain) ends truncated, which OpenAI clients know as `length`."""
    if done is None:
        return None
    return {"grammar": "stop", "cancelled": "length"}.get(done.finish_reason, done.finish_reason)


# ---- streaming ----


async def stream(request: web.Request, gen: Generation, chunk, options,
                 echo: Sequence[tuple[str, list]] = ()) -> web.StreamResponse:  # fmt: skip
    """SSE: one chunk per delta, a final chunk per choice with its finish_reason, usage if asked, [DONE]. `echo`:
    per choice, the text and logprob items its first chunk starts with (completions' echo)."""
    server, resp = gen.server, None
    fresh = set(range(len(gen.texts)))  # choices that have not sent a chunk yet

    def next_event():
        return sse.next_event(gen.sub.sink, resp) if resp is not None else gen.sub.sink.get()

    async for event in gen.events(next_event):
        if resp is None:  # the first event decides: a refusal is still a plain JSON error with its status
            resp = await sse.open_stream(request)
        if not isinstance(event, Delta | Done):
            continue
        at = gen.choice(event)
        pre_text, pre_lps = echo[at] if at in fresh and echo else ("", [])
        if isinstance(event, Delta) and (event.text or event.logprobs or at in fresh):
            lps = [*pre_lps, *(event.logprobs or ())] or event.logprobs
            await sse.send(resp, chunk(server, gen, at, pre_text + event.text, lps, None, at in fresh))
            fresh.discard(at)
        elif isinstance(event, Done):
            if event.finish_reason == "error":
                await sse.send(
                    resp,
                    {
                        "error": {
                            "message": event.error,
                            "type": "server_error",
                            "param": None,
                            "code": "internal",
                        }
                    },
                )
            text = pre_text if at in fresh else None
            await sse.send(resp, chunk(server, gen, at, text, pre_lps or None, finish_reason(event), at in fresh))
    if options is not None and options.include_usage:
        usage = chunk(server, gen, 0, None, None, None, False)
        usage["choices"], usage["usage"] = [], gen.usage()
        await sse.send(resp, usage)
    await sse.send_done(resp)
    return resp


def completion_chunk(
    server: Server, gen: Generation, branch: int, text: str | None, logprobs, reason: str | None, first: bool
) -> dict[str, Any]:
    lp = completion_logprobs(server, list(logprobs)) if logprobs else None
    choice = {"index": branch, "text": text or "", "logprobs": lp, "finish_reason": reason}
    return {
        "id": gen.id,
        "object": "text_completion",
        "created": gen.created,
        "model": server.model_id,
        "choices": [choice],
    }


class ChatChunks:
    """Chat chunks of one request: each branch's text goes through its own AnswerStream, so thinking streams as
    `delta.reasoning_content`, calls as `delta.tool_calls` (id, type and name first, then the arguments in
    pieces), and only the rest as `delta.content`."""

    def __init__(self, reasoning_format: ReasoningFormat, tools: bool) -> None:
        self.reasoning_format, self.tools = reasoning_format, tools
        self.answers: dict[int, AnswerStream] = {}
        self.called: set[int] = set()  # branches that completed a call

    def __call__(self, server: Server, gen: Generation, branch: int, text: str | None, logprobs,
                 reason: str | None, first: bool) -> dict[str, Any]:  # fmt: skip
        answer = self.answers.setdefault(branch, AnswerStream(self.reasoning_format, self.tools))
        delta = answer.finish() if reason is not None else answer.feed(text or "")
        self.called |= {branch} if any(isinstance(e, CallEnd) for e in delta.calls) else set()
        if reason is not None:
            reason = "tool_calls" if branch in self.called and reason == "stop" else reason
        body: dict[str, Any] = {"role": "assistant"} if first else {}
        if delta.reasoning:
            body["reasoning_content"] = delta.reasoning
        if delta.content:
            body["content"] = delta.content
        if delta.calls:
            body["tool_calls"] = tool_call_deltas(delta.calls)
        lp = chat_logprobs(server, list(logprobs)) if logprobs else None
        choice = {"index": branch, "delta": body, "logprobs": lp, "finish_reason": reason}
        return {"id": gen.id, "object": "chat.completion.chunk", "created": gen.created, "model": server.model_id,
                "choices": [choice]}  # fmt: skip


def tool_call_deltas(events: list[ToolEvent]) -> list[dict[str, Any]]:
    """OpenAI's `delta.tool_calls`: one entry per call index, the id/type/name with the call's first piece."""
    out: dict[int, dict[str, Any]] = {}
    for e in events:
        if isinstance(e, CallStart):
            out[e.index] = {"index": e.index, "id": e.id, "type": "function",
                            "function": {"name": e.name, "arguments": ""}}  # fmt: skip
        elif isinstance(e, ArgumentsDelta):
            entry = out.setdefault(e.index, {"index": e.index, "function": {"arguments": ""}})
            entry["function"]["arguments"] += e.text
    return list(out.values())


def chat_message(answer: Answer) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": answer.content}
    if answer.reasoning is not None:
        message["reasoning_content"] = answer.reasoning
    if answer.tool_calls:
        message["tool_calls"] = [{"id": c.id, "type": "function",
                                  "function": {"name": c.name, "arguments": c.arguments}}
                                 for c in answer.tool_calls]  # fmt: skip
    return message


def chat_finish(done: Done | None, called: bool) -> str | None:
    """finish_reason of a chat choice: an answer that ended after its tool calls ends with `tool_calls`."""
    reason = finish_reason(done)
    return "tool_calls" if called and reason == "stop" else reason


# ---- shaping ----


def token_text(server: Server, token: int) -> str:
    return server.tokenizer.token_bytes(token).decode("utf-8", errors="replace")


def chat_logprobs(server: Server, items: list) -> dict[str, Any]:
    return {
        "content": [
            {
                "token": token_text(server, t.token),
                "logprob": t.logprob,
                "bytes": list(server.tokenizer.token_bytes(t.token)),
                "top_logprobs": [
                    {
                        "token": token_text(server, a),
                        "logprob": lp,
                        "bytes": list(server.tokenizer.token_bytes(a)),
                    }
                    for a, lp in t.top
                ],
            }
            for t in items
        ]
    }


def completion_logprobs(server: Server, items: Sequence[PromptToken]) -> dict[str, Any]:
    """OpenAI's completion logprobs; an item that is a bare token id (echo's first prompt token) has null ones."""
    tokens = [token_text(server, t if isinstance(t, int) else t.token) for t in items]
    offsets, pos = [], 0
    for s in tokens:
        offsets.append(pos)
        pos += len(s)
    return {
        "tokens": tokens,
        "token_logprobs": [None if isinstance(t, int) else t.logprob for t in items],
        "top_logprobs": [None if isinstance(t, int) else {token_text(server, a): lp for a, lp in t.top}
                         for t in items],
        "text_offset": offsets,
    }


def encode_vector(vector: tuple[float, ...]) -> str:
    """OpenAI's base64 encoding: little-endian float32."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
