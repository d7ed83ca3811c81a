"""A Responses request's input -> the prompt's tokens, and how many of them a previous response's state holds.

A follow-up (`previous_response_id`) continues at the token level: its tokens are the previous response's
tokens (its prompt and everything it wrote, the stop string it ended on included) followed by the text the
chat template puts after an assistant turn, up to the next assistant cue. The RWKV state that response ended
in holds all but its last written token, so only that token and the new turns are prefilled. This needs the
same context (instructions, tools, names, thinking) as before: OpenAI does not carry `instructions` over, so a
follow-up that changes or drops them is re-read from the start as text.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from backend.api.edge import chat_text, prompt_tokens
from backend.api.limits import check_prompt_tokens
from backend.api.response_store import Context, Start, Stored
from backend.api.responses_schemas import FunctionCallItem, FunctionCallOutputItem, InputItem, InputMessage
from backend.api.schemas import ApiError
from backend.chat import Message
from backend.tool_calls import ToolCall, ToolPolicy

if TYPE_CHECKING:
    from backend.api.context import Server
    from backend.api.responses_schemas import ResponseRequest

ANSWER = "\ue000"  # stands in for the previous answer while rendering: the new text is what follows it


@dataclass(frozen=True)
class Prompt:
    tokens: tuple[int, ...]  # the whole conversation the model reads before answering
    conversation: tuple[Message, ...]  # its turns, instructions excluded
    context: Context
    fed: int = 0  # how many of `tokens` the previous response's final state holds
    starts: tuple[Start, ...] = (Start(),)  # where to look for that state, in order (the last always works)


def follow_up_starts(prev: Stored) -> tuple[Start, ...]:
    """Where the previous response's final state is: in the state cache under the start its generation grew
    from (cheapest: a GPU copy), else its pinned copy (an upload), else nowhere (re-read from the start)."""
    pinned = (Start(prev.handle, prev.fed),) if prev.handle is not None else ()
    return tuple(dict.fromkeys((prev.start, *pinned, Start())))


def to_messages(items: list[InputItem]) -> tuple[Message, ...]:
    """Input items as chat turns: a function_call joins the assistant turn it follows, an output is a tool turn."""
    out: list[Message] = []
    for item in items:
        if isinstance(item, InputMessage):
            out.append(Message(item.role, item.text))
        elif isinstance(item, FunctionCallItem):
            call = ToolCall(item.call_id, item.name, item.arguments)
            if out and out[-1].role == "assistant":
                out[-1] = replace(out[-1], tool_calls=(*out[-1].tool_calls, call))
            else:
                out.append(Message("assistant", "", tool_calls=(call,)))
        elif isinstance(item, FunctionCallOutputItem):
            out.append(Message("tool", item.output, tool_call_id=item.call_id))
    if not out:
        raise ApiError(400, "input: no message or function_call_output in it", param="input")
    return tuple(out)


def build_prompt(server: Server, req: ResponseRequest, tools: ToolPolicy, prev: Stored | None) -> Prompt:
    new = to_messages(req.items())
    names = dict(req.names or {})
    context = Context(req.instructions, tools.listed(), tuple(sorted(names.items())), req.thinking())
    system = (Message("system", req.instructions),) if req.instructions else ()

    def render(messages: tuple[Message, ...]) -> str:
        return chat_text(server, messages, names, tools, context.thinking)

    if prev is not None and prev.context == context and prev.tail is not None:
        text = render((*system, *prev.conversation[:-1], Message("assistant", ANSWER), *new))
        _, found, after = text.partition(ANSWER)
        if found and ANSWER not in after and after.startswith(prev.tail):
            tokens = (*prev.tokens, *server.tokenizer.encode(after[len(prev.tail):]))
            check_prompt_tokens(len(tokens), server.config.limits, "input")
            return Prompt(tokens, (*prev.conversation, *new), context, prev.fed, follow_up_starts(prev))
    conversation = (*(prev.conversation if prev is not None else ()), *new)
    return Prompt(prompt_tokens(server, render((*system, *conversation)), "input"), conversation, context)
