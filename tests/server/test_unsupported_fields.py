"""Strictness through the official SDK: a field this server cannot honour that would change the result is a 400
naming it and saying why (suffix: RWKV has no fill-in-the-middle); fields that change nothing stay accepted."""

from __future__ import annotations

import openai
import pytest

from tests.server.conftest import API_KEY, LiveServer


@pytest.fixture(scope="module")
def client(live: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.oai, api_key=API_KEY, timeout=120, max_retries=0)


def test_suffix_is_a_400_that_says_rwkv_has_no_fill_in_the_middle(client: openai.OpenAI):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="rwkv", prompt="def add(a, b):", suffix="    return c", max_tokens=4)
    assert e.value.body["param"] == "suffix" and "fill-in-the-middle" in e.value.body["message"]


@pytest.mark.parametrize("extra", [{"repetition_penalty": 1.3}, {"guided_json": {"type": "object"}},
                                   {"min_tokens": 5}, {"stop_token_ids": [11]}])
def test_a_result_changing_field_of_other_servers_is_a_400_naming_it(client: openai.OpenAI, extra):
    (name,) = extra
    for call in (lambda: client.completions.create(model="rwkv", prompt="x", max_tokens=1, extra_body=extra),
                 lambda: client.chat.completions.create(model="rwkv", messages=[{"role": "user", "content": "x"}],
                                                        max_tokens=1, extra_body=extra)):  # fmt: skip
        with pytest.raises(openai.BadRequestError) as e:
            call()
        assert e.value.body["param"] == name and e.value.body["code"] == "unsupported_parameter"


def test_harmless_unknown_fields_and_neutral_values_are_accepted(client: openai.OpenAI):
    resp = client.completions.create(model="rwkv", prompt="x", max_tokens=1, suffix="", user="u1",
                                     extra_body={"metadata": {"run": "1"}, "store": False, "repetition_penalty": 1.0,
                                                 "some_client_flag": True})  # fmt: skip
    assert resp.choices[0].finish_reason == "length"
