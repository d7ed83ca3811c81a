"""SSE framing of the streaming OpenAI routes, read raw over HTTP."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx2 as httpx
import orjson

from tests.server.conftest import LiveServer


def read_sse(live: LiveServer, path: str, body: dict) -> tuple[httpx.Response, list[bytes]]:
    """The response and its raw events (the text after `data: `), checking the framing on the way."""
    with httpx.stream("POST", f"{live.oai}{path}", json=body, headers=live.headers, timeout=120) as r:
        raw = r.read()
    if r.status_code != 200:
        return r, []
    assert r.headers["content-type"].startswith("text/event-stream")
    events = []
    for block in raw.split(b"\n\n"):
        if not block or block.startswith(b":"):  # end of stream, or a heartbeat comment
            continue
        assert block.startswith(b"data: ") and b"\n" not in block, block
        events.append(block.removeprefix(b"data: "))
    return r, events


def test_stream_has_data_lines_a_finish_chunk_per_branch_usage_and_done(live: LiveServer):
    body = {"prompt": "Once upon a time", "max_tokens": 3, "n": 2, "seed": 9, "stream": True,
            "stream_options": {"include_usage": True}}
    with ThreadPoolExecutor(2) as pool:
        streamed = pool.submit(read_sse, live, "/completions", body)
        whole = pool.submit(httpx.post, f"{live.oai}/completions", json={**body, "stream": False},
                            headers=live.headers, timeout=120)
        (_, events), whole = streamed.result(), whole.result().json()
    assert events[-1] == b"[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    usage = chunks.pop()
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 6
    for branch in (0, 1):
        mine = [c["choices"][0] for c in chunks if c["choices"][0]["index"] == branch]
        assert [c["finish_reason"] for c in mine][-1] == "length"
        assert all(c["finish_reason"] is None for c in mine[:-1])
        assert "".join(c["text"] for c in mine) == whole["choices"][branch]["text"]
    assert len({c["id"] for c in chunks}) == 1


def test_no_usage_chunk_unless_asked(live: LiveServer):
    _, events = read_sse(live, "/chat/completions",
                         {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "stream": True})
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert all(c["choices"] and "usage" not in c for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


def test_refused_stream_is_a_plain_json_error_with_status(live: LiveServer):
    r, events = read_sse(live, "/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                                                     "stream": True, "bnf_schema": "<start> ::= <a>"})
    assert r.status_code == 400 and not events
    assert r.json()["error"]["param"] == "bnf_schema"
    assert r.json()["error"]["code"] == "invalid_grammar"
