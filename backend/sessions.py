"""One branch of one request, as the scheduler thread sees it: prompt, slot, sampler state, output text."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum, auto

import numpy as np

from backend.gpu.step_types import Draw, Drawn
from backend.grammar import GrammarError
from backend.grammar.matcher import Matcher
from backend.messages import Delta, Done, Submit, Timings, TokenLogprob, Usage
from backend.sampling.params import SamplerParams
from backend.tokenizer import END_OF_TEXT, Detokenizer, Tokenizer


class Status(Enum):
    WAITING = auto()  # queued, no slot yet
    PREFILL = auto()  # has a slot, feeding the prompt
    DECODE = auto()  # feeding its last sampled token each step
    FINISHED = auto()


@dataclass(eq=False)
class Session:
    submit: Submit
    branch: int
    tokenizer: Tokenizer
    params: SamplerParams
    slot: int = -1
    status: Status = Status.WAITING
    n_fed: int = 0  # prompt tokens already in the slot's state
    cached_tokens: int = 0
    out_tokens: list[int] = field(default_factory=list)
    text: str = ""  # emitted output
    finish_reason: str | None = None
    admitted_at: float = 0.0
    first_token_at: float = 0.0
    prev_token_at: float = 0.0  # the token before the last one (inter-token latency)
    last_token_at: float = 0.0
    _held: str = ""  # decoded text not emitted yet: it might begin a stop string
    _delta_tokens: list[int] = field(default_factory=list)
    _delta_logprobs: list[TokenLogprob] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.detok = Detokenizer(self.tokenizer)  # penalty counts live on the GPU, in this session's slot
        self.rng = self._make_rng(self.params.seed)
        self.matcher: Matcher | None = self.submit.grammar.matcher() if self.submit.grammar is not None else None

    def _make_rng(self, seed: int | None) -> np.random.Generator:
        # branches of one seeded request differ, but each is reproducible
        return np.random.default_rng(None if seed is None else (seed & (2**64 - 1), self.branch))

    @property
    def id(self) -> str:
        return self.submit.id

    @property
    def prompt(self) -> tuple[int, ...]:
        return self.submit.tokens

    @property
    def fed_tokens(self) -> tuple[int, ...]:
        """The tokens whose effect the slot's state holds (the last sampled token is never fed)."""
        return self.prompt[: self.n_fed] + tuple(self.out_tokens[:-1])

    def grant(self, slot: int, cached_tokens: int = 0) -> None:
        """Admit into `slot`, whose state already holds the first `cached_tokens` prompt tokens."""
        self.slot, self.status = slot, Status.PREFILL
        self.n_fed = self.cached_tokens = cached_tokens
        self.admitted_at = time.monotonic()

    def update(self, changes: dict) -> None:
        old_seed = self.params.seed
        self.params = self.params.updated(changes)
        if "seed" in changes and self.params.seed != old_seed:
            self.rng = self._make_rng(self.params.seed)

    def draw(self, row: int) -> Draw:
        """This step's token choice for the GPU, from plan row `row`'s last logit line.

        With a grammar, only the tokens its mask allows can be drawn (GrammarError if it allows none)."""
        mask = self.matcher.allowed() if self.matcher is not None else None
        if mask is not None and not mask.any():
            raise GrammarError("the grammar allows no next token")
        return self.params.draw(row, self.slot, self.rng, fresh=not self.out_tokens, mask=mask)

    def take(self, drawn: Drawn) -> Delta | None:
        """The GPU's choice for this session: append it and return the text that is now final."""
        if self.params.logprobs is not None and drawn.logprob is not None:
            self._delta_logprobs.append(TokenLogprob(drawn.token, drawn.logprob, drawn.top))
        return self.accept(drawn.token)

    def accept(self, token: int) -> Delta | None:
        now = time.monotonic()
        if not self.out_tokens:
            self.first_token_at = now
        self.prev_token_at, self.last_token_at = self.last_token_at, now
        self.status = Status.DECODE
        self.out_tokens.append(token)
        self._delta_tokens.append(token)
        if self.matcher is not None:
            self.matcher.advance(token)  # and computes the next step's mask now
        if token == END_OF_TEXT:
            self._finish_text("grammar" if self.matcher is not None else "stop", self._held + self.detok.flush())
        else:
            self._held += self.detok.push(token)
            stop_at = _find_stop(self._held, self.params.stop)
            if stop_at is not None:
                self._finish_text("stop", self._held[:stop_at])
            elif self.matcher is not None and self.matcher.is_complete:
                self._finish_text("grammar", self._held + self.detok.flush())
            elif len(self.out_tokens) >= self.params.max_tokens:
                self._finish_text("length", self._held + self.detok.flush())
            else:
                keep = _stop_prefix_len(self._held, self.params.stop)
                ready, self._held = self._held[: len(self._held) - keep], self._held[len(self._held) - keep :]
                return self._delta(ready) if ready else None
        return self._delta(self._held) if self._held or self._delta_tokens else None

    def _finish_text(self, reason: str, final_text: str) -> None:
        self._held = final_text
        self.finish_reason = reason
        self.status = Status.FINISHED

    def _delta(self, text: str) -> Delta:
        self.text += text
        if self.status is Status.FINISHED:
            self._held = ""
        delta = Delta(
            self.id,
            self.branch,
            text,
            tuple(self._delta_tokens),
            tuple(self._delta_logprobs) if self.params.logprobs is not None else None,
        )
        self._delta_tokens, self._delta_logprobs = [], []
        return delta

    def finish(self, reason: str) -> None:
        """End early (cancel, error, shutdown); text held back for stop strings is dropped."""
        if self.status is not Status.FINISHED:
            self.finish_reason, self.status, self._held = reason, Status.FINISHED, ""

    def done(self, error: str | None = None) -> Done:
        now = time.monotonic()
        admitted = self.admitted_at or now
        first = self.first_token_at or now
        decode_s = now - first
        return Done(
            self.id,
            self.branch,
            self.finish_reason or "cancelled",
            self.text,
            Usage(len(self.prompt), len(self.out_tokens), self.cached_tokens),
            Timings(
                queue_ms=(admitted - self.submit.submitted_at) * 1e3,
                prefill_ms=(first - admitted) * 1e3 if self.first_token_at else 0.0,
                decode_tok_per_s=(len(self.out_tokens) - 1) / decode_s if decode_s > 0 else 0.0,
            ),
            error,
        )


def _find_stop(text: str, stops: tuple[str, ...]) -> int | None:
    """Index where the earliest stop string begins in `text`, if any."""
    hits = [i for s in stops if s and (i := text.find(s)) >= 0]
    return min(hits) if hits else None


def _stop_prefix_len(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest end of `text` that could still grow into a stop string."""
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best
