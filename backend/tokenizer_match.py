"""Greedy longest-match tokenization of long inputs, vectorised with numpy.

`backend.tokenizer` explains when this is used; this module is the matcher itself.

The input is cut at *safe cuts*: positions whose byte pair occurs inside no token, so no token can
span them and the greedy path must pass through them. Between cuts lie *segments* (~3.9 bytes on
average on the bench corpus). Each stage below handles every segment at once, one numpy call per
operation, so the Python cost is per stage, not per token:

1. Whole-segment probe: 69% of tokens are a whole segment. A segment of <= 7 bytes packs into one
   uint64 key (bytes | length << 56), looked up in a perfect hash table (one probe, no chains).
2. Step, for the segments left ("walkers"): the longest token at each walker position. 1- and
   2-byte tokens come from a 65536-entry table, 3..7-byte ones from probing all five lengths in one
   2-d lookup, longer ones (flagged on their 7-byte prefix) from the long path. Each walker emits
   one token and advances; the whole-segment probe then finishes those whose rest is one token.
   Two rounds finish most segments (a segment rarely holds more than 3 tokens).
3. Long path (tokens of 8..128 bytes): an 8-byte table gives the 8-byte token and a sub-group of
   longer ones. *Run* families (a prefix then one repeated byte: indentation, space runs, "-----")
   are resolved by measuring the run with word compares and a per-family table of the best token
   for each run length; the few other candidates of a sub-group are compared word by word.
4. Once a block has <= 32 walkers left (long segments: CJK runs, identifiers), a plain Python
   greedy finishes them: there numpy's fixed cost per call would dominate.

Exactness, not probability: every hash hit is confirmed against the stored key, and keys are the
bytes themselves. Windows may run past a segment end: such a window cannot be a token (it would
contain the pair at the safe cut), and past the end of the input the padding is a byte that occurs
in no multi-byte token, so it can never extend a match.

Alternatives tried on the bench corpus and dropped: a longest-match array over every byte position
(3.2x more positions than tokens, each needing several probes); two threads per document (numpy
holds the GIL between its many small calls: 2x slower than one); HF for the leftovers (slower than
the Python finish); bucketed or cuckoo hash tables (more operations per probe than this one).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence
from itertools import pairwise

import numpy as np

_U64_MASK = (1 << 64) - 1
_SHORT = 7  # longest token a single packed key (7 bytes + length tag) can hold
_ID_BITS = 17  # a score is id | length << _ID_BITS, so max() over scores picks the longest token
_FLAG_SHIFT = _ID_BITS + 8  # above id and length: "longer tokens start with this" / sub-group id
_PAD = 160  # bytes after the input, so windows of up to 136 bytes can be read anywhere
_RUN_WORDS = 15  # words read past the first 16 bytes when measuring a run (tokens are <= 128 bytes)
# Below these walker counts numpy's fixed cost per call outweighs its speed: finish in Python.
_PY_FINISH = 32
_PY_LONG = 16
# Inputs are processed in blocks of about this size, cut at a safe cut, to bound temporary memory.
_BLOCK = 1 << 20


def _u64(value: int) -> np.ndarray:
    """A 0-d array: numpy combines it with arrays faster than a Python int or numpy scalar."""
    return np.array(value, np.uint64)


_C_8 = np.array(8, np.int64)
_C_SHORT1 = np.array(_SHORT + 1, np.int64)
_C_255 = np.array(255, np.int64)
_C_256 = np.array(256, np.int64)
_C_ZERO = _u64(0)
_C_ONE = _u64(1)
_C_FFFF = _u64(0xFFFF)
_C_FLAG_SHIFT = _u64(_FLAG_SHIFT)
_C_SCORE_MASK = _u64((1 << _FLAG_SHIFT) - 1)
_S_SCORE_MASK = np.array((1 << _FLAG_SHIFT) - 1, np.uint32)
_S_ID_BITS = np.array(_ID_BITS, np.uint32)
# MASK[k] keeps the first k bytes of a little-endian word; TAG[k] is the length tag of a k-byte key.
_MASK = np.array([(1 << (8 * k)) - 1 for k in range(9)], np.uint64)
_TAG = np.array([k << 56 for k in range(8)] + [0], np.uint64)
# Whole-remainder keys: a remainder longer than _SHORT gets key 0, which no packed token has.
_RMASK = np.array([(1 << (8 * k)) - 1 for k in range(_SHORT + 1)] + [0], np.uint64)
_STEP_MASK = _MASK[3 : _SHORT + 1, None].copy()  # lengths 3..7 as rows of one 2-d probe
_STEP_TAG = _TAG[3 : _SHORT + 1, None].copy()
_RUN_OFFSETS = np.arange(16, 16 + 8 * _RUN_WORDS, 8)[:, None]


def pack(data: bytes) -> int:
    """The key of a token of at most 7 bytes: its bytes little-endian, its length in the top byte."""
    return int.from_bytes(data, "little") | len(data) << 56


def _score(length: int, token_id: int) -> int:
    return length << _ID_BITS | token_id


class PerfectHash:
    """A collision-free hash of fixed uint64 keys (hash and displace): one probe per lookup.

    slot = (x >> shift) ^ disp[bucket(x)], x = key * mult. Buckets are placed largest first, each at
    the first displacement where all its keys land in free slots. Lookups compare the stored key,
    so a key that is not in the table finds 0.
    """

    def __init__(self, keys: Sequence[int], bits: int, bucket_bits: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _attempt in range(20):
            mult = int(rng.integers(1, 1 << 62)) * 2 + 1
            slots = self._place(keys, mult, bits, bucket_bits)
            if slots is not None:
                break
        else:
            raise RuntimeError(f"no perfect hash for {len(keys)} keys in {1 << bits} slots")
        disp, self._slot_of = slots
        shift = 64 - bits
        self.mult = _u64(mult)
        self.shift = _u64(shift)
        self.bucket_shift = _u64(shift - bucket_bits)
        self.bucket_mask = _u64((1 << bucket_bits) - 1)
        self.disp = np.array(disp, np.uint16 if bits <= 16 else np.uint32)
        self.keys = np.zeros(1 << bits, np.uint64)
        self.keys[self._slot_of] = np.array(keys, np.uint64)

    @staticmethod
    def _place(keys: Sequence[int], mult: int, bits: int, bucket_bits: int) -> tuple[list[int], list[int]] | None:
        shift = 64 - bits
        xs = [(k * mult) & _U64_MASK for k in keys]
        buckets: dict[int, list[int]] = {}
        for i, x in enumerate(xs):
            buckets.setdefault((x >> (shift - bucket_bits)) & ((1 << bucket_bits) - 1), []).append(i)
        used = bytearray(1 << bits)
        disp = [0] * (1 << bucket_bits)
        slot_of = [0] * len(keys)
        for bucket, members in sorted(buckets.items(), key=lambda kv: -len(kv[1])):
            bases = [xs[i] >> shift for i in members]
            if len(set(bases)) < len(bases):
                return None  # two keys of one bucket share a slot under every displacement
            for d in range(1 << bits):
                if not any(used[b ^ d] for b in bases):
                    break
            else:
                return None
            for i, b in zip(members, bases, strict=True):
                used[b ^ d] = 1
                slot_of[i] = b ^ d
            disp[bucket] = d
        return disp, slot_of

    def values(self, values: Sequence[int], dtype: type) -> np.ndarray:
        """A value table aligned with the slots: values[i] belongs to keys[i]; other slots hold 0."""
        table = np.zeros(self.keys.size, dtype)
        table[self._slot_of] = np.array(values, dtype)
        return table

    def get(self, key: np.ndarray, table: np.ndarray) -> np.ndarray:
        """table's value for each key (any shape), 0 where the key is not in the hash."""
        x = key * self.mult
        bucket = x >> self.bucket_shift
        bucket &= self.bucket_mask
        disp = self.disp.take(bucket.view(np.int64))
        x >>= self.shift
        x ^= disp
        slot = x.view(np.int64)
        value = table.take(slot)
        value *= self.keys.take(slot) == key
        return value


class GreedyMatcher:
    """Longest-match tokenizer over bytes; ids equal the reference trie's for any input."""

    def __init__(self, tokens: Sequence[bytes], pad_byte: int) -> None:
        # Tunable per instance (the tests force every path with them).
        self.py_finish = _PY_FINISH
        self.py_long = _PY_LONG
        self.block = _BLOCK
        self._pad_byte = bytes([pad_byte])
        self._pad = self._pad_byte * _PAD
        self._build_python_tables(tokens)
        self._build_short(tokens)
        self._build_long(tokens)
        self._safe = _safe_cut_table(tokens)

    @classmethod
    def build(cls, tokens: Sequence[bytes]) -> GreedyMatcher | None:
        """None for a vocab this matcher cannot serve exactly (`backend.tokenizer` then uses HF alone).

        It needs byte b to be token b + 1 (the RWKV World layout) and a byte that occurs in no
        multi-byte token, to pad the input with.
        """
        if any(tokens[b + 1] != bytes([b]) for b in range(256)):
            return None
        inner = set()
        for data in tokens:
            if len(data) > 1:
                inner.update(data)
        free = [b for b in range(256) if b not in inner]
        return cls(tokens, free[0]) if free else None

    # --- tables -------------------------------------------------------------------------------

    def _build_python_tables(self, tokens: Sequence[bytes]) -> None:
        """For the plain-Python finish: id by bytes, and tokens > 8 bytes by their first 8, longest first."""
        self._id_of = {data: i for i, data in enumerate(tokens) if data}
        groups: dict[bytes, list[tuple[bytes, int]]] = {}
        for i, data in enumerate(tokens):
            if len(data) > 8:
                groups.setdefault(data[:8], []).append((data, i))
        # Longest first, with the negated lengths to bisect past candidates longer than the segment.
        self._by_prefix8: dict[bytes, tuple[list[int], list[tuple[bytes, int]]]] = {}
        for prefix, candidates in groups.items():
            candidates.sort(key=lambda c: -len(c[0]))
            self._by_prefix8[prefix] = ([-len(c[0]) for c in candidates], candidates)

    def _build_short(self, tokens: Sequence[bytes]) -> None:
        """Tokens of 1..7 bytes, plus a flag on each 7-byte prefix of a longer token."""
        scores: dict[int, int] = {}
        for i, data in enumerate(tokens):
            if 1 <= len(data) <= _SHORT:
                scores[pack(data)] = _score(len(data), i)
        for data in tokens:
            if len(data) > _SHORT:
                key = pack(data[:_SHORT])
                scores[key] = scores.get(key, 0) | 1 << _FLAG_SHIFT
        self._short = PerfectHash(list(scores), bits=16, bucket_bits=15, seed=1)
        values = list(scores.values())
        self._short_score = self._short.values(values, np.uint32)
        self._short_id = self._short.values([v & ((1 << _ID_BITS) - 1) for v in values], np.uint16)
        # The best of the 1- and 2-byte tokens, indexed by the first two bytes (little-endian).
        best = np.arange(65536, dtype=np.uint32) % 256 + (1 | 1 << _ID_BITS)
        for i, data in enumerate(tokens):
            if len(data) == 2:
                best[data[0] | data[1] << 8] = _score(2, i)
        self._best12 = best

    def _build_long(self, tokens: Sequence[bytes]) -> None:
        """Tokens of >= 8 bytes, grouped by their first 8 bytes into sub-groups."""
        by_prefix: dict[bytes, list[int]] = {}
        for i, data in enumerate(tokens):
            if len(data) >= 8:
                by_prefix.setdefault(data[:8], []).append(i)
        keys, values = [], []
        run_rows: list[list[int]] = [[0] * 256]  # row 0: no run family
        run_row_of = [0]
        run_bytes = [0]  # the repeated byte of each run family, filling a word
        starts, counts, others = [0], [0], []
        for prefix, ids in sorted(by_prefix.items()):
            value = sum(_score(8, i) for i in ids if len(tokens[i]) == 8)
            longer = [i for i in ids if len(tokens[i]) > 8]
            if longer:
                value |= len(run_row_of) << _FLAG_SHIFT
                run = [i for i in longer if set(tokens[i][8:]) == {prefix[-1]}]
                run_row_of.append(len(run_rows) if run else 0)
                if run:
                    run_rows.append(_run_row(tokens, run))
                    run_bytes.append(prefix[-1] * 0x0101010101010101)
                starts.append(len(others))
                counts.append(len(longer) - len(run))
                others.extend(i for i in longer if i not in run)
            keys.append(int.from_bytes(prefix, "little"))
            values.append(value)
        self._t8 = PerfectHash(keys, bits=14, bucket_bits=12, seed=2)
        self._t8_value = self._t8.values(values, np.uint64)
        self._run_row_of = np.array(run_row_of, np.int64)
        self._run_rows = np.array(run_rows, np.uint32).reshape(-1)
        self._run_byte = np.array(run_bytes, np.uint64)
        self._other_start = np.array(starts, np.int64)
        self._other_count = np.array(counts, np.int64)
        self._build_other_words(tokens, others)

    def _build_other_words(self, tokens: Sequence[bytes], others: list[int]) -> None:
        """Bytes 8.. of the non-run long tokens as masked 8-byte words, one row per word index."""
        lengths = np.array([len(tokens[i]) for i in others], np.int64)
        self._other_score = (lengths << _ID_BITS | np.array(others, np.int64)).astype(np.uint64)
        self._other_words_needed = (lengths - 1) // 8  # words after the first 8 bytes
        self._other_is_long = self._other_words_needed > 1
        width = int(self._other_words_needed.max())
        raw = b"".join(tokens[i][8:].ljust(8 * width, b"\0") for i in others)
        self._other_words = np.ascontiguousarray(np.frombuffer(raw, np.uint64).reshape(-1, width).T)
        nbytes = np.clip((lengths - 8)[:, None] - 8 * np.arange(width), 0, 8)
        self._other_masks = np.ascontiguousarray(_MASK[nbytes].T)

    # --- encoding -----------------------------------------------------------------------------

    def encode(self, data: bytes) -> np.ndarray:
        """Token ids (uint16) of `data`."""
        if len(data) <= self.block:
            return self._encode_block(data) if data else _NO_IDS
        return np.concatenate([self._encode_block(block) for block in self._blocks(data)])

    def _blocks(self, data: bytes) -> Iterator[bytes]:
        """Pieces of about self.block bytes, cut at safe cuts (a run without one stays whole)."""
        start = 0
        while len(data) - start > self.block:
            cut = start + self.block
            while cut < len(data) and not self._safe[data[cut - 1] | data[cut] << 8]:
                cut += 1
            yield data[start:cut]
            start = cut
        if start < len(data):
            yield data[start:]

    def _encode_block(self, data: bytes) -> np.ndarray:
        n = len(data)
        # The padding byte is in no multi-byte token, so the pairs it forms are safe cuts: one before
        # the data and one after make the cut list start at 0 and end at n by themselves.
        buf = self._pad_byte + data + self._pad
        # c8[i] = the 8 bytes at data[i] as one little-endian word: every key is cut from these.
        c8 = np.ascontiguousarray(np.ndarray((n + _PAD - 16,), "<u8", buffer=buf, offset=1, strides=(1,)))
        bounds = self._safe.take(np.ndarray((n + 1,), "<u2", buffer=buf, strides=(1,))).nonzero()[0]
        ids = np.zeros(n, np.uint16)  # ids[i] = the token starting at i, 0 where none does
        p, e = self._finish_whole(c8, bounds[:-1], bounds[1:], ids)
        while p.size > self.py_finish:
            p, e = self._step(data, c8, p, e, ids)
            p, e = self._finish_whole(c8, p, e, ids)
        if p.size:
            self._finish_in_python(data, p, e, ids)
        return ids.take((ids != 0).nonzero()[0])

    def _finish_whole(self, c8: np.ndarray, p: np.ndarray, e: np.ndarray, ids: np.ndarray) -> tuple:
        """Emit the walkers whose remainder p..e is one token; return the others."""
        length = e - p
        np.minimum(length, _C_SHORT1, out=length)
        key = c8.take(p)
        key &= _RMASK.take(length)
        key |= _TAG.take(length)
        found = self._short.get(key, self._short_id)
        ids[p] = found
        rest = (found == 0).nonzero()[0]
        return p.take(rest), e.take(rest)

    def _step(self, data: bytes, c8: np.ndarray, p: np.ndarray, e: np.ndarray, ids: np.ndarray) -> tuple:
        """Emit the longest token at every walker and advance past it; return the unfinished walkers."""
        w = c8.take(p)
        keys = w & _STEP_MASK
        keys |= _STEP_TAG
        v = self._short.get(keys, self._short_score)
        flags = v[-1] > _S_SCORE_MASK  # the 7-byte prefix starts a longer token
        v &= _S_SCORE_MASK
        score = np.maximum.reduce(v)
        np.maximum(score, self._best12.take((w & _C_FFFF).view(np.int64)), out=score)
        longer = flags.nonzero()[0]
        if longer.size:
            found = self._long_any(data, c8, p.take(longer), e.take(longer), w.take(longer))
            score[longer] = np.maximum(score.take(longer), found)
        ids[p] = score.astype(np.uint16)  # keeps the id bits (ids < 65536), drops the length
        score >>= _S_ID_BITS
        p = p + score.view(np.int32)
        alive = (p < e).nonzero()[0]
        return p.take(alive), e.take(alive)

    def _long_any(self, data: bytes, c8: np.ndarray, p: np.ndarray, e: np.ndarray, w: np.ndarray) -> np.ndarray:
        return self._long_in_python(data, p, e) if p.size < self.py_long else self._long(c8, p, w)

    def _long(self, c8: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Score of the longest token of >= 8 bytes at each p (0 if none); w = the 8 bytes at p."""
        v = self._t8.get(w, self._t8_value)
        score = v & _C_SCORE_MASK
        group = (v >> _C_FLAG_SHIFT).view(np.int64)
        after = c8.take(p + _C_8)  # bytes 8..15
        row = self._run_row_of.take(group)
        runs = row.nonzero()[0]
        if runs.size:
            score[runs] = np.maximum(score.take(runs), self._run(c8, p.take(runs), after.take(runs), row.take(runs)))
        count = self._other_count.take(group)
        total = int(np.add.reduce(count))
        if total:
            # One (walker, candidate) pair per candidate of the walker's sub-group.
            walker = np.arange(p.size).repeat(count)
            cand = (self._other_start.take(group) - (count.cumsum() - count)).repeat(count) + np.arange(total)
            ok = (after.take(walker) & self._other_masks[0].take(cand)) == self._other_words[0].take(cand)
            self._compare_rest(c8, p, walker, cand, ok)
            np.maximum.at(score, walker, self._other_score.take(cand) * ok)
        return score

    def _compare_rest(
        self, c8: np.ndarray, p: np.ndarray, walker: np.ndarray, cand: np.ndarray, ok: np.ndarray
    ) -> None:
        """Clear ok where a candidate longer than 16 bytes differs after its first 16 (few get here)."""
        pending = (self._other_is_long.take(cand) & ok).nonzero()[0]
        word = 1
        while pending.size:
            c = cand.take(pending)
            window = c8.take(p.take(walker.take(pending)) + 8 + 8 * word)
            same = (window & self._other_masks[word].take(c)) == self._other_words[word].take(c)
            ok[pending] = same
            word += 1
            pending = pending.take(((self._other_words_needed.take(c) > word) & same).nonzero()[0])

    def _run(self, c8: np.ndarray, p: np.ndarray, after: np.ndarray, row: np.ndarray) -> np.ndarray:
        """Best run-family score: how far the byte ending the 8-byte prefix repeats, looked up by row."""
        rep = self._run_byte.take(row)
        x = after ^ rep
        length = _equal_low_bytes(x) + 8
        more = (x == _C_ZERO).nonzero()[0]
        if more.size:  # the run fills bytes 8..15 too: read up to 15 more words at once
            xs = c8.take(p.take(more) + _RUN_OFFSETS) ^ rep.take(more)
            word = (xs != _C_ZERO).argmax(0)  # the first word that breaks the run (0 if none does)
            last = xs.ravel().take(word * more.size + np.arange(more.size))
            # last == 0 only when no word breaks the run: it is longer than any token
            length[more] = np.where(last == _C_ZERO, 255, 16 + 8 * word + _equal_low_bytes(last))
        return self._run_rows.take(row * _C_256 + np.minimum(length, _C_255))

    def _long_in_python(self, data: bytes, p: np.ndarray, e: np.ndarray) -> np.ndarray:
        """Scores of the longest tokens at p, for a few walkers (any length: max() merges them)."""
        match = self._match_in_python
        scores = [_score(*match(data, q, end)) for q, end in zip(p.tolist(), e.tolist(), strict=True)]
        return np.array(scores, np.uint32)

    def _match_in_python(self, data: bytes, q: int, end: int) -> tuple[int, int]:
        """(length, id) of the longest token at q that ends by `end`."""
        room = end - q
        if room >= 8:
            window = data[q : q + 8]
            group = self._by_prefix8.get(window)
            if group is not None:
                neg_lengths, candidates = group
                for k in range(bisect_left(neg_lengths, -room), len(candidates)):
                    token, i = candidates[k]
                    if data.startswith(token, q):
                        return len(token), i
            length = 8
        else:
            length = room
            window = data[q:end]
        get = self._id_of.get
        while (i := get(window)) is None:  # every byte is a token, so this stops
            length -= 1
            window = window[:length]
        return length, i

    def _finish_in_python(self, data: bytes, p: np.ndarray, e: np.ndarray, ids: np.ndarray) -> None:
        """Greedy walk of the few remaining segments, one token at a time."""
        match = self._match_in_python
        at: list[int] = []
        found: list[int] = []
        for q, end in zip(p.tolist(), e.tolist(), strict=True):
            while q < end:
                length, i = match(data, q, end)
                at.append(q)
                found.append(i)
                q += length
        ids[at] = found


_NO_IDS = np.zeros(0, np.uint16)
_BYTE_BOUNDS = np.array([(1 << (8 * j)) - 1 for j in range(1, 8)] + [(1 << 64) - 2], np.uint64)


def _equal_low_bytes(x: np.ndarray) -> np.ndarray:
    """How many low-order bytes of each word are zero (8 for 0): where a run of equal bytes ends.

    (x & -x) - 1 has ones exactly below the lowest set bit (all 64 for x == 0); counting the byte
    boundaries 2**(8j) - 1 it reaches gives the zero bytes.
    """
    return _BYTE_BOUNDS.searchsorted((x & (~x + _C_ONE)) - _C_ONE, side="right")


def _run_row(tokens: Sequence[bytes], run: list[int]) -> list[int]:
    """row[cap] = score of the longest token of the run family no longer than cap bytes."""
    row = [0] * 256
    for i in run:
        length = len(tokens[i])
        for cap in range(length, 256):
            row[cap] = max(row[cap], _score(length, i))
    return row


def _safe_cut_table(tokens: Sequence[bytes]) -> np.ndarray:
    """safe[a | b << 8]: True where the pair (a, b) occurs inside no token, so a cut between is safe."""
    safe = np.ones((256, 256), bool)  # indexed [b, a] so that the flat index is a | b << 8
    for data in tokens:
        for a, b in pairwise(data):
            safe[b, a] = False
    return safe.reshape(-1)
