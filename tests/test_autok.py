"""Choosing K from the data (tacluster.cluster.choose_k)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from tacluster.cluster.choose_k import _ari, estimate_n_clusters
from tacluster.cluster.kmeans import consensus_labels
from tacluster.counterparts import retrieve_counterparts
from tacluster.errors import InputError
from tacluster.synthetic import make_world


def _world(k: int):
    # noise 1.0 in 64-d: k-means at the true K labels every point correctly,
    # yet the classes are far from trivially separated points.
    return make_world(1000, k, 64, 200, noise=1.0, seed=1)


def test_recovers_four_classes_from_images():
    w = _world(4)
    res = estimate_n_clusters(w.image_embeddings, k_range=(2, 10), seed=0)
    assert res.k == 4
    assert res.candidates.tolist() == list(range(2, 11))
    assert res.scores.shape == (9,)
    # The reference correction is what removes the k = 2 bias: raw stability
    # at k = 2 is high on the structureless reference too.
    assert res.details["views"] == ["image"]


def test_recovers_eight_classes_with_text_side():
    w = _world(8)
    s = retrieve_counterparts(w.image_embeddings, w.noun_embeddings[: 8 * 4])
    res = estimate_n_clusters(w.image_embeddings, counterparts=s, k_range=(2, 12), seed=0)
    assert res.k == 8
    assert res.details["views"] == ["image", "text-aided"]
    assert res.details["text_side"] == "counterparts"
    assert len(res.details["image_text_agreement"]) == len(res.candidates)


def test_same_seed_same_result_and_subsampling():
    w = make_world(600, 3, 32, 100, noise=0.8, seed=2)
    kw = dict(joint_embeddings=w.image_embeddings, k_range=(2, 6), seed=7, max_samples=400, n_bootstrap=3)
    a = estimate_n_clusters(w.image_embeddings, **kw)
    b = estimate_n_clusters(w.image_embeddings, **kw)
    assert a.k == b.k
    np.testing.assert_array_equal(a.scores, b.scores)
    assert a.details["stability"] == b.details["stability"]
    assert a.details["n_search"] == 400 and a.details["n_samples"] == 600


@pytest.mark.parametrize("k_range", [(1, 5), (0, 3), (5, 3), (2, 10_000), (2.5, 4), ("a", 3), (2,)])
def test_bad_k_range_raises(k_range):
    w = make_world(200, 3, 16, 50, seed=0)
    with pytest.raises(InputError, match="k_range"):
        estimate_n_clusters(w.image_embeddings, k_range=k_range)


def test_other_bad_input_raises():
    w = make_world(200, 3, 16, 50, seed=0)
    u = w.image_embeddings
    with pytest.raises(InputError, match="rows"):
        estimate_n_clusters(u, joint_embeddings=u[:100], k_range=(2, 4))
    with pytest.raises(InputError, match="n_bootstrap"):
        estimate_n_clusters(u, k_range=(2, 4), n_bootstrap=1)
    with pytest.raises(InputError, match="NaN"):
        bad = u.copy()
        bad[3, 0] = np.nan
        estimate_n_clusters(bad, k_range=(2, 4))
    with pytest.raises(InputError, match="seed"):
        estimate_n_clusters(u, k_range=(2, 4), seed=1.5)


def test_consensus_recovers_shared_partition():
    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(4), 50)
    parts = []
    for _ in range(7):
        p = rng.permutation(4)[truth]  # same partition, different label names
        flip = rng.random(truth.size) < 0.1  # plus 10 % noise per partition
        p[flip] = rng.integers(0, 4, flip.sum())
        parts.append(p)
    out = consensus_labels(np.stack(parts), 4, seed=0)
    assert adjusted_rand_score(truth, out) == pytest.approx(1.0)
    assert min(adjusted_rand_score(truth, p) for p in parts) < 0.9
    with pytest.raises(InputError):
        consensus_labels(np.stack(parts).astype(float), 4)
    with pytest.raises(InputError):
        consensus_labels(np.stack(parts), 1)


@pytest.mark.parametrize("k", [2, 5, 30])
def test_fast_ari_equals_sklearn(k):
    rng = np.random.default_rng(k)
    for agreement in (0.0, 0.5, 0.95):
        a = rng.integers(0, k, 500)
        b = np.where(rng.random(500) < agreement, a, rng.integers(0, k, 500))
        assert _ari(a, b, k) == pytest.approx(adjusted_rand_score(a, b), abs=1e-12)
    same = np.zeros(7, dtype=np.int64)
    assert _ari(same, same, k) == adjusted_rand_score(same, same) == 1.0
