r"""AI00's BNF dialect (bnf_sampler's, as in AI00's README) -> an llguidance Lark grammar, parsed with lark.

    <start> ::= <json_object>
    <json_key> ::= '"' "name" '"' | '"' "age" '"' | '"' "job" '"'
    <content> ::= <except!([escaped_literals])> | <except!([escaped_literals])><content> | '\\"'<content>
    <escaped_literals> ::= '\t' | '\n' | '\r' | '"'

A rule is `<name> ::= alternatives` and may span lines; a name defined twice gets both sets of alternatives.
Literals are "..." or '...' with the escapes \t \n \r \0 \\ \" \' \uXXXX \xHH (ASCII); recursion of any kind
is fine. `<except!('lit')>` and `<except!([name])>` stand for one or more characters of text that contains
none of the literals (for `name`: every string of its finite language); `<any!>` is any one character.

How it maps: a nonterminal that is a regular expression over others (it recurses, if at all, only at the
end or only at the start of its alternatives, like every rule of the README's grammar) becomes one
llguidance lexeme, so a regular grammar is one regex and its mask is exact; the other nonterminals become
Earley rules over those lexemes. Between two lexemes llguidance's lexer is greedy (where text could end a
lexeme or go on with it, it goes on), so a recursive grammar may refuse a text that needs the shorter
split; it never lets through text outside the grammar.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import deque
from dataclasses import dataclass

from lark import Lark, Token
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from backend.grammar import GrammarError

_META = Lark(
    r"""
    start: rule+
    rule: HEAD alternatives
    alternatives: sequence ("|" sequence)*
    sequence: item*
    ?item: NONTERMINAL | STRING | EXCEPT_LITERAL | EXCEPT_NONTERMINAL | ANY

    HEAD.4: /<[^<>]+>[ \t\r\n]*::=/
    EXCEPT_LITERAL.3: /<except!\((?:'[^']*'|"[^"]*")\)>/
    EXCEPT_NONTERMINAL.3: /<except!\(\[[^\[\]<>]+\]\)>/
    ANY.3: "<any!>"
    NONTERMINAL: /<[^<>]+>/
    STRING: /"[^"\n]*"|'[^'\n]*'/
    %ignore /[ \t\r\n]+/
    """,
    parser="lalr",
)

_MAX_EXCEPT_STRINGS = 4096  # an except!([name]) whose language is larger than this is refused
_MAX_EXCEPT_CHARS = 1 << 16  # ... or whose strings together are longer than this
# The grammar's shape, checked before anything is expanded or handed to llguidance (whose Rust lexer and
# grammar builder recurse once per level of nesting: ~2,500 nested rules overflow an 8 MiB stack).
MAX_RULES = 1024  # distinct nonterminals
MAX_DEPTH = 256  # the longest chain of rules referring to rules (a group of mutually recursive rules counts
#                  as many levels as it has rules)
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|x[0-9a-fA-F]{2}|.)", re.DOTALL)
_SIMPLE_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "0": "\0", "\\": "\\", '"': '"', "'": "'"}

# The name/age/job grammar from AI00's README: the dialect's reference example (tests, bench).
AI00_README_BNF = r"""<start> ::= <json_object>
<json_object> ::= "{" <object_members> "}"
<object_members> ::= <json_member> | <json_member> ", " <object_members>
<json_member> ::= <json_key> ": " <json_value>
<json_key> ::= '"' "name" '"' | '"' "age" '"' | '"' "job" '"'
<json_value> ::= <json_string> | <json_number>
<json_string>::='"'<content>'"'
<content>::=<except!([escaped_literals])>|<except!([escaped_literals])><content>|'\\"'<content>|'\\"'
<escaped_literals>::='\t'|'\n'|'\r'|'"'
<json_number> ::= <positive_digit><digits>|'0'
<digits>::=<digit>|<digit><digits>
<digit>::='0'|<positive_digit>
<positive_digit>::="1"|"2"|"3"|"4"|"5"|"6"|"7"|"8"|"9"
"""


@dataclass(frozen=True)
class _Ref:
    name: str
    token: Token


@dataclass(frozen=True)
class _Except:
    literals: frozenset[str]  # text containing any of these is refused
    ref: Token | None = None  # except!([ref]): `literals` is filled in from <ref> once every rule is read


class _Any:
    pass


_Item = str | _Ref | _Except | _Any  # a str is literal text


def bnf_to_lark(text: str) -> str:
    """Compile AI00 BNF text to llguidance's Lark syntax, or raise GrammarError naming line and column."""
    rules, heads = _parse(text)
    if "start" not in rules:
        raise GrammarError("no <start> rule: the grammar begins at <start>", 1, 1)
    check_shape(rules)
    _resolve_excepts(rules)
    _check_productive(rules, heads)
    return _emit(rules)


# ---- text -> rules ----


def _parse(text: str) -> tuple[dict[str, list[list[_Item]]], dict[str, Token]]:
    try:
        tree = _META.parse(text)
    except UnexpectedInput as e:
        raise _syntax_error(e, text) from None
    rules: dict[str, list[list[_Item]]] = {}
    heads: dict[str, Token] = {}
    pending: list[tuple[str, Token]] = []  # except!([name]) to resolve once every rule is known
    for rule in tree.children:
        head, alternatives = rule.children
        name = head[1 : head.index(">")]
        heads.setdefault(name, head)
        for sequence in alternatives.children:
            items: list[_Item] = []
            for tok in sequence.children:
                item = _item(tok, pending)
                if isinstance(item, str) and items and isinstance(items[-1], str):
                    items[-1] += item  # consecutive literals are one literal
                else:
                    items.append(item)
            rules.setdefault(name, []).append(items)
    for name, tok in pending:
        if name not in rules:
            raise GrammarError(f"except!([{name}]): <{name}> is not defined", tok.line, tok.column)
    for alts in rules.values():
        for items in alts:
            for item in items:
                if isinstance(item, _Ref) and item.name not in rules:
                    raise GrammarError(f"<{item.name}> is used but never defined", item.token.line, item.token.column)
    return rules, heads


def _item(tok: Token, pending: list[tuple[str, Token]]) -> _Item:
    if tok.type == "STRING":
        return _unescape(tok.value[1:-1], tok)
    if tok.type == "NONTERMINAL":
        return _Ref(tok.value[1:-1], tok)
    if tok.type == "ANY":
        return _Any()
    if tok.type == "EXCEPT_LITERAL":
        literal = _unescape(tok.value[len("<except!(") + 1 : -3], tok)
        if not literal:
            raise GrammarError("except!(''): the literal is empty", tok.line, tok.column)
        return _Except(frozenset([literal]))
    name = tok.value[len("<except!([") : -3]
    pending.append((name, tok))
    return _Except(frozenset(), ref=tok)


def _unescape(raw: str, tok: Token) -> str:
    def one(m: re.Match) -> str:
        e = m.group(1)
        if e in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[e]
        if e[0] == "u" and len(e) == 5:
            return chr(int(e[1:], 16))
        if e[0] == "x" and len(e) == 3:
            if int(e[1:], 16) >= 0x80:
                raise GrammarError(f"\\{e}: only ASCII bytes (\\x00-\\x7f); write \\uXXXX", tok.line, tok.column)
            return chr(int(e[1:], 16))
        return m.group(0)  # an unknown escape stays as written, as in bnf_sampler

    return _ESCAPE.sub(one, raw)


def _syntax_error(e: UnexpectedInput, text: str) -> GrammarError:
    if isinstance(e, UnexpectedEOF) or getattr(e, "line", -1) < 1:
        lines = text.splitlines() or [""]
        return GrammarError("the grammar ends in the middle of a rule", len(lines), len(lines[-1]) + 1)
    if isinstance(e, UnexpectedCharacters):
        what = f"unexpected character {text[e.pos_in_stream]!r}"
        if text[e.pos_in_stream] in "\"'":
            what = "a literal is not closed on this line"
        return GrammarError(f"{what} (a rule is `<name> ::= alternatives`)", e.line, e.column)
    assert isinstance(e, UnexpectedToken)
    tok = e.token
    if tok.type == "$END":
        lines = text.splitlines() or [""]
        return GrammarError("the grammar ends in the middle of a rule", len(lines), len(lines[-1]) + 1)
    hint = "a rule must start with `<name> ::=`" if tok.type != "HEAD" else "unexpected rule head"
    return GrammarError(f"unexpected {tok.value!r}: {hint}", tok.line, tok.column)


# ---- checks ----


def check_shape(rules: dict[str, list[list[_Item]]]) -> None:
    """Refuse grammars over MAX_RULES nonterminals or MAX_DEPTH levels of nesting, naming the limit."""
    if len(rules) > MAX_RULES:
        raise GrammarError(f"grammar too large: {len(rules)} rules, the limit is {MAX_RULES} (bnf max_rules)")
    graph = {name: {it.name for items in alts for it in items if isinstance(it, _Ref)} for name, alts in rules.items()}
    depth = _nesting_depth(graph)
    if depth > MAX_DEPTH:
        raise GrammarError(f"grammar too deep: rules nest {depth} levels, the limit is {MAX_DEPTH} (bnf max_depth)")


def _nesting_depth(graph: dict[str, set[str]]) -> int:
    """The longest chain of references, each strongly connected group counted by its size (an upper bound on
    any simple path); iterative, so a hostile chain cannot exhaust Python's stack either."""
    component = _components(graph)
    size: dict[int, int] = {}
    for c in component.values():
        size[c] = size.get(c, 0) + 1
    # Tarjan numbers components in reverse topological order: successors come first
    order = sorted(size)
    succ: dict[int, set[int]] = {c: set() for c in order}
    for name, refs in graph.items():
        succ[component[name]] |= {component[r] for r in refs if component[r] != component[name]}
    depth: dict[int, int] = {}
    for c in order:
        depth[c] = size[c] + max((depth[d] for d in succ[c]), default=0)
    return max(depth.values(), default=0)


def _components(graph: dict[str, set[str]]) -> dict[str, int]:
    """Strongly connected components (Tarjan, iterative): name -> component number, successors first."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    component: dict[str, int] = {}
    numbers = itertools.count()
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, refs = work[-1]
            for ref in refs:
                if ref not in index:
                    index[ref] = low[ref] = len(index)
                    stack.append(ref)
                    on_stack.add(ref)
                    work.append((ref, iter(sorted(graph[ref]))))
                    break
                if ref in on_stack:
                    low[node] = min(low[node], index[ref])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    number = next(numbers)
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component[member] = number
                        if member == node:
                            break
    return component


def _resolve_excepts(rules: dict[str, list[list[_Item]]]) -> None:
    """Give each except!([name]) the finite set of strings <name> stands for."""
    memo: dict[str, set[str]] = {}
    for alts in rules.values():
        for items in alts:
            for i, item in enumerate(items):
                if isinstance(item, _Except) and (tok := item.ref) is not None:
                    name = tok.value[len("<except!([") : -3]
                    try:
                        literals = _finite_language(name, rules, (), memo)
                    except GrammarError as e:
                        raise GrammarError(str(e), tok.line, tok.column) from None
                    if "" in literals:
                        raise GrammarError(
                            f"except!([{name}]): <{name}> can be empty text, which every text contains",
                            tok.line,
                            tok.column,
                        )
                    items[i] = _Except(frozenset(literals))


def _finite_language(
    name: str, rules: dict[str, list[list[_Item]]], stack: tuple[str, ...], memo: dict[str, set[str]]
) -> set[str]:
    """Every string <name> stands for. Each name is expanded once (memo), and the size caps are checked before
    a product is built, so neither nesting nor a wide alternation can make this exponential."""
    if name in memo:
        return memo[name]
    if name in stack:
        raise GrammarError(
            f"except!([{stack[0]}]): <{stack[0]}> must stand for a finite set of literals, but <{name}> recurses"
        )
    out: set[str] = set()
    for items in rules[name]:
        strings = {""}
        for item in items:
            if isinstance(item, str):
                part = {item}
            elif isinstance(item, _Ref):
                part = _finite_language(item.name, rules, (*stack, name), memo)
            else:
                raise GrammarError(
                    f"except!([{stack[0] if stack else name}]): <{name}> may only use literals and nonterminals"
                )
            longest = max(map(len, strings)) + max(map(len, part))
            if len(strings) * len(part) > _MAX_EXCEPT_STRINGS or len(strings) * len(part) * longest > _MAX_EXCEPT_CHARS:
                raise GrammarError(f"except!([...]): <{name}> stands for more than {_MAX_EXCEPT_STRINGS} strings "
                                   f"or {_MAX_EXCEPT_CHARS} characters")  # fmt: skip
            strings = {a + b for a in strings for b in part}
        out |= strings
        if len(out) > _MAX_EXCEPT_STRINGS:
            raise GrammarError(f"except!([...]): <{name}> stands for more than {_MAX_EXCEPT_STRINGS} strings")
    memo[name] = out
    return out


def _check_productive(rules: dict[str, list[list[_Item]]], heads: dict[str, Token]) -> None:
    """Every rule must be able to end: a rule whose every alternative recurses forever is an error.
    Linear in the grammar's size: an alternative is counted down as the rules it uses become productive."""
    waiting: list[int] = []  # per alternative: how many of its references are not known productive yet
    users: dict[str, list[tuple[str, int]]] = {name: [] for name in rules}  # name -> (rule, alternative) using it
    ready: deque[str] = deque()
    for name, alts in rules.items():
        for items in alts:
            refs = {it.name for it in items if isinstance(it, _Ref)}
            for ref in refs:
                users[ref].append((name, len(waiting)))
            waiting.append(len(refs))
            if not refs:
                ready.append(name)
    done: set[str] = set()
    while ready:
        name = ready.popleft()
        if name in done:
            continue
        done.add(name)
        for user, alt in users[name]:
            waiting[alt] -= 1
            if waiting[alt] == 0 and user not in done:
                ready.append(user)
    stuck = [name for name in rules if name not in done]
    if stuck:
        tok = heads[stuck[-1]]
        listed = ", ".join(f"<{name}>" for name in stuck[:8]) + (", ..." if len(stuck) > 8 else "")
        raise GrammarError(f"{listed} can never end: every alternative recurses", tok.line, tok.column)


# ---- rules -> llguidance Lark ----


def _regular_rules(rules: dict[str, list[list[_Item]]]) -> set[str]:
    """Nonterminals that are regular expressions over other regular ones: no self-reference except
    as the last item of alternatives (right recursion) or only as the first (left recursion).
    Linear: a rule is judged once, when the last of the other rules it uses has become regular."""
    everything = set(rules)
    shaped = {name for name, alts in rules.items() if _recursion_side(name, alts, everything) is not None}
    others = {name: {it.name for items in alts for it in items if isinstance(it, _Ref)} - {name}
              for name, alts in rules.items()}  # fmt: skip
    users: dict[str, list[str]] = {name: [] for name in rules}
    for name, refs in others.items():
        for ref in refs:
            users[ref].append(name)
    missing = {name: len(refs) for name, refs in others.items()}
    ready = deque(name for name in rules if missing[name] == 0 and name in shaped)
    regular: set[str] = set()
    while ready:
        name = ready.popleft()
        regular.add(name)
        for user in users[name]:
            missing[user] -= 1
            if missing[user] == 0 and user in shaped:
                ready.append(user)
    return regular


def _recursion_side(name: str, alts: list[list[_Item]], regular: set[str]) -> str | None:
    """'none', 'right' or 'left' when `name` can be written as a regular expression; else None."""
    sides = set()
    for items in alts:
        selfs = [i for i, it in enumerate(items) if isinstance(it, _Ref) and it.name == name]
        others = [it for it in items if isinstance(it, _Ref) and it.name != name]
        if any(it.name not in regular for it in others) or len(selfs) > 1 or (selfs and len(items) == 1):
            return None
        if selfs:
            sides.add("right" if selfs[0] == len(items) - 1 else "left" if selfs[0] == 0 else "middle")
    if "middle" in sides or len(sides) > 1:
        return None
    return sides.pop() if sides else "none"


def _emit(rules: dict[str, list[list[_Item]]]) -> str:
    """Regular nonterminals become terminals (one lexeme each: exact, and fast for llguidance's lexer);
    the others become Earley rules over them."""
    regular = _regular_rules(rules)
    names: dict[str, str] = {}
    excepts: dict[frozenset[str], str] = {}
    lines: list[str] = []
    todo: deque[str] = deque()

    def name_of(nonterminal: str) -> str:
        if nonterminal not in names:
            slug = re.sub(r"[^a-z0-9_]", "_", nonterminal.lower())[:40]
            if nonterminal == "start":
                names[nonterminal] = "start"
            else:
                n = f"r{len(names)}_{slug}"
                names[nonterminal] = n.upper() if nonterminal in regular else n
            todo.append(nonterminal)
        return names[nonterminal]

    def sequence(items: list[_Item]) -> str:
        parts = []
        for item in items:
            if isinstance(item, str):
                parts.append(json.dumps(item, ensure_ascii=False))
            elif isinstance(item, _Ref):
                parts.append(name_of(item.name))
            elif isinstance(item, _Except):
                if item.literals not in excepts:
                    excepts[item.literals] = f"EXCEPT{len(excepts)}"
                    lines.append(f"{excepts[item.literals]}: {_except_regex(item.literals)}")
                parts.append(excepts[item.literals])
            else:
                parts.append("/(?s:.)/")
        return " ".join(parts) or '""'

    name_of("start")
    while todo:
        nonterminal = todo.popleft()
        alts = rules[nonterminal]
        if nonterminal in regular:
            body = _regular_body(nonterminal, alts, sequence)
            if nonterminal == "start":
                lines.append("start: START")
                lines.append(f"START: {body}")
            else:
                lines.append(f"{names[nonterminal]}: {body}")
        else:
            lines.append(f"{names[nonterminal]}: " + " | ".join(sequence(items) for items in alts))
    return "\n".join(lines) + "\n"


def _regular_body(name: str, alts: list[list[_Item]], sequence) -> str:
    """A terminal's body: `(b1 | b2)` alone, or with the recursive prefixes/suffixes as `( ... )*`."""
    side = _recursion_side(name, alts, {name} | {it.name for items in alts for it in items if isinstance(it, _Ref)})
    is_self = lambda it: isinstance(it, _Ref) and it.name == name  # noqa: E731
    base = [sequence(items) for items in alts if not any(is_self(it) for it in items)]
    loop = [sequence([it for it in items if not is_self(it)]) for items in alts if any(is_self(it) for it in items)]
    b = "(" + " | ".join(base) + ")"
    if not loop:
        return b
    star = "(" + " | ".join(loop) + ")*"
    return f"{star} {b}" if side == "right" else f"{b} {star}"


def _except_regex(literals: frozenset[str]) -> str:
    """One or more characters containing none of `literals`."""
    esc = lambda s: "".join(f"\\x{{{ord(c):x}}}" for c in s)  # noqa: E731
    if all(len(lit) == 1 for lit in literals):
        return "/[^" + esc("".join(sorted(literals))) + "]+/"
    avoid = "|".join(esc(lit) for lit in sorted(literals))
    return f"/(?s:.+)/ & ~/(?s:.*)(?:{avoid})(?s:.*)/"
