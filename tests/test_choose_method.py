"""tacluster.choices.choose_method: the label-free choice picks the method that wins in each world."""

from __future__ import annotations

import numpy as np
import pytest

from tacluster.choices.choose_method import IMAGE_CANDIDATES, choose_method, knn_graph, modularity, partition_scores
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


def test_kmeans_world_loses_nothing_to_kmeans():
    # Bursts scattered widely around each class direction: a burst's nearest
    # bursts often belong to another class, so the graph chains across
    # classes, while the class means stay apart.
    u, y = make_burst_world(spread=2.2, tightness=0.5)
    k = 5
    accs = {n: _acc(y, TextAidedClustering(k, random_state=0, **p).fit(u).labels_) for n, p in IMAGE_CANDIDATES.items()}
    plain = _acc(y, TextAidedClustering(k, "spectral", random_state=0).fit(u).labels_)
    assert accs["kmeans"] > plain + 0.1  # the world is what it claims: the graph cut alone loses
    choice, est = choose_method(u, k, _fitter(u, k), seed=0)
    assert set(choice.scores) == set(IMAGE_CANDIDATES)
    assert _acc(y, est.labels_) == pytest.approx(accs[choice.method])
    # the chosen partition is k-means, or the refined graph cut that k-means pulled back to it
    assert _acc(y, est.labels_) >= accs["kmeans"] - 0.01
    if choice.method != "kmeans":
        assert choice.scores[choice.method] >= choice.scores["kmeans"]


def test_kmeans_replaces_the_graph_candidate_when_it_scores_higher():
    u, y = make_burst_world(spread=2.2, tightness=0.5)
    k = 5
    # a graph candidate that cuts at random: k-means's partition scores higher and is kept
    cands = {"kmeans": {"method": "kmeans"}, "spectral-fused": {"method": "spectral"}}

    def fit(params):
        est = TextAidedClustering(k, random_state=0, **params).fit(u)
        if params["method"] == "spectral":
            est.labels_ = np.random.default_rng(0).integers(0, k, size=len(u))
        return est

    choice, est = choose_method(u, k, fit, candidates=cands, seed=0)
    assert choice.method == "kmeans" and choice.scores["kmeans"] > choice.scores["spectral-fused"]
    assert "kmeans: modularity" in choice.reason and "spectral-fused's" in choice.reason


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


@pytest.mark.parametrize("world, k, expected", [
    (lambda: make_lines_world(n_samples=300, seed=2), 4, "spectral-fused"),
    (lambda: make_burst_world(n_classes=4, bursts_per_class=6, burst_size=10, spread=3.0, tightness=0.3, seed=2),
     4, "kmeans"),
])
def test_auto_is_bit_identical_to_the_chosen_candidate_fitted_alone(world, k, expected):
    """``auto`` returns the chosen candidate's own fit (no refit, nothing shared that moves a bit):
    labels, confidence, probabilities and centroids equal those of that candidate fitted alone."""
    u, _ = world()
    auto = TextAidedClustering(k, "auto", random_state=0).fit(u)
    assert auto.choice_.method == expected and auto.choice_.params == IMAGE_CANDIDATES[expected]
    alone = TextAidedClustering(k, random_state=0, **auto.choice_.params).fit(u)
    for name in ("labels_", "confidence_", "probabilities_", "cluster_centers_"):
        assert np.array_equal(getattr(auto, name), getattr(alone, name)), name


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


def test_graph_candidate_fuses_both_views_and_refines_with_kmeans():
    """spectral_views and spectral_refine change what runs: the graph of both views side by side,
    then k-means from its clusters (each image at the nearest of its clusters' means)."""
    from tacluster._blocks import concatenated_views, power_normalise
    from tacluster.cluster.kmeans import normalised_means

    u, _ = make_burst_world(spread=2.2, tightness=0.5)
    k = 5
    plain = TextAidedClustering(k, "spectral", random_state=0).fit(u).labels_
    views = TextAidedClustering(k, "spectral", spectral_views=[1.0, 0.5], random_state=0).fit(u).labels_
    fused = TextAidedClustering(k, "spectral", spectral_views=[1.0, 0.5], spectral_refine=True,
                                random_state=0).fit(u)
    assert not np.array_equal(plain, views) and not np.array_equal(views, fused.labels_)
    # refined: a fixed point of k-means (every image already at its nearest cluster mean)
    means = normalised_means(u, fused.labels_, k)
    assert np.array_equal(np.argmax(u @ means.T, axis=1), fused.labels_)
    x = concatenated_views(u[:3], [1.0, 0.5])  # unit rows whose cosine is the mean of the views' cosines
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-6)
    cos = 0.5 * (u[:3] @ u[:3].T + power_normalise(u[:3], 0.5) @ power_normalise(u[:3], 0.5).T)
    assert np.allclose(x @ x.T, cos, atol=1e-5)


@pytest.mark.parametrize("method, params, message", [
    ("kmeans", {"spectral_views": [1.0, 0.5]}, "which method='kmeans' does not make"),
    ("auto", {"spectral_refine": True}, "is chosen by method='auto'"),
    ("spectral", {"spectral_views": []}, "non-empty list of positive"),
    ("spectral", {"spectral_views": [1.0, -0.5]}, "non-empty list of positive"),
])
def test_graph_settings_are_refused_where_they_would_not_run(method, params, message):
    from tacluster.errors import InputError

    u, _ = make_lines_world(seed=5)
    with pytest.raises(InputError, match=message):
        TextAidedClustering(4, method, **params).fit(u)


def test_refined_kmeans_on_a_sample_assigns_every_row():
    from tacluster.cluster.kmeans import refined_kmeans

    u, y = make_burst_world(seed=6)
    full = refined_kmeans(u, y, int(y.max()) + 1)
    sampled = refined_kmeans(u, y, int(y.max()) + 1, points_per_cluster=20, seed=0)
    assert full.shape == sampled.shape == y.shape
    assert _acc(y, full) > 0.9 and _acc(y, sampled) > 0.9  # started from the true partition, it stays near it


def test_normalised_means_are_the_unit_cluster_means():
    from tacluster.cluster.kmeans import normalised_means

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 7)).astype(np.float32)
    labels = rng.integers(0, 4, size=300)
    want = np.stack([x[labels == c].sum(axis=0) for c in range(5)] )
    want = want / np.maximum(np.linalg.norm(want, axis=1, keepdims=True), 1e-12)
    assert np.allclose(normalised_means(x, labels, 5), want, atol=1e-6)  # cluster 4 is empty: a zero row
    assert not normalised_means(x, labels, 5)[4].any()
