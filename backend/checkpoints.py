"""Where in a prompt the scheduler keeps a state for the cache: where later requests are likely to diverge.

- every chat turn boundary (after a token that ends the text with a blank line, how chat.py ends each turn):
  the first one is the end of the system prompt, the others are where a follow-up or an edited turn branches;
- every `every` tokens of a long prompt (absolute positions, so two prompts sharing a long prefix share them);
- one token before the prompt's end, so an exact repeat restores all but the last token and feeds that one
  to get its logits (a prefill chunk stops at each checkpoint, so the state there can be copied).

At most MAX_PER_PROMPT per prompt: each one ends a prefill chunk early, which costs a lone prompt one step.
"""

from __future__ import annotations

from collections.abc import Sequence

from backend.tokenizer import Tokenizer

MAX_PER_PROMPT = 8


class TurnEnds:
    """Which tokens end a chat turn: their bytes end the text with b"\\n\\n" (or a b"\\n" after a b"\\n")."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        ends_nl: set[int] = set()
        self.ends_blank: set[int] = set()
        self.newline = -1
        for i in range(tokenizer.vocab_size):
            data = tokenizer.token_bytes(i)
            if data.endswith(b"\n\n"):
                self.ends_blank.add(i)
            elif data.endswith(b"\n"):
                ends_nl.add(i)
            if data == b"\n":
                self.newline = i
        self.ends_nl = frozenset(ends_nl)

    def after(self, tokens: Sequence[int], start: int) -> list[int]:
        """Positions p > start (tokens fed) where tokens[:p] ends a turn."""
        out = []
        for p in range(max(start, 0) + 1, len(tokens) + 1):
            t = tokens[p - 1]
            if t in self.ends_blank or (t == self.newline and p >= 2 and tokens[p - 2] in self.ends_nl):
                out.append(p)
        return out


def checkpoint_positions(tokens: Sequence[int], start: int, every: int, turns: TurnEnds | None,
                         min_tokens: int = 2) -> list[int]:  # fmt: skip
    """Ascending positions in start+1 .. len-1 where the prefill stops to keep a state: the last-but-one
    token, the first turn boundary (the system prompt's end), then the latest other candidates."""
    end = len(tokens) - 1
    turn_ends = turns.after(tokens, start) if turns is not None else []
    interval = list(range((start // every + 1) * every, end, every)) if every > 0 else []
    rest = sorted({p for p in (*turn_ends, *interval) if start < p < end and p >= min_tokens})
    first = [turn_ends[0]] if turn_ends and turn_ends[0] in rest else []
    rest = [p for p in rest if p not in first]
    keep = set(first) | set(rest[max(0, len(rest) - (MAX_PER_PROMPT - 1 - len(first))) :])
    if end > start and end >= min_tokens:
        keep.add(end)
    return sorted(keep)
