"""One conversion at the edge: every door (REST completions, chat, embeddings and chooses; WebSocket generate)
turns a validated request into a scheduler message here, so the limits, the empty prompt, the chat stop
strings and the grammar behave the same whichever door a request came through; and one way to wait for a
request's single answer (embeddings, chooses)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from backend.api.http import failed_error
from backend.api.limits import check_n, check_prompt_tokens, check_sampler_fields, check_token_ids
from backend.api.schemas import GRAMMAR_FIELDS, ApiError, ChatMessage, ChooseRequest, TextFormat, request_grammar
from backend.chat import Message, chat_stop, render_chat
from backend.chat_template import ChatTemplate, ChatTemplateError
from backend.grammar import GrammarError, json_schema
from backend.grammar.matcher import Grammar
from backend.grammar.worker import GrammarRequest
from backend.messages import Cancel, EventSink, Failed, Score, Started, Submit
from backend.sampling.params import SamplerParams
from backend.tokenizer import END_OF_TEXT
from backend.tool_calls import ToolPolicy

NO_TOOLS = ToolPolicy()

if TYPE_CHECKING:
    from backend.api.context import Server


def prompt_tokens(server: Server, text: str, param: str = "prompt") -> tuple[int, ...]:
    """The prompt's tokens within limits.max_prompt_tokens; an empty prompt starts a document (END_OF_TEXT)."""
    tokens = tuple(server.tokenizer.encode(text)) or (END_OF_TEXT,)
    check_prompt_tokens(len(tokens), server.config.limits, param)
    return tokens


def given_tokens(server: Server, ids: Sequence[int], param: str) -> tuple[int, ...]:
    """Token ids a client sends itself: they skip the tokenizer, not the limits."""
    check_prompt_tokens(len(ids), server.config.limits, param)
    check_token_ids(ids, server.tokenizer.vocab_size, param)
    return tuple(ids)


async def to_submit(server: Server, id: str, sink: Any, fields: dict[str, Any], *, prompt: str | None = None,
                    messages: Iterable[ChatMessage | Message] | None = None, names: dict[str, str] | None = None,
                    n: int = 1, state: str | None = None, tenant: str = "", prefix: str = "",
                    tools: ToolPolicy = NO_TOOLS, thinking: bool | None = None) -> Submit:  # fmt: skip
    """A generation request as the scheduler takes it. `fields`: the sampler params (with `stop` a list and
    `logprobs`), and a grammar (`bnf_schema`, `json_schema` or `response_format`); errors name the field with
    `prefix` before it (the WebSocket's `params.`). Cheap checks first, the grammar's compilation last."""
    limits = server.config.limits
    check_sampler_fields(fields, limits, prefix, server.tokenizer.vocab_size)
    check_n(n, limits, server.scheduler.max_batch)
    stop = list(fields.get("stop") or [])
    if messages is not None:
        text, param = chat_text(server, messages, names, tools, thinking), "messages"
        stop += chat_stop(names)
    else:
        text, param = prompt or "", "prompt"
    tokens = prompt_tokens(server, text, param)
    grammar = await tool_grammar(server, fields, tools) or await request_grammar(fields, server.compile_grammar, prefix)
    params = SamplerParams.resolve({**fields, "stop": stop}, server.sampler_defaults)
    return Submit(id, tokens, params, sink, n=n, state=state, grammar=grammar, tenant=tenant)


def chat_text(server: Server, messages: Iterable[ChatMessage | Message], names: dict[str, str] | None,
              tools: ToolPolicy, thinking: bool | None) -> str:  # fmt: skip
    """The chat prompt through the configured template; a template that refuses the conversation is a 400."""
    plain = [m.as_message() if isinstance(m, ChatMessage) else m for m in messages]
    try:
        template = ChatTemplate.for_model(server.config.chat.template, server.model_path)
        return render_chat(plain, names, template=template, tools=tools.listed(), thinking=thinking)
    except ChatTemplateError as e:
        if e.param is None:  # the model's own template file is broken: the server's fault, not the request's
            raise ApiError(500, str(e), type="server_error", code="chat_template") from None
        message = str(e) if str(e).startswith(e.param) else f"{e.param}: {e}"
        raise ApiError(400, message, param=e.param) from None


async def tool_grammar(server: Server, fields: dict[str, Any], tools: ToolPolicy) -> Grammar | None:
    """The grammar of the tool calls a request allows (None: no tools in play). Tools bring their own grammar,
    so a request may not give another; a tool whose parameters are no usable schema is a 400 naming it."""
    if not tools.active:
        return None
    if given := next((k for k in GRAMMAR_FIELDS if fields.get(k) is not None
                      and not isinstance(fields[k], TextFormat)), None):  # fmt: skip
        raise ApiError(400, f"{given}: tool calls follow their own grammar; give {given} or tools (or "
                       'tool_choice "none"), not both', param=given)  # fmt: skip
    for i, tool in enumerate(tools.tools):
        try:
            json_schema.tool_schema(tool.schema(), tool.strict)
        except GrammarError as e:
            raise ApiError(400, f"tools.{i}.function.parameters: {e}", param=f"tools.{i}.function.parameters",
                           code="invalid_grammar") from None  # fmt: skip
    try:
        return await server.compile_grammar(GrammarRequest("lark", tools.grammar()))
    except GrammarError as e:
        raise ApiError(400, f"tools: {e}", param="tools", code="invalid_grammar") from None


def to_score(server: Server, id: str, req: ChooseRequest, tenant: str) -> Score:
    """A chooses request: the input as a prompt, each choice tokenized on its own."""
    context = prompt_tokens(server, req.input_text(), "input")
    choices = [tuple(server.tokenizer.encode(c)) for c in req.choices]
    if (empty := next((i for i, c in enumerate(choices) if not c), None)) is not None:
        raise ApiError(400, f"choices.{empty}: no tokens", param=f"choices.{empty}")
    check_prompt_tokens(sum(len(c) for c in choices), server.config.limits, "choices")
    if len(choices) > server.scheduler.max_batch:
        raise ApiError(400, f"choices: at most max_batch ({server.scheduler.max_batch}) choices", param="choices")
    return Score(id, context, tuple(choices), EventSink(), req.state, req.calibrate, tenant)


def to_embed(id: str, tokens: tuple[int, ...]) -> Submit:
    """An embedding: a prefill from the zero state, answered with its vector."""
    return Submit(id, tokens, SamplerParams(), EventSink(), embed=True)


async def answer_of(server: Server, msg: Submit | Score, kind: type) -> Any:
    """Submit a request that has one answer of type `kind` and wait for it: a refusal raises its HTTP error, and
    a handler that stops waiting (client gone, a sibling request failed) cancels it."""
    server.scheduler.submit(msg)
    try:
        event = await msg.sink.get()
        while isinstance(event, Started):
            event = await msg.sink.get()
    except asyncio.CancelledError:
        server.scheduler.submit(Cancel(msg.id))
        raise
    if isinstance(event, Failed):
        raise failed_error(event)
    if not isinstance(event, kind):
        raise ApiError(500, f"{msg.id} ended without its {kind.__name__} ({event})", type="server_error",
                       code="internal")  # fmt: skip
    return event
