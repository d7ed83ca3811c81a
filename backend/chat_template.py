"""Chat templates: the prompt format (roles, names, tools, thinking) as a Jinja2 template run in Jinja2's
sandbox, so a template file from a model's folder can read its variables but call nothing unsafe.

A template gets, already escaped (backend/chat.py): `messages` (each with `role`, `speaker`, `content`,
`tool_calls` (each with `id`, `name`, `arguments`, `text`: the call as the model writes it) and
`tool_call_id`), `names` (role -> display name), `tools` (the callable tools' OpenAI `function` objects) and
`tools_text` (the system turn that lists them, backend/tool_calls.py), `add_generation_prompt`, and `thinking`
(false: close the think block in the prompt for an answer without thinking; true or none: leave it to the
model), and `no_thinking` (the text that closes it). `raise_exception(message)` refuses a conversation.

Which template: [chat] template when set, else `MODEL.jinja` beside the model file, else AI00's format:
`Speaker: text` turns separated by a blank line, the prompt ending with the assistant's cue (`Assistant:`).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

DEFAULT_TEMPLATE = """\
{%- if tools_text -%}
{{ names.system }}: {{ tools_text }}{% if messages or add_generation_prompt %}{{ "\\n\\n" }}{% endif %}
{%- endif -%}
{%- for m in messages -%}
{%- set body = [m.content, m.tool_calls | map(attribute="text") | join("\\n")] | select | join(" ") -%}
{{ m.speaker }}:{% if body %} {{ body }}{% endif %}
{%- if not loop.last or add_generation_prompt %}{{ "\\n\\n" }}{% endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{ names.assistant }}:{% if thinking is false %}{{ no_thinking }}{% endif %}
{%- endif -%}"""


class ChatTemplateError(ValueError):
    """A template that does not compile, or a conversation refused (by raise_exception, or by the escaping in
    backend/chat.py); `param` is the request field to name, None for a template that does not compile."""

    def __init__(self, message: str, param: str | None = "messages") -> None:
        super().__init__(message)
        self.param = param


def _raise(message: str) -> None:
    raise ChatTemplateError(message)


class ChatTemplate:
    """A compiled template; render() is pure, so one instance serves every request."""

    def __init__(self, source: str, origin: str = "the default template") -> None:
        env = ImmutableSandboxedEnvironment(trim_blocks=False, lstrip_blocks=False, keep_trailing_newline=True)
        env.globals["raise_exception"] = _raise
        try:
            self.template = env.from_string(source)
        except TemplateError as e:
            raise ChatTemplateError(f"{origin}: {e}", param=None) from None
        self.origin = origin

    @staticmethod
    def load(path: str) -> ChatTemplate:
        """The template in `path` (a .jinja file); an empty path: AI00's default format."""
        return _load(path)

    @staticmethod
    def for_model(configured: str, model: Path) -> ChatTemplate:
        """[chat] template when set; else a template beside the model file (`model.jinja` for `model.st`), so
        a model that needs its own format brings it; else AI00's."""
        beside = model.with_suffix(".jinja")
        return _load(configured or (str(beside) if beside.is_file() else ""))

    def render(self, **variables: Any) -> str:
        try:
            return self.template.render(**variables)
        except ChatTemplateError:
            raise
        except TemplateError as e:
            raise ChatTemplateError(f"{self.origin}: {e}") from None


@lru_cache(maxsize=8)
def _load(path: str) -> ChatTemplate:
    if not path:
        return DEFAULT
    return ChatTemplate(Path(path).read_text(encoding="utf-8"), f"chat template '{path}'")


DEFAULT = ChatTemplate(DEFAULT_TEMPLATE)
