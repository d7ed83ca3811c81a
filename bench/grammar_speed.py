"""Grammar mask cost per token over the 65,536-token World vocabulary: llguidance (what the server uses)
against a pure-Python lark candidate (LALR table from lark, walked over a byte trie of the vocabulary, one
cached mask per parser stack). Both replay the same realistic JSON output, token by token: before each
token the mask of allowed next tokens is computed, then the token is taken. Prints mean/p50/p99 in ms.

Run from the repo root: python -m bench.grammar_speed [--docs 16] [--lark-steps 1000]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable

import numpy as np
from lark import Lark

from backend.grammar.bnf import AI00_README_BNF
from backend.grammar.json_schema import JSON_OBJECT
from backend.grammar.matcher import Grammar, Vocabulary
from backend.tokenizer import END_OF_TEXT, Tokenizer

TARGET_P99_MS = 1.0

NAMES = ["Ada Lovelace", "Alan Turing", "Grace Hopper", "Edsger Dijkstra", "Barbara Liskov", "Donald Knuth",
         "Margaret Hamilton", "Ken Thompson", "Frances Allen", "John Backus", "Radia Perlman", "Tony Hoare"]
CITIES = [("London", "SW1Y 4LE"), ("Zürich", "8001"), ("São Paulo", "01310-100"), ("Kyoto", "600-8216"),
          ("New York", "10001"), ("Paris", "75001"), ("Berlin", "10115"), ("Москва", "101000")]
TAGS = ["math", "compilers", "poetry", "networks", "proofs", "systems", "languages", "hardware"]
NOTES = ["Wrote the first published algorithm for a machine.", "Proved that some problems cannot be decided.",
         "Built the first compiler and found a real bug.", "Said \"goto\" is harmful, and meant it.",
         "Defined substitutability for subtypes.", "Typesets everything, including this note: 100%.",
         "Led the on-board flight software team.", "Co-created Unix in a summer, then C."]

README_BNF = AI00_README_BNF  # AI00's README example

SCHEMA = {  # what the documents follow; the server compiles schemas like this one
    "type": "object",
    "properties": {
        "id": {"type": "integer", "minimum": 1},
        "name": {"type": "string"},
        "email": {"type": "string"},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "active": {"type": "boolean"},
        "tags": {"type": "array", "items": {"enum": TAGS}, "maxItems": 4},
        "address": {
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}, "zip": {"type": "string"}},
            "required": ["street", "city", "zip"],
        },
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "notes": {"type": ["string", "null"]},
    },
    "required": ["id", "name", "email", "age", "active", "tags", "address", "score", "notes"],
}


def readme_documents(docs: list[str]) -> list[str]:
    """The same records as the README grammar's name/age/job objects."""
    out = []
    for d in map(json.loads, docs):
        job = d["notes"] or "unknown"
        out.append(json.dumps({"name": d["name"], "age": d["age"], "job": job}, ensure_ascii=False))
    return out


def documents(count: int, seed: int = 0) -> list[str]:
    """Compact JSON records like a model writes for SCHEMA."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        name = rng.choice(NAMES)
        city, zip_code = rng.choice(CITIES)
        doc = {
            "id": 1000 + i,
            "name": name,
            "email": name.lower().replace(" ", ".") + "@example.org",
            "age": rng.randint(20, 99),
            "active": rng.random() < 0.5,
            "tags": rng.sample(TAGS, rng.randint(0, 4)),
            "address": {"street": f"{rng.randint(1, 250)} {rng.choice(NAMES).split()[1]} Street", "city": city,
                        "zip": zip_code},
            "score": round(rng.random(), rng.randint(1, 4)),
            "notes": rng.choice([*NOTES, None]),
        }
        out.append(json.dumps(doc, ensure_ascii=False, separators=(",", ":")))
    return out


# ---- the pure-Python candidate: lark's LALR table over single bytes, walked over a byte trie ----

_ESCAPES = b'"\\/bfnrt'
_LARK_JSON = """
start: object
?value: object | array | string | number | B74 B72 B75 B65 | B66 B61 B6C B73 B65 | B6E B75 B6C B6C
object: B7B B7D | B7B members B7D
members: pair | members B2C pair
pair: string B3A value
array: B5B B5D | B5B elements B5D
elements: value | elements B2C value
string: B22 chars B22
chars: | chars char
char: unescaped | B5C escape
escape: {escapes} | B75 hex hex hex hex
number: int | int frac | int exp | int frac exp
int: B2D? (B30 | onenine digits)
digits: | digits digit
frac: B2E digit digits
exp: (B65 | B45) (B2B | B2D)? digit digits
digit: B30 | onenine
onenine: {onenine}
hex: digit | {hexletters}
unescaped: {unescaped}
{declare}
"""


def _byte_names(values) -> str:
    return " | ".join(f"B{b:02X}" for b in values)


def lark_json_table():
    """(parse table, start state): lark's LALR(1) tables for compact JSON, one terminal per byte."""
    grammar = _LARK_JSON.format(
        escapes=_byte_names(_ESCAPES),
        onenine=_byte_names(b"123456789"),
        hexletters=_byte_names(b"abcdefABCDEF"),
        unescaped=_byte_names(b for b in range(0x20, 0x100) if b not in b'"\\'),
        declare="%declare " + " ".join(f"B{b:02X}" for b in range(256)),
    )
    table = Lark(grammar, parser="lalr", lexer="basic").parser.parser.parser.parse_table
    return table, table.start_states["start"]


class LarkTrieMatcher:
    """Mask = walk the vocabulary's byte trie with the LALR stack; masks are cached per stack."""

    def __init__(self, table, start: int, trie: dict, vocab_size: int) -> None:
        self.states, self.end = table.states, table.end_states["start"]
        self.trie, self.vocab_size = trie, vocab_size
        self.names = [f"B{b:02X}" for b in range(256)]
        # a state whose every terminal action is the same reduction reduces at once, without lookahead,
        # so that the stack after `"ab` equals the one after `"xy` and the cache hits inside strings
        self.default_reduce = {}
        for state, actions in self.states.items():
            acts = {(kind.name, arg) for name, (kind, arg) in actions.items() if name[0] == "B" or name == "$END"}
            if len(acts) == 1 and (act := acts.pop())[0] == "Reduce":
                self.default_reduce[state] = act[1]
        self.stack = (start, None)  # linked list (state, rest): cheap to share between trie branches
        self.cache: dict = {}

    def _step(self, stack, terminal: str):
        """The stack after shifting `terminal`, or None when it is an error."""
        while True:
            action = self.states[stack[0]].get(terminal)
            if action is None:
                return None
            kind, arg = action
            if kind.name == "Shift":
                stack = (arg, stack)
                while (rule := self.default_reduce.get(stack[0])) is not None:
                    stack = self._reduce(stack, rule)
                return stack
            stack = self._reduce(stack, arg)

    def _reduce(self, stack, rule):
        for _ in rule.expansion:  # pop the rule's symbols, then go to its nonterminal
            stack = stack[1]
        return (self.states[stack[0]][rule.origin.name][1], stack)

    def _accepting(self, stack) -> bool:
        """Could the text end here? Reduce on end-of-input until lark's end state (or an error)."""
        while stack[0] != self.end:
            action = self.states[stack[0]].get("$END")
            if action is None:
                return False
            kind, arg = action
            if kind.name == "Shift":
                return True
            stack = self._reduce(stack, arg)
        return True

    def allowed(self) -> np.ndarray:
        mask = self.cache.get(self.stack)
        if mask is None:
            ids: list[int] = []
            self._walk(self.trie, self.stack, ids)
            allowed = np.zeros(self.vocab_size, bool)
            allowed[ids] = True
            allowed[END_OF_TEXT] = self._accepting(self.stack)
            mask = self.cache[self.stack] = np.packbits(allowed, bitorder="little").view(np.int32)
        return mask

    def _walk(self, node: dict, stack, ids: list[int]) -> None:
        for byte, child in node.items():
            if byte is None:
                continue
            after = self._step(stack, self.names[byte])
            if after is not None:
                ids.extend(child.get(None, ()))
                self._walk(child, after, ids)

    def advance(self, token_bytes: bytes) -> None:
        for b in token_bytes:
            self.stack = self._step(self.stack, self.names[b])
            if self.stack is None:
                raise ValueError(f"byte {b:#x} breaks the grammar")


def byte_trie(tokenizer: Tokenizer) -> dict:
    """Nested dicts byte -> child; the key None holds the ids of the tokens that end at a node."""
    root: dict = {}
    for t in range(tokenizer.vocab_size):
        node = root
        for b in tokenizer.token_bytes(t):
            node = node.setdefault(b, {})
        if node is not root:
            node.setdefault(None, []).append(t)
    return root


# ---- timing ----


def time_steps(tokens_per_doc: list[list[int]], fresh: Callable[[], object], step, limit: int) -> np.ndarray:
    """Seconds per token of `step(matcher, token)`: the mask before the token, then taking it."""
    times = []
    for tokens in tokens_per_doc:
        m = fresh()
        for t in tokens:
            t0 = time.perf_counter()
            step(m, t)
            times.append(time.perf_counter() - t0)
            if len(times) >= limit:
                return np.array(times)
    return np.array(times)


def report(name: str, seconds: np.ndarray) -> None:
    ms = seconds * 1e3
    print(f"{name:<44} steps {len(ms):5d}  mean {ms.mean():9.3f}  p50 {np.percentile(ms, 50):9.3f}  "
          f"p99 {np.percentile(ms, 99):9.3f}  max {ms.max():9.3f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=16, help="JSON documents replayed (about 80 tokens each)")
    ap.add_argument("--lark-steps", type=int, default=1000, help="steps for the slow pure-Python candidate")
    args = ap.parse_args()

    tokenizer = Tokenizer.from_file()
    docs = documents(args.docs)
    tokens = [tokenizer.encode(d) for d in docs]
    n = sum(map(len, tokens))
    print(f"{len(docs)} JSON documents, {n} tokens, vocabulary {tokenizer.vocab_size}; target p99 < {TARGET_P99_MS} ms")

    t0 = time.perf_counter()
    vocab = Vocabulary(tokenizer)
    print(f"llguidance: vocabulary prepared in {time.perf_counter() - t0:.2f} s (once per server)")
    readme_tokens = [tokenizer.encode(d) for d in readme_documents(documents(3 * args.docs, seed=1))]
    for name, grammar, replay in [
        ("llguidance, JSON schema of the documents", Grammar.from_json_schema(SCHEMA, vocab), tokens),
        ("llguidance, any JSON object (json_object)", Grammar.from_json_schema(JSON_OBJECT, vocab), tokens),
        ("llguidance, AI00 README BNF (name/age/job)", Grammar.from_bnf(README_BNF, vocab), readme_tokens),
    ]:
        # advance() takes the token and computes the next mask at once
        report(name, time_steps(replay, grammar.matcher, lambda m, t: (m.allowed(), m.advance(t)), n))

    t0 = time.perf_counter()
    trie = byte_trie(tokenizer)
    table, start = lark_json_table()
    print(f"lark candidate: byte trie and LALR table built in {time.perf_counter() - t0:.2f} s")
    candidate = lambda: LarkTrieMatcher(table, start, trie, tokenizer.vocab_size)  # noqa: E731
    times = time_steps(tokens, candidate, lambda m, t: (m.allowed(), m.advance(tokenizer.token_bytes(t))),
                       args.lark_steps)
    report("pure-Python lark + trie + stack cache, JSON", times)
    # both engines must agree on the first mask (a check that the candidate is a real one)
    first = np.unpackbits(candidate().allowed().view(np.uint8), bitorder="little").astype(bool)
    ref = Grammar.from_json_schema(JSON_OBJECT, vocab).matcher().allowed_tokens()
    print(f"first-step masks agree: {bool((first == ref).all())} ({first.sum()} and {ref.sum()} tokens allowed)")


if __name__ == "__main__":
    main()
