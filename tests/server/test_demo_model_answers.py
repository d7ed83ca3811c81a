"""What the trained demo model shows through a live server started with no model configured (so serving the demo
model, as `scripts/serve.sh` and the UI do): `chooses` puts the obvious continuation first, a greedy chat answer is
made of words from its corpus, and a JSON-schema answer parses with corpus words in its strings."""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import jsonschema
import openai
import pytest

from backend.config import Config
from backend.tools.demo_model import DEMO_MODEL_NAME
from tests.server.conftest import API_KEY, TEST_CONFIG, LiveServer, start_server, stop_server

WORDS = set(gzip.decompress((Path(__file__).parents[1] / "tools/data/words.txt.gz").read_bytes()).decode().split())

# (input, the continuation the corpus makes obvious, unlikely ones)
CHOICES = [
    ("In the beginning God created the heaven and the", " earth", [" keyboard", " seventeen"]),
    ("And God said, Let there be", " light", [" spam", " fortran"]),
    ("User: What is a dog?\n\nAssistant: A dog is a", " member", [" yesterday", " purple"]),
    ("Python is a programming", " language", [" camel", " thou"]),
]


@pytest.fixture(scope="module")
def demo() -> Iterator[LiveServer]:
    config = {**TEST_CONFIG, "model": {**TEST_CONFIG["model"], "path": "", "max_batch": 4, "prefix_cache": 0}}
    server, runner, thread = start_server(Config.from_dict(config))
    assert server.server.model_path.name == DEMO_MODEL_NAME
    yield server
    stop_server(server, runner, thread)


def corpus_share(text: str) -> float:
    """The share of the text's words (runs of letters) that the corpus has."""
    words = re.findall(r"[a-z]+", text.lower())
    return sum(w in WORDS for w in words) / max(1, len(words))


@pytest.mark.parametrize(("text", "likely", "unlikely"), CHOICES, ids=[c[1].strip() for c in CHOICES])
def test_chooses_ranks_the_obvious_continuation_first(demo: LiveServer, text: str, likely: str,
                                                      unlikely: list[str]) -> None:  # fmt: skip
    r = httpx.post(f"{demo.oai}/chooses", json={"input": text, "choices": [*unlikely, likely]},
                   headers=demo.headers, timeout=120)  # fmt: skip
    assert r.status_code == 200, r.text
    ranked = [d["choice"] for d in r.json()["data"]]
    assert ranked[0] == likely, ranked


def test_greedy_chat_answer_is_made_of_corpus_words(demo: LiveServer) -> None:
    client = openai.OpenAI(base_url=demo.v1, api_key=API_KEY)
    reply = client.chat.completions.create(
        model=demo.server.model_id, messages=[{"role": "user", "content": "What is a dog?"}],
        temperature=0, max_tokens=32,
    )  # fmt: skip
    text = reply.choices[0].message.content
    assert len(re.findall(r"[a-z]+", text.lower())) >= 5, text
    assert corpus_share(text) >= 0.9, text


SCHEMA = {
    "type": "object",
    "properties": {"word": {"type": "string", "minLength": 3, "maxLength": 20},
                   "meaning": {"type": "string", "minLength": 10, "maxLength": 80}},
    "required": ["word", "meaning"],
}  # fmt: skip


def test_json_schema_answer_parses_with_corpus_words_in_its_strings(demo: LiveServer) -> None:
    client = openai.OpenAI(base_url=demo.v1, api_key=API_KEY)
    reply = client.chat.completions.create(
        model=demo.server.model_id, messages=[{"role": "user", "content": "What is a dog?"}],
        temperature=0, max_tokens=64,
        response_format={"type": "json_schema", "json_schema": {"name": "gloss", "schema": SCHEMA}},
    )  # fmt: skip
    answer = json.loads(reply.choices[0].message.content)
    jsonschema.validate(answer, SCHEMA)
    for field in ("word", "meaning"):
        assert re.search(r"[a-z]{2,}", answer[field].lower()) and corpus_share(answer[field]) >= 0.8, answer
