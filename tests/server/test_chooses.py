"""POST /api/oai/v1/chooses ranks like log-likelihoods from the logits tool, and its cost grows with the choices'
length, not with len(choices) x len(input)."""

from __future__ import annotations

import time

import httpx2 as httpx
import numpy as np
import pytest

from backend.chooses import NEUTRAL, log_prob_at, score
from backend.gpu.engine import Engine
from backend.tools.logits import logits_for
from tests.server.conftest import MODEL, LiveServer

INPUT = "The capital of France is"
CHOICES = [" Paris", " a large city on the river", " London", " 42", " the"]


@pytest.fixture(scope="module")
def reference() -> Engine:
    return Engine.load(MODEL, max_batch=4, max_step_tokens=512, precision="fp32")


def choose(live: LiveServer, **body) -> httpx.Response:
    return httpx.post(f"{live.oai}/chooses", json=body, headers=live.headers, timeout=120)


def log_likelihood(engine: Engine, context: list[int], choice: list[int]) -> float:
    """log p(choice | context) from every position's logits of context + choice, fed in one run."""
    logits = logits_for(engine, context + choice, chunk=len(context) + len(choice))
    return float(log_prob_at(logits[len(context) - 1 : -1], choice).sum())


def test_chooses_ranks_as_the_logits_tool_log_likelihoods(live: LiveServer, reference: Engine) -> None:
    tok = live.server.tokenizer
    context = tok.encode(INPUT)
    for calibrate in (False, True):
        r = choose(live, input=INPUT, choices=CHOICES, calibrate=calibrate)
        assert r.status_code == 200, r.text
        body = r.json()
        assert [d["rank"] for d in body["data"]] == list(range(len(CHOICES)))
        got = {d["index"]: d["perplexity"] for d in body["data"]}
        expected = {}
        for i, c in enumerate(CHOICES):
            ids = tok.encode(c)
            log_p = log_likelihood(reference, context, ids)
            if calibrate:
                log_p -= log_likelihood(reference, list(NEUTRAL), ids)
            expected[i] = float(np.exp(-log_p / len(ids)))
        assert got == pytest.approx(expected, rel=2e-3), (calibrate, got, expected)
        assert [d["index"] for d in body["data"]] == sorted(expected, key=lambda i: (expected[i], i))
        assert all(body["data"][i]["choice"] == CHOICES[body["data"][i]["index"]] for i in range(len(CHOICES)))


def test_chooses_cost_grows_with_the_choices_not_with_choices_times_input(live: LiveServer,
                                                                          reference: Engine) -> None:  # fmt: skip
    tok = live.server.tokenizer
    text = "Once upon a time, in a land far away, there lived a king who had three daughters. " * 6
    context = tok.encode(text)
    short, long = [" yes", " no", " maybe", " never"], [" yes indeed, " * 4, " no way, " * 4, " maybe so, " * 4,
                                                        " never ever, " * 4]  # fmt: skip
    choose(live, input=text, choices=short)  # warm-up
    rows = []
    for choices in (short, long):
        lengths = [len(tok.encode(c)) for c in choices]
        t0 = time.perf_counter()
        r = choose(live, input=text, choices=choices)
        dt = time.perf_counter() - t0
        assert r.status_code == 200, r.text
        fed = r.json()["usage"]["total_tokens"]
        assert fed == len(context) + sum(n - 1 for n in lengths)
        ids = [tok.encode(c) for c in choices]
        t0 = time.perf_counter()  # the same engine work in-process, forked vs. the naive way (input re-run)
        forked = score(reference, [0, 1, 2, 3], reference.reset_slot, context, ids)
        forked_dt = time.perf_counter() - t0
        t0 = time.perf_counter()
        naive = sum(score(reference, [0], reference.reset_slot, context, [c]).tokens_fed for c in ids)
        naive_dt = time.perf_counter() - t0
        assert forked.tokens_fed == fed
        rows.append((sum(lengths), fed, naive))
        print(
            f"\nchooses: input {len(context)} tokens, {len(choices)} choices of {sum(lengths)} tokens: "
            f"route {dt * 1e3:.0f} ms; engine: forked {fed} tokens {forked_dt * 1e3:.0f} ms, "
            f"naive (input per choice) {naive} tokens {naive_dt * 1e3:.0f} ms"
        )
    (short_len, short_fed, short_naive), (long_len, long_fed, _) = rows
    assert long_fed - short_fed == long_len - short_len  # each extra choice token costs one token
    assert short_fed < short_naive / 3


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"input": "x", "choices": []}, 400, "choices"),
        ({"input": "x", "choices": [""]}, 400, "choices.0"),
        ({"input": "x", "choices": ["a"] * 9}, 400, "choices"),  # more than max_batch
        ({"input": "x", "choices": ["a"], "state": "nope"}, 400, "state"),
    ],
)
def test_bad_chooses_input_is_refused_naming_the_field(live: LiveServer, body: dict, status: int, param: str) -> None:
    r = choose(live, **body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == param


def test_chooses_is_under_both_prefixes(live: LiveServer) -> None:
    r = httpx.post(f"{live.base}/api/oai/chooses", json={"input": "Hi", "choices": [" there", "!"]},
                   headers=live.headers, timeout=60)  # fmt: skip
    assert r.status_code == 200 and {d["index"] for d in r.json()["data"]} == {0, 1}
