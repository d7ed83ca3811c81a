"""Encode a few MB of varied text with our tokenizer and the reference trie; print tokens/s and ratios.

The "encode() per document" row is the one users see: every document here is long enough for the
numpy matcher. The HF row shows what the short-input path would do with the same documents.

Run from the repo root: python -m bench.tokenizer_speed [--mb 4]
"""

from __future__ import annotations

import argparse
import os
import random
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path

from rwkv.rwkv_tokenizer import TRIE_TOKENIZER

from backend.tokenizer import DEFAULT_VOCAB, FAST_MIN_BYTES, Tokenizer

DOC_CHARS = (1_000, 30_000)  # request-sized documents


def stdlib_source(limit: int) -> str:
    """Real code with English comments and docstrings, the same on every machine with this Python."""
    parts, size = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        parts.append(text)
        size += len(text)
        if size >= limit:
            break
    return "".join(parts)[:limit]


def vocab_text(rng: random.Random, tokens: list[str], limit: int) -> str:
    """Text made of vocab entries, so long matches and many scripts occur as in real use."""
    out, size = [], 0
    while size < limit:
        word = rng.choice(tokens)
        out.append(word)
        size += len(word) + 1
        out.append(rng.choice(" \n，。 "))
    return "".join(out)


def emoji_and_space(rng: random.Random, limit: int) -> str:
    pieces = ["👨‍👩‍👧‍👦", "🏳️‍🌈", "👍🏽", "🇯🇵", "😀", "\t", "\n\n\n", "e\u0301"]
    out, size = [], 0
    while size < limit:
        piece = rng.choice(pieces) if rng.random() < 0.7 else " " * rng.randint(1, 300)
        out.append(piece)
        size += len(piece)
    return "".join(out)


def build_corpus(tokenizer: Tokenizer, total_mb: float, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    total = int(total_mb * 1_000_000)
    decoded = (tokenizer.token_bytes(i).decode("utf-8", "ignore") for i in range(tokenizer.vocab_size))
    words = [w for w in decoded if w.strip()]
    cjk = [w for w in words if any("\u4e00" <= c <= "\u9fff" for c in w)]
    other = [w for w in words if not w.isascii()]
    text = (
        stdlib_source(total // 2)
        + vocab_text(rng, cjk, total // 5)
        + vocab_text(rng, other, total // 5)
        + emoji_and_space(rng, total // 10)
    )
    docs, start = [], 0
    while start < len(text):
        end = start + rng.randint(*DOC_CHARS)
        docs.append(text[start:end])
        start = end
    rng.shuffle(docs)
    return docs


def best_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=float, default=4.0, help="corpus size in MB of text")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    ours = Tokenizer.from_file()
    docs = build_corpus(ours, args.mb)
    ref = TRIE_TOKENIZER(str(DEFAULT_VOCAB))

    expected = [ref.encode(d) for d in docs]
    # A speed number is only meaningful if both produce the same ids.
    assert [ours.encode(d) for d in docs] == expected, "ids differ from the reference"
    assert ours.encode_batch(docs) == expected, "encode_batch ids differ from the reference"
    assert [hf_path(ours, d) for d in docs] == expected, "HF path ids differ from the reference"
    n_tokens = sum(map(len, expected))
    n_bytes = sum(len(d.encode()) for d in docs)
    print(f"corpus: {len(docs)} documents, {n_bytes / 1e6:.2f} MB, {n_tokens} tokens, {os.cpu_count()} CPUs")
    print(f"(inputs of >= {FAST_MIN_BYTES} bytes take the numpy matcher; shorter ones the HF path)")

    t_ref = best_time(lambda: [ref.encode(d) for d in docs], max(1, args.repeats - 1))
    rows = [("reference TRIE_TOKENIZER", t_ref)]
    rows.append(("ours, encode() per document", best_time(lambda: [ours.encode(d) for d in docs], args.repeats)))
    rows.append(("ours, encode_batch", best_time(lambda: ours.encode_batch(docs), args.repeats)))
    rows.append(("HF path alone, per document", best_time(lambda: [hf_path(ours, d) for d in docs], args.repeats)))
    for name, t in rows:
        rate = f"{n_tokens / t / 1e6:6.2f} M tokens/s {n_bytes / t / 1e6:6.1f} MB/s"
        print(f"{name:30s} {rate}  ratio {t_ref / t:4.1f}x")


def hf_path(tokenizer: Tokenizer, text: str) -> list[int]:
    """What encode() does for short inputs, forced on any input: HF's matcher over ~2 KiB chunks."""
    return tokenizer._encode_chunks([tokenizer._chunks(text.encode("utf-8"))])[0]


if __name__ == "__main__":
    main()
