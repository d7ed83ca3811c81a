"""JSON schema (OpenAI's `response_format`, the WebSocket `json_schema` param) -> llguidance's grammar form.

llguidance compiles the schema itself: objects with required and optional properties, nested objects,
arrays with minItems/maxItems, enum, const, strings (minLength/maxLength/pattern), integers and numbers
with bounds and multipleOf, boolean, null, anyOf/oneOf, $ref. The output is compact JSON (no whitespace
between tokens), so a model spends no tokens on layout.

Two choices are ours: an object that does not say `additionalProperties` gets `false` (as OpenAI's
structured outputs require), so the model writes the properties the schema names and no others; and
`strict` decides what an unsupported keyword (such as `not`) does: strict refuses the schema, non-strict
ignores the keyword.
"""

from __future__ import annotations

from typing import Any

import jsonschema
import llguidance

from backend.grammar import GrammarError

JSON_OBJECT: dict[str, Any] = {"type": "object"}  # response_format {"type": "json_object"}: any JSON object
# Real schemas nest a few levels; llguidance's converter and jsonschema's checker recurse once per level,
# so depth is bounded before either sees the schema (Python's own limit would turn it into a 500).
MAX_SCHEMA_DEPTH = 64  # JSON nesting (an object schema with properties is two levels)


def schema_to_grammar(schema: Any, strict: bool = True) -> str:
    """The llguidance grammar of `schema`; a schema that is not valid JSON schema raises GrammarError."""
    _check(schema)
    options = {"whitespace_flexible": False, "lenient": not strict}
    return llguidance.LLMatcher.grammar_from_json_schema(_closed(schema), overrides=options)


def tool_schema(schema: Any, strict: bool = True) -> dict[str, Any]:
    """A schema checked as schema_to_grammar checks it, ready to inline in a Lark grammar as `%json {...}`
    (a tool's parameters): closed objects, compact output, unsupported keywords refused or ignored by `strict`."""
    _check(schema)
    return {**_closed(schema), "x-guidance": {"whitespace_flexible": False, "lenient": not strict}}


def _check(schema: Any) -> None:
    """Refuse what is not a JSON schema, or nests too deeply for the checker and llguidance."""
    if not isinstance(schema, dict):
        raise GrammarError("a JSON schema is an object")
    if (depth := nesting_depth(schema)) > MAX_SCHEMA_DEPTH:
        raise GrammarError(f"schema too deep: {depth} levels of nesting, the limit is {MAX_SCHEMA_DEPTH}")
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as e:
        where = "/".join(str(p) for p in e.path) or "(root)"
        raise GrammarError(f"at {where}: {e.message}") from None


def nesting_depth(value: Any) -> int:
    """How deeply lists and objects nest in `value` (a scalar: 0), without recursion."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        v, depth = todo.pop()
        children = v.values() if isinstance(v, dict) else v if isinstance(v, list) else None
        if children is not None:
            deepest = max(deepest, depth)
            todo.extend((c, depth + 1) for c in children)
    return deepest


def _closed(schema: Any) -> Any:
    """A copy where every object schema without `additionalProperties` has `additionalProperties: false`."""
    if isinstance(schema, list):
        return [_closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key in ("enum", "const", "default", "examples"):
            out[key] = value  # data, not schemas
        elif key in ("properties", "patternProperties", "$defs", "definitions"):
            out[key] = {k: _closed(v) for k, v in value.items()} if isinstance(value, dict) else value
        else:
            out[key] = _closed(value)
    is_object = schema.get("type") == "object" or "properties" in schema
    if is_object and "additionalProperties" not in schema and "properties" in schema:
        out["additionalProperties"] = False
    return out
