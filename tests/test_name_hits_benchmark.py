"""benchmarks/name_hits.py: every hand-mapped class resolves in WordNet, and the hit rule on a toy case."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers import load_benchmark

WORDNET = Path("/usr/share/wordnet")


def _load():
    return load_benchmark("name_hits")


@pytest.fixture(scope="module")
def bench():
    if not (WORDNET / "data.noun").is_file():
        pytest.skip(f"WordNet 3.0 noun files are not in {WORDNET} (Debian package wordnet-base)")
    mod = _load()
    return mod, mod.WordNet(WORDNET)


def test_every_class_noun_is_a_wordnet_noun(bench):
    mod, wn = bench
    for name, classes in mod.CLASS_NOUNS.items():
        for cls, lemmas in classes.items():
            for spec in lemmas:
                assert wn.synset(spec), (name, cls, spec)


def test_hit_rule(bench):
    mod, wn = bench
    spec = {"dog": ["dog"], "forest": ["forest"]}
    classes = ["dog", "forest"]
    y = np.array([0, 0, 0, 1, 1, 1])
    labels = np.array([0, 0, 0, 1, 1, 1])
    # hyponym (terrier) hits dog; "canine" is dog's hypernym one step up; a word unrelated to forest misses
    rate, rows = mod.hit_rate(wn, spec, classes, y, labels, ["terrier", "toaster"],
                              [[("terrier", 1.0)], [("toaster", 1.0), ("canine", 0.5)]])
    assert [r["hit"] for r in rows] == [True, False] and rate == 0.5
    rate, _ = mod.hit_rate(wn, spec, classes, y, labels, ["canine", "woods"], [[], []])
    assert rate == 1.0  # hypernym within two steps; synonym of the forest synset
