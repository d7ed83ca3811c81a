"""Chat messages + role names (+ tools, thinking) -> the RWKV prompt, through the chat template
(backend/chat_template.py; AI00's "User: ...\\n\\nAssistant:" by default).

Escaping happens here, before any template sees the text, so no message can open a turn of its own: a name
is one line (a newline in it would write "Bob\\n\\nAssistant: ..."), and a turn's text has no blank line (a
blank line is where a turn ends in RWKV's chat format).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from backend.chat_template import DEFAULT, ChatTemplate, ChatTemplateError
from backend.reasoning import NO_THINKING
from backend.tool_calls import Tool, ToolCall, tools_text

DEFAULT_NAMES = {"system": "System", "user": "User", "assistant": "Assistant", "tool": "Tool"}
ROLE_ALIASES = {"developer": "system"}  # OpenAI roles RWKV chat models have no turn for


@dataclass(frozen=True)
class Message:
    """One chat message as a door hands it over (OpenAI's shape, content already flattened to text)."""

    role: str
    content: str = ""
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None


def role_names(names: Mapping[str, str] | None) -> dict[str, str]:
    """The display name of each role: the request's `names` over User/Assistant/System/Tool."""
    return {**DEFAULT_NAMES, **{role: speaker(name) for role, name in (names or {}).items()}}


def speaker(name: str) -> str:
    """A name as it may appear before a turn: on one line, never empty."""
    return re.sub(r"\s+", " ", name).strip() or "User"


def normalize(text: str) -> str:
    """One turn's text: blank lines would read as the end of the turn, so runs of newlines become one."""
    return re.sub(r"\n\s*\n", "\n", text.replace("\r\n", "\n")).strip()


def render_chat(messages: Sequence[Message], names: Mapping[str, str] | None = None, *,
                template: ChatTemplate = DEFAULT, tools: Sequence[Tool] = (), thinking: bool | None = None,
                add_generation_prompt: bool = True) -> str:  # fmt: skip
    """The prompt: escaped messages through `template`, ending with the assistant's cue; `tools` are listed
    for the model (none: no tool turn); `thinking=False` closes the think block in the prompt."""
    who = role_names(names)
    return template.render(
        messages=[_escaped(i, m, who) for i, m in enumerate(messages)], names=who,
        add_generation_prompt=add_generation_prompt,
        tools=[_function(t) for t in tools], tools_text=tools_text(tools) if tools else "",
        thinking=thinking, no_thinking=NO_THINKING,
    )


def _escaped(i: int, m: Message, who: Mapping[str, str]) -> dict[str, Any]:
    role = ROLE_ALIASES.get(m.role, m.role)
    if m.name and (other := next((r for r, n in who.items() if n == speaker(m.name) and r != role), None)):
        raise ChatTemplateError(f"messages.{i}.name: '{speaker(m.name)}' is how {other} turns begin; a {role} "
                                "message may not speak as another role", f"messages.{i}.name")  # fmt: skip
    calls = [{"id": c.id, "name": c.name, "arguments": normalize(c.arguments), "text": normalize(c.text())}
             for c in m.tool_calls]  # fmt: skip
    return {"role": role, "speaker": speaker(m.name) if m.name else who[role], "content": normalize(m.content),
            "tool_calls": calls, "tool_call_id": m.tool_call_id}  # fmt: skip


def _function(t: Tool) -> dict[str, Any]:
    return {"name": t.name, "description": t.description, "parameters": t.schema()}


def chat_prompt(messages: Iterable[tuple[str, str, str | None]], names: Mapping[str, str] | None = None) -> str:
    """`messages` are (role, text, optional speaker name), in AI00's default format."""
    return render_chat([Message(role, text, name) for role, text, name in messages], names)


def chat_stop(names: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Where an assistant turn ends: when the model starts anyone else's turn."""
    who = role_names(names)
    return (f"\n\n{who['user']}:", f"\n\n{who['system']}:", f"\n\n{who['tool']}:")
