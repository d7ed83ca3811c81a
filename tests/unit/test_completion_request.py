"""Completions' request shapes (prompt lists, token prompts) and strictness: a field this server cannot honour and
that would change the result is a 400 naming it; unknown fields that change nothing stay accepted."""

from __future__ import annotations

import pytest

from backend.api.schemas import UNSUPPORTED_SAMPLING, ApiError, ChatCompletionRequest, CompletionRequest, parse


@pytest.mark.parametrize(
    ("prompt", "prompts"),
    [("hi", ["hi"]), (["a", "b"], ["a", "b"]), ([5, 6], [[5, 6]]), ([[5], [6, 7]], [[5], [6, 7]])],
)
def test_a_prompt_is_a_text_token_ids_or_a_list_of_either(prompt, prompts):
    assert parse(CompletionRequest, {"prompt": prompt}).prompts() == prompts


@pytest.mark.parametrize("prompt", [[], [-1], [[]], ["a", 1], 5, ["x"] * 65, {"a": 1}])
def test_a_malformed_prompt_is_one_400_naming_prompt(prompt):
    with pytest.raises(ApiError) as e:
        parse(CompletionRequest, {"prompt": prompt})
    assert e.value.status == 400 and e.value.param == "prompt" and "token ids" in e.value.message


def test_suffix_is_refused_saying_why_and_an_empty_one_is_harmless():
    with pytest.raises(ApiError) as e:
        parse(CompletionRequest, {"prompt": "def f(", "suffix": "return x"})
    assert e.value.param == "suffix" and "fill-in-the-middle" in e.value.message
    assert parse(CompletionRequest, {"prompt": "x", "suffix": ""}).suffix == ""


@pytest.mark.parametrize(
    ("body", "says"),
    [({"best_of": 1, "n": 2}, "must be >= n"), ({"best_of": 3, "stream": True}, "cannot be streamed"),
     ({"best_of": 65}, "less than or equal")],
)
def test_best_of_below_n_streamed_or_too_large_is_a_400_naming_best_of(body, says):
    with pytest.raises(ApiError) as e:
        parse(CompletionRequest, {"prompt": "x", **body})
    assert e.value.param == "best_of" and says in e.value.message


@pytest.mark.parametrize("model", [CompletionRequest, ChatCompletionRequest])
@pytest.mark.parametrize("name", sorted(UNSUPPORTED_SAMPLING))
def test_an_unsupported_sampling_field_that_would_change_the_result_is_a_400_naming_it(model, name):
    body = {"prompt": "x", "messages": [{"role": "user", "content": "x"}], name: ["something"]}
    with pytest.raises(ApiError) as e:
        parse(model, body)
    assert e.value.status == 400 and e.value.param == name and "not supported" in e.value.message


def test_unknown_fields_and_neutral_values_of_unsupported_ones_are_accepted():
    neutral = {name: value for name, (value, _) in UNSUPPORTED_SAMPLING.items()}
    req = parse(CompletionRequest, {"prompt": "x", "metadata": {"a": 1}, "store": False, "service_tier": "auto",
                                    **neutral})  # fmt: skip
    assert req.prompts() == ["x"]
