"""The C matcher gives the reference trie's ids on long and odd inputs, and is the engine this install runs."""

from __future__ import annotations

import random
import threading

import pytest
from rwkv.rwkv_tokenizer import TRIE_TOKENIZER

from backend.tokenizer import VOCAB_SIZE, Tokenizer
from bench.tokenizer_speed import stdlib_source
from tests.unit.test_tokenizer import _is_invalid_utf8

try:
    from backend.tokenizer_trie import ByteTrie
except ImportError:
    ByteTrie = None

EMOJI = ["👨‍👩‍👧‍👦", "🏳️‍🌈", "👍🏽", "🇯🇵", "😀", "🫠", "1️⃣", "❤️‍🔥", "e\u0301"]
RUN_LENGTHS = [*range(1, 21), 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 257, 1000, 5000]
DOCUMENTS = [
    *("code", "english", "cjk_run", "cjk_prose", "emoji", "vocab_text"),
    *("spaces", "indent", "other_runs", "vocab_bytes", "random_bytes", "cut_entries"),
]


def test_the_c_matcher_is_built_and_used(tok: Tokenizer) -> None:
    assert ByteTrie is not None, (
        "backend/tokenizer_trie.c was not compiled: install a C compiler and the Python headers "
        "(Debian: apt-get install gcc python3-dev), then run `.venv/bin/pip install -e .` again"
    )
    assert tok.engine == "c"


@pytest.fixture(scope="module")
def trie(tok: Tokenizer) -> ByteTrie:
    assert ByteTrie is not None, "the C matcher is not built: see test_the_c_matcher_is_built_and_used"
    return ByteTrie([tok.token_bytes(i) for i in range(VOCAB_SIZE)])


@pytest.fixture(scope="module")
def vocab_entries(tok: Tokenizer) -> list[bytes]:
    return [tok.token_bytes(i) for i in range(1, VOCAB_SIZE) if tok.token_bytes(i)]


@pytest.fixture(scope="module")
def documents(vocab_entries: list[bytes]) -> dict[str, bytes]:
    """Long inputs of every kind the issue names."""
    rng = random.Random(424242)
    texts = [e.decode("utf-8") for e in vocab_entries if not _is_invalid_utf8(e)]
    cjk = [t for t in texts if any("\u4e00" <= c <= "\u9fff" for c in t)]
    code = stdlib_source(60_000)
    docs = {
        "code": code,
        "english": "\n\n".join(line.strip("# ") for line in code.splitlines() if line.lstrip().startswith("#")),
        "cjk_run": "".join(rng.choice(cjk) for _ in range(6000)),  # deep walks that back off often
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
    return data


@pytest.mark.parametrize("name", DOCUMENTS)
def test_long_documents_match_reference(
    ref: TRIE_TOKENIZER, trie: ByteTrie, documents: dict[str, bytes], name: str
) -> None:
    data = documents[name]
    assert trie.encode(data) == ref.encodeBytes(data)


def test_seeded_fuzz_matches_reference(ref: TRIE_TOKENIZER, trie: ByteTrie, vocab_entries: list[bytes]) -> None:
    """Random byte strings up to 20 kB built from vocab entries (whole or cut), random bytes and runs."""
    rng = random.Random(20230424)
    blobs = [_random_blob(rng, vocab_entries) for _ in range(400)]
    assert max(map(len, blobs)) > 15_000 and min(map(len, blobs)) < 50
    for blob in blobs:
        assert trie.encode(blob) == ref.encodeBytes(blob), blob[:80]


def test_every_vocab_entry_alone_is_its_own_id(trie: ByteTrie, tok: Tokenizer) -> None:
    """A whole entry is always the longest match at its start, so each encodes to exactly its id."""
    entries = [(i, tok.token_bytes(i)) for i in range(1, VOCAB_SIZE) if tok.token_bytes(i)]
    assert [trie.encode(data) for _, data in entries] == [[i] for i, _ in entries]


def test_empty_and_single_bytes(ref: TRIE_TOKENIZER, trie: ByteTrie) -> None:
    assert trie.encode(b"") == []
    for b in range(256):
        assert trie.encode(bytes([b])) == ref.encodeBytes(bytes([b])) == [b + 1]


def test_any_bytes_like_input_is_read(trie: ByteTrie) -> None:
    data = "façade 中文 ok".encode()
    expected = trie.encode(data)
    assert trie.encode(bytearray(data)) == expected
    assert trie.encode(memoryview(b"xx" + data)[2:]) == expected
    with pytest.raises(TypeError):
        trie.encode("text, not bytes")


def test_a_small_vocab_gives_the_longest_entry_at_each_step() -> None:
    """Back-off from a deep miss, a long entry beside a shorter sibling, a repeated entry (the last id wins)."""
    tokens = [b"", b"a", b"b", b"c", b"ab", b"abcab", b"abca", b"bca", b"ab"]
    trie = ByteTrie(tokens)
    assert trie.encode(b"abcabcab") == [5, 3, 8]
    assert trie.encode(b"abcc") == [8, 3, 3]  # "abc" is a prefix of entries but no entry itself
    assert trie.encode(b"bcab") == [7, 2]


def test_random_vocabs_match_a_plain_greedy_loop() -> None:
    """Vocabs of other shapes (deep chains, tens of thousands of long entries: the table grows) vs the rule itself."""
    rng = random.Random(11)
    for n_entries, max_len in ((50, 6), (3000, 12), (40_000, 40)):
        entries = {bytes(rng.choice(b"abcd") for _ in range(rng.randint(2, max_len))) for _ in range(n_entries)}
        tokens = [b"", b"a", b"b", b"c", b"d", *sorted(entries)]
        trie = ByteTrie(tokens)
        for _ in range(50):
            data = bytes(rng.choice(b"abcd") for _ in range(rng.randint(0, 400)))
            assert trie.encode(data) == _greedy(tokens, data)


def test_a_byte_no_token_starts_is_an_error_naming_it() -> None:
    trie = ByteTrie([b"", b"a", b"b", b"ab"])
    with pytest.raises(ValueError, match="byte 0x7a at offset 2"):
        trie.encode(b"abz")


def test_tokens_that_are_not_bytes_are_rejected() -> None:
    with pytest.raises(TypeError, match=r"tokens\[1\]"):
        ByteTrie([b"", "a"])
    with pytest.raises(TypeError):
        ByteTrie(42)


def test_threads_encode_at_once_and_agree(trie: ByteTrie, documents: dict[str, bytes]) -> None:
    """Inputs over 64 KiB are walked without the GIL on a read-only trie: concurrent calls must not interfere."""
    joined = b"".join(documents.values())
    datas = [joined[k * 100_000 : (k + 1) * 100_000] for k in range(len(joined) // 100_000)]
    assert len(datas) >= 4
    expected = [trie.encode(d) for d in datas]
    results: dict[int, list[list[int]]] = {}

    def work(k: int) -> None:
        results[k] = [trie.encode(d) for d in datas]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(results[k] == expected for k in range(4))


def _greedy(tokens: list[bytes], data: bytes) -> list[int]:
    """The tokenization rule written plainly: the longest entry that prefixes the rest (last id on repeats)."""
    id_of = {t: i for i, t in enumerate(tokens) if t}
    longest = max(map(len, id_of))
    out, i = [], 0
    while i < len(data):
        length = next(k for k in range(min(longest, len(data) - i), 0, -1) if data[i : i + k] in id_of)
        out.append(id_of[data[i : i + length]])
        i += length
    return out


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
