"""Multiple-choice scoring (POST /api/oai/chooses): how likely each choice is as the continuation of an input.

For context tokens X and a choice's tokens c_1..c_m (tokenized on its own: a choice carries its own leading
space), log p(c | X) = sum_j log softmax(logits after X, c_<j)[c_j]. The context is fed once, into one slot;
that state is copied to one slot per choice (`copy_slot`), and every choice's c_1..c_{m-1} is fed in
batched steps with logits at every position (`Logits.ALL`): the line after c_{j-1} scores c_j, and the
context's last logits score c_1. So the cost is len(X) + sum(m - 1) tokens, not len(choices) x len(X).

    perplexity = exp(-log p(c | X) / m)                                       (lower is better)
    calibrated = exp(-(log p(c | X) - log p(c | N)) / m)  =  ppl(c | X) / ppl(c | N)

where N is the neutral context: the same starting state fed only END_OF_TEXT (what the model expects at a
document start). Calibration divides each choice's likelihood by its likelihood after N, so choices that are
likely anywhere (frequent words) lose their head start. It is a second pass over the same slots.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from backend.gpu.step_types import Logits, StepPlan, StepRow
from backend.messages import Failed, Score, Scored, TokenLogprob
from backend.tokenizer import END_OF_TEXT

log = logging.getLogger("ai00.scheduler")

NEUTRAL = (END_OF_TEXT,)


@dataclass(frozen=True)
class Scores:
    log_likelihood: np.ndarray  # [k] f64: log p(choice | context)
    tokens_fed: int  # tokens the engine ran (the cost)
    steps: int


def log_prob_at(logits: np.ndarray, targets: Sequence[int]) -> np.ndarray:
    """[n] f64: log softmax(logits[i])[targets[i]] for logits [n, vocab]."""
    x = logits.astype(np.float64)
    top = x.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(x - top).sum(axis=1)) + top[:, 0]
    return x[np.arange(len(targets)), np.asarray(targets)] - log_z


def token_reports(logits: np.ndarray, targets: Sequence[int], k: int) -> list[TokenLogprob]:
    """Each target's logprob under its logit line, with the line's `k` most likely tokens (ties by id): what
    OpenAI's echo reports for prompt tokens."""
    x = logits.astype(np.float64)
    top = x.max(axis=1, keepdims=True)
    lp = x - (np.log(np.exp(x - top).sum(axis=1, keepdims=True)) + top)  # [n, vocab] log softmax
    reports = []
    for line, target in zip(lp, targets, strict=True):
        best = np.argpartition(-line, k)[:k] if 0 < k < len(line) else np.arange(len(line) if k else 0)
        best = best[np.lexsort((best, -line[best]))]
        reports.append(TokenLogprob(int(target), float(line[target]), tuple((int(t), float(line[t])) for t in best)))
    return reports


class ScoreJob:
    """One scoring pass (a context, then every choice) cut into step-sized rows, so the scheduler plans it
    like a prompt under the per-step token budget and running streams keep their token every step.

    `slots` are one per choice; `start(slot)` puts the starting state in a slot and `copy(src, dst)` copies
    a slot; both run on the engine thread between steps."""

    def __init__(self, slots: Sequence[int], start: Callable[[int], None], copy: Callable[[int, int], None],
                 context: Sequence[int], choices: Sequence[Sequence[int]], top: int | None = None) -> None:  # fmt: skip
        self.slots, self.copy, self.top = list(slots), copy, top
        self.reports: list[list[TokenLogprob]] = [[] for _ in choices]  # per choice token, when `top` is set
        self.context, self.choices = tuple(context), [tuple(c) for c in choices]
        self.context_fed = 0
        self.fed = [0] * len(choices)  # choice tokens after the first that are in each slot
        self.total = np.zeros(len(choices))  # [k] f64: log p(choice | context) so far
        self.tokens_fed = self.steps = 0
        self._planned: list[tuple[int, int]] = []  # this step's rows: (choice or -1 for the context, tokens)
        start(self.slots[0])

    @property
    def done(self) -> bool:
        return self.context_fed == len(self.context) and all(
            f == len(c) - 1 for f, c in zip(self.fed, self.choices, strict=True)
        )

    def rows(self, budget: int, lines: int) -> list[StepRow]:
        """This step's share: at most `budget` tokens and `lines` logit lines (may be empty)."""
        self._planned = []
        if self.context_fed < len(self.context):
            take = min(len(self.context) - self.context_fed, budget)
            end = self.context_fed + take == len(self.context)
            if take <= 0 or (end and lines < 1):
                return []
            self._planned.append((-1, take))
            chunk = self.context[self.context_fed : self.context_fed + take]
            return [StepRow(self.slots[0], chunk, Logits.LAST if end else Logits.NONE)]
        rows = []
        room = min(budget, lines)  # every choice token fed asks for its logit line
        for i, c in enumerate(self.choices):
            take = min(len(c) - 1 - self.fed[i], room)
            if take > 0:
                rows.append(StepRow(self.slots[i], c[self.fed[i] : self.fed[i] + take], Logits.ALL))
                self._planned.append((i, take))
                room -= take
        return rows

    def took(self, lines: Sequence[np.ndarray]) -> None:
        """The logit lines of this step's rows, in order ([1, vocab] for the context's end, [take, vocab] for
        a choice's tokens; a chunk of the context before its end has none)."""
        self.steps += 1
        for (i, take), x in zip(self._planned, lines, strict=True):
            self.tokens_fed += take
            if i < 0:
                self.context_fed += take
                if self.context_fed == len(self.context):  # the context's last line scores every c_1
                    for slot in self.slots[1:]:
                        self.copy(self.slots[0], slot)
                    self.total += log_prob_at(np.repeat(x, len(self.choices), axis=0), [c[0] for c in self.choices])
                    self._report(range(len(self.choices)), x, [[c[0]] for c in self.choices])
            else:
                at = self.fed[i]
                self.total[i] += log_prob_at(x, self.choices[i][at + 1 : at + 1 + take]).sum()
                self._report([i], x, [self.choices[i][at + 1 : at + 1 + take]])
                self.fed[i] += take
        self._planned = []

    def _report(self, choices: Sequence[int], x: np.ndarray, targets: Sequence[Sequence[int]]) -> None:
        """Keep per-token reports (echo logprobs) of these choices' tokens; `x` holds each one's lines in order (the
        context's last line, shared by every choice's first token, is one line)."""
        if self.top is None:
            return
        for i, t in zip(choices, targets, strict=True):
            self.reports[i] += token_reports(x, t, self.top)

    def scores(self) -> Scores:
        return Scores(self.total.copy(), self.tokens_fed, self.steps)


class ChooseRun:
    """A chooses request in the scheduler: its slots and its pass (the input, then the neutral context when
    calibrating), one step's share at a time."""

    def __init__(self, msg: Score, slots: list[int], start: Callable[[int], None],
                 copy: Callable[[int, int], None]) -> None:  # fmt: skip
        self.msg, self.slots, self.start, self.copy = msg, slots, start, copy
        self.job = ScoreJob(slots, start, copy, msg.context, msg.choices, msg.top)
        self.first: Scores | None = None
        self.reports: tuple[tuple[TokenLogprob, ...], ...] = ()

    def rows(self, budget: int, lines: int) -> list[StepRow]:
        return self.job.rows(budget, lines)

    def took(self, lines: Sequence[np.ndarray]) -> bool:
        """Take this step's logit lines; True once every pass is done."""
        self.job.took(lines)
        if not self.job.done:
            return False
        if self.first is None:
            self.first = self.job.scores()
            self.reports = tuple(tuple(r) for r in self.job.reports)
            if self.msg.calibrate:
                self.job = ScoreJob(self.slots, self.start, self.copy, NEUTRAL, self.msg.choices)
                return False
        return True

    def result(self) -> Scored:
        assert self.first is not None
        neutral = self.job.scores() if self.msg.calibrate else None
        fed = self.first.tokens_fed + (neutral.tokens_fed if neutral else 0)
        return Scored(self.msg.id, tuple(self.first.log_likelihood.tolist()),
                      None if neutral is None else tuple(neutral.log_likelihood.tolist()), fed,
                      self.reports)  # fmt: skip


def lines_of(row: StepRow) -> int:
    """Logit lines a plan row produces."""
    return len(row.tokens) if row.logits is Logits.ALL else int(row.logits is Logits.LAST)


def score(engine, slots: Sequence[int], start: Callable[[int], None], context: Sequence[int],
          choices: Sequence[Sequence[int]]) -> Scores:  # fmt: skip
    """Log-likelihood of each choice after `context` on a bare engine (tools, tests): a ScoreJob alone in
    every step, with the engine's whole budget."""
    job = ScoreJob(slots, start, engine.copy_slot, context, choices)
    while not job.done:
        rows = job.rows(engine.max_step_tokens, engine.max_logit_lines)
        result = engine.step(StepPlan(tuple(rows)))
        job.took([result.of_row(r, lines_of(row)) for r, row in enumerate(rows)])
    return job.scores()


def perplexities(choices: Sequence[Sequence[int]], scored: Scored) -> np.ndarray:
    """[k]: exp(-mean log p(c | X)), divided by exp(-mean log p(c | N)) when calibrating."""
    lengths = np.array([len(c) for c in choices], np.float64)
    log_p = np.array(scored.log_likelihood) - (np.array(scored.neutral) if scored.neutral is not None else 0.0)
    return np.exp(-log_p / lengths)


class ScoringQueue:
    """The chooses requests the scheduler holds: those waiting for slots (one per choice), and those running a
    step's share at a time beside the generations."""

    def __init__(self) -> None:
        self.waiting: list[Score] = []
        self.running: list[ChooseRun] = []

    def __bool__(self) -> bool:
        return bool(self.waiting or self.running)

    def admit(self, free_slots: list[int], starter: Callable[[Score], Callable[[int], None] | str],
              copy: Callable[[int, int], None]) -> None:  # fmt: skip
        """Scoring requests take their slots first: they hold them for a few steps only. `starter(msg)` is how
        to put its starting state in a slot, or why it cannot (the state was unloaded while it waited)."""
        while self.waiting and len(self.waiting[0].choices) <= len(free_slots):
            msg = self.waiting.pop(0)
            start = starter(msg)
            if isinstance(start, str):
                msg.sink.put(Failed(msg.id, "invalid_request", start, "state"))
                continue
            slots = [free_slots.pop() for _ in msg.choices]
            try:
                self.running.append(ChooseRun(msg, slots, start, copy))
            except Exception as e:
                log.exception("starting chooses %s failed", msg.id)
                free_slots.extend(slots)
                msg.sink.put(Failed(msg.id, "internal", f"internal error: {e}", None))

    def rows(self, budget: int, lines: int) -> list[tuple[StepRow, ChooseRun]]:
        """This step's scoring rows within `budget` tokens and `lines` logit lines, each with its run."""
        planned = []
        for run in self.running:
            if budget <= 0 or lines <= 0:
                break
            for row in run.rows(budget, lines):
                planned.append((row, run))
                budget -= len(row.tokens)
                lines -= lines_of(row)
        return planned

    def end(self, run: ChooseRun, free_slots: list[int], failure: Failed | None = None) -> None:
        """Give a run's slots back and answer it (its result, or `failure`)."""
        if run in self.running:
            self.running.remove(run)
            free_slots.extend(reversed(run.slots))
        if failure is not None:
            run.msg.sink.put(failure)
        elif run.first is not None:
            run.msg.sink.put(run.result())

    def cancel(self, id: str, free_slots: list[int]) -> None:
        self.waiting = [m for m in self.waiting if m.id != id]
        for run in [r for r in self.running if r.msg.id == id]:
            self.end(run, free_slots, Failed(id, "cancelled", "cancelled", None))

    def fail_all(self, free_slots: list[int], message: str) -> None:
        for run in list(self.running):
            self.end(run, free_slots, Failed(run.msg.id, "internal", message, None))
        for msg in self.waiting:
            msg.sink.put(Failed(msg.id, "internal", message, None))
        self.waiting.clear()
