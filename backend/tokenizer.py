"""RWKV World tokenizer: greedy longest-match over UTF-8 bytes, ids identical to the reference trie.

The reference (`rwkv.rwkv_tokenizer.TRIE_TOKENIZER`) walks a byte trie and always takes the
longest vocab entry that prefixes the rest of the input. Two engines give exactly that answer:

* Short inputs (< FAST_MIN_BYTES, e.g. chat prompts): HF `tokenizers`' added-token matcher, an
  Aho-Corasick automaton searched leftmost-longest. Because every one of the 256 single bytes is a
  token, the leftmost match always starts where the previous one ended, so leftmost-longest is
  exactly greedy longest-prefix. Bytes travel through its `str` API as latin-1 chars (byte 0xNN
  <-> U+00NN), a C-speed mapping. Its cost per token is dominated by allocations (~55% of the time
  in malloc/free per profiling), so it tops out near 3.5x the reference.
* Long inputs: `backend.tokenizer_match.GreedyMatcher`, a numpy matcher that handles every segment
  between safe cuts at once (see that module). Its fixed cost per call (15-35 us) loses to HF below
  ~1 KiB and its throughput wins above (measured on mixed text: 0.94x HF's time at 1 KiB, 0.6x at
  2 KiB), hence the threshold. On the bench corpus (`python -m bench.tokenizer_speed`: documents
  of 1k-30k chars of code, CJK, other scripts, emoji and long space runs) encode() runs at
  9.1-10.5x the reference per document (runs on a shared 2-CPU machine), against ~3.4x for HF
  alone. Of its time, ~77% is the matcher, ~17% turning the id array into the returned list of
  ints (bound by touching each int's refcount) and ~5% the UTF-8 encoding of the text.

The matcher is built on the first long input (~0.45 s), so short-text users and most tests never
pay for it. A vocab it cannot serve exactly (see `GreedyMatcher.build`) stays on HF for all inputs.
"""

from __future__ import annotations

import ast
import codecs
import threading
from collections.abc import Iterable, Sequence
from itertools import chain, pairwise
from pathlib import Path

import numpy as np
from tokenizers import AddedToken
from tokenizers import Tokenizer as HFTokenizer
from tokenizers.models import WordLevel

from backend.tokenizer_match import GreedyMatcher

VOCAB_SIZE = 65536  # the models' embedding rows; the vocab file fills ids 1..65529
END_OF_TEXT = 0  # has no bytes: it only tells the model a document ended
DEFAULT_VOCAB = Path(__file__).resolve().parent.parent / "assets" / "tokenizer" / "rwkv_vocab_v20230424.txt"

# Long inputs are cut into chunks that `tokenizers` encodes in parallel; its cost per token also
# grows with input length, so ~2 KiB pieces are faster even on one core.
_CHUNK = 2048
# How far past a chunk target to look for a safe cut before letting the chunk grow instead.
_CUT_SEARCH = 256
# Never matched (every char is an added token); unknown to WordLevel, so a miss raises, not mis-encodes.
_UNREACHABLE = "<unreachable>"
# Inputs of at least this many bytes go to the numpy matcher; below it HF's lower fixed cost wins.
FAST_MIN_BYTES = 1024
# Each id's Python int, made once: turning an id array into a list then only copies references.
_INTS = np.array(range(VOCAB_SIZE), dtype=object)


class Tokenizer:
    """Encode text or raw bytes to RWKV World ids, exactly as the reference trie does."""

    def __init__(self, tokens: Sequence[bytes]) -> None:
        """`tokens[i]` is the byte string of id i, for all ids 0..VOCAB_SIZE-1."""
        if len(tokens) != VOCAB_SIZE:
            raise ValueError(f"tokens: expected {VOCAB_SIZE} entries, got {len(tokens)}")
        self._bytes = tuple(tokens)
        self._hf = _build_matcher(self._bytes)
        self._cut_forbidden = _inner_bigrams(self._bytes)
        # Built on the first long input (~0.4 s): short-text users and most tests never pay for it.
        self._fast: GreedyMatcher | None = None
        self._fast_state = "unbuilt"  # -> "ready" or "unsupported"
        self._fast_lock = threading.Lock()

    @classmethod
    def from_file(cls, path: str | Path | None = None) -> Tokenizer:
        """Load an RWKV vocab file (`<id> <python literal> <byte length>` per line)."""
        return cls(read_vocab(Path(path) if path is not None else DEFAULT_VOCAB))

    @property
    def vocab_size(self) -> int:
        return VOCAB_SIZE

    def encode(self, text: str) -> list[int]:
        return self.encode_bytes(text.encode("utf-8"))

    def encode_bytes(self, data: bytes) -> list[int]:
        """Encode bytes that need not be valid UTF-8 (every byte has a token)."""
        fast = self._fast_matcher(len(data))
        if fast is not None:
            return _id_list(fast, data)
        return self._encode_chunks([self._chunks(data)])[0]

    def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
        """Long texts go through the numpy matcher; the short ones through one parallel HF call."""
        datas = [text.encode("utf-8") for text in texts]
        out: list[list[int] | None] = [None] * len(datas)
        short = []
        for i, data in enumerate(datas):
            fast = self._fast_matcher(len(data))
            if fast is not None:
                out[i] = _id_list(fast, data)
            else:
                short.append(i)
        for i, ids in zip(short, self._encode_chunks([self._chunks(datas[i]) for i in short]), strict=True):
            out[i] = ids
        return out  # type: ignore[return-value]  # every slot is filled above

    def token_bytes(self, token_id: int) -> bytes:
        if not 0 <= token_id < VOCAB_SIZE:
            raise ValueError(f"token id {token_id} is outside 0..{VOCAB_SIZE - 1}")
        return self._bytes[token_id]

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        if ids and (min(ids) < 0 or max(ids) >= VOCAB_SIZE):
            bad = next(i for i in ids if not 0 <= i < VOCAB_SIZE)
            raise ValueError(f"token id {bad} is outside 0..{VOCAB_SIZE - 1}")
        return b"".join(map(self._bytes.__getitem__, ids))

    def decode(self, ids: Sequence[int]) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def prepare(self) -> None:
        """Build the long-input matcher now rather than on the first long input (servers: at start)."""
        self._fast_matcher(FAST_MIN_BYTES)

    def _fast_matcher(self, nbytes: int) -> GreedyMatcher | None:
        """The numpy matcher if this input is long enough to gain from it (built on first use)."""
        if nbytes < FAST_MIN_BYTES or self._fast_state == "unsupported":
            return None
        if self._fast_state == "unbuilt":
            with self._fast_lock:
                if self._fast_state == "unbuilt":
                    self._fast = GreedyMatcher.build(self._bytes)
                    self._fast_state = "ready" if self._fast is not None else "unsupported"
        return self._fast

    def _chunks(self, data: bytes) -> list[str]:
        """Cut `data` only where no token can span the cut, so chunks encode independently."""
        cuts = [0]
        target = _CHUNK
        while target < len(data):
            for i in range(target, min(target + _CUT_SEARCH, len(data))):
                if (data[i - 1] << 8 | data[i]) not in self._cut_forbidden:
                    cuts.append(i)
                    target = i + _CHUNK
                    break
            else:  # a long run with no safe cut (e.g. spaces): keep it whole, try further on
                target += _CHUNK
        cuts.append(len(data))
        return [data[a:b].decode("latin-1") for a, b in pairwise(cuts)]

    def _encode_chunks(self, docs: list[list[str]]) -> list[list[int]]:
        """Encode every chunk of every document in one parallel call, then regroup per document."""
        flat = [chunk for chunks in docs for chunk in chunks if chunk]
        # The _fast variant skips char offsets, which we never read (~25% of the time otherwise).
        encodings = iter(self._hf.encode_batch_fast(flat, add_special_tokens=False))
        return [list(chain.from_iterable(next(encodings).ids for chunk in chunks if chunk)) for chunks in docs]


class Detokenizer:
    """Turn a stream of token ids into text without ever splitting a UTF-8 character.

    The stdlib incremental decoder holds back an incomplete trailing sequence and replaces bytes
    with U+FFFD as soon as they cannot be part of a valid character, so bad bytes never stall output.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        return self._decoder.decode(self._tokenizer.token_bytes(token_id))

    def flush(self) -> str:
        """Emit whatever is held back (an unfinished character becomes U+FFFD) and start afresh."""
        return self._decoder.decode(b"", final=True)


def read_vocab(path: Path) -> list[bytes]:
    """Parse the vocab file into a list indexed by id; ids it does not name get empty bytes."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"tokenizer vocab '{path}' not found (pass a path to Tokenizer.from_file, "
            f"or run from a source checkout, where it lives in assets/tokenizer/)"
        ) from None
    ids, literals, lengths = [], [], []
    for n, line in enumerate(lines, 1):
        first, last = line.find(" "), line.rfind(" ")
        if first <= 0 or last <= first:
            raise ValueError(f"{path}:{n}: expected '<id> <literal> <length>', got {line!r}")
        ids.append(int(line[:first]))
        literals.append(line[first + 1 : last])
        lengths.append(int(line[last + 1 :]))
    # One literal_eval over the whole list is ~10x faster than one per line.
    values = ast.literal_eval("[" + ",".join(literals) + "]")
    tokens = [b""] * VOCAB_SIZE
    for n, (token_id, value, length) in enumerate(zip(ids, values, lengths, strict=True), 1):
        data = value.encode("utf-8") if isinstance(value, str) else value
        if not isinstance(data, bytes) or len(data) != length or not 0 < token_id < VOCAB_SIZE:
            raise ValueError(
                f"{path}:{n}: bad entry {lines[n - 1]!r} (id must be 1..{VOCAB_SIZE - 1}, length must match)"
            )
        tokens[token_id] = data
    return tokens


def _build_matcher(tokens: Sequence[bytes]) -> HFTokenizer:
    """A `tokenizers` pipeline whose added-token matcher does all the work (see module docstring)."""
    vocab = {data.decode("latin-1"): i for i, data in enumerate(tokens) if data}
    hf = HFTokenizer(WordLevel(vocab, unk_token=_UNREACHABLE))
    # normalized=False: match the raw chars; the ids come from the WordLevel vocab above.
    hf.add_tokens([AddedToken(content, normalized=False) for content in vocab])
    return hf


def _inner_bigrams(tokens: Sequence[bytes]) -> frozenset[int]:
    """Byte pairs (a << 8 | b) that occur inside some token: cutting between them could split it."""
    return frozenset(a << 8 | b for data in tokens for a, b in pairwise(data))


def _id_list(matcher: GreedyMatcher, data: bytes) -> list[int]:
    """The numpy matcher's ids as the list[int] callers get (through the prebuilt ints of _INTS)."""
    return _INTS.take(matcher.encode(data)).tolist()
