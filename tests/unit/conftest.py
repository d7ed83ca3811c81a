"""Unit fixtures shared across files: our tokenizer and the reference trie, each built once."""

from __future__ import annotations

import pytest
from rwkv.rwkv_tokenizer import TRIE_TOKENIZER

from backend.tokenizer import DEFAULT_VOCAB, Tokenizer


@pytest.fixture(scope="session")
def tok() -> Tokenizer:
    return Tokenizer.from_file()


@pytest.fixture(scope="session")
def ref() -> TRIE_TOKENIZER:
    return TRIE_TOKENIZER(str(DEFAULT_VOCAB))
