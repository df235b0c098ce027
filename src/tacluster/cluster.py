"""Training-free clustering: k-means on images, TAC (no train) on [u, s]."""

from __future__ import annotations

import numpy as np

from tacluster import _faiss
from tacluster._threads import one_faiss_thread
from tacluster.errors import InputError


def joint_features(image_embeddings: np.ndarray, counterparts: np.ndarray, text_weight: float = 1.0) -> np.ndarray:
    """Concatenate ``[u, text_weight * s]`` (each part unit norm), shape (n, d_u + d_s)."""
    return np.ascontiguousarray(
        np.hstack([image_embeddings, text_weight * counterparts]), dtype=np.float32
    )


def kmeans_cluster(
    features: np.ndarray, n_clusters: int, *, seed: int = 0, n_iter: int = 300, n_init: int = 10
) -> _faiss.KMeansResult:
    """Spherical k-means with ``n_clusters`` clusters on all rows of ``features``.

    Spherical k-means is what TAC uses for both the image baseline and
    TAC (no train); with the paper's equal-norm rows it is cosine k-means.
    """
    return _faiss.kmeans(features, n_clusters, n_iter=n_iter, n_init=n_init, seed=seed, spherical=True)


def consensus_kmeans(
    features: np.ndarray, n_clusters: int, *, n_partitions: int = 20, seed: int = 0, n_iter: int = 300
) -> _faiss.KMeansResult:
    """Consensus of ``n_partitions`` single-restart spherical k-means partitions.

    Where the k-means objective is flat (many local optima within a fraction
    of a percent of each other), the best-of-restarts partition moves with
    the seed; the co-association consensus (:func:`consensus_labels`) keeps
    what most restarts agree on. Centroids are the normalised means of the
    consensus clusters.
    """
    seeds = np.random.SeedSequence([int(seed), int(n_partitions)]).generate_state(n_partitions)
    # One faiss thread: a single restart has no best-of-several to absorb a
    # last-bit difference in the distance sums, and with 2 threads 3 of 10
    # CIFAR-10 seeds gave other labels than with 1.
    with one_faiss_thread():
        parts = np.stack([
            kmeans_cluster(features, n_clusters, seed=int(s % (2**31 - 1)), n_iter=n_iter, n_init=1).labels
            for s in seeds
        ])
    labels = consensus_labels(parts, n_clusters, seed=seed)
    centroids = normalised_means(features, labels, n_clusters)
    return _faiss.KMeansResult(centroids=centroids, labels=labels, objective=float("nan"), n_iter=1)


def assign(
    parts,
    centroids: np.ndarray,
    *,
    weights=None,
    temperature: float = 0.05,
    block: int = 65_536,
    proba: bool = False,
):
    """The one cluster assignment, for ``fit`` and ``predict`` and both size paths.

    Each row is ``[w_0 * parts[0], w_1 * parts[1], ...]`` (e.g. ``[u, w s]``
    for TAC no-train; never concatenated for all rows at once), normalised;
    its cluster is the centroid of highest cosine, its confidence the max of
    ``softmax(cos(x, c) / temperature)`` (0.05 turns the usual 0.1-0.3 cosine
    gaps between clusters into confident-but-not-saturated probabilities).
    Computed in blocks of ``block`` rows with torch; memory O(block * (d + k))
    unless ``proba``.

    Returns
    -------
    labels : ndarray of shape (n_samples,), int64
    confidence : ndarray of shape (n_samples,), float32
    probabilities : ndarray of shape (n_samples, k), float32, only when ``proba``
    """
    import torch

    from tacluster.scale import iter_blocks, joint_rows

    if isinstance(parts, np.ndarray):
        parts = [parts]
    if not parts:
        raise InputError("no feature arrays given; pass at least one (n_samples, d) array")
    n = parts[0].shape[0]
    c = torch.nn.functional.normalize(torch.from_numpy(np.ascontiguousarray(centroids, dtype=np.float32)), dim=1)
    labels = np.empty(n, dtype=np.int64)
    confidence = np.empty(n, dtype=np.float32)
    probabilities = np.empty((n, c.shape[0]), dtype=np.float32) if proba else None
    with torch.inference_mode():
        for sl in iter_blocks(n, block):
            x = torch.nn.functional.normalize(torch.from_numpy(joint_rows(parts, sl, weights)), dim=1)
            logits = (x @ c.T) / temperature
            top = logits.max(dim=1)
            e = torch.exp(logits - top.values[:, None])
            total = e.sum(dim=1)
            confidence[sl] = (1.0 / total).numpy()  # max softmax probability
            labels[sl] = top.indices.numpy()
            if proba:
                probabilities[sl] = (e / total[:, None]).numpy()
    return (labels, confidence, probabilities) if proba else (labels, confidence)


def soft_assign(features: np.ndarray, centroids: np.ndarray, temperature: float = 0.05) -> np.ndarray:
    """Soft cluster memberships softmax(cos(x, c_k) / temperature), shape (n, k) (:func:`assign`)."""
    return assign([features], centroids, temperature=temperature, proba=True)[2]


def spectral_cluster(
    features: np.ndarray, n_clusters: int, *, n_neighbors: int = 20, seed: int = 0, n_init: int = 10
) -> np.ndarray:
    """Spectral clustering of the symmetrised k-nearest-neighbour graph of ``features``.

    The graph comes from faiss (:func:`tacluster._faiss.knn`, cosine on unit
    rows; each point joined to itself and its ``n_neighbors - 1`` nearest
    others, as scikit-learn's ``kneighbors_graph(include_self=True)``), the
    embedding and its k-means from scikit-learn's ``SpectralClustering``.

    Returns
    -------
    ndarray of shape (n_samples,), int64
    """
    from scipy import sparse
    from sklearn.cluster import SpectralClustering

    n = features.shape[0]
    if n_clusters >= n:
        # K = N: the only partition is one image per cluster (the spectral
        # embedding itself cannot be computed: it needs K < N eigenvectors).
        return np.arange(n, dtype=np.int64)
    k = max(1, min(n_neighbors - 1, n - 1))
    nn = _faiss.knn(features, k, seed=seed)
    rows = np.repeat(np.arange(n), k + 1)
    cols = np.hstack([np.arange(n)[:, None], nn]).ravel()
    conn = sparse.csr_matrix((np.ones(rows.size, dtype=np.float64), (rows, cols)), shape=(n, n))
    affinity = 0.5 * (conn + conn.T)
    model = SpectralClustering(
        n_clusters, affinity="precomputed", random_state=seed, n_init=n_init, assign_labels="kmeans"
    )
    return model.fit_predict(affinity).astype(np.int64)


def landmark_spectral_cluster(
    features: np.ndarray,
    n_clusters: int,
    *,
    n_landmarks: int | None = None,
    n_nearest: int = 5,
    seed: int = 0,
    n_init: int = 10,
    block: int = 65_536,
) -> np.ndarray:
    """Spectral clustering through landmarks (LSC-K, Chen & Cai 2011): linear in N.

    ``p`` landmarks are spherical k-means centroids of a sample; each point is
    joined to its ``n_nearest`` landmarks with Gaussian weights (bandwidth:
    the mean distance to the farthest of them), rows normalised; the spectral
    embedding is the top ``n_clusters`` left singular vectors of that sparse
    (N x p) matrix with its columns degree-normalised, found from the (p x p)
    eigenproblem, and k-means on its rows gives the labels. Time O(N p d) for
    the landmark search, memory O(N (n_nearest + K)): the exact graph's
    eigensolver grows much faster with N and K (docs/scaling.md).

    Parameters
    ----------
    n_landmarks : default ``max(1000, 3 * n_clusters)``, capped at N / 4
    """
    import faiss
    from scipy import sparse

    x = np.ascontiguousarray(features, dtype=np.float32)
    n, d = x.shape
    if n_clusters >= n:
        return np.arange(n, dtype=np.int64)
    p = n_landmarks or max(1000, 3 * n_clusters)
    p = int(max(n_clusters + 1, min(p, n // 4 if n >= 4 * (n_clusters + 1) else n)))
    rng = np.random.default_rng(seed)
    sample = x[np.sort(rng.choice(n, size=min(n, 20 * p), replace=False))]
    landmarks = _faiss.kmeans(sample, p, n_iter=10, n_init=1, seed=seed, spherical=True).centroids
    landmarks = landmarks / np.maximum(np.linalg.norm(landmarks, axis=1, keepdims=True), 1e-12)
    index = faiss.IndexFlatIP(d)
    index.add(np.ascontiguousarray(landmarks, dtype=np.float32))
    r = min(n_nearest, p)
    sims = np.empty((n, r), dtype=np.float32)
    idx = np.empty((n, r), dtype=np.int64)
    for start in range(0, n, block):
        sims[start:start + block], idx[start:start + block] = index.search(x[start:start + block], r)
    dist = np.sqrt(np.maximum(2.0 - 2.0 * sims.astype(np.float64), 0.0))
    sigma = max(float(dist[:, -1].mean()), 1e-6)
    w = np.exp(-(dist ** 2) / (2 * sigma ** 2))
    w /= np.maximum(w.sum(axis=1, keepdims=True), 1e-300)
    z = sparse.csr_matrix((w.ravel(), (np.repeat(np.arange(n), r), idx.ravel())), shape=(n, p))
    col = np.asarray(z.sum(axis=0)).ravel()
    z = z @ sparse.diags(1.0 / np.sqrt(np.maximum(col, 1e-12)))
    gram = (z.T @ z).toarray()
    values, vectors = np.linalg.eigh(gram)  # ascending
    top = np.argsort(values)[::-1][:n_clusters]
    sv = np.sqrt(np.maximum(values[top], 1e-12))
    embedding = np.asarray(z @ (vectors[:, top] / sv), dtype=np.float32)
    return _faiss.kmeans(embedding, n_clusters, n_init=n_init, seed=seed).labels.astype(np.int64)


def normalised_means(features: np.ndarray, labels: np.ndarray, n_clusters: int) -> np.ndarray:
    """Unit-norm mean of each cluster's rows, shape (n_clusters, d) (zero rows stay zero)."""
    sums = np.zeros((n_clusters, features.shape[1]), dtype=np.float64)
    np.add.at(sums, labels, features)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return (sums / np.maximum(norms, 1e-12)).astype(np.float32)


def consensus_labels(
    partitions,
    n_clusters: int,
    *,
    seed: int = 0,
    n_init: int = 10,
) -> np.ndarray:
    """Consensus of several partitions of the same samples (co-association + k-means).

    Each partition becomes a one-hot block; the rows of the concatenated
    blocks have inner products equal to the co-association counts (how many
    partitions put two samples together), so k-means on them clusters the
    co-association matrix without ever forming the n x n matrix.

    Parameters
    ----------
    partitions : array-like of shape (n_partitions, n_samples)
        Integer labels; label values need not agree between partitions.
    n_clusters : int
        K of the consensus partition.
    seed, n_init
        For the final k-means.

    Returns
    -------
    ndarray of shape (n_samples,), int64
    """
    p = np.asarray(partitions)
    if p.ndim != 2 or p.shape[0] < 1 or p.shape[1] < 2:
        raise InputError(f"partitions must have shape (n_partitions, n_samples); got {p.shape}")
    if not np.issubdtype(p.dtype, np.integer):
        raise InputError(f"partitions must hold integer labels; got dtype {p.dtype}")
    n = p.shape[1]
    if isinstance(n_clusters, bool) or not 2 <= int(n_clusters) <= n:
        raise InputError(f"n_clusters={n_clusters!r} must be an integer in [2, {n}]")
    blocks = []
    for labels in p:
        _, codes = np.unique(labels, return_inverse=True)
        blocks.append(np.eye(codes.max() + 1, dtype=np.float32)[codes.reshape(-1)])
    x = np.hstack(blocks) / np.sqrt(len(blocks))
    with one_faiss_thread():  # ties are common here; keep the winner independent of the core count
        return _faiss.kmeans(x, int(n_clusters), n_init=n_init, seed=seed).labels
