"""--noun-bank candidates: rank with one template, select exactly among each centre's candidates.

Tiny random CLIP (tests/helpers.py) and a small slice of WordNet, so each test
takes seconds; the agreement on real trained text towers is measured by
benchmarks/noun_candidates.py (``--ranking-precision int8`` for the int8
ranking bank of tacluster.nouns.precision, tested at the end here).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import save_tiny_hf_clip

from tacluster.counterparts import select_nouns
from tacluster.counterparts.candidates import select_from_candidates
from tacluster.estimator import TextAidedClustering
from tacluster.errors import InputError
from tacluster.nouns import precision as P
from tacluster.nouns.bank import noun_bank_entry
from tacluster.nouns.exact import RANKING_TEMPLATES, ExactNounStore, candidate_banks, resolve_noun_bank
from tacluster.nouns.vocabulary import load_wordnet_nouns

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from tacluster.embed.backbones import load_backbone

    return load_backbone(f"hf:{save_tiny_hf_clip(tmp_path_factory.mktemp('clip') / 'model')}")


@pytest.fixture(scope="module")
def words():
    return load_wordnet_nouns()[:6000:20]  # 300 nouns


class _Counting:
    """Wraps a backbone's encode_text and counts the prompts it sees."""

    def __init__(self, backbone, monkeypatch):
        self.prompts = 0
        inner = backbone.encode_text

        def encode(texts):
            self.prompts += len(texts)
            return inner(texts)

        monkeypatch.setattr(backbone, "encode_text", encode)


def _points(bank: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Images near random nouns of the bank (the tiny model's images carry no meaning)."""
    rng = np.random.default_rng(seed)
    x = bank[rng.integers(0, len(bank), n)] + 0.05 * rng.standard_normal((n, bank.shape[1]))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _full_and_ranking(clip, words):
    full = clip.noun_bank(words, progress=False).embeddings
    ranking = clip.noun_bank(words, progress=False, templates=("a photo of a {}.",)).embeddings
    return full, ranking


def test_a_pool_of_the_whole_vocabulary_keeps_exactly_the_full_selection(clip, words):
    full, ranking = _full_and_ranking(clip, words)
    u = _points(full, 120, 0)
    params = dict(n_centres=12, random_state=0)
    a = TextAidedClustering(4, "no-train", **params).fit(u, noun_embeddings=full, nouns=words)
    b = TextAidedClustering(4, "no-train", noun_pool=len(words), **params).fit(
        u, noun_embeddings=ranking, nouns=words, exact_noun_embeddings=lambda rows: full[rows])
    assert len(b.noun_pool_.pool) == len(words)  # every noun was a candidate
    assert b.kept_nouns_ == a.kept_nouns_
    np.testing.assert_array_equal(b.kept_noun_indices_, a.kept_noun_indices_)
    np.testing.assert_allclose(b.kept_noun_embeddings_, a.kept_noun_embeddings_, atol=1e-6)
    np.testing.assert_array_equal(b.labels_, a.labels_)


def test_a_generous_pool_keeps_the_full_selections_nouns_and_embeds_a_fraction(clip, words):
    full, ranking = _full_and_ranking(clip, words)
    centres = _points(full, 20, 1)
    exact = select_nouns(centres, full)
    asked = []
    cand = select_from_candidates(centres, ranking, lambda rows: asked.append(len(rows)) or full[rows], pool=40)
    overlap = len(set(cand.selection.indices) & set(exact.indices)) / len(exact.indices)
    assert overlap >= 0.95, overlap
    assert asked == [len(cand.pool)] and len(cand.pool) < len(words)
    # a pool as small as the kept set misses nouns here: the check above can fail
    small = select_from_candidates(centres, ranking, lambda rows: full[rows], pool=5)
    assert len(set(small.selection.indices) & set(exact.indices)) < len(exact.indices)


def test_exact_vectors_are_cached_per_noun_and_reused(clip, words, tmp_path, monkeypatch):
    count = _Counting(clip, monkeypatch)
    ranking, exact, store, _ = candidate_banks(clip, words, cache_dir=tmp_path, progress=False,
                                               ranking_precision="float32")
    assert count.prompts == len(words)  # the ranking bank: one prompt per noun
    first = exact(np.arange(0, 40))
    assert count.prompts == len(words) + 40 * 7
    np.testing.assert_allclose(first, clip.noun_bank(words[:40], progress=False).embeddings, atol=1e-5)
    count.prompts = 0
    # A later collection (a new process: a fresh store) with 30 known and 10 new candidates.
    ranking2, exact2, store2, _ = candidate_banks(clip, words, cache_dir=tmp_path, progress=False,
                                                  ranking_precision="float32")
    again = exact2(np.arange(10, 50))
    assert count.prompts == 10 * 7  # only the 10 new nouns; the ranking bank came from the cache
    assert (store2.embedded, store2.from_cache) == (10, 30)
    np.testing.assert_array_equal(again[:30], first[10:40])
    count.prompts = 0
    exact2(np.arange(0, 50))
    assert count.prompts == 0


def test_an_interrupted_pool_build_resumes_from_its_blocks(clip, words, tmp_path, monkeypatch):
    clip.text_batch_size = 8  # blocks of 8 nouns
    try:
        count = _Counting(clip, monkeypatch)
        inner = clip.encode_text
        calls = {"n": 0}

        def failing(texts):
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt
            return inner(texts)

        store = ExactNounStore(clip, tmp_path, progress=False)
        monkeypatch.setattr(clip, "encode_text", failing)
        with pytest.raises(KeyboardInterrupt):
            store.vectors(words[:40])
        monkeypatch.setattr(clip, "encode_text", inner)
        count.prompts = 0
        got = ExactNounStore(clip, tmp_path, progress=False).vectors(words[:40])
        assert count.prompts == (40 - 16) * 7  # the two finished blocks were kept
        np.testing.assert_allclose(got, clip.noun_bank(words[:40], progress=False).embeddings, atol=1e-5)
    finally:
        clip.text_batch_size = 256


def test_the_cost_lines_say_the_pool_and_the_full_banks_prompts(clip, words, tmp_path, capsys):
    _, exact, _, _ = candidate_banks(clip, words, cache_dir=tmp_path, progress=True, ranking_precision="float32")
    exact(np.arange(0, 12))
    err = capsys.readouterr().err
    full = f"the full bank: {len(words)} nouns x 7 = {len(words) * 7:,} prompts, --noun-bank full"
    assert f"{len(words)} nouns x 1 template = {len(words)} prompts" in err and full in err, err
    assert "12 nouns x 7 templates = 84 prompts" in err and f"candidate pool only (12 of {len(words)} nouns" in err
    assert "a GPU (--device cuda)" in err and "--vocabulary FILE" in err


def test_auto_is_candidates_on_a_cpu_and_full_on_a_gpu_or_with_the_bank_cached(clip, words, tmp_path):
    from tacluster.embed.backbones.lite import LiteBackbone
    from tacluster.nouns.bank import cached_noun_bank

    assert resolve_noun_bank("auto", clip, words, tmp_path, "cpu") == "candidates"
    assert resolve_noun_bank("auto", clip, words, tmp_path, "cuda") == "full"
    assert resolve_noun_bank("full", clip, words, tmp_path, "cpu") == "full"
    cached_noun_bank(clip, words[:10], cache_dir=tmp_path, progress=False)
    assert resolve_noun_bank("auto", clip, words[:10], tmp_path, "cpu") == "full"
    lite = LiteBackbone()
    assert resolve_noun_bank("auto", lite, words, tmp_path, "cpu") == "full"
    with pytest.raises(InputError, match="no work to skip"):
        resolve_noun_bank("candidates", lite, words, tmp_path, "cpu")


@pytest.mark.parametrize("mode", ["candidates", "full"])
def test_run_json_records_which_bank_ran(clip, words, tmp_path, mode):
    from PIL import Image

    from tacluster.nouns.vocabulary import load_vocabulary
    from tacluster.run.workflows import cluster_images

    rng = np.random.default_rng(0)
    for i in range(24):
        (tmp_path / "img").mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "img" / f"{i}.png")
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(words[:120]))
    cluster_images(tmp_path / "img", tmp_path / "run", 3, backbone=clip.name, method="no-train", device="cpu",
                   cache_dir=tmp_path / "cache", vocabulary=str(vocab), progress=False, report=False,
                   noun_bank=mode)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["settings"]["noun_bank"] == mode
    # the 7-template bank of every noun was built only by the full path
    assert noun_bank_entry(clip, load_vocabulary(str(vocab)), tmp_path / "cache").is_dir() == (mode == "full")
    if mode == "candidates":
        nb = run["counts"]["noun_bank"]
        assert nb["ranking_prompts"] == 120 and nb["full_bank_prompts"] == 840
        assert 0 < nb["pool_nouns"] <= 120 and nb["exact_embedded_now"] == nb["pool_nouns"]
        assert nb["ranking_precision"]["precision"] in ("float32", "int8")
        assert nb["ranking_precision"]["reason"].startswith("measured on this machine")
    else:
        assert "noun_bank" not in run["counts"]


# -- the ranking bank's precision (tacluster.nouns.precision) --------------------------------


def test_the_int8_copy_quantises_only_the_text_tower_and_leaves_the_original_alone(clip, words):
    before = clip.encode_text(["a photo of a dog.", "a photo of a cat."])
    q = P.int8_text_backbone(clip)
    assert q is not None and q.text_precision == "int8" and clip.text_precision == "float32"
    assert q._model.vision_model is clip._model.vision_model  # the image tower is shared, not copied
    linear = torch.nn.Linear
    assert all(type(m) is not linear for m in q._model.text_model.modules())  # every text Linear quantised
    assert any(type(m) is linear for m in clip._model.text_model.modules())  # the original's are not
    np.testing.assert_array_equal(clip.encode_text(["a photo of a dog.", "a photo of a cat."]), before)
    prompts = [f"a photo of a {w}." for w in words[:32]]
    cos = np.sum(clip.encode_text(prompts) * q.encode_text(prompts), axis=1)
    assert cos.min() > 0.9, cos.min()  # an approximation of the same vectors
    assert not np.allclose(cos, 1.0, atol=1e-7)  # and really another computation
    speedup, min_cos = P.measure_int8(clip, q, prompts)
    assert speedup > 0 and min_cos == pytest.approx(cos.min(), abs=1e-5)


@pytest.mark.parametrize("speedup, cosine, expected", [(2.0, 0.999, "int8"), (1.05, 0.999, "float32"),
                                                       (2.0, 0.95, "float32")])
def test_auto_keeps_int8_only_when_faster_and_close_and_remembers_it(clip, words, tmp_path, monkeypatch,
                                                                     speedup, cosine, expected):
    calls = []
    monkeypatch.setattr(P, "measure_int8", lambda a, b, prompts: calls.append(len(prompts)) or (speedup, cosine))
    choice, ranker = P.choose_ranking_precision(clip, words, RANKING_TEMPLATES, cache_dir=tmp_path, progress=False)
    assert choice.precision == expected and ranker.text_precision == expected
    assert calls == [P.PROBE_PROMPTS] and choice.probe_prompts == P.PROBE_PROMPTS
    assert choice.speedup == speedup and choice.min_cosine == cosine
    assert json.loads((tmp_path / P.DECISIONS_FILE).read_text())  # remembered for this machine
    # the next run on this machine: the same decision, nothing measured
    again, ranker2 = P.choose_ranking_precision(clip, words, RANKING_TEMPLATES, cache_dir=tmp_path, progress=False)
    assert calls == [P.PROBE_PROMPTS]
    assert again.precision == expected and ranker2.text_precision == expected
    assert again.reason.startswith("remembered: measured on this machine")


def test_explicit_choices_gpus_and_bad_values(clip, words, tmp_path, monkeypatch):
    def no_measurement(*a):
        raise AssertionError("measured")

    monkeypatch.setattr(P, "measure_int8", no_measurement)
    f32, ranker = P.choose_ranking_precision(clip, words, RANKING_TEMPLATES, requested="float32", cache_dir=tmp_path)
    assert f32.precision == "float32" and ranker is clip
    gpu, ranker = P.choose_ranking_precision(clip, words, RANKING_TEMPLATES, device="cuda", cache_dir=tmp_path)
    assert gpu.precision == "float32" and "not on a CPU" in gpu.reason
    with pytest.raises(InputError, match="CPU only"):
        P.choose_ranking_precision(clip, words, RANKING_TEMPLATES, requested="int8", device="cuda", cache_dir=tmp_path)
    with pytest.raises(InputError, match="is not one of auto, float32, int8"):
        P.choose_ranking_precision(clip, words, RANKING_TEMPLATES, requested="fp16", cache_dir=tmp_path)
    cached, ranker = P.choose_ranking_precision(clip, words, RANKING_TEMPLATES, cache_dir=tmp_path, cached=["int8"])
    assert cached.precision == "int8" and ranker.text_precision == "int8" and "cached in int8" in cached.reason
    assert not (tmp_path / P.DECISIONS_FILE).exists()


def test_an_int8_ranking_bank_is_cached_apart_and_the_exact_vectors_stay_float32(clip, words, tmp_path, capsys):
    ranking, exact, store, choice = candidate_banks(clip, words, cache_dir=tmp_path, progress=True,
                                                    ranking_precision="int8")
    assert choice.precision == "int8" and choice.min_cosine is not None and choice.speedup > 0
    assert "ranking bank in int8" in capsys.readouterr().err
    assert noun_bank_entry(clip, words, tmp_path, RANKING_TEMPLATES, precision="int8").is_dir()
    assert not noun_bank_entry(clip, words, tmp_path, RANKING_TEMPLATES).is_dir()  # the float32 key is untouched
    meta = json.loads((noun_bank_entry(clip, words, tmp_path, RANKING_TEMPLATES, precision="int8")
                       / "meta.json").read_text())
    assert meta["text_precision"] == "int8"
    f32 = clip.noun_bank(words, progress=False, templates=RANKING_TEMPLATES).embeddings
    cos = np.sum(np.asarray(ranking.embeddings) * f32, axis=1)
    assert cos.min() > 0.9 and not np.allclose(cos, 1.0, atol=1e-7)
    rows = np.arange(0, 30)
    np.testing.assert_allclose(exact(rows), clip.noun_bank(words[:30], progress=False).embeddings, atol=1e-5)
    # a later run with auto reuses the cached int8 bank without measuring
    _, _, _, again = candidate_banks(clip, words, cache_dir=tmp_path, progress=False)
    assert again.precision == "int8" and "cached in int8" in again.reason


def test_the_exact_store_refuses_an_int8_backbone(clip, tmp_path):
    from tacluster.nouns.exact import ExactNounStore

    with pytest.raises(InputError, match="float32 text tower"):
        ExactNounStore(P.int8_text_backbone(clip), tmp_path)


def test_the_cli_refuses_a_ranking_precision_that_would_not_run(tmp_path, capsys):
    from tacluster.run.cli import main

    (tmp_path / "img").mkdir()
    rc = main(["cluster", str(tmp_path / "img"), "--k", "2", "--noun-bank", "full", "--ranking-precision", "int8",
               "--out", str(tmp_path / "run"), "--backbone", "lite"])
    assert rc != 0
    err = capsys.readouterr().err
    assert "--noun-bank full builds no ranking bank" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
