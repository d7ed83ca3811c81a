"""/api-docs lists the completions and sampling fields of issue 19 (from schemas.py, so docs and validation agree),
and names the fields of other servers that are refused."""

from __future__ import annotations

import httpx2 as httpx

from backend.api.schemas import UNSUPPORTED_SAMPLING
from tests.server.conftest import LiveServer


def test_api_docs_list_logit_bias_best_of_suffix_echo_and_the_prompt_shapes(live: LiveServer):
    spec = httpx.get(f"{live.base}/api-docs/openapi.json", headers=live.headers).json()
    schemas = spec["components"]["schemas"]
    completion = schemas["CompletionRequest"]["properties"]
    assert {"logit_bias", "best_of", "suffix", "echo", "logprobs", "prompt"} <= set(completion)
    assert "logit_bias" in schemas["ChatCompletionRequest"]["properties"]
    assert "-100..100" in str(completion["logit_bias"]) and "fill-in-the-middle" in str(completion["suffix"])
    assert len(completion["prompt"]["anyOf"]) == 4  # text, texts, token ids, lists of token ids
    assert all(name in spec["info"]["description"] for name in UNSUPPORTED_SAMPLING)
    page = httpx.get(f"{live.base}/api-docs", headers=live.headers).text
    assert all(f"<code>{name}</code>" in page for name in ("logit_bias", "best_of", "suffix", "echo"))
