"""tacluster.choices.text_weight: the text weight falls to 0 for useless text and rises for informative text."""

from __future__ import annotations

import numpy as np
import pytest

from tacluster.cluster.kmeans import joint_features, kmeans_cluster
from tacluster.errors import InputError
from tacluster.estimator import TextAidedClustering
from tacluster.evaluate.metrics import cluster_accuracy
from tacluster.synthetic import make_world
from tacluster.choices.text_weight import choose_text_weight, neighbour_agreement

K = 10


@pytest.fixture(scope="module")
def style_world():
    # Images group by a nuisance style; only the nouns know the class.
    return make_world(1000, K, dim=128, n_nouns=500, style_strength=1.6, n_styles=K, seed=3)


@pytest.fixture(scope="module")
def counterparts(style_world):
    w = style_world
    est = TextAidedClustering(K, "no-train", random_state=0).fit(w.image_embeddings, noun_embeddings=w.noun_embeddings, nouns=w.nouns)
    return est.counterparts_, est.labels_


def _acc(y, x, seed=1):
    return 100 * cluster_accuracy(y, kmeans_cluster(x, K, seed=seed, n_init=3).labels)


def test_neighbour_agreement_counts_pairs():
    nn = np.array([[1, 2], [0, 2], [0, 1]])
    assert neighbour_agreement(nn, np.array([0, 0, 1])) == pytest.approx(2 / 6)
    assert neighbour_agreement(nn, np.array([5, 5, 5])) == 1.0


def test_informative_text_gets_high_weight_and_keeps_tac_gain(style_world, counterparts):
    w = style_world
    s, tac_labels = counterparts
    d = choose_text_weight(w.image_embeddings, s, K)
    assert d.text_weight >= 0.75, d.reason
    assert d.relatedness > 0.9
    tac_acc = 100 * cluster_accuracy(w.labels, tac_labels)
    image_acc = _acc(w.labels, w.image_embeddings)
    chosen_acc = _acc(w.labels, joint_features(w.image_embeddings, s, d.text_weight))
    assert tac_acc > image_acc + 30  # the world really needs the text side
    assert chosen_acc >= tac_acc - 5


@pytest.mark.parametrize("kind", ["random", "constant", "shuffled"])
def test_useless_text_gets_zero_weight_and_image_kmeans(style_world, counterparts, kind):
    w = style_world
    u = w.image_embeddings
    rng = np.random.default_rng(0)
    if kind == "random":
        s = rng.standard_normal((len(u), 40)).astype(np.float32)
    elif kind == "constant":
        s = np.tile(rng.standard_normal((1, 40)).astype(np.float32), (len(u), 1))
    else:  # informative counterparts given to the wrong images: text unrelated to pixels
        s = counterparts[0][rng.permutation(len(u))]
    d = choose_text_weight(u, s, K)
    assert d.text_weight == 0.0, d.reason
    # w = 0 pads zeros: the very same partition as image-only k-means with the same seed.
    x = joint_features(u, s / np.maximum(np.linalg.norm(s, axis=1, keepdims=True), 1e-12), d.text_weight)
    a = kmeans_cluster(x, K, seed=5, n_init=3).labels
    b = kmeans_cluster(u, K, seed=5, n_init=3).labels
    assert cluster_accuracy(a, b) > 0.99


def test_relatedness_gate_and_monotone_stop():
    # Plain world: images already separate the classes; the "text" is a
    # coarse 2-group split that cuts across them (full weight merges classes).
    w = make_world(600, K, dim=128, n_nouns=300, seed=4)
    u = w.image_embeddings
    s = np.zeros((len(u), 8), dtype=np.float32)
    s[np.arange(len(u)), (w.labels % 2) * 4] = 1.0
    s += 0.05 * np.random.default_rng(0).standard_normal(s.shape).astype(np.float32)
    gated = choose_text_weight(u, s, K)
    assert gated.text_weight == 0.0 and gated.relatedness < 0.5, gated.reason
    # Without the gate, the agreement rule alone must stop early, not reach 1.
    d = choose_text_weight(u, s, K, min_relatedness=0.0)
    assert d.text_weight <= 0.25, d.reason
    assert 1.0 not in d.agreement  # stopped at the first weight that cut neighbourhoods
    assert _acc(w.labels, joint_features(u, s, d.text_weight)) >= _acc(w.labels, joint_features(u, s, 1.0))


def test_bad_input_is_rejected(style_world):
    u = style_world.image_embeddings
    with pytest.raises(InputError, match="rows"):
        choose_text_weight(u, u[:-1], K)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        choose_text_weight(u, u, K, weights=(0.5, 2.0))
    bad = u.copy()
    bad[3, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        choose_text_weight(u, bad, K)
    with pytest.raises(InputError, match="n_clusters"):
        choose_text_weight(u, u, 1)
    with pytest.raises(InputError, match="n_seeds"):
        choose_text_weight(u, u, K, n_seeds=0)
