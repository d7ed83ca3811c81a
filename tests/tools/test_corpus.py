"""The corpus builder on small package trees made here, shaped like the Debian packages it reads (no apt needed):
every source becomes clean documents, duplicates go, the held-out split follows the text, and the token files
decode back to the documents."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from backend.tokenizer import END_OF_TEXT, Tokenizer
from backend.tools import corpus

BIBLE_OUTPUT = """
Genesis 1

  1 In the beginning God created the heaven and the earth.
  2 And the earth was without form, and void.

Genesis 2

  1 Thus the heavens and the earth were finished, and all the host of them.
"""
FORTUNES = (
    "A fool and his money are soon parted.\n%\n"
    "Never trust a computer you can't throw out a window.\n\t\t-- Steve Wozniak\n%\n"
)
JARGON = """The Jargon File

   :bit bucket: n.

   The universal data sink (originally, the mythical receptacle used to
   catch bits when they fall off the end of a register). See {/dev/null}.

   :cruft: /kruhft/, n.

   An unpleasant substance. The dust that gathers under your bed.
"""
WORDNET = {
    "noun": "  1 This software and database is being provided\n"
    "00001740 03 n 01 dwarf 0 001 @ 00004475 n 0000 | a plant or animal that is atypically small  \n"
    "00002137 03 n 02 Paris 0 City_of_Light 0 000 | the capital and largest city of France  \n",
    "verb": '00001740 29 v 01 pant 0 000 | breathe noisily, as when exhausted; "The runners were panting"  \n',
    "adj": "00021110 00 s 02 complaisant 0 obliging(a) 0 000 | showing a cheerful willingness to do favors  \n",
    "adv": "",
}
REST = """.. _tut-if:

:keyword:`!if` Statements
=========================

.. index::
   statement: if

Perhaps the most well-known statement type is the :keyword:`if` statement.  See
:ref:`the tutorial <tut-for>` and ``print()``::

   >>> x = 1

.. function:: spam(eggs)

   Return *eggs* with spam.

   .. versionadded:: 3.2
"""


def write(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Unpacked packages as `dpkg -x` leaves them, with a stand-in `bible` program that prints BIBLE_OUTPUT."""
    root = tmp_path_factory.mktemp("root")
    write(root / "bible-kjv/usr/bin/bible", f"#!/bin/sh\ncat <<'EOF'\n{BIBLE_OUTPUT}EOF\n")
    (root / "bible-kjv/usr/bin/bible").chmod(0o755)
    write(root / "bible-kjv-text/usr/lib/bible.data", b"")
    write(root / "fortunes/usr/share/games/fortunes/wisdom", FORTUNES)
    write(root / "fortunes/usr/share/games/fortunes/work", FORTUNES.split("%")[0] + "%\n")  # a duplicate cookie
    write(root / "fortunes/usr/share/games/fortunes/ethnic", "A joke about a people.\n%\n")  # not a chosen file
    write(root / "jargon-text/usr/share/doc/jargon-text/jargon.txt.gz", gzip.compress(JARGON.encode()))
    for part, text in WORDNET.items():
        write(root / f"wordnet-base/usr/share/wordnet/data.{part}", text)
    write(root / "python3.11-doc/usr/share/doc/python3.11/html/_sources/tutorial/controlflow.rst.txt", REST)
    for package in ("bible-kjv-text", "fortunes", "jargon-text", "wordnet-base", "python3.11-doc"):
        write(root / package / f"usr/share/doc/{package}/copyright", f"Copyright notice of {package}.\n")
    return root


def test_bible_chapters_lose_their_verse_numbers(root: Path) -> None:
    assert list(corpus.read_kjv(root / "bible-kjv-text")) == [
        "Genesis 1\n\nIn the beginning God created the heaven and the earth.\nAnd the earth was without form, "
        "and void.",
        "Genesis 2\n\nThus the heavens and the earth were finished, and all the host of them.",
    ]


def test_jargon_entries_are_unwrapped_without_cross_reference_braces(root: Path) -> None:
    bucket, cruft = corpus.read_jargon(root / "jargon-text")
    assert bucket == (
        "bit bucket (n.)\n\nThe universal data sink (originally, the mythical receptacle used to catch bits when "
        "they fall off the end of a register). See /dev/null."
    )
    assert cruft.startswith("cruft (/kruhft/, n.)\n\nAn unpleasant substance.")


def test_wordnet_glosses_and_questions_read_like_sentences(root: Path) -> None:
    synsets = list(corpus.wordnet_synsets(root / "wordnet-base"))
    assert [(s.words, s.pos) for s in synsets] == [
        (("dwarf",), "noun"), (("Paris", "City of Light"), "noun"), (("pant",), "verb"),
        (("complaisant", "obliging"), "adjective"),
    ]  # fmt: skip
    questions = {s.words[0]: corpus.wordnet_question(s) for s in synsets if corpus.third(s.gloss) == 0}
    expected = {
        "dwarf": ("What is a dwarf?", "A dwarf is a plant or animal that is atypically small."),
        "Paris": ("What is Paris?", "Paris is the capital and largest city of France."),
        "pant": ("What does it mean to pant?", "To pant is to breathe noisily, as when exhausted."),
        "complaisant": (
            'What does "complaisant" mean?', '"Complaisant" means showing a cheerful willingness to do favors.'
        ),
    }  # fmt: skip
    assert questions and all(questions[w] == expected[w] for w in questions)


def test_rest_markup_becomes_plain_text() -> None:
    text = corpus.strip_rest(REST)
    assert text.split("\n\n") == [
        "if Statements",
        "Perhaps the most well-known statement type is the if statement.  See\nthe tutorial and print():",
        "   >>> x = 1",
        "spam(eggs)",
        "   Return *eggs* with spam.",
        "   New in version 3.2",
    ], text


@pytest.fixture(scope="module")
def built(root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("corpus")
    return out, corpus.build(root, out)


def test_token_files_decode_to_every_source_once_each_document_ended(built: tuple[Path, dict]) -> None:
    out, summary = built
    tok = Tokenizer.from_file()
    ids = np.concatenate([np.load(out / "train.npy"), np.load(out / "heldout.npy")])
    assert ids.dtype == np.uint16 and ids[-1] == END_OF_TEXT
    docs = [tok.decode(d) for d in split_on(ids.tolist(), END_OF_TEXT)]
    by_source = {s["name"]: s["documents"] for s in summary["sources"]}
    assert len(docs) == sum(by_source.values())
    assert docs.count("A fool and his money are soon parted.") == 1  # the duplicate cookie went
    assert "Never trust a computer you can't throw out a window.\n        -- Steve Wozniak" in docs  # tabs expanded
    assert not any("people" in d for d in docs)  # only the chosen fortune files
    assert "Genesis 2\n\nThus the heavens and the earth were finished, and all the host of them." in docs
    chats = [d for d in docs if d.startswith("User: ")]
    assert len(chats) == by_source["wordnet-chat"] + by_source["fortunes-chat"] > 0
    assert all(d.count("User: ") == d.count("\n\nAssistant: ") for d in chats)
    assert by_source["kjv"] == 2 and by_source["jargon"] == 2 and by_source["python-docs"] == 1
    assert summary["train_tokens"] + summary["heldout_tokens"] == ids.size


def split_on(ids: list[int], sep: int) -> list[list[int]]:
    docs, doc = [], []
    for i in ids:
        if i == sep:
            docs.append(doc)
            doc = []
        else:
            doc.append(i)
    return docs


def test_sources_licences_and_notices_are_recorded(built: tuple[Path, dict]) -> None:
    out, summary = built
    assert json.loads((out / "corpus.json").read_text()) == summary
    for s in summary["sources"]:
        assert s["licence"] and s["package"] and s["tokens"] >= 0
    notice = (out / "NOTICE.txt").read_text()
    for package in ("bible-kjv-text", "fortunes", "jargon-text", "wordnet-base", "python3.11-doc"):
        assert f"==== {package} " in notice and f"Copyright notice of {package}." in notice
    words = gzip.decompress((out / "words.txt.gz").read_bytes()).decode().split()
    assert "earth" in words and words == sorted(words)


def test_heldout_split_follows_the_text_not_its_position(tmp_path: Path) -> None:
    texts = [f"Document number {i} has some words in it." for i in range(400)]

    def held_out(order: list[str]) -> set[str]:
        source = corpus.Source("numbers", "pkg", "public domain", lambda _root: iter(order))
        return {d.text for d in corpus.collect(tmp_path, [source]) if d.heldout}

    held = held_out(texts)
    assert 0 < len(held) < 40 and held_out(texts[::-1]) == held
