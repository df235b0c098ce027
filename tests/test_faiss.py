import numpy as np
import pytest

from tacluster.cluster import _faiss, neighbours


def test_knn_excludes_self_even_with_duplicates():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 8)).astype(np.float32)
    x[10] = x[11]  # an exact duplicate pair
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    nn = neighbours.knn(x, 5)
    assert nn.shape == (50, 5)
    assert not (nn == np.arange(50)[:, None]).any()
    assert nn[10, 0] == 11 and nn[11, 0] == 10
    # agrees with brute force
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    brute = np.argsort(-sims, axis=1)[:, :5]
    assert (np.sort(nn[[0, 1, 2]], 1) == np.sort(brute[[0, 1, 2]], 1)).all()


def test_kmeans_uses_all_points_and_is_seeded():
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((4, 16)) * 5
    x = (centers[rng.integers(0, 4, 4000)] + rng.standard_normal((4000, 16))).astype(np.float32)
    a = _faiss.kmeans(x, 4, seed=3, n_init=2)
    b = _faiss.kmeans(x, 4, seed=3, n_init=2)
    assert a.labels.shape == (4000,)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(_faiss.assign(x, a.centroids), a.labels)
    assert len(np.unique(a.labels)) == 4


def test_ivf_knn_recalls_most_exact_neighbours():
    from tacluster.synthetic import make_world

    x = make_world(6000, 10, 64, 100, noise=1.0, seed=0).image_embeddings
    exact = neighbours.knn(x, 10, method="exact")
    approx = neighbours.knn(x, 10, method="ivf")
    assert approx.shape == exact.shape
    assert not (approx == np.arange(len(x))[:, None]).any()
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)])
    assert recall > 0.8, recall
    np.testing.assert_array_equal(approx, neighbours.knn(x, 10, method="ivf"))  # deterministic


def test_torch_knn_equals_faiss_exact():
    """The GPU path's exact kNN (run here on CPU torch) finds faiss's neighbours."""
    from tacluster.cluster.neighbours import knn, knn_torch

    rng = np.random.default_rng(0)
    x = rng.standard_normal((700, 24)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ref = knn(x, 10, method="exact")
    got = knn_torch(x, 10, device="cpu", max_block_bytes=4 * 700 * 64)  # 64-row blocks: several blocks
    np.testing.assert_array_equal(got, ref)
    assert not (got == np.arange(700)[:, None]).any()  # a point is never its own neighbour
    with pytest.raises(ValueError):
        knn_torch(x, 700, device="cpu")


def test_old_faiss_without_kmeans_plus_plus_is_a_clear_error(monkeypatch):
    """faiss-cpu 1.7.4-1.13.2 lack k-means++ init: name the upgrade, not an AttributeError."""
    from tacluster import DependencyError

    monkeypatch.delattr(_faiss.faiss, "ClusteringInitMethod_KMEANS_PLUS_PLUS")
    x = np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32)
    with pytest.raises(DependencyError, match=r"faiss >= 1\.14\.2.*pip install -U"):
        _faiss.kmeans(x, 3)
