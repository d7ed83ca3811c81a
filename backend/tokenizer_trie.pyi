"""Types of the C extension built from tokenizer_trie.c."""

from collections.abc import Sequence

class ByteTrie:
    """Greedy longest-match over a byte trie; tokens[i] is the byte string of id i (b'' for ids never matched)."""

    def __init__(self, tokens: Sequence[bytes]) -> None: ...
    def encode(self, data: bytes | bytearray | memoryview) -> list[int]:
        """Ids of the longest-match tokenization; ValueError names the offset of a byte no token starts with."""
