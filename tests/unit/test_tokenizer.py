"""Both tokenizer engines give the reference trie's ids on every input; the Detokenizer streams whole chars."""

from __future__ import annotations

import random

import pytest
from rwkv.rwkv_tokenizer import TRIE_TOKENIZER

from backend.tokenizer import VOCAB_SIZE, Detokenizer, Tokenizer

PROSE = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
    "foolishness... \"Well,\" she said -- quite calmly -- 'I'd rather not.' Dr. Smith's 3rd-floor office "
    "(room #42) costs $1,234.56/month; that's 15% more than in 2019!"
)
CJK = "我们今天去公园散步，天气非常好。日本語のテキスト：ひらがな、カタカナ。한국어 문장도 있습니다. 𠀀𠀁𪚥"
EMOJI = "👨‍👩‍👧‍👦 family, 👩🏽‍💻 coder, 🏳️‍🌈 flag, 🇯🇵🇺🇳 regions, ❤️‍🔥, 🫠, 1️⃣ keycap, 👍🏿👍🏻"
CODE = (
    "def main(argv):\n\tfor i in range(10):\n\t\tif i % 2 == 0:\n\t\t\tprint(f'{i:>4}')\n\treturn 0\n\n"
    "func f() {\n\tx := map[string]int{\"a\": 1}\n}\n    indented = {'k': [1, 2, 3]}  # comment\r\n"
)
MIXED = (
    "Ελληνικά, русский текст, العربية، עברית, हिन्दी, ไทย, Tiếng Việt, e\u0301 a\u0308 n\u0303, "
    "ﬁ ligature, full-width ＡＢＣ１２３, math ∑∫√∞ ≠ ≤, \x00\x01\x07\x1b[0m control, \u2028\u2029 \ufeff BOM"
)
CORPUS = {"prose": PROSE, "cjk": CJK, "emoji": EMOJI, "code": CODE, "mixed": MIXED}

RUN_LENGTHS = [*range(1, 20), 31, 32, 33, 63, 64, 65, 79, 80, 81, 127, 128, 129, 255, 256, 257, 1000, 5000]
RUNS = [" ", "\t", "\n", "\r\n", " \t", "\n\n ", "-", "=", "#", "a"]

# Ranges the random texts draw code points from: scripts, emoji, joiners, combining marks, astral CJK.
CODE_POINT_RANGES = [
    (0x20, 0x7E),
    (0x09, 0x0D),
    (0xA0, 0x24F),
    (0x300, 0x36F),
    (0x370, 0x4FF),
    (0x590, 0x6FF),
    (0x900, 0x97F),
    (0xE00, 0xE7F),
    (0x2000, 0x206F),
    (0x3000, 0x30FF),
    (0x4E00, 0x9FFF),
    (0xAC00, 0xD7A3),
    (0xE000, 0xE0FF),
    (0xFE00, 0xFE0F),
    (0xFF00, 0xFFEF),
    (0x1F300, 0x1FAFF),
    (0x20000, 0x2A6DF),
    (0x10FF00, 0x10FFFF),
]


@pytest.fixture(scope="module", params=["c", "hf"])
def tok(request: pytest.FixtureRequest, tok: Tokenizer) -> Tokenizer:
    """Every test here runs on both engines: the C one (conftest's `tok`) and the portable HF one."""
    if request.param == "c":
        return tok
    return Tokenizer([tok.token_bytes(i) for i in range(VOCAB_SIZE)], native=False)


@pytest.fixture(scope="module")
def vocab_texts(ref: TRIE_TOKENIZER) -> list[str]:
    """Vocab entries that are whole UTF-8 text, for building inputs full of long, overlapping matches."""
    return [data.decode("utf-8") for data in ref.idx2token.values() if not _is_invalid_utf8(data)]


def random_text(rng: random.Random, vocab_texts: list[str]) -> str:
    kind = rng.randrange(3)
    if kind == 0:  # arbitrary code points
        return "".join(chr(rng.randint(*rng.choice(CODE_POINT_RANGES))) for _ in range(rng.randint(0, 40)))
    words = [rng.choice(vocab_texts) for _ in range(rng.randint(1, 8))]
    if kind == 2:  # cut and glue entries so the longest match must back off mid-entry
        words = [w[: rng.randint(0, len(w))] + chr(rng.randint(*rng.choice(CODE_POINT_RANGES))) for w in words]
    return "".join(words)


def random_bytes(rng: random.Random, ref: TRIE_TOKENIZER) -> bytes:
    if rng.random() < 0.5:
        return rng.randbytes(rng.randint(0, 200))
    # Raw vocab entries include partial UTF-8 sequences; cutting them makes more invalid bytes.
    parts = [rng.choice(list(ref.idx2token.values())) for _ in range(rng.randint(1, 10))]
    return b"".join(p[rng.randint(0, len(p) // 2) :] for p in parts)


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_ids_equal_reference_on_corpus(tok: Tokenizer, ref: TRIE_TOKENIZER, name: str) -> None:
    assert tok.encode(CORPUS[name]) == ref.encode(CORPUS[name])


@pytest.mark.parametrize("run", RUNS)
def test_ids_equal_reference_on_runs_of_every_length(tok: Tokenizer, ref: TRIE_TOKENIZER, run: str) -> None:
    texts = [f"x{run * n}y" for n in RUN_LENGTHS] + [run * n for n in RUN_LENGTHS]
    assert [tok.encode(t) for t in texts] == [ref.encode(t) for t in texts]


def test_ids_equal_reference_on_a_long_document(tok: Tokenizer, ref: TRIE_TOKENIZER) -> None:
    # Far longer than one encoding chunk, with runs too long to cut inside, to check chunk cutting.
    doc = "\n".join(CORPUS.values()) * 40 + " " * 20_000 + "a" * 9_000 + "\n".join(CORPUS.values()) * 40
    assert len(doc.encode()) > 100_000
    assert tok.encode(doc) == ref.encode(doc)


def test_ids_equal_reference_on_seeded_random_texts(
    tok: Tokenizer, ref: TRIE_TOKENIZER, vocab_texts: list[str]
) -> None:
    rng = random.Random(20230424)
    texts = [random_text(rng, vocab_texts) for _ in range(3000)]
    expected = [ref.encode(t) for t in texts]
    assert [tok.encode(t) for t in texts] == expected
    assert tok.encode_batch(texts) == expected


def test_bytes_that_are_not_utf8_encode_as_the_reference_and_round_trip(tok: Tokenizer, ref: TRIE_TOKENIZER) -> None:
    rng = random.Random(7)
    blobs = [random_bytes(rng, ref) for _ in range(1500)] + [rng.randbytes(60_000)]
    assert any(_is_invalid_utf8(b) for b in blobs)
    for blob in blobs:
        ids = tok.encode_bytes(blob)
        assert ids == ref.encodeBytes(blob), blob
        assert tok.decode_bytes(ids) == blob


def test_text_round_trips_through_decode(tok: Tokenizer) -> None:
    for text in CORPUS.values():
        assert tok.decode(tok.encode(text)) == text


def test_the_engine_asked_for_runs(tok: Tokenizer, request: pytest.FixtureRequest) -> None:
    assert tok.engine == request.node.callspec.params["tok"]


def test_empty_input_gives_no_ids(tok: Tokenizer) -> None:
    assert tok.encode("") == []
    assert tok.encode_bytes(b"") == []
    assert tok.encode_batch(["", "a", ""]) == [[], tok.encode("a"), []]


def test_token_bytes_match_the_reference_table(tok: Tokenizer, ref: TRIE_TOKENIZER) -> None:
    assert tok.vocab_size == 65536
    assert tok.token_bytes(0) == b""  # end of text
    assert [tok.token_bytes(i) for i in range(1, 65536)] == [ref.idx2token.get(i, b"") for i in range(1, 65536)]


def test_decode_replaces_invalid_bytes(tok: Tokenizer) -> None:
    assert tok.decode(tok.encode_bytes(b"ok\xff\xe4\xb8 end")) == "ok\ufffd\ufffd end"


def test_ids_outside_the_vocab_are_rejected(tok: Tokenizer) -> None:
    with pytest.raises(ValueError, match="65536"):
        tok.token_bytes(65536)
    with pytest.raises(ValueError, match="-1"):
        tok.decode_bytes([5, -1])


def test_missing_vocab_file_error_names_the_path(tmp_path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match=r"nope\.txt"):
        Tokenizer.from_file(missing)


def test_bad_vocab_line_error_names_file_and_line(tmp_path) -> None:
    bad = tmp_path / "vocab.txt"
    bad.write_text("1 'a' 1\n2 'bc' 3\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"vocab\.txt:2"):
        Tokenizer.from_file(bad)


def _is_invalid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _complete_prefix(data: bytes) -> str:
    """The text of `data` up to its last whole character (valid UTF-8 input)."""
    for cut in range(len(data), max(len(data) - 4, -1), -1):
        try:
            return data[:cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
    raise AssertionError(f"not valid UTF-8: {data!r}")


def _byte_token(tok: Tokenizer, byte: int) -> int:
    (token_id,) = tok.encode_bytes(bytes([byte]))
    return token_id


def test_detokenizer_streams_whole_characters_as_soon_as_they_complete(tok: Tokenizer) -> None:
    text = CJK + EMOJI + MIXED
    ids = tok.encode(text)
    # The test means something only if some characters really are split across tokens.
    assert any(_is_invalid_utf8(tok.token_bytes(i)) for i in ids)
    detok, pieces, seen = Detokenizer(tok), [], b""
    for token_id in ids:
        pieces.append(detok.push(token_id))
        seen += tok.token_bytes(token_id)
        assert "".join(pieces) == _complete_prefix(seen)
    assert detok.flush() == ""
    assert "".join(pieces) == text
    assert all("\ufffd" not in piece for piece in pieces)


def test_detokenizer_replaces_an_impossible_byte_at_once_and_continues(tok: Tokenizer) -> None:
    detok = Detokenizer(tok)
    assert detok.push(_byte_token(tok, 0xFF)) == "\ufffd"
    assert "".join(detok.push(i) for i in tok.encode("still here")) == "still here"


def test_detokenizer_replaces_a_cut_sequence_when_the_next_byte_breaks_it(tok: Tokenizer) -> None:
    detok = Detokenizer(tok)
    assert detok.push(_byte_token(tok, 0xE4)) == ""  # could still become a 3-byte character
    assert detok.push(_byte_token(tok, 0xB8)) == ""
    assert detok.push(tok.encode("A")[0]) == "\ufffdA"


def test_detokenizer_flush_emits_a_held_back_character_and_starts_afresh(tok: Tokenizer) -> None:
    detok = Detokenizer(tok)
    assert detok.push(_byte_token(tok, 0xF0)) == ""
    assert detok.flush() == "\ufffd"
    assert detok.push(tok.encode("x")[0]) == "x"


def test_detokenizer_end_of_text_token_adds_nothing(tok: Tokenizer) -> None:
    detok = Detokenizer(tok)
    assert detok.push(0) == ""
    assert detok.flush() == ""
