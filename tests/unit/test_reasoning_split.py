"""<think>...</think> -> reasoning_content and content, whole and streamed in any pieces."""

from __future__ import annotations

import random

import pytest

from backend.reasoning import ReasoningStream, split_reasoning


@pytest.mark.parametrize(
    ("text", "fmt", "expected"),
    [
        ("<think>x</think>y", "deepseek", ("x", "y")),
        (" <think>\nweigh it\n</think>\n\n The answer.", "deepseek", ("\nweigh it\n", "The answer.")),
        ("<think>cut short by max_tok", "deepseek", ("cut short by max_tok", "")),
        (" plain answer with </think> in it", "deepseek", (None, " plain answer with </think> in it")),
        (" <thin", "deepseek", (None, " <thin")),
        ("<think>x</think>y", "none", (None, "<think>x</think>y")),
    ],
)
def test_split(text: str, fmt, expected):
    assert split_reasoning(text, fmt) == expected


@pytest.mark.parametrize("seed", range(20))
def test_streamed_parts_add_up_to_the_whole_split(seed: int):
    text = " <think>first </thi then</think>  \n answer <think>not again</think>"
    rng, stream, parts, at = random.Random(seed), ReasoningStream(), [], 0
    while at < len(text):
        step = rng.randint(1, 5)
        parts += stream.feed(text[at:at + step])
        at += step
    parts += stream.finish()
    reasoning = "".join(p.text for p in parts if p.reasoning)
    content = "".join(p.text for p in parts if not p.reasoning)
    assert (reasoning, content) == split_reasoning(text) == ("first </thi then", "answer <think>not again</think>")
