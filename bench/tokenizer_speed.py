"""Encode a few MB of varied text with our tokenizer and the reference trie; print tokens/s and ratios.

The "encode() per document" rows are the ones users see, once for request-sized documents and once
for chat-sized prompts; the HF rows show the portable engine a machine without a C compiler gets.

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

from backend.tokenizer import DEFAULT_VOCAB, Tokenizer, read_vocab

DOC_CHARS = (1_000, 30_000)  # request-sized documents
PROMPT_CHARS = (20, 500)  # chat-sized prompts


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


def build_corpus(
    tokenizer: Tokenizer, total_mb: float, seed: int = 0, doc_chars: tuple[int, int] = DOC_CHARS
) -> list[str]:
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
        end = start + rng.randint(*doc_chars)
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
    hf = Tokenizer(read_vocab(DEFAULT_VOCAB), native=False)
    ref = TRIE_TOKENIZER(str(DEFAULT_VOCAB))
    print(f"{os.cpu_count()} CPUs; our engine: {ours.engine}")
    for name, docs in (
        ("documents", build_corpus(ours, args.mb)),
        ("prompts", build_corpus(ours, args.mb / 4, doc_chars=PROMPT_CHARS)),
    ):
        expected = [ref.encode(d) for d in docs]
        # A speed number is only meaningful if both produce the same ids.
        for tok in (ours, hf):
            assert [tok.encode(d) for d in docs] == expected, f"{tok.engine} ids differ from the reference"
            assert tok.encode_batch(docs) == expected, f"{tok.engine} encode_batch ids differ from the reference"
        n_tokens = sum(map(len, expected))
        n_bytes = sum(len(d.encode()) for d in docs)
        print(
            f"\n{name}: {len(docs)} of {n_bytes / len(docs):,.0f} bytes on average, {n_bytes / 1e6:.2f} MB, "
            f"{n_tokens} tokens"
        )
        t_ref = best_time(lambda docs=docs: [ref.encode(d) for d in docs], max(1, args.repeats - 1))
        rows = [("reference TRIE_TOKENIZER", t_ref)]
        for label, tok in ((f"ours ({ours.engine})", ours), ("ours, HF engine", hf)):
            rows.append(
                (
                    f"{label}, encode()",
                    best_time(lambda tok=tok, docs=docs: [tok.encode(d) for d in docs], args.repeats),
                )
            )
            rows.append(
                (f"{label}, encode_batch", best_time(lambda tok=tok, docs=docs: tok.encode_batch(docs), args.repeats))
            )
        for label, t in rows:
            rate = f"{n_tokens / t / 1e6:6.2f} M tokens/s {n_bytes / t / 1e6:6.1f} MB/s"
            print(f"{label:30s} {rate}  ratio {t_ref / t:5.1f}x")


if __name__ == "__main__":
    main()
