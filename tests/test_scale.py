"""The large-N path agrees with the exact path where both run."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from tacluster.cluster.kmeans import assign, joint_features, kmeans_cluster, sampled_kmeans, soft_assign
from tacluster.counterparts import retrieve_counterparts, select_nouns, semantic_centres
from tacluster.estimator import LARGE_SCALE_MIN_SAMPLES, TextAidedClustering, use_large_scale
from tacluster.errors import InputError
from tacluster.synthetic import make_world


@pytest.fixture(scope="module")
def world():
    # Easy world: 10 well-separated classes, 3,000 images, a 3,000-noun bank.
    return make_world(3000, 10, 64, 3000, noise=0.6, seed=0)


def test_auto_threshold_and_forcing():
    n = LARGE_SCALE_MIN_SAMPLES
    assert use_large_scale(n) and not use_large_scale(n - 1)
    assert use_large_scale(10, True) and not use_large_scale(10**7, False)
    with pytest.raises(InputError, match="large_scale='yes'"):
        use_large_scale(10, "yes")


def test_large_path_forced_on_small_data_matches_exact_path(world):
    """Whole stage chain, both paths: labelings agree with ARI >= 0.95 (10 restarts
    each: with 3 this world has a k-means local optimum at ARI 0.88 for the exact path too)."""
    u, bank = world.image_embeddings, world.noun_embeddings
    L, k = 30, 10

    exact_c = semantic_centres(u, L, seed=0, n_iter=20, n_init=1)
    exact_s = retrieve_counterparts(u, bank[select_nouns(exact_c, bank).indices])
    exact = kmeans_cluster(joint_features(u, exact_s), k, seed=1, n_iter=20, n_init=10).labels

    # 8 points per centre and 30 per cluster: both k-means really are fitted on subsamples.
    large_c = semantic_centres(u, L, points_per_centre=8, n_iter=20, n_init=1, seed=0)
    kept = bank[select_nouns(large_c, bank).indices]
    large_s = retrieve_counterparts(u, kept, top=16, block=700)
    res, conf = sampled_kmeans([u, large_s], k, points_per_cluster=30, n_iter=20, n_init=10, seed=1, block=900)

    assert adjusted_rand_score(exact, res.labels) >= 0.95
    assert adjusted_rand_score(world.labels, res.labels) >= 0.95
    assert res.labels.shape == (3000,) and conf.shape == (3000,)
    assert ((conf > 0) & (conf <= 1)).all()


def test_blocked_assignment_equals_whole_soft_assign(world):
    u = world.image_embeddings
    s = np.roll(u, 1, axis=1)
    centroids = joint_features(u[:10], s[:10])
    labels, conf = assign([u, s], centroids, block=333)
    proba = soft_assign(joint_features(u, s), centroids)
    np.testing.assert_array_equal(labels, proba.argmax(axis=1))
    np.testing.assert_allclose(conf, proba.max(axis=1), rtol=1e-5, atol=1e-7)
    # the numpy formula it replaced, on one block
    x = joint_features(u, s) / np.linalg.norm(joint_features(u, s), axis=1, keepdims=True)
    c = centroids / np.linalg.norm(centroids, axis=1, keepdims=True)
    logits = x @ c.T / 0.05
    ref = np.exp(logits - logits.max(1, keepdims=True))
    ref /= ref.sum(1, keepdims=True)
    np.testing.assert_allclose(proba, ref, atol=1e-5)  # float32 logits / 0.05: last-bit differences x 20
    # Weighted parts are the weighted concatenation.
    lw, _ = assign([u, s], joint_features(u[:10], s[:10], 0.5), weights=[1.0, 0.5])
    np.testing.assert_array_equal(lw, soft_assign(joint_features(u, s, 0.5), joint_features(u[:10], s[:10], 0.5)).argmax(1))


def test_topk_retrieval_matches_full_softmax(world):
    u, kept = world.image_embeddings, world.noun_embeddings[:400]
    exact = retrieve_counterparts(u, kept)
    top64 = retrieve_counterparts(u, kept, top=64, block=512)
    assert (np.sum(top64 * exact, axis=1) > 0.999).all()
    every = retrieve_counterparts(u, kept, top=10_000)  # capped at n_kept: the full softmax
    np.testing.assert_allclose(every, exact, atol=2e-5)
    # A crude cut (1 noun) is measurably different: the check above can fail.
    assert np.sum(retrieve_counterparts(u, kept, top=1) * exact, axis=1).min() < 0.999


def test_topk_retrieval_reads_a_float16_memmap_and_writes_into_out(world, tmp_path):
    # clip-retrieval writes float16 .npy files; they are read in blocks, never copied whole.
    u = world.image_embeddings
    np.save(tmp_path / "u.npy", u.astype(np.float16))
    mm = np.load(tmp_path / "u.npy", mmap_mode="r")
    kept = world.noun_embeddings[:200]
    out = np.lib.format.open_memmap(tmp_path / "s.npy", mode="w+", dtype=np.float16, shape=(len(u), 64))
    s = retrieve_counterparts(mm, kept, top=64, out=out)
    assert s is out
    ref = retrieve_counterparts(u, kept)
    assert np.sum(np.asarray(s, np.float32) * ref, axis=1).min() > 0.995


def test_bad_input(world):
    u = world.image_embeddings
    with pytest.raises(InputError, match="k=5000"):
        sampled_kmeans([u], 5000)
    with pytest.raises(InputError, match="feature part 1"):
        sampled_kmeans([u, u[:10]], 5)
    with pytest.raises(InputError, match="points_per_cluster=0"):
        sampled_kmeans([u], 5, points_per_cluster=0)
    with pytest.raises(InputError, match="no feature arrays"):
        assign([], u[:3])
    with pytest.raises(InputError, match="kept_noun_embeddings has shape"):
        retrieve_counterparts(u, np.ones((5, 3), np.float32))
    with pytest.raises(InputError, match="top=0"):
        retrieve_counterparts(u, u[:5], top=0)
    with pytest.raises(InputError, match="n_centres=0"):
        semantic_centres(u, 0, points_per_centre=32)


def test_hnsw_neighbours_match_exact_and_exclude_self(world):
    from tacluster.cluster import neighbours

    u = world.image_embeddings[:2000]
    approx = neighbours.knn_hnsw(u, 10)
    exact = neighbours.knn(u, 10, method="exact")
    assert approx.shape == (2000, 10)
    assert not (approx == np.arange(2000)[:, None]).any()
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
    assert recall >= 0.9
    with pytest.raises(ValueError, match="k=2000"):
        neighbours.knn_hnsw(u, 2000)


def test_inputs_already_unit_rows_are_used_as_given_others_normalised_in_blocks(monkeypatch):
    from tacluster import _validation

    monkeypatch.setattr(_validation, "CHECK_BLOCK_ROWS", 7)  # several blocks on 50 rows
    x = np.random.default_rng(0).standard_normal((50, 16)).astype(np.float32) * 3
    got = _validation.as_float_matrix(x, "x")
    np.testing.assert_array_equal(got, x / np.linalg.norm(x, axis=1, keepdims=True))  # same values as whole
    assert _validation.as_float_matrix(got, "x") is got  # unit rows: no copy
    np.testing.assert_array_equal(_validation.as_float_matrix(x.astype(np.float16), "x"),
                                  _validation.as_float_matrix(x.astype(np.float16).astype(np.float32), "x"))
    x[[9, 30]] = np.nan
    with pytest.raises(InputError, match=r"has 2 row\(s\) with NaN or inf values \(first: row 9\)"):
        _validation.as_float_matrix(x, "x")


def test_power_view_rows_equal_the_whole_view_and_landmarks_read_it_in_blocks():
    from tacluster._blocks import PowerRows, power_normalise
    from tacluster.cluster.spectral import landmark_spectral_cluster

    w = make_world(2000, 4, 32, 100, noise=1.0, seed=1)
    whole = power_normalise(w.image_embeddings, 0.5)
    view = PowerRows(w.image_embeddings, 0.5)
    np.testing.assert_array_equal(view[100:300], whole[100:300])
    np.testing.assert_array_equal(np.asarray(view), whole)
    # 2,000 rows > 256 per cluster x 4: the embedding's k-means is fitted on a sample, every row assigned in blocks
    a = landmark_spectral_cluster(view, 4, n_landmarks=200, block=300)
    np.testing.assert_array_equal(a, landmark_spectral_cluster(whole, 4, n_landmarks=200))
    assert adjusted_rand_score(w.labels, a) > 0.9


def test_default_method_on_the_large_path_fit_and_predict_agree(monkeypatch):
    """method="auto" with large_scale (forced on 1,500 rows): every candidate on its large
    form (spectral-pow through a per-block power view), scored on sampled rows; predict
    assigns every fitted row as fit did."""
    import importlib

    from tacluster.estimator import TextAidedClustering

    monkeypatch.setattr(importlib.import_module("tacluster.choices.choose_method"), "SCORE_SAMPLE", 600)
    w = make_world(1500, 3, 32, 100, noise=1.0, seed=2)
    est = TextAidedClustering(3, "auto", random_state=0, large_scale=True).fit(w.image_embeddings)
    assert est.choice_.details["scored_rows"] == 600
    np.testing.assert_array_equal(est.predict(w.image_embeddings), est.labels_)
    pow_ = TextAidedClustering(3, "spectral", feature_power=0.5, random_state=0, large_scale=True)
    np.testing.assert_array_equal(pow_.fit(w.image_embeddings).predict(w.image_embeddings), pow_.labels_)
    assert adjusted_rand_score(w.labels, pow_.labels_) > 0.9


@pytest.mark.parametrize("method", ["kmeans", "no-train", "tac"])
def test_estimator_large_scale_path_agrees_with_the_exact_path(method):
    """`large_scale=True` forced on a small easy world: the same clusters as the exact path."""
    from tacluster import TextAidedClustering

    w = make_world(n_samples=3000, n_classes=6, dim=64, n_nouns=600, noise=0.6, seed=5)
    kw = dict(random_state=0, kmeans_n_init=10, min_steps=100, n_epochs=3)
    exact = TextAidedClustering(6, method, large_scale=False, **kw).fit(w.image_embeddings, noun_embeddings=w.noun_embeddings, nouns=w.nouns)
    large = TextAidedClustering(6, method, large_scale=True, **kw).fit(w.image_embeddings, noun_embeddings=w.noun_embeddings, nouns=w.nouns)
    assert large.large_scale_ and not exact.large_scale_
    assert large.probabilities_ is None and large.confidence_.shape == (3000,)
    assert adjusted_rand_score(exact.labels_, large.labels_) >= 0.95
    np.testing.assert_array_equal(large.predict(w.image_embeddings[:200]), large.labels_[:200])


@pytest.mark.parametrize("method", ["kmeans", "no-train"])
def test_fit_and_predict_agree_on_every_fitted_row_on_the_large_path(method):
    """120k rows take the large-N path ("auto"); predict must assign each fitted row as fit did.

    100 near-synonyms per class and a softer tau spread each image's retrieval
    over more than the top 64 nouns, so a predict that retrieved over all
    kept nouns (as before) disagreed with fit on some rows.
    """
    from tacluster.estimator import TextAidedClustering
    from tacluster.synthetic import make_world

    w = make_world(n_samples=120_000, n_classes=8, dim=32, n_nouns=1000, synonyms_per_class=100,
                   noise=1.5, seed=3)
    est = TextAidedClustering(8, method, random_state=0, tau=0.02)
    labels = est.fit_predict(w.image_embeddings, noun_embeddings=w.noun_embeddings, nouns=w.nouns)
    assert est.large_scale_
    np.testing.assert_array_equal(est.predict(w.image_embeddings), labels)
    # and after a save/load round trip, which must remember the path taken
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        est.save(tmp)
        again = TextAidedClustering.load(tmp)
        np.testing.assert_array_equal(again.predict(w.image_embeddings[:5000]), labels[:5000])


def test_spectral_on_the_large_path_goes_through_landmarks_and_predict_agrees():
    """Spectral at large N (forced here on 3k rows) is the landmark form; it finds the
    classes as the exact graph does, and predict assigns every fitted row as fit did."""
    from tacluster.estimator import TextAidedClustering
    from tacluster.evaluate.metrics import cluster_accuracy
    from tacluster.synthetic import make_world

    w = make_world(n_samples=3000, n_classes=10, dim=64, n_nouns=400, noise=2.0, seed=0)
    large = TextAidedClustering(10, "spectral", random_state=0, large_scale=True)
    labels = large.fit_predict(w.image_embeddings)
    exact = TextAidedClustering(10, "spectral", random_state=0).fit_predict(w.image_embeddings)
    assert large.probabilities_ is None
    assert cluster_accuracy(w.labels, labels) > 0.9
    assert cluster_accuracy(w.labels, labels) > cluster_accuracy(w.labels, exact) - 0.02
    np.testing.assert_array_equal(large.predict(w.image_embeddings), labels)


def test_spectral_with_many_clusters_goes_through_landmarks_at_any_size(monkeypatch):
    """Above SPECTRAL_EXACT_MAX_CLUSTERS the exact eigensolver is never started (it did not
    finish at K = 1000 on 20k images); the small path keeps its probabilities."""
    from tacluster.cluster import fit as cluster_fit

    def no_exact(*a, **k):
        raise AssertionError("exact spectral started")

    monkeypatch.setattr(cluster_fit, "SPECTRAL_EXACT_MAX_CLUSTERS", 3)
    monkeypatch.setattr(cluster_fit, "spectral_cluster", no_exact)
    w = make_world(1200, 4, 32, 100, noise=1.0, seed=4)
    est = TextAidedClustering(4, "spectral", random_state=0).fit(w.image_embeddings)
    assert not est.large_scale_ and est.probabilities_.shape == (1200, 4)
    assert adjusted_rand_score(w.labels, est.labels_) > 0.9
    np.testing.assert_array_equal(est.predict(w.image_embeddings), est.labels_)


@pytest.mark.parametrize("method", ["kmeans", "spectral", "auto", "no-train", "tac"])
def test_float16_input_on_the_large_path_is_read_through_a_view_with_the_same_labels(method):
    """A float16 input on the large-N path is not copied to float32: it is read through a
    normalising view whose rows equal the normalised float32 copy, so every method gives
    the labels (and predict) of that copy."""
    from tacluster._blocks import NormalisedRows
    from tacluster._validation import as_float_matrix
    from tacluster.estimator import TextAidedClustering

    w = make_world(2000, 6, 48, 300, noise=1.2, seed=5)
    x16 = (w.image_embeddings * 3.0).astype(np.float16)  # not unit rows either
    view = as_float_matrix(x16, "x", lazy=True)
    assert isinstance(view, NormalisedRows) and view.base is x16
    x32 = as_float_matrix(x16, "x")  # the eager copy: float32, unit rows
    np.testing.assert_array_equal(view[np.arange(0, 2000, 7)], x32[::7])
    np.testing.assert_array_equal(np.asarray(view), x32)
    extra = dict(n_epochs=2, batch_size=256) if method == "tac" else {}
    fits = []
    for x in (x16, x32):
        est = TextAidedClustering(6, method, random_state=0, large_scale=True, **extra)
        est.fit(x, noun_embeddings=w.noun_embeddings, nouns=w.nouns)
        fits.append((est.labels_, est.predict(x)))
    np.testing.assert_array_equal(fits[0][0], fits[1][0])
    np.testing.assert_array_equal(fits[0][1], fits[1][1])
    np.testing.assert_array_equal(fits[0][1], fits[0][0])
