"""RWKV World tokenizer: greedy longest-match over UTF-8 bytes, ids identical to the reference trie.

The reference (`rwkv.rwkv_tokenizer.TRIE_TOKENIZER`) walks a byte trie and always takes the
longest vocab entry that prefixes the rest of the input. Two engines give exactly that answer:

* `backend.tokenizer_trie.ByteTrie`, a C extension built at install (`pyproject.toml`): the same
  walk over a cache-sized trie (long inputs without the GIL). It serves every input when it is there:
  `python -m bench.tokenizer_speed` gives ~35x the reference on request-sized documents and ~20x
  on chat-sized prompts (2-CPU machine).
* HF `tokenizers`' added-token matcher, where the extension could not be built (no C compiler): an
  Aho-Corasick automaton searched leftmost-longest. Because every one of the 256 single bytes is a
  token, the leftmost match always starts where the previous one ended, so leftmost-longest is
  exactly greedy longest-prefix. Bytes travel through its `str` API as latin-1 chars (byte 0xNN
  <-> U+00NN). It allocates per token and tops out near 3.5x the reference.

`Tokenizer.engine` says which one runs; the server warns at start when it is the HF one.
"""

from __future__ import annotations

import ast
import codecs
from collections.abc import Iterable, Sequence
from itertools import chain, pairwise
from pathlib import Path

from tokenizers import AddedToken
from tokenizers import Tokenizer as HFTokenizer
from tokenizers.models import WordLevel

from backend.resources import DEFAULT_VOCAB  # the World vocab shipped with the package

try:  # built by `pip install` where a C compiler is found; optional, so installs never fail on it
    from backend.tokenizer_trie import ByteTrie
except ImportError:
    ByteTrie = None

VOCAB_SIZE = 65536  # the models' embedding rows; the vocab file fills ids 1..65529
END_OF_TEXT = 0  # has no bytes: it only tells the model a document ended

# Long inputs are cut into chunks that `tokenizers` encodes in parallel; its cost per token also
# grows with input length, so ~2 KiB pieces are faster even on one core.
_CHUNK = 2048
# How far past a chunk target to look for a safe cut before letting the chunk grow instead.
_CUT_SEARCH = 256
# Never matched (every char is an added token); unknown to WordLevel, so a miss raises, not mis-encodes.
_UNREACHABLE = "<unreachable>"


class Tokenizer:
    """Encode text or raw bytes to RWKV World ids, exactly as the reference trie does."""

    def __init__(self, tokens: Sequence[bytes], *, native: bool = True) -> None:
        """`tokens[i]` is the byte string of id i, for all ids 0..VOCAB_SIZE-1.

        native=False uses the HF engine even where the C one is built (tests hold both to the reference).
        """
        if len(tokens) != VOCAB_SIZE:
            raise ValueError(f"tokens: expected {VOCAB_SIZE} entries, got {len(tokens)}")
        self._bytes = tuple(tokens)
        self._engine: ByteTrie | HFMatcher = (
            ByteTrie(self._bytes) if native and ByteTrie is not None else HFMatcher(self._bytes)
        )

    @classmethod
    def from_file(cls, path: str | Path | None = None) -> Tokenizer:
        """Load an RWKV vocab file (`<id> <python literal> <byte length>` per line)."""
        return cls(read_vocab(Path(path) if path is not None else DEFAULT_VOCAB))

    @property
    def vocab_size(self) -> int:
        return VOCAB_SIZE

    @property
    def engine(self) -> str:
        """Which engine encodes: "c" (the built extension) or "hf" (the portable fallback)."""
        return "hf" if isinstance(self._engine, HFMatcher) else "c"

    def encode(self, text: str) -> list[int]:
        return self._engine.encode(text.encode("utf-8"))

    def encode_bytes(self, data: bytes) -> list[int]:
        """Encode bytes that need not be valid UTF-8 (every byte has a token)."""
        return self._engine.encode(data)

    def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
        datas = [text.encode("utf-8") for text in texts]
        if isinstance(self._engine, HFMatcher):
            return self._engine.encode_batch(datas)  # one parallel call
        return list(map(self._engine.encode, datas))

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


class HFMatcher:
    """The portable engine: a `tokenizers` pipeline whose added-token matcher does all the work."""

    def __init__(self, tokens: Sequence[bytes]) -> None:
        vocab = {data.decode("latin-1"): i for i, data in enumerate(tokens) if data}
        self._hf = HFTokenizer(WordLevel(vocab, unk_token=_UNREACHABLE))
        # normalized=False: match the raw chars; the ids come from the WordLevel vocab above.
        self._hf.add_tokens([AddedToken(content, normalized=False) for content in vocab])
        self._cut_forbidden = _inner_bigrams(tokens)

    def encode(self, data: bytes) -> list[int]:
        return self.encode_batch([data])[0]

    def encode_batch(self, datas: list[bytes]) -> list[list[int]]:
        """Encode every chunk of every input in one parallel call, then regroup per input."""
        docs = [self._chunks(data) for data in datas]
        flat = [chunk for chunks in docs for chunk in chunks if chunk]
        # The _fast variant skips char offsets, which we never read (~25% of the time otherwise).
        encodings = iter(self._hf.encode_batch_fast(flat, add_special_tokens=False))
        return [list(chain.from_iterable(next(encodings).ids for chunk in chunks if chunk)) for chunks in docs]

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


def _inner_bigrams(tokens: Sequence[bytes]) -> frozenset[int]:
    """Byte pairs (a << 8 | b) that occur inside some token: cutting between them could split it."""
    return frozenset(a << 8 | b for data in tokens for a, b in pairwise(data))
