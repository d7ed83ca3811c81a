"""The tool-call format: its grammar (llguidance over the real vocabulary) lets through exactly the calls whose
arguments follow the tool's schema, and the parser reads back what the grammar lets through, whole or streamed."""

from __future__ import annotations

import json
import random

import llguidance
import pytest

from backend.grammar.matcher import Grammar, Vocabulary
from backend.tokenizer import Tokenizer
from backend.tool_calls import (
    ArgumentsDelta,
    CallEnd,
    CallStart,
    ContentDelta,
    Tool,
    ToolCall,
    ToolCallStream,
    ToolPolicy,
    call_text,
    parse_tool_calls,
    tool_grammar,
)

WEATHER = Tool("get_weather", "Weather in a city", {
    "type": "object", "properties": {"city": {"enum": ["Paris", "Oslo"]},
                                     "days": {"type": "integer", "minimum": 1, "maximum": 7}},
    "required": ["city", "days"]})  # fmt: skip
SEARCH = Tool("search", None, {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]})


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.from_file(None)


@pytest.fixture(scope="module")
def vocab(tokenizer: Tokenizer) -> Vocabulary:
    return Vocabulary(tokenizer)


def accepts(lark: str, text: str, tokenizer: Tokenizer, vocab: Vocabulary) -> bool:
    """The grammar allows every token of `text` and is complete (or may end) after it."""
    m = Grammar.compile(llguidance.LLMatcher.grammar_from_lark(lark), vocab).matcher()
    for t in tokenizer.encode(text):
        if not m.allowed_tokens()[t]:
            return False
        m.advance(t)
    return m.is_accepting


PARIS = call_text("get_weather", '{"city": "Paris", "days": 3}')
ROME = call_text("get_weather", '{"city": "Rome", "days": 3}')
FIND = call_text("search", '{"q": "x y"}')


def test_a_required_call_must_follow_its_tools_schema(tokenizer, vocab):
    lark = tool_grammar([WEATHER, SEARCH], "required", parallel=False)
    assert accepts(lark, PARIS, tokenizer, vocab) and accepts(lark, " " + FIND, tokenizer, vocab)
    assert not accepts(lark, ROME, tokenizer, vocab)  # not in the enum
    assert not accepts(lark, call_text("nope", "{}"), tokenizer, vocab)  # no such tool
    assert not accepts(lark, "I would rather talk", tokenizer, vocab)
    assert not accepts(lark, PARIS + "\n" + FIND, tokenizer, vocab)  # parallel_tool_calls false: one call


def test_auto_allows_text_or_text_then_calls(tokenizer, vocab):
    lark = tool_grammar([WEATHER, SEARCH], "auto", parallel=True)
    assert accepts(lark, "just words, even <tool_cal and </tool_call>", tokenizer, vocab)
    assert accepts(lark, "Let me look. " + PARIS + "\n" + FIND, tokenizer, vocab)
    assert not accepts(lark, "Let me look. " + ROME, tokenizer, vocab)  # after the trigger the schema holds
    assert not accepts(lark, PARIS + " and then some text", tokenizer, vocab)


def test_a_named_tool_choice_allows_only_that_tool(tokenizer, vocab):
    lark = ToolPolicy((WEATHER, SEARCH), "required", named="search").grammar()
    assert lark is not None and accepts(lark, FIND, tokenizer, vocab) and not accepts(lark, PARIS, tokenizer, vocab)
    assert ToolPolicy((WEATHER,), "none").grammar() is None and ToolPolicy((WEATHER,), "none").listed() == ()


def test_parse_reads_content_and_calls_and_drops_an_unfinished_one():
    content, calls = parse_tool_calls(" Sure. " + PARIS + "\n" + FIND + "\n" + PARIS[:30])
    assert content == " Sure. "
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris", "days": 3}), ("search", {"q": "x y"})]
    assert parse_tool_calls(" " + PARIS) [0] is None  # blank text before a call is no content
    assert parse_tool_calls("no calls here <tool") == ("no calls here <tool", [])


def test_a_closing_tag_inside_a_string_argument_does_not_end_the_call():
    tricky = call_text("search", json.dumps({"q": "}</tool_call>"}))
    _, calls = parse_tool_calls(tricky)
    assert [json.loads(c.arguments) for c in calls] == [{"q": "}</tool_call>"}]


@pytest.mark.parametrize("seed", range(20))
def test_streamed_pieces_add_up_to_the_whole_parse(seed: int):
    text = " I will check. " + PARIS + "\n" + call_text("search", json.dumps({"q": "a}</tool_call>b"}))
    rng, stream, events, at = random.Random(seed), ToolCallStream(), [], 0
    while at < len(text):
        step = rng.randint(1, 7)
        events += stream.feed(text[at:at + step])
        at += step
    events += stream.finish()
    content = "".join(e.text for e in events if isinstance(e, ContentDelta))
    starts = [e for e in events if isinstance(e, CallStart)]
    args = ["".join(e.text for e in events if isinstance(e, ArgumentsDelta) and e.index == s.index) for s in starts]
    whole_content, whole_calls = parse_tool_calls(text)
    assert content == whole_content
    assert [(s.name, a) for s, a in zip(starts, args, strict=True)] == [(c.name, c.arguments) for c in whole_calls]
    assert [e.index for e in events if isinstance(e, CallEnd)] == [0, 1]


def test_history_calls_are_written_as_the_model_writes_them():
    call = ToolCall("call_1", "get_weather", '{\n  "city": "Paris",\n  "days": 3\n}')
    assert call.text() == '<tool_call>{"name": "get_weather", "arguments": {"city":"Paris","days":3}}</tool_call>'
