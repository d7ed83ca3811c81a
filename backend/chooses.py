"""Multiple-choice scoring (POST /api/oai/chooses): how likely each choice is as the continuation of an input.

For context tokens X and a choice's tokens c_1..c_m (tokenized on its own: a choice carries its own leading
space), log p(c | X) = sum_j log softmax(logits after X, c_<j)[c_j]. The context is fed once, into one slot;
that state is copied to one slot per choice (`copy_slot`), and every choice's c_1..c_{m-1} is fed in one
batched step with logits at every position (`Logits.ALL`): the line after c_{j-1} scores c_j, and the
context's last logits score c_1. So the cost is len(X) + sum(m - 1) tokens, not len(choices) x len(X).

    perplexity = exp(-log p(c | X) / m)                                       (lower is better)
    calibrated = exp(-(log p(c | X) - log p(c | N)) / m)  =  ppl(c | X) / ppl(c | N)

where N is the neutral context: the same starting state fed only END_OF_TEXT (what the model expects at a
document start). Calibration divides each choice's likelihood by its likelihood after N, so choices that are
likely anywhere (frequent words) lose their head start. It is a second pass over the same slots.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from backend.gpu.step_types import Logits, StepPlan, StepRow
from backend.tokenizer import END_OF_TEXT

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


def score(engine, slots: Sequence[int], start: Callable[[int], None], context: Sequence[int],
          choices: Sequence[Sequence[int]]) -> Scores:  # fmt: skip
    """Log-likelihood of each choice after `context`, on the engine thread; `slots` (one per choice) are the
    caller's, `start(slot)` sets a slot to the starting state."""
    first = slots[0]
    start(first)
    budget = min(engine.max_step_tokens, engine.max_logit_lines)
    steps = 0
    last = None
    for at in range(0, len(context), engine.max_step_tokens):  # the context, chunked; logits at its end only
        chunk = tuple(context[at : at + engine.max_step_tokens])
        end = at + len(chunk) == len(context)
        result = engine.step(StepPlan((StepRow(first, chunk, Logits.LAST if end else Logits.NONE),)))
        steps += 1
        last = result.of_row(0) if end else last
    for slot in slots[1:]:
        engine.copy_slot(first, slot)
    total = log_prob_at(np.repeat(last, len(choices), axis=0), [c[0] for c in choices])
    # every choice's c_1..c_{m-1}, with logits everywhere; one step when they fit the budget, else chunks
    fed = [0] * len(choices)
    while True:
        rows, owners, room = [], [], budget
        for i, c in enumerate(choices):
            left = len(c) - 1 - fed[i]
            if left > 0 and room > 0:
                take = min(left, room)
                rows.append(StepRow(slots[i], tuple(c[fed[i] : fed[i] + take]), Logits.ALL))
                owners.append((i, fed[i], take))
                room -= take
        if not rows:
            break
        result = engine.step(StepPlan(tuple(rows)))
        steps += 1
        for r, (i, at, take) in enumerate(owners):
            total[i] += log_prob_at(result.of_row(r, take), choices[i][at + 1 : at + 1 + take]).sum()
            fed[i] += take
    return Scores(total, len(context) + sum(fed), steps)


def perplexities(choices: Sequence[Sequence[int]], scores: Scores, neutral: Scores | None) -> np.ndarray:
    """[k]: exp(-mean log p(c | X)), divided by exp(-mean log p(c | N)) when calibrating."""
    lengths = np.array([len(c) for c in choices], np.float64)
    log_p = scores.log_likelihood - (neutral.log_likelihood if neutral is not None else 0.0)
    return np.exp(-log_p / lengths)
