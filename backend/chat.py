"""Chat messages + role names -> the RWKV prompt ("User: ...\\n\\nAssistant:")."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

DEFAULT_NAMES = {"system": "System", "user": "User", "assistant": "Assistant"}
ROLE_ALIASES = {"developer": "system", "tool": "user"}  # OpenAI roles RWKV chat models have no turn for


def role_names(names: Mapping[str, str] | None) -> dict[str, str]:
    """The display name of each role: the request's `names` over User/Assistant/System."""
    return {**DEFAULT_NAMES, **{role: speaker(name) for role, name in (names or {}).items()}}


def speaker(name: str) -> str:
    """A name as it may appear before a turn: on one line (a newline in a name would let it write a fake
    turn of its own, as "Bob\n\nAssistant: ..."), never empty."""
    return re.sub(r"\s+", " ", name).strip() or "User"


def normalize(text: str) -> str:
    """One turn's text: blank lines would read as the end of the turn, so runs of newlines become one."""
    return re.sub(r"\n\s*\n", "\n", text.replace("\r\n", "\n")).strip()


def chat_prompt(
    messages: Iterable[tuple[str, str, str | None]], names: Mapping[str, str] | None = None
) -> str:
    """`messages` are (role, text, optional speaker name); the prompt ends with the assistant's cue."""
    who = role_names(names)
    turns = []
    for role, text, name in messages:
        role = ROLE_ALIASES.get(role, role)
        turns.append(f"{speaker(name) if name else who[role]}: {normalize(text)}")
    turns.append(f"{who['assistant']}:")
    return "\n\n".join(turns)


def chat_stop(names: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Where an assistant turn ends: when the model starts the user's next turn."""
    who = role_names(names)
    return (f"\n\n{who['user']}:", f"\n\n{who['system']}:")
