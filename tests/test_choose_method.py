"""tacluster.cluster.choose_method: the label-free choice picks the method that wins in each world."""

from __future__ import annotations

import numpy as np
import pytest

from tacluster.cluster.choose_method import IMAGE_CANDIDATES, choose_method, knn_graph, modularity, partition_scores
from tacluster.estimator import TextAidedClustering
from tacluster.evaluate.metrics import cluster_accuracy
from tacluster.synthetic import make_burst_world, make_lines_world


def _acc(y, labels) -> float:
    return cluster_accuracy(y, labels)


def _fitter(u, k):
    """The ``fit`` choose_method calls: one estimator per candidate's settings (as the estimator's own)."""
    return lambda params: TextAidedClustering(k, random_state=0, **params).fit(u)


def test_modularity_prefers_the_true_partition_and_penalises_merging():
    u, y = make_burst_world(n_classes=3, bursts_per_class=2, burst_size=20, seed=1)
    g = knn_graph(u, 5)
    merged = np.where(y == 2, 1, y)  # two classes in one cluster
    assert modularity(g, y) > modularity(g, merged)
    assert modularity(g, np.zeros_like(y)) == pytest.approx(0.0, abs=1e-12)


def test_kmeans_world_keeps_kmeans():
    # Bursts scattered widely around each class direction: a burst's nearest
    # bursts often belong to another class, so the graph chains across
    # classes, while the class means stay apart.
    u, y = make_burst_world(spread=2.2, tightness=0.5)
    k = 5
    accs = {n: _acc(y, TextAidedClustering(k, random_state=0, **p).fit(u).labels_) for n, p in IMAGE_CANDIDATES.items()}
    assert accs["kmeans"] > max(accs["spectral"], accs["spectral-pow"]) + 0.1  # the world is what it claims
    choice, est = choose_method(u, k, _fitter(u, k), seed=0)
    assert choice.method == "kmeans"
    assert _acc(y, est.labels_) == pytest.approx(accs["kmeans"])
    assert set(choice.scores) == set(IMAGE_CANDIDATES)


def test_spectral_world_picks_spectral():
    # Long parallel lines: k-means cuts across them, the graph follows them.
    u, y = make_lines_world()
    k = 4
    kmeans_acc = _acc(y, TextAidedClustering(k, "kmeans", random_state=0).fit(u).labels_)
    choice, est = choose_method(u, k, _fitter(u, k), seed=0)
    assert choice.params["method"] == "spectral"
    assert _acc(y, est.labels_) > kmeans_acc + 0.3
    assert choice.scores[choice.method] > choice.scores["kmeans"]


def test_estimator_auto_predicts_and_saves_as_the_chosen_method(tmp_path):
    u, y = make_lines_world(seed=2)
    est = TextAidedClustering(4, "auto", random_state=0).fit(u)
    assert est.choice_ is not None and est.choice_.params["method"] == "spectral"
    assert np.array_equal(est.predict(u), est.labels_)
    est.save(tmp_path / "m")
    loaded = TextAidedClustering.load(tmp_path / "m")
    assert loaded.method == est.choice_.params["method"]
    assert loaded.feature_power == est.feature_power_
    assert np.array_equal(loaded.predict(u), est.predict(u))


def test_feature_power_is_applied_in_fit_and_predict(tmp_path):
    u, _ = make_lines_world(seed=3)
    est = TextAidedClustering(4, "kmeans", feature_power=0.5, random_state=0).fit(u)
    assert np.array_equal(est.predict(u), est.labels_)
    est.save(tmp_path / "m")
    assert np.array_equal(TextAidedClustering.load(tmp_path / "m").predict(u), est.labels_)
    # 1.0 (the default) leaves the labels of every existing method unchanged
    a = TextAidedClustering(4, "kmeans", random_state=0).fit(u).labels_
    b = TextAidedClustering(4, "kmeans", feature_power=1.0, random_state=0).fit(u).labels_
    assert np.array_equal(a, b)


def test_partition_scores_need_no_labels_and_are_deterministic():
    u, y = make_burst_world(seed=4)
    parts = {"a": y, "b": np.roll(y, 7)}
    s1 = partition_scores(u, parts, seed=0)
    s2 = partition_scores(u, parts, seed=0)
    assert s1 == s2 and s1["a"] > s1["b"]
