"""Completions with a list of prompts and with token-id prompts, through the official SDK: one choice per prompt x
n in OpenAI's index order (choice i * n + j is prompt i's j-th), streamed and not, each the same as when its
prompt comes alone."""

from __future__ import annotations

import time

import openai
import pytest

from backend.tokenizer import Tokenizer
from tests.server.conftest import API_KEY, LiveServer

ARGS = {"model": "rwkv", "max_tokens": 4, "temperature": 0.0}


@pytest.fixture(scope="module")
def client(live: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.oai, api_key=API_KEY, timeout=120, max_retries=0)


def test_a_list_of_prompts_gives_prompt_times_n_choices_in_openai_order(client: openai.OpenAI):
    prompts = ["The cat", "A long way from home,", "1 2 3"]
    alone = [client.completions.create(**ARGS, prompt=p).choices[0].text for p in prompts]
    assert len(set(alone)) == 3  # so a choice given to the wrong prompt would show
    resp = client.completions.create(**ARGS, prompt=prompts, n=2)
    assert [c.index for c in resp.choices] == list(range(6))
    assert [c.text for c in resp.choices] == [t for t in alone for _ in range(2)]
    tokenizer = Tokenizer.from_file()
    assert resp.usage.prompt_tokens == sum(len(tokenizer.encode(p)) for p in prompts)
    assert resp.usage.completion_tokens == 6 * 4


def test_token_id_prompts_continue_as_their_text_does(client: openai.OpenAI):
    tokenizer = Tokenizer.from_file()
    texts = ["The cat", "1 2 3"]
    ids = [tokenizer.encode(t) for t in texts]
    by_text = client.completions.create(**ARGS, prompt=texts)
    by_ids = client.completions.create(**ARGS, prompt=ids)
    one = client.completions.create(**ARGS, prompt=ids[0], echo=True)
    assert [c.text for c in by_ids.choices] == [c.text for c in by_text.choices]
    assert one.choices[0].text == "The cat" + by_text.choices[0].text
    assert by_ids.usage.prompt_tokens == sum(map(len, ids))


def test_a_streamed_list_of_prompts_assembles_to_the_same_choices(client: openai.OpenAI):
    prompts = ["The cat", "1 2 3"]
    whole = client.completions.create(**ARGS, prompt=prompts, n=2, echo=True)
    texts, reasons = [""] * 4, [None] * 4
    for chunk in client.completions.create(**ARGS, prompt=prompts, n=2, echo=True, stream=True):
        for c in chunk.choices:
            texts[c.index] += c.text
            reasons[c.index] = c.finish_reason or reasons[c.index]
    assert texts == [c.text for c in whole.choices] and reasons == ["length"] * 4
    assert texts[2].startswith("1 2 3")


@pytest.mark.parametrize("prompt", [[[1, 2], [65536]], [70000]])
def test_a_token_id_outside_the_vocabulary_is_a_400_naming_the_prompt(client: openai.OpenAI, prompt):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(**ARGS, prompt=prompt)
    assert e.value.body["param"] in ("prompt", "prompt.1")


@pytest.mark.parametrize("stream", [False, True])
def test_a_list_whose_last_prompt_is_refused_is_one_json_error_and_frees_every_slot(client: openai.OpenAI,
                                                                                     live: LiveServer, stream: bool):
    """8 slots and a queue of 2 (tests/server/conftest.py): prompts 0-1 run, 2-3 wait, 4 is refused, after the others
    started; the answer is still a plain JSON error (not a stream cut short), and the others are cancelled."""
    with pytest.raises(openai.APIStatusError) as e:
        client.completions.create(**ARGS, prompt=[f"prompt {i}" for i in range(5)], n=4, stream=stream)
    assert e.value.status_code in (429, 503) and e.value.body["code"] == "overloaded"
    deadline = time.monotonic() + 30
    while live.server.scheduler.free_slots < 8 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert live.server.scheduler.free_slots == 8
