"""The numpy matcher for long inputs gives the reference trie's ids on every input, through every code path."""

from __future__ import annotations

import random
import sysconfig
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from rwkv.rwkv_tokenizer import TRIE_TOKENIZER

from backend.tokenizer import DEFAULT_VOCAB, FAST_MIN_BYTES, VOCAB_SIZE, Tokenizer, read_vocab
from backend.tokenizer_match import GreedyMatcher, PerfectHash, _equal_low_bytes, pack

EMOJI = ["👨‍👩‍👧‍👦", "🏳️‍🌈", "👍🏽", "🇯🇵", "😀", "🫠", "1️⃣", "❤️‍🔥", "e\u0301"]
RUN_LENGTHS = [*range(1, 21), 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 257, 1000, 5000]


@pytest.fixture(scope="module")
def matcher(tok: Tokenizer) -> GreedyMatcher:
    built = GreedyMatcher.build([tok.token_bytes(i) for i in range(VOCAB_SIZE)])
    assert built is not None
    return built


@pytest.fixture(scope="module")
def vocab_entries(tok: Tokenizer) -> list[bytes]:
    return [tok.token_bytes(i) for i in range(1, VOCAB_SIZE) if tok.token_bytes(i)]


@pytest.fixture(scope="module")
def documents(vocab_entries: list[bytes]) -> dict[str, bytes]:
    """Long inputs of every kind the issue names, each far over FAST_MIN_BYTES."""
    rng = random.Random(424242)
    texts = [e.decode("utf-8") for e in vocab_entries if _is_utf8(e)]
    cjk = [t for t in texts if any("\u4e00" <= c <= "\u9fff" for c in t)]
    code = _stdlib_text(60_000)
    docs = {
        "code": code,
        "english": "\n\n".join(line.strip("# ") for line in code.splitlines() if line.lstrip().startswith("#")),
        # Without separators CJK has almost no safe cut: long segments for the step loop.
        "cjk_run": "".join(rng.choice(cjk) for _ in range(6000)),
        "cjk_prose": "".join(rng.choice(cjk) + rng.choice("，。 \n") for _ in range(6000)),
        "emoji": "".join(rng.choice([*EMOJI, " " * rng.randint(1, 300), "\n", "\t"]) for _ in range(4000)),
        "vocab_text": "".join(rng.choice(texts) for _ in range(8000)),
        "spaces": "".join(f"x{' ' * n}y\n{' ' * n}z" for n in RUN_LENGTHS),
        "indent": "".join(f"\n{' ' * n}{rng.choice(['if', 'x', 'return', '}', '#'])}" for n in RUN_LENGTHS * 20),
        "other_runs": "".join(c * n + "|" for n in RUN_LENGTHS for c in "\t-=#*/a\n"),
    }
    data = {name: text.encode("utf-8") for name, text in docs.items()}
    data["vocab_bytes"] = b"".join(rng.choice(vocab_entries) for _ in range(8000))  # partial UTF-8 too
    data["random_bytes"] = rng.randbytes(60_000)
    data["cut_entries"] = b"".join(e[rng.randint(0, len(e) // 2) :] for e in rng.sample(vocab_entries, 8000))
    assert all(len(d) > FAST_MIN_BYTES for d in data.values())
    return data


@pytest.mark.parametrize(
    "name",
    [
        "code",
        "english",
        "cjk_run",
        "cjk_prose",
        "emoji",
        "vocab_text",
        "spaces",
        "indent",
        "other_runs",
        "vocab_bytes",
        "random_bytes",
        "cut_entries",
    ],
)
def test_long_documents_match_reference(
    tok: Tokenizer, ref: TRIE_TOKENIZER, matcher: GreedyMatcher, documents: dict[str, bytes], name: str
) -> None:
    data = documents[name]
    expected = ref.encodeBytes(data)
    assert matcher.encode(data).tolist() == expected
    assert tok.encode_bytes(data) == expected  # the public path for long inputs
    assert tok.decode_bytes(expected) == data


def test_every_path_of_the_matcher_gives_the_same_ids(
    ref: TRIE_TOKENIZER, matcher: GreedyMatcher, documents: dict[str, bytes]
) -> None:
    """Force the plain-Python finish, the vectorised long path, and small blocks in turn."""
    datas = [documents[name][:30_000] for name in ("code", "cjk_run", "emoji", "indent", "other_runs", "cut_entries")]
    expected = [ref.encodeBytes(d) for d in datas]
    settings = [
        {"py_finish": 10**9, "py_long": 10**9},  # everything after the first probe in Python
        {"py_finish": 0, "py_long": 0},  # numpy until the last walker, long path always vectorised
        {"block": 1000},  # many blocks, and runs longer than a block (no cut inside)
    ]
    for setting in settings:
        with _tuned(matcher, **setting):
            assert [matcher.encode(d).tolist() for d in datas] == expected, setting


def test_runs_longer_than_a_block_stay_whole(ref: TRIE_TOKENIZER, matcher: GreedyMatcher) -> None:
    data = b"x" + b" " * 9000 + b"a" * 9000 + b"\n" * 3000 + b"y"
    with _tuned(matcher, block=2048):
        assert matcher.encode(data).tolist() == ref.encodeBytes(data)


def test_seeded_fuzz_matches_reference(ref: TRIE_TOKENIZER, matcher: GreedyMatcher, vocab_entries: list[bytes]) -> None:
    """Random byte strings up to 20 kB built from vocab entries (whole or cut) and random bytes."""
    rng = random.Random(20230424)
    blobs = [_random_blob(rng, vocab_entries) for _ in range(300)]
    assert max(map(len, blobs)) > 15_000 and min(map(len, blobs)) < 50
    for blob in blobs:
        assert matcher.encode(blob).tolist() == ref.encodeBytes(blob), blob[:80]


def test_empty_and_single_bytes(ref: TRIE_TOKENIZER, matcher: GreedyMatcher) -> None:
    assert matcher.encode(b"").tolist() == []
    for b in range(256):
        assert matcher.encode(bytes([b])).tolist() == ref.encodeBytes(bytes([b])) == [b + 1]


def test_short_inputs_give_the_same_ids_on_both_paths(
    tok: Tokenizer, ref: TRIE_TOKENIZER, matcher: GreedyMatcher, documents: dict[str, bytes]
) -> None:
    """Below FAST_MIN_BYTES encode() uses HF; the matcher must agree there too, and HF on long inputs."""
    rng = random.Random(5)
    pieces = []
    for data in documents.values():
        for _ in range(20):
            start = rng.randrange(len(data))
            pieces.append(data[start : start + rng.randint(1, FAST_MIN_BYTES - 1)])
    for piece in pieces:
        expected = ref.encodeBytes(piece)
        assert tok.encode_bytes(piece) == expected
        assert matcher.encode(piece).tolist() == expected
    for data in documents.values():
        assert tok._encode_chunks([tok._chunks(data)])[0] == ref.encodeBytes(data)


def test_encode_batch_mixes_both_paths(tok: Tokenizer, ref: TRIE_TOKENIZER, documents: dict[str, bytes]) -> None:
    texts = ["", "short", documents["code"].decode(), "中文", documents["cjk_prose"].decode()[:5000]]
    assert tok.encode_batch(texts) == [ref.encode(t) for t in texts]


def test_vocab_without_a_free_padding_byte_falls_back_to_hf(tmp_path: Path) -> None:
    tokens = read_vocab(DEFAULT_VOCAB)
    # Make every byte appear in some multi-byte token: the matcher can then not pad its input.
    tokens[VOCAB_SIZE - 7] = bytes(range(256))
    assert GreedyMatcher.build(tokens) is None
    tok = Tokenizer(tokens)
    data = _stdlib_text(20_000).encode()
    assert tok.encode_bytes(data) == tok._encode_chunks([tok._chunks(data)])[0]
    assert tok._fast is None


def test_perfect_hash_finds_its_keys_and_nothing_else() -> None:
    rng = np.random.default_rng(3)
    keys = np.unique(rng.integers(1, 2**63, 20_000, dtype=np.uint64))
    table = PerfectHash(keys.tolist(), bits=15, bucket_bits=13, seed=1)
    values = table.values(list(range(1, keys.size + 1)), np.int64)
    assert table.get(keys, values).tolist() == list(range(1, keys.size + 1))
    others = np.setdiff1d(rng.integers(1, 2**63, 20_000, dtype=np.uint64), keys)
    assert not table.get(others, values).any()


def test_packed_keys_tell_lengths_apart() -> None:
    assert pack(b"ab") != pack(b"ab\0")
    assert pack(b"") != pack(b"\0")


def test_equal_low_bytes_counts_zero_low_bytes() -> None:
    words = [0, 1, 0x100, 0xFF00, 1 << 63, 1 << 56, 0x00FF_0000_0000_0000, 2**64 - 1]
    expected = [8 if w == 0 else ((w & -w).bit_length() - 1) // 8 for w in words]
    assert _equal_low_bytes(np.array(words, np.uint64)).tolist() == expected


@contextmanager
def _tuned(matcher: GreedyMatcher, **settings: int) -> Iterator[None]:
    saved = {name: getattr(matcher, name) for name in settings}
    for name, value in settings.items():
        setattr(matcher, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(matcher, name, value)


def _random_blob(rng: random.Random, vocab_entries: list[bytes]) -> bytes:
    size = rng.choice([rng.randint(0, 64), rng.randint(0, 2_000), rng.randint(0, 20_000)])
    parts, total = [], 0
    while total < size:
        kind = rng.random()
        if kind < 0.7:
            part = rng.choice(vocab_entries)
        elif kind < 0.85:
            entry = rng.choice(vocab_entries)
            part = entry[: rng.randint(0, len(entry))]
        elif kind < 0.95:
            part = rng.randbytes(rng.randint(1, 12))
        else:
            part = bytes([rng.randrange(256)]) * rng.randint(1, 300)
        parts.append(part)
        total += len(part)
    return b"".join(parts)[:size]


def _stdlib_text(limit: int) -> str:
    """Real Python source with comments, the same on every machine with this Python."""
    parts, size = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        parts.append(path.read_text(encoding="utf-8", errors="replace"))
        size += len(parts[-1])
        if size >= limit:
            break
    return "".join(parts)[:limit]


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
