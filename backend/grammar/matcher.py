"""Per-session grammar matcher: the allowed-token bitmask before a step, advance(token) after.

The mask engine is llguidance (Rust): it keeps a trie of the vocabulary's byte strings, built once per
vocabulary, and walks it with an Earley parser over a lazily built lexer automaton whose states it caches,
so a JSON grammar's mask over 65,536 tokens takes tens of microseconds. A pure-Python lark walk of the
same trie is thousands of times slower (bench/grammar_speed.py prints both).

The mask is a bitmask, `[ceil(vocab / 32)] int32`, bit `t % 32` of word `t // 32` set when token t may come
next, so the scheduler can later upload one row per session for the GPU sampler as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import llguidance
import numpy as np

from backend.grammar import GrammarError
from backend.grammar.bnf import bnf_to_lark
from backend.grammar.json_schema import schema_to_grammar
from backend.tokenizer import END_OF_TEXT, Tokenizer

# llguidance's per-matcher budgets. Its defaults allow 250,000 lexer states (~1-2 kB each: up to 0.5 GB for
# one hostile generation); 20,000 is far above what JSON schemas or AI00's grammars build (hundreds). The
# per-token fuel keeps its default (~15 ms at most for one mask), as does the grammar size.
PARSER_LIMITS = llguidance.LLParserLimits(max_lexer_states=20_000, verbose_errors=False)


class Vocabulary:
    """The tokenizer's byte strings, prepared once for llguidance (its token trie)."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.size = tokenizer.vocab_size
        self.words = (self.size + 31) // 32
        self.llg = llguidance.LLTokenizer(
            llguidance.TokenizerWrapper(_TokenizerView(tokenizer)), n_vocab=self.size, eos_token=END_OF_TEXT
        )


class _TokenizerView:
    """What llguidance.TokenizerWrapper reads from a tokenizer."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.eos_token_id = END_OF_TEXT
        self.bos_token_id = None
        self.tokens = [tokenizer.token_bytes(i) for i in range(tokenizer.vocab_size)]
        self._tokenizer = tokenizer

    def __call__(self, text: str | bytes) -> list[int]:
        return self._tokenizer.encode_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))


@dataclass(frozen=True)
class Grammar:
    """A grammar checked against a vocabulary; hands out one fresh Matcher per generation branch.

    It holds a matcher at the start state, built (and so checked) where the request was read; branches get
    copies of it, which costs microseconds in the scheduler thread instead of a compile."""

    source: str  # llguidance's grammar form (JSON with Lark text or a JSON schema inside)
    vocab: Vocabulary
    _start: llguidance.LLMatcher = field(repr=False, compare=False)

    @staticmethod
    def compile(source: str, vocab: Vocabulary) -> Grammar:
        """Check `source` by building its start matcher; an unusable grammar raises GrammarError."""
        start = llguidance.LLMatcher(vocab.llg, source, log_level=0, limits=PARSER_LIMITS)
        if start.is_error():
            raise GrammarError(_first_line(start.get_error()))
        return Grammar(source, vocab, start)

    @staticmethod
    def from_bnf(text: str, vocab: Vocabulary) -> Grammar:
        return Grammar.compile(llguidance.LLMatcher.grammar_from_lark(bnf_to_lark(text)), vocab)

    @staticmethod
    def from_json_schema(schema: Any, vocab: Vocabulary, strict: bool = True) -> Grammar:
        return Grammar.compile(schema_to_grammar(schema, strict), vocab)

    def matcher(self) -> Matcher:
        return Matcher(self._start.deep_copy(), self.vocab)


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0] if message.strip() else "invalid grammar"


class Matcher:
    """One generation branch's position in its grammar. Not thread-safe: the scheduler thread owns it."""

    def __init__(self, m: llguidance.LLMatcher, vocab: Vocabulary) -> None:
        self._m = m
        self.vocab_size = vocab.size
        self.mask = np.zeros(vocab.words, np.int32)  # [vocab / 32] bitmask of allowed tokens
        self._fill_mask()

    def allowed(self) -> np.ndarray:
        """The bitmask for the next token (computed by the last advance, so it is ready before the step)."""
        return self.mask

    def allowed_tokens(self) -> np.ndarray:
        """The mask as a [vocab] bool array."""
        return np.unpackbits(self.mask.view(np.uint8), bitorder="little")[: self.vocab_size].astype(bool)

    def advance(self, token: int) -> None:
        """Take the sampled token and compute the next mask right away (the GPU step can overlap this)."""
        if not self._m.consume_token(token):
            raise GrammarError(f"token {token} does not continue the grammar: {_first_line(self._m.get_error())}")
        self._fill_mask()

    @property
    def is_complete(self) -> bool:
        """The grammar is finished: no further text can continue it (end of text is all that is left)."""
        return self._m.is_stopped() and not self._m.is_error()

    @property
    def is_accepting(self) -> bool:
        """The text so far is a whole sentence of the grammar (it may still go on)."""
        return self._m.is_accepting()

    def _fill_mask(self) -> None:
        if self._m.is_stopped():
            self.mask[:] = 0
            self.mask[END_OF_TEXT // 32] = 1 << (END_OF_TEXT % 32)
            return
        self._m.unsafe_compute_mask_ptr(self.mask.ctypes.data, self.mask.nbytes)
