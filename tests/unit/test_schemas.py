import asyncio

import pytest
from pydantic import ValidationError

from backend.api.schemas import (
    CLIENT_FRAME,
    ApiError,
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    GenerateFrame,
    TextFormat,
    describe,
    parse,
    request_grammar,
)
from backend.api.ws import coalesce
from backend.grammar.matcher import Grammar, Vocabulary
from backend.grammar.worker import GrammarRequest, to_source
from backend.messages import Delta, Updated
from backend.sampling.params import SamplerParams
from backend.tokenizer import Tokenizer


def test_completion_defaults_and_ai00_fields():
    req = CompletionRequest.model_validate({"prompt": ["hi"], "stop": "\n", "half_life": 50, "unknown": 1})
    assert req.prompts() == ["hi"] and req.stop_list() == ["\n"] and req.n == 1 and not req.stream
    fields = req.sampler_fields()
    assert fields["half_life"] == 50 and fields["temperature"] is None  # unset: config/OpenAI defaults apply


def test_chat_max_completion_tokens_wins_and_content_parts_join():
    req = ChatCompletionRequest.model_validate({
        "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
        "max_tokens": 5, "max_completion_tokens": 7,
    })
    assert req.sampler_fields()["max_tokens"] == 7 and req.messages[0].text == "ab"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": "x", "top_p": 1.5}, "top_p"),
        ({"prompt": "x", "n": 0}, "n"),
        ({"prompt": "x", "frequency_penalty": -3}, "frequency_penalty"),
        ({"prompt": "x", "half_life": 0}, "half_life"),
        ({"prompt": 5}, "prompt"),
    ],
)
def test_out_of_bounds_is_a_400_naming_the_field(body, param):
    with pytest.raises(ApiError) as e:
        parse(CompletionRequest, body)
    assert e.value.status == 400 and e.value.param.split(".")[0] == param
    assert e.value.body()["error"]["param"] == e.value.param


def test_embedding_input_shapes():
    assert EmbeddingRequest.model_validate({"input": [1, 2, 3]}).input == [1, 2, 3]
    assert EmbeddingRequest.model_validate({"input": [[1], [2, 3]]}).input == [[1], [2, 3]]
    with pytest.raises(ValidationError):
        EmbeddingRequest.model_validate({"input": []})


def test_ws_frames_are_strict_and_name_the_bad_key():
    frame = CLIENT_FRAME.validate_python({"type": "generate", "id": "a", "prompt": "x", "params": {"top_k": 3}})
    assert isinstance(frame, GenerateFrame) and frame.params.set_fields() == {"top_k": 3}
    with pytest.raises(ValidationError) as e:
        CLIENT_FRAME.validate_python({"type": "generate", "id": "a", "prompt": "x", "params": {"topk": 3}})
    assert describe(e.value, drop_tag=True) == ("params.topk: unknown field", "params.topk")
    with pytest.raises(ValidationError):
        CLIENT_FRAME.validate_python({"type": "generate", "id": "a"})  # neither prompt nor messages
    with pytest.raises(ValidationError):
        CLIENT_FRAME.validate_python({"type": "generate", "id": "a", "prompt": "x", "n": 65})


def test_request_grammar_compiles_one_grammar_field_or_names_the_bad_one():
    vocab = Vocabulary(Tokenizer.from_file())

    async def compile(req: GrammarRequest) -> Grammar:  # in-process: the worker's own path has its tests
        return Grammar.compile(to_source(req), vocab)

    def ask(fields, prefix=""):
        return asyncio.run(request_grammar(fields, compile, prefix))

    assert ask({"bnf_schema": None, "response_format": TextFormat(type="text")}) is None
    assert ask({"json_schema": {"type": "object"}}) is not None
    with pytest.raises(ApiError, match="only one") as e:
        ask({"bnf_schema": "<start> ::= 'a'", "json_schema": {}}, "params.")
    assert e.value.param == "params.json_schema"
    with pytest.raises(ApiError, match=r"bnf_schema: line 2, column 9: <b> is used") as e:
        ask({"bnf_schema": "<start> ::= <a>\n<a> ::= <b>"})
    assert (e.value.status, e.value.param, e.value.code) == (400, "bnf_schema", "invalid_grammar")


def test_coalesce_merges_piled_up_deltas_per_branch_without_losing_text_or_order():
    d = lambda id, b, text, tok: Delta(id, b, text, (tok,))  # noqa: E731
    events = [d("a", 0, "x", 1), d("b", 0, "p", 9), d("a", 0, "y", 2), d("a", 1, "z", 3),
              Updated("a", SamplerParams(), 2), d("a", 0, "w", 4)]
    out = coalesce(events)
    assert out[0] == Delta("a", 0, "xy", (1, 2)) and out[1] == Delta("b", 0, "p", (9,))
    assert out[2] == Delta("a", 1, "z", (3,)) and isinstance(out[3], Updated)
    assert out[4] == Delta("a", 0, "w", (4,))  # after the update: not merged back before it
