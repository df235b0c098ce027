"""Noun-bank building (template averaging) and the on-disk cache."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from tacluster.embed.backbones.base import PROMPT_TEMPLATES, Backbone, NounBank
from tacluster.errors import CacheError, InputError
from tacluster.nouns.bank import (
    cached_noun_bank,
    default_cache_dir,
    embed_with_templates,
    words_digest,
)


def _text_vec(text: str, d: int = 8) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).normal(size=d) * 3.0  # deliberately not unit norm


class CountingBackbone(Backbone):
    """Deterministic text encoder that counts its calls."""

    name = "counting"

    def __init__(self, tag: str = "a"):
        self.tag, self.calls = tag, 0

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.tag.encode()).hexdigest()

    def preprocess(self, image):
        raise NotImplementedError

    def encode_images(self, batch):
        raise NotImplementedError

    def encode_text(self, texts):
        self.calls += 1
        return np.stack([_text_vec(self.tag + t) for t in texts])

    def noun_bank(self, words, progress=True):
        words = list(words)
        return NounBank(words, embed_with_templates(self.encode_text, words, batch_size=500, progress=progress))


class DroppingBackbone(CountingBackbone):
    """Drops words containing a digit, like a backbone that cannot embed some."""

    def noun_bank(self, words, progress=True):
        kept = [w for w in words if not any(c.isdigit() for c in w)]
        return super().noun_bank(kept, progress=False)


def test_embed_with_templates_matches_manual_average():
    b = CountingBackbone()
    emb = embed_with_templates(b.encode_text, ["cat", "dog", "zebra"], batch_size=2, progress=False)
    assert emb.shape == (3, 8) and emb.dtype == np.float32
    vecs = np.stack([_text_vec("a" + t.format("dog")) for t in PROMPT_TEMPLATES])
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    manual = vecs.mean(axis=0)
    np.testing.assert_allclose(emb[1], manual / np.linalg.norm(manual), rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    assert b.calls == 2  # batches of 2 words


def test_embed_with_templates_rejects_bad_input():
    b = CountingBackbone()
    for bad in ([], "cat", ["cat", ""], ["cat", None]):
        with pytest.raises(InputError):
            embed_with_templates(b.encode_text, bad, progress=False)
    with pytest.raises(InputError, match="batch_size"):
        embed_with_templates(b.encode_text, ["cat"], batch_size=0, progress=False)
    with pytest.raises(CacheError, match="shape"):
        embed_with_templates(lambda t: np.zeros((1, 4)), ["cat"], progress=False)


def test_words_digest_is_unambiguous():
    assert words_digest(["a b"]) != words_digest(["a", "b"])
    assert words_digest(["a", "b"]) != words_digest(["b", "a"])


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("TACLUSTER_CACHE", str(tmp_path / "t"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "t"
    monkeypatch.delenv("TACLUSTER_CACHE")
    assert default_cache_dir() == tmp_path / "x" / "tacluster"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert default_cache_dir() == tmp_path / "h" / ".cache" / "tacluster"


def test_cache_miss_then_hit_is_memory_mapped(tmp_path):
    words = [f"noun {i}" for i in range(3000)]
    b = CountingBackbone()
    first = cached_noun_bank(b, words, cache_dir=tmp_path, progress=False)
    n_calls = b.calls
    assert n_calls == 6  # 3000 words / 500 per batch
    second = cached_noun_bank(b, words, cache_dir=tmp_path, progress=False)
    assert b.calls == n_calls  # hit: the encoder is not called again
    assert isinstance(second.embeddings, np.memmap) and not second.embeddings.flags.writeable
    assert second.words == words
    np.testing.assert_array_equal(np.asarray(first.embeddings), np.asarray(second.embeddings))
    entries = list((tmp_path / "nounbanks").iterdir())
    assert len(entries) == 1  # no temp folders left behind
    assert {p.name for p in entries[0].iterdir()} == {"embeddings.npy", "words.json", "meta.json"}
    meta = json.loads((entries[0] / "meta.json").read_text())
    assert meta["fingerprint"] == b.fingerprint and meta["shape"] == [3000, 8]


def test_cache_key_separates_backbones_and_word_lists(tmp_path):
    a, other = CountingBackbone("a"), CountingBackbone("b")
    bank_a = cached_noun_bank(a, ["cat", "dog"], cache_dir=tmp_path, progress=False)
    bank_b = cached_noun_bank(other, ["cat", "dog"], cache_dir=tmp_path, progress=False)
    assert other.calls == 1 and not np.allclose(bank_a.embeddings, bank_b.embeddings)
    cached_noun_bank(a, ["dog", "cat"], cache_dir=tmp_path, progress=False)
    assert a.calls == 2  # order changes the key
    assert len(list((tmp_path / "nounbanks").iterdir())) == 3


def test_default_cache_dir_is_used(tmp_path, monkeypatch):
    monkeypatch.setenv("TACLUSTER_CACHE", str(tmp_path))
    cached_noun_bank(CountingBackbone(), ["cat"], progress=False)
    assert len(list((tmp_path / "nounbanks").iterdir())) == 1


def _entry(root: Path) -> Path:
    (entry,) = (root / "nounbanks").iterdir()
    return entry


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda e: (e / "embeddings.npy").write_bytes(b"not an npy file"),
        lambda e: np.save(e / "embeddings.npy", np.zeros((3, 8), np.float32)),  # wrong rows
        lambda e: np.save(e / "embeddings.npy", np.zeros((50, 8), np.float64)),  # wrong dtype
        lambda e: np.save(e / "embeddings.npy", np.array([{"x": 1}] * 50, dtype=object)),  # pickle
        lambda e: (e / "meta.json").write_text("{"),
        lambda e: (e / "words.json").write_text(json.dumps(["x"] * 50)),
        lambda e: (e / "embeddings.npy").unlink(),
    ],
    ids=["garbage", "shape", "dtype", "pickle", "meta", "words", "missing"],
)
def test_corrupted_entry_is_warned_and_rebuilt(tmp_path, corrupt):
    words = [f"w{i}" for i in range(50)]
    b = CountingBackbone()
    good = np.array(cached_noun_bank(b, words, cache_dir=tmp_path, progress=False).embeddings)
    corrupt(_entry(tmp_path))
    with pytest.warns(UserWarning, match="corrupted, rebuilding"):
        again = cached_noun_bank(b, words, cache_dir=tmp_path, progress=False)
    assert b.calls == 2
    np.testing.assert_array_equal(np.asarray(again.embeddings), good)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rebuilt entry is healthy again
        cached_noun_bank(b, words, cache_dir=tmp_path, progress=False)
    assert b.calls == 2


def test_backbone_that_drops_words_caches_what_it_kept(tmp_path):
    b = DroppingBackbone()
    words = ["cat", "r2d2", "dog"]
    bank = cached_noun_bank(b, words, cache_dir=tmp_path, progress=False)
    assert bank.words == ["cat", "dog"] and bank.embeddings.shape == (2, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = cached_noun_bank(b, words, cache_dir=tmp_path, progress=False)
    assert again.words == ["cat", "dog"] and b.calls == 1


def test_unwritable_cache_raises_cache_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(CacheError, match="TACLUSTER_CACHE"):
        cached_noun_bank(CountingBackbone(), ["cat"], cache_dir=blocker, progress=False)


def test_noun_bank_build_is_announced_when_stderr_is_not_a_terminal(tmp_path, capsys):
    """Building the bank can take minutes with CLIP: logs see it start and end (plain lines)."""
    words = [f"noun {i}" for i in range(1200)]
    cached_noun_bank(CountingBackbone(), words, cache_dir=tmp_path, progress=True)
    err = capsys.readouterr().err
    assert "embedding 1,200 nouns" in err and "nouns embedded in" in err, err
    cached_noun_bank(CountingBackbone(), words, cache_dir=tmp_path, progress=True)  # a cache hit: silent
    assert "nouns" not in capsys.readouterr().err


def test_interrupted_bank_build_resumes_from_last_finished_block(tmp_path):
    """Blocks of 500 nouns are kept as they finish: a rebuild embeds only the rest, same bank."""
    words = [f"noun {i}" for i in range(1700)]  # 4 blocks of 500

    class Crashing(CountingBackbone):
        def encode_text(self, texts):
            if self.calls >= 2:
                raise KeyboardInterrupt
            return super().encode_text(texts)

    with pytest.raises(KeyboardInterrupt):
        cached_noun_bank(Crashing(), words, cache_dir=tmp_path / "c", progress=False)
    again = CountingBackbone()
    resumed = cached_noun_bank(again, words, cache_dir=tmp_path / "c", progress=False)
    assert again.calls == 2  # blocks 3 and 4 only
    clean = cached_noun_bank(CountingBackbone(), words, cache_dir=tmp_path / "clean", progress=False)
    np.testing.assert_array_equal(np.asarray(resumed.embeddings), np.asarray(clean.embeddings))
    assert not list((tmp_path / "c" / "nounbanks").glob(".*blocks"))  # cleaned up once complete


def test_cost_line_and_eta_lines_before_the_bulk_of_the_build(tmp_path, capsys, monkeypatch):
    from tacluster.nouns import bank as bank_mod

    monkeypatch.setattr(bank_mod._BankProgress, "every_s", 0.0)
    words = [f"noun {i}" for i in range(1700)]
    cached_noun_bank(CountingBackbone(), words, cache_dir=tmp_path, progress=True)
    lines = capsys.readouterr().err.splitlines()
    cost = [i for i, l in enumerate(lines) if "prompts" in l and "--device cuda" in l and "--vocabulary" in l]
    assert cost and "1,700 nouns x 7 templates = 11,900 prompts" in lines[cost[0]], lines
    assert str(tmp_path / "nounbanks") in lines[cost[0]]
    eta = [i for i, l in enumerate(lines) if "ETA" in l and "/1,700 nouns" in l]
    assert eta and cost[0] < eta[0]
    assert not any("\r" in l for l in lines)
