"""The demo model's training corpus: public-domain and DFSG-free English text (and some code) that Debian ships.

Fetches the packages with `apt-get download` and unpacks them with `dpkg -x` into a work folder (no root, no
install), reads each source into documents, cleans and deduplicates them, splits off a held-out set by a hash
of each document (so the split does not depend on the order), tokenizes with our World tokenizer and writes:

    train.npy, heldout.npy   uint16 token ids; documents joined by END_OF_TEXT (0), shuffled with a fixed seed
    corpus.json              per source: package, version, licence, documents, characters, tokens
    NOTICE.txt               each package's Debian copyright file, verbatim (WordNet's and the PSF's licences
                             ask for their notice on copies; the others are public domain or BSD)
    words.txt.gz             every word (a run of letters) seen at least 3 times, lower-cased: what "made of
                             corpus words" means in the tests
    heldout-sample.txt       the start of one held-out document per source, 6 KB (tests: perplexity on unseen text)

    python -m backend.tools.corpus --out data/demo-corpus [--work /tmp/demo-corpus-debs]
    python -m backend.tools.corpus --out DIR --root UNPACKED   # packages already unpacked under UNPACKED/<package>
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import random
import re
import subprocess
import sys
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backend.tokenizer import END_OF_TEXT, Tokenizer

SEED = 24
HELDOUT_EVERY = 50  # one document in 50 (by hash) is held out: ~2 %
SAMPLE_CHARS = 6000
MIN_DOC_CHARS = 20
MIN_WORD_COUNT = 3  # words.txt.gz: words seen at least this often


@dataclass(frozen=True)
class Source:
    name: str
    package: str  # whose copyright file is the text's licence
    licence: str
    read: Callable[[Path], Iterator[str]]  # the unpacked package root -> documents
    helpers: tuple[str, ...] = ()  # packages needed to read it, whose files are not in the corpus


# --- readers: an unpacked package root -> documents --------------------------------------------------------


def read_kjv(root: Path) -> Iterator[str]:
    """The King James Bible, one chapter a document, verse numbers dropped. The text is stored compressed in
    BRS's own format, so the `bible` program of package bible-kjv reads it out."""
    program = root.parent / "bible-kjv/usr/bin/bible"
    out = subprocess.run(
        [str(program), "-p", str(root / "usr/lib"), "-l9999", "gen1:1-rev22:21"],
        capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL,
    ).stdout  # fmt: skip
    yield from kjv_chapters(out)


def kjv_chapters(text: str) -> Iterator[str]:
    """`bible`'s output ("Genesis 1", blank, "  1 In the beginning...") -> "Genesis 1\n\nIn the beginning..."."""
    title, verses = None, []
    for line in text.splitlines():
        if m := re.fullmatch(r"\s+\d+ (.+)", line):
            verses.append(m[1].strip())
        elif line.strip():
            if title and verses:
                yield title + "\n\n" + "\n".join(verses)
            title, verses = line.strip(), []
    if title and verses:
        yield title + "\n\n" + "\n".join(verses)


FORTUNE_FILES = (  # the non-offensive collections, less the ones that joke about groups of people or are pictures
    "fortunes", "literature", "riddles", "art", "computers", "cookie", "debian", "definitions", "education",
    "food", "goedel", "humorists", "kids", "law", "linux", "love", "magic", "medicine", "miscellaneous",
    "news", "paradoxum", "people", "pets", "platitudes", "science", "songs-poems", "sports", "startrek", "tao",
    "wisdom", "work", "zippy",
)  # fmt: skip


def read_fortunes(root: Path) -> Iterator[str]:
    """BSD fortune cookies: one cookie a document (files are cookies separated by lines holding '%')."""
    folder = root / "usr/share/games/fortunes"
    for name in FORTUNE_FILES:
        path = folder / name
        if path.is_file():
            for cookie in re.split(r"\n%\n", path.read_text("utf-8", errors="replace")):
                yield "\n".join(line.expandtabs(4).rstrip() for line in cookie.strip("\n").splitlines())


def read_jargon(root: Path) -> Iterator[str]:
    """The Jargon File's entries (":term: pronunciation, part of speech", then paragraphs), one a document."""
    text = gzip.decompress((root / "usr/share/doc/jargon-text/jargon.txt.gz").read_bytes()).decode()
    entries = re.split(r"\n   :(.+?):[ \t]*([^\n]*)\n", text)
    for term, head, body in zip(entries[1::3], entries[2::3], entries[3::3], strict=True):
        paragraphs = [unwrap(p) for p in re.split(r"\n\s*\n", body) if p.strip()]
        about = f" ({head.strip()})" if head.strip() else ""
        yield f"{term}{about}\n\n" + "\n\n".join(paragraphs).replace("{", "").replace("}", "")


def unwrap(paragraph: str) -> str:
    """A hard-wrapped paragraph on one line; indented blocks (code, verse) keep their lines."""
    lines = [line[3:] if line.startswith("   ") else line.lstrip() for line in paragraph.strip("\n").splitlines()]
    if any(line.startswith(" ") for line in lines):
        return "\n".join(line.rstrip() for line in lines)
    return " ".join(line.strip() for line in lines)


WORDNET_POS = {"n": "noun", "v": "verb", "a": "adjective", "s": "adjective", "r": "adverb"}


@dataclass(frozen=True)
class Synset:
    words: tuple[str, ...]
    pos: str
    gloss: str  # definitions and quoted examples, separated by "; "


def wordnet_synsets(root: Path) -> Iterator[Synset]:
    """WordNet 3.0's data files: "offset lexfile pos count word lexid ... | gloss"."""
    for part in ("noun", "verb", "adj", "adv"):
        for line in (root / f"usr/share/wordnet/data.{part}").read_text("utf-8", errors="replace").splitlines():
            if line.startswith("  ") or " | " not in line:
                continue  # the licence at the top of each file
            fields, gloss = line.split(" | ", 1)
            f = fields.split()
            count = int(f[3], 16)
            words = tuple(re.sub(r"\(\w+\)$", "", w).replace("_", " ") for w in f[4 : 4 + 2 * count : 2])
            yield Synset(words, WORDNET_POS[f[2]], gloss.strip())


def read_wordnet(root: Path) -> Iterator[str]:
    """A third of WordNet's glosses (another third makes the chat examples), "word, synonym (noun): definition;
    "example"", in documents of 20 entries."""
    lines = [f"{', '.join(s.words)} ({s.pos}): {s.gloss}" for s in wordnet_synsets(root) if third(s.gloss) == 1]
    for i in range(0, len(lines), 20):
        yield "\n".join(lines[i : i + 20])


def read_wordnet_questions(root: Path) -> Iterator[str]:
    """Chat-shaped examples made from WordNet's glosses ("User: What is a dwarf?\n\nAssistant: A dwarf is a
    plant or animal that is atypically small."), four turns a conversation: they teach the demo model the
    turn format that the server's chat prompt uses, and to end its turn."""
    pairs = [qa for s in wordnet_synsets(root) if (qa := wordnet_question(s))]
    yield from conversations(pairs, "wordnet")


def third(gloss: str) -> int:
    """0, 1 or 2 from a hash of the gloss: which share of WordNet a synset falls in."""
    return int(hashlib.sha1(gloss.encode()).hexdigest(), 16) % 3


def wordnet_question(s: Synset) -> tuple[str, str] | None:
    """One question and answer for a synset, or None (every third synset, single words, a plain definition)."""
    word, definition = s.words[0], s.gloss.split("; ")[0].strip()
    if third(s.gloss) != 0 or " " in word or not definition[:1].isalpha():
        return None
    if s.pos == "noun" and word[0].isupper():
        return f"What is {word}?", f"{word} is {definition}."
    if s.pos == "noun" and re.match(r"(a|an|the|any|one|someone|something) ", definition):
        article = "an" if word[0] in "aeiou" else "a"
        return f"What is {article} {word}?", f"{article.capitalize()} {word} is {definition}."
    if s.pos == "verb":
        return f"What does it mean to {word}?", f"To {word} is to {definition}."
    return f'What does "{word}" mean?', f'"{word.capitalize()}" means {definition}.'


FORTUNE_ASKS = ("Tell me something.", "Say something wise.", "Tell me a fortune.", "Hello!", "Any advice?",
                "What do you think?", "Tell me a joke.", "Hi.")  # fmt: skip


def read_fortune_questions(root: Path) -> Iterator[str]:
    """Short fortune cookies as answers in the chat turn format."""
    pairs = []
    for cookie in read_fortunes(root):
        h = int(hashlib.sha1(cookie.encode()).hexdigest(), 16)
        if len(cookie) <= 300 and h % 2 == 0:
            pairs.append((FORTUNE_ASKS[h // 2 % len(FORTUNE_ASKS)], " ".join(cookie.split())))
    yield from conversations(pairs, "fortunes")


def conversations(pairs: list[tuple[str, str]], salt: str, turns: int = 4) -> Iterator[str]:
    random.Random(f"{SEED}:{salt}").shuffle(pairs)
    for i in range(0, len(pairs), turns):
        yield "\n\n".join(f"User: {q}\n\nAssistant: {a}" for q, a in pairs[i : i + turns])


PYTHON_DOC_PARTS = ("tutorial", "faq", "howto", "reference", "library", "using", "glossary.rst.txt")


def read_python_docs(root: Path) -> Iterator[str]:
    """Python's documentation (reST sources, markup removed), in documents of up to ~4000 characters."""
    base = root / "usr/share/doc/python3.11/html/_sources"
    for part in PYTHON_DOC_PARTS:
        found = sorted((base / part).rglob("*.rst.txt")) if (base / part).is_dir() else [base / part]
        for path in (p for p in found if p.is_file()):
            yield from pieces(strip_rest(path.read_text("utf-8", errors="replace")))


def pieces(text: str, max_chars: int = 4000) -> Iterator[str]:
    """A long text cut at blank lines into pieces of about max_chars (a paragraph is never cut)."""
    piece: list[str] = []
    size = 0
    for paragraph in re.split(r"\n\s*\n", text):
        if size + len(paragraph) > max_chars and piece:
            yield "\n\n".join(piece)
            piece, size = [], 0
        piece.append(paragraph)
        size += len(paragraph) + 2
    if piece:
        yield "\n\n".join(piece)


_DROP_DIRECTIVES = r"index|toctree|highlight|sectionauthor|moduleauthor|module|currentmodule|include|literalinclude"
_DROP_DIRECTIVES += r"|image|figure|raw|only|tabularcolumns|impl-detail|testsetup|testcleanup|productionlist"


_SIGNATURES = r"function|method|class|attribute|data|exception|decorator|classmethod|staticmethod|coroutinefunction"
_SIGNATURES += r"|coroutinemethod|opcode|envvar|cmdoption|option|describe|module"
_ADMONITIONS = {"note": "Note", "warning": "Warning", "seealso": "See also", "tip": "Tip", "important": "Important",
                "attention": "Attention", "caution": "Caution", "versionadded": "New in version",
                "versionchanged": "Changed in version", "deprecated": "Deprecated since version"}  # fmt: skip


def strip_rest(text: str) -> str:
    """reST source -> plain text: roles and literals to their text, directives to their content or dropped."""
    out, skip_deeper = [], -1  # while >= 0: drop blank lines and lines indented deeper than this
    for line in text.splitlines():
        indent = len(line) - len(line.lstrip())
        if skip_deeper >= 0:
            if not line.strip() or indent > skip_deeper:
                continue
            skip_deeper = -1
        if re.fullmatch(r"([=\-*~^\"#+`'])\1{2,}\s*", line) or re.match(r"\s+:[\w-]+:( |$)", line):
            continue  # heading over/underlines, directive options
        if not (m := re.match(r"\s*\.\.(?: (?:[\w-]+:)?([\w-]+)::\s*(.*)|\s.*)?$", line)):
            out.append(line)
        elif m[1] is None or re.fullmatch(_DROP_DIRECTIVES, m[1]):
            skip_deeper = indent  # a comment, label or substitution, or a dropped directive, with its block
        elif re.fullmatch(_SIGNATURES, m[1]):
            out.append(" " * indent + m[2])
        elif m[1] in _ADMONITIONS:
            out.append(" " * indent + f"{_ADMONITIONS[m[1]]} {m[2]}".rstrip())
        # any other directive (code-block, doctest, ...): the line goes, its content stays
    text = "\n".join(out)
    text = re.sub(r":[\w:+-]+:`([^`]+)`", lambda m: role_text(m[1]), text)
    text = re.sub(r"``(.+?)``", r"\1", text)
    text = re.sub(r"`([^`<]+?)(?: <[^>]+>)?`_{0,2}", r"\1", text)
    text = re.sub(r"\*\*(.+?)\*\*", r"\1", text)
    return re.sub(r"::(?=\n)", ":", text)


def role_text(content: str) -> str:
    """What a role shows: `title <target>` -> title, `~a.b.c` -> c, `!name` -> name."""
    if m := re.fullmatch(r"(.+?)\s*<[^>]+>", content, re.S):
        return m[1]
    content = content.lstrip("!")
    return content.lstrip("~").rsplit(".", 1)[-1] if content.startswith("~") else content


SOURCES = (
    Source("kjv", "bible-kjv-text", "public domain (the King James Version of 1611)", read_kjv, ("bible-kjv",)),
    Source("fortunes", "fortunes", "BSD (fortune-mod); see NOTICE.txt", read_fortunes, ("fortunes-min",)),
    Source("jargon", "jargon-text", "public domain (the Jargon File 4.4.7)", read_jargon),
    Source("wordnet", "wordnet-base", "WordNet 3.0 licence (BSD-like); see NOTICE.txt", read_wordnet),
    Source("wordnet-chat", "wordnet-base", "derived from WordNet 3.0 glosses; see NOTICE.txt", read_wordnet_questions),
    Source(
        "fortunes-chat",
        "fortunes",
        "derived from fortune cookies (BSD); see NOTICE.txt",
        read_fortune_questions,
        ("fortunes-min",),
    ),
    Source("python-docs", "python3.11-doc", "PSF License 2 (Python's documentation); see NOTICE.txt", read_python_docs),
)


# --- fetching, cleaning, writing ----------------------------------------------------------------------------


def fetch_packages(names: Iterable[str], work: Path) -> Path:
    """`apt-get download` each package into work/debs and `dpkg -x` it into work/root/<package>."""
    debs, root = work / "debs", work / "root"
    debs.mkdir(parents=True, exist_ok=True)
    for name in sorted(set(names)):
        if not list(debs.glob(f"{name}_*.deb")):
            subprocess.run(["apt-get", "download", name], cwd=debs, check=True)
        if not (root / name).is_dir():
            (deb,) = debs.glob(f"{name}_*.deb")
            (root / name).mkdir(parents=True)
            subprocess.run(["dpkg", "-x", str(deb), str(root / name)], check=True)
    return root


def package_version(root: Path, package: str) -> str:
    """The version from the downloaded .deb's name, or "unknown" for a root unpacked by hand."""
    debs = list((root.parent / "debs").glob(f"{package}_*.deb"))
    return debs[0].name.split("_")[1].replace("%3a", ":") if debs else "unknown"


def clean(text: str) -> str:
    """NFC, no control characters but newline and tab, no trailing spaces, at most one blank line in a row."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\u00a0", " "))
    text = "".join(c for c in text if c in "\n\t" or unicodedata.category(c) != "Cc")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def dedup_key(text: str) -> str:
    """Documents equal up to case, punctuation and spacing are duplicates (fortune files repeat cookies)."""
    return hashlib.sha1(re.sub(r"\W+", " ", text.lower()).strip().encode()).hexdigest()


@dataclass
class Doc:
    source: str
    text: str
    heldout: bool


def collect(root: Path, sources: Iterable[Source] = SOURCES) -> list[Doc]:
    """Every source's cleaned documents, duplicates and tiny ones dropped, each marked train or held out."""
    seen, docs = set(), []
    for source in sources:
        for raw in source.read(root / source.package):
            text = clean(raw)
            key = dedup_key(text)
            if len(text) < MIN_DOC_CHARS or key in seen:
                continue
            seen.add(key)
            docs.append(Doc(source.name, text, int(key, 16) % HELDOUT_EVERY == 0))
    return docs


def tokenize(docs: list[Doc], tokenizer: Tokenizer) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """(train, heldout) uint16 ids, each document followed by END_OF_TEXT, in a seeded shuffle; tokens per source."""
    order = list(range(len(docs)))
    random.Random(SEED).shuffle(order)
    splits: dict[bool, list[int]] = {False: [], True: []}
    per_source: Counter[str] = Counter()
    for i in order:
        ids = [*tokenizer.encode(docs[i].text), END_OF_TEXT]
        splits[docs[i].heldout].extend(ids)
        per_source[docs[i].source] += len(ids)
    return np.array(splits[False], np.uint16), np.array(splits[True], np.uint16), dict(per_source)


def heldout_sample(docs: list[Doc]) -> str:
    """The start of the first held-out document of each source, SAMPLE_CHARS in all."""
    firsts = {}
    for d in docs:
        if d.heldout:
            firsts.setdefault(d.source, d.text)
    share = SAMPLE_CHARS // max(1, len(firsts))
    return "\n\n".join(text[:share].rsplit("\n", 1)[0] if len(text) > share else text for text in firsts.values())


def build(root: Path, out: Path, sources: tuple[Source, ...] = SOURCES, tokenizer: Tokenizer | None = None) -> dict:
    """Read, clean, split, tokenize and write the corpus files into `out`; returns corpus.json's content."""
    tokenizer = tokenizer or Tokenizer.from_file()
    docs = collect(root, sources)
    train, heldout, tokens = tokenize(docs, tokenizer)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "train.npy", train)
    np.save(out / "heldout.npy", heldout)
    words = Counter(w for d in docs for w in re.findall(r"[a-z]+", d.text.lower()))
    listed = "\n".join(sorted(w for w, n in words.items() if n >= MIN_WORD_COUNT)) + "\n"
    (out / "words.txt.gz").write_bytes(gzip.compress(listed.encode(), mtime=0))
    (out / "heldout-sample.txt").write_text(heldout_sample(docs) + "\n")
    packages = sorted({s.package for s in sources})
    notices = [f"==== {p} (Debian package {package_version(root, p)}) ====\n\n"
               + (root / p / f"usr/share/doc/{p}/copyright").read_text("utf-8", errors="replace")
               for p in packages]  # fmt: skip
    (out / "NOTICE.txt").write_text("\n\n".join(notices))
    summary = {
        "seed": SEED,
        "heldout_every": HELDOUT_EVERY,
        "train_tokens": int(train.size),
        "heldout_tokens": int(heldout.size),
        "distinct_tokens": int(np.unique(train).size),
        "sources": [
            {
                "name": s.name,
                "package": s.package,
                "version": package_version(root, s.package),
                "licence": s.licence,
                "documents": sum(d.source == s.name for d in docs),
                "characters": sum(len(d.text) for d in docs if d.source == s.name),
                "tokens": tokens.get(s.name, 0),
            }
            for s in sources
        ],
    }
    (out / "corpus.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the token files and the summary")
    parser.add_argument("--work", type=Path, default=Path("/tmp/demo-corpus-debs"), help="downloads and unpacking")
    parser.add_argument("--root", type=Path, help="packages already unpacked under ROOT/<package>: no apt")
    args = parser.parse_args(argv)
    root = args.root or fetch_packages([p for s in SOURCES for p in (s.package, *s.helpers)], args.work)
    summary = build(root, args.out)
    for s in summary["sources"]:
        print(f"{s['name']:14} {s['documents']:7} docs {s['characters']:10} chars {s['tokens']:9} tokens", s["licence"])
    print(f"train {summary['train_tokens']} tokens, held out {summary['heldout_tokens']}, "
          f"{summary['distinct_tokens']} distinct ids -> {args.out}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
