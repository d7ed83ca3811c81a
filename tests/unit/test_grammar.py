"""Grammars: AI00 BNF and JSON schema compile to masks that admit exactly the texts the grammar allows."""

from __future__ import annotations

import numpy as np
import pytest

from backend.grammar import GrammarError
from backend.grammar.bnf import AI00_README_BNF, bnf_to_lark
from backend.grammar.json_schema import JSON_OBJECT
from backend.grammar.matcher import Grammar, Vocabulary
from backend.sampling.cpu import sample_token
from backend.sampling.params import SamplerParams
from backend.tokenizer import END_OF_TEXT, Tokenizer

# AI00's README example, as written there
README_BNF = AI00_README_BNF


@pytest.fixture(scope="module")
def tokenizer(tok: Tokenizer) -> Tokenizer:
    return tok  # the shared one (tests/unit/conftest.py), under the name these tests use


@pytest.fixture(scope="module")
def vocab(tokenizer: Tokenizer) -> Vocabulary:
    return Vocabulary(tokenizer)


@pytest.fixture(scope="module")
def byte_token(tokenizer: Tokenizer) -> dict[int, int]:
    """byte value -> the token that is exactly that byte"""
    return {b[0]: t for t in range(tokenizer.vocab_size) if len(b := tokenizer.token_bytes(t)) == 1}


def verdict(grammar: Grammar, text: str, byte_token: dict[int, int]) -> str:
    """'complete', 'prefix' (can still become a sentence) or 'refused', fed one byte per token."""
    m = grammar.matcher()
    for b in text.encode("utf-8"):
        try:
            m.advance(byte_token[b])
        except GrammarError:
            return "refused"
    return "complete" if m.is_accepting else "prefix"


# ---- BNF ----


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"name": "Bob"}', "complete"),
        ('{"age": 42, "job": "cook", "name": "Al"}', "complete"),
        ('{"age": 0}', "complete"),
        ('{"name": "say \\"hi\\""}', "complete"),  # \" inside text: the '\\"' alternative
        ('{"name": "a\\"}', "complete"),  # also a sentence: `a\` is text, the quote closes
        ('{"age": 4', "prefix"),  # one digit is not a number in this grammar: <digits> is not empty
        ('{"name": ""}', "refused"),  # <content> is not empty
        ('{"age": 7}', "refused"),
        ('{"age": 01}', "refused"),
        ('{"name": "a\nb"}', "refused"),  # \n is an escaped literal
        ('{"city": "x"}', "refused"),
        ('{"age": 12,"job": "x"}', "refused"),  # the separator is ", "
    ],
)
def test_readme_bnf_accepts_exactly_its_language(vocab, byte_token, text, expected):
    assert verdict(Grammar.from_bnf(README_BNF, vocab), text, byte_token) == expected


def test_except_literal_refuses_text_containing_it_and_literals_unescape(vocab, byte_token):
    g = Grammar.from_bnf("<start> ::= '<' <except!('ab')> '>\\t'\n", vocab)
    assert verdict(g, "<ba>\t", byte_token) == "complete"
    assert verdict(g, "<aa b>\t", byte_token) == "complete"
    assert verdict(g, "<xab", byte_token) == "refused"
    assert verdict(g, "<a>\\t", byte_token) == "prefix"  # '\t' is a tab: `>\t` was more text
    g = Grammar.from_bnf("<start> ::= '<' <except!(\">\")> '>'\n", vocab)
    assert verdict(g, "<>", byte_token) == "refused"  # one or more characters
    assert verdict(g, "<a>", byte_token) == "complete"


def test_recursive_bnf_nests(vocab, byte_token):
    g = Grammar.from_bnf("<start> ::= <list>\n<list> ::= '[' <items> ']' | '[]'\n<items> ::= <v> | <v> ',' <items>\n"
                         "<v> ::= <list> | 'x'\n", vocab)
    assert verdict(g, "[x,[[],[x]],x]", byte_token) == "complete"
    assert verdict(g, "[x,[[]", byte_token) == "prefix"
    assert verdict(g, "[x,]", byte_token) == "refused"


@pytest.mark.parametrize(
    ("text", "line", "column", "words"),
    [
        ("<start> ::= <a>\n<b> ::= 'x'\n", 1, 13, "<a> is used but never defined"),
        ("<a> ::= 'x'\n", 1, 1, "no <start> rule"),
        ("<start> ::= 'x' |\n  'y\n", 2, 3, "not closed"),
        ("<start> ::= 'x'\n<a> ::= 'y' @ 'z'\n", 2, 13, "unexpected character '@'"),
        ("'x' ::= <start>\n", 1, 1, "a rule must start with"),
        ("<start> ::= <a>\n<a> ::= 'x' <a>\n", 2, 1, "can never end"),
        ("<start> ::= 'q'\n<x> ::= <except!([r])>\n<r> ::= 'a' | 'a' <r>\n", 2, 9, "finite set"),
        ("<start> ::= <except!([nope])>\n", 1, 13, "<nope> is not defined"),
        ("<start> ::= <except!('')>\n", 1, 13, "empty"),
        ("<start> ::= '\\xff'\n", 1, 13, "only ASCII"),
    ],
)
def test_bad_bnf_names_line_and_column(text, line, column, words):
    with pytest.raises(GrammarError) as e:
        bnf_to_lark(text)
    assert (e.value.line, e.value.column) == (line, column)
    assert words in str(e.value) and str(e.value).startswith(f"line {line}, column {column}: ")


# ---- JSON schema ----

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 3},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "minItems": 1, "maxItems": 2},
        "home": {"type": "object", "properties": {"city": {"const": "Oslo"}}, "required": ["city"]},
        "score": {"anyOf": [{"type": "null"}, {"type": "number", "minimum": 0, "maximum": 1}]},
        "ok": {"type": "boolean"},
    },
    "required": ["name", "age", "tags"],
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"name":"Al","age":30,"tags":["a"]}', "complete"),
        ('{"name":"Al","age":0,"tags":["b","a"],"home":{"city":"Oslo"},"score":0.5,"ok":true}', "complete"),
        ('{"name":"Al","age":120,"tags":["a"],"score":null}', "complete"),
        ('{"name":"Al","age":121', "refused"),  # maximum
        ('{"name":"Al","age":-1', "refused"),  # minimum
        ('{"name":"Alan"', "refused"),  # maxLength
        ('{"name":"Al","age":3,"tags":[]', "refused"),  # minItems
        ('{"name":"Al","age":3,"tags":["a","a","a"', "refused"),  # maxItems
        ('{"name":"Al","age":3,"tags":["c"', "refused"),  # enum
        ('{"name":"Al","age":3,"tags":["a"],"home":{"city":"Rome"', "refused"),  # const
        ('{"name":"Al","age":3,"tags":["a"],"extra":1', "refused"),  # no additionalProperties: closed
        ('{"age":3', "refused"),  # properties come in schema order, required `name` first
        ('{"name":"Al","age":3}', "refused"),  # `tags` is required
        ('{"name":"Al","age":3,"tags":["a"],"score":2', "refused"),  # number maximum
        ('{"name": "Al"', "refused"),  # compact: no whitespace
    ],
)
def test_json_schema_grammar_accepts_exactly_valid_instances(vocab, byte_token, text, expected):
    assert verdict(Grammar.from_json_schema(PERSON, vocab), text, byte_token) == expected


def test_json_object_is_any_object(vocab, byte_token):
    g = Grammar.from_json_schema(JSON_OBJECT, vocab)
    assert verdict(g, '{"a":[1,{"b":null}],"c":"d"}', byte_token) == "complete"
    assert verdict(g, "[1]", byte_token) == "refused"


def test_invalid_schema_names_the_place_and_strict_refuses_what_it_cannot_enforce(vocab):
    with pytest.raises(GrammarError, match=r"at properties/a/type: .*is not valid"):
        Grammar.from_json_schema({"type": "object", "properties": {"a": {"type": "strin"}}}, vocab)
    with pytest.raises(GrammarError, match="not"):
        Grammar.from_json_schema({"not": {"type": "string"}}, vocab, strict=True)
    Grammar.from_json_schema({"not": {"type": "string"}}, vocab, strict=False)  # ignored when not strict


# ---- matcher ----


def valid_next(sentences: list[str], prefix: str, tokenizer: Tokenizer) -> set[int]:
    """Brute force over the vocabulary: tokens t such that prefix + bytes(t) begins some sentence."""
    sents = [s.encode() for s in sentences]
    done = prefix.encode()
    out = {t for t in range(tokenizer.vocab_size)
           if (b := tokenizer.token_bytes(t)) and any(s.startswith(done + b) for s in sents)}
    if done in sents:
        out.add(END_OF_TEXT)
    return out


def test_mask_is_exactly_the_brute_force_set_of_valid_next_tokens(vocab, tokenizer):
    sentences = ["yes", "no", "maybe 1", "maybe 2", "nothing", "no way"]
    g = Grammar.from_bnf("<start> ::= 'yes' | <n> | 'maybe ' <d> | 'nothing'\n<n> ::= 'no' | 'no way'\n"
                         "<d> ::= '1' | '2'\n", vocab)
    m = g.matcher()
    for prefix, token_text in [("", "no"), ("no", " ")]:
        assert set(np.flatnonzero(m.allowed_tokens())) == valid_next(sentences, prefix, tokenizer), prefix
        assert not m.is_complete
        m.advance(tokenizer.encode(token_text)[0])
    # only "way" can follow "no ": forced text is offered in the tokenizer's own tokens, not split oddly
    assert set(np.flatnonzero(m.allowed_tokens())) == {tokenizer.encode("way")[0]}
    m.advance(tokenizer.encode("way")[0])
    assert m.is_complete and m.is_accepting  # "no way": nothing can follow


def test_mask_layout_is_bit_t_mod_32_of_word_t_div_32(vocab, tokenizer):
    m = Grammar.from_bnf("<start> ::= 'x'\n", vocab).matcher()
    x = tokenizer.encode("x")[0]
    assert m.allowed().dtype == np.int32 and m.allowed().shape == (65536 // 32,)
    assert m.allowed()[x // 32] == np.int32(np.uint32(1 << (x % 32)).view(np.int32))
    assert np.count_nonzero(m.allowed()) == 1


def test_advance_refuses_a_token_outside_the_mask(vocab, tokenizer):
    m = Grammar.from_bnf("<start> ::= 'x'\n", vocab).matcher()
    with pytest.raises(GrammarError):
        m.advance(tokenizer.encode("y")[0])


def test_sampler_draws_only_allowed_tokens_even_when_they_are_unlikely():
    logits = np.array([5.0, 4.0, -3.0, -4.0, 0.0], np.float32)
    allowed = np.array([False, False, True, True, False])
    rng = np.random.default_rng(0)
    counts = np.zeros(5, np.float32)
    drawn = {sample_token(logits, counts, SamplerParams(), rng, allowed) for _ in range(200)}
    assert drawn == {2, 3}
    assert sample_token(logits, counts, SamplerParams(temperature=0.0), rng, allowed) == 2
    assert sample_token(logits, counts, SamplerParams(top_k=1), rng, allowed) == 2
