"""Spherical k-means (all rows, sampled, consensus) and the one cluster assignment.

Training-free clustering: k-means on images, TAC (no train) on ``[u, w s]``.
:func:`assign` is what ``fit`` and ``predict`` both call on either size path.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from tacluster._blocks import BLOCK_ROWS, check_parts, iter_blocks, joint_rows, sample_rows
from tacluster._threads import one_faiss_thread
from tacluster.cluster import _faiss
from tacluster.errors import InputError

#: Points per cluster in the sampled k-means fit (faiss's default, 256).
KMEANS_POINTS_PER_CLUSTER = 256

#: Iteration cap of the sampled (large-N) k-means fit: faiss runs every
#: iteration it is given (early_stop_threshold is 0 by default); at 1.28 M one
#: iteration costs ~0.5 TFLOP, i.e. 10-40 s on 2 cores, so the paper's 300
#: iterations x 10 restarts would take days. benchmarks/scale.py measures the
#: ACC this cap gives against the exact path.
KMEANS_N_ITER = 20


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


def normalised_means(features: np.ndarray, labels: np.ndarray, n_clusters: int) -> np.ndarray:
    """Unit-norm mean of each cluster's rows, shape (n_clusters, d) (zero rows stay zero)."""
    from scipy import sparse

    sums = np.zeros((n_clusters, features.shape[1]), dtype=np.float64)
    labels = np.asarray(labels)
    for sl in iter_blocks(features.shape[0]):  # a one-hot (K x rows) product per block: ~50x np.add.at
        rows = labels[sl]
        onehot = sparse.csr_matrix((np.ones(len(rows)), (rows, np.arange(len(rows)))), shape=(n_clusters, len(rows)))
        sums += onehot @ np.asarray(features[sl], dtype=np.float64)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return (sums / np.maximum(norms, 1e-12)).astype(np.float32)


def refined_kmeans(
    features: np.ndarray,
    labels: np.ndarray,
    n_clusters: int,
    *,
    n_iter: int = 300,
    points_per_cluster: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Spherical k-means on ``features`` started from the clusters of ``labels`` (their normalised means).

    Lloyd's iterations from another method's partition (e.g. a graph cut) move
    each cluster to the nearest local optimum of the k-means objective: the
    partition keeps its shape where its clusters are compact and gives way to
    k-means where they are not (``method="auto"``, ``docs/tuning.md`` §8).
    With ``points_per_cluster`` the iterations run on that many sampled rows
    per cluster (the large-N path; ``features`` may be a row view), and every
    row is then assigned to the nearest centroid, in blocks.

    Returns
    -------
    ndarray of shape (n_samples,), int64
    """
    n = features.shape[0]
    start = normalised_means(features, labels, n_clusters)
    if points_per_cluster is None:
        x, sampled = np.asarray(features, dtype=np.float32), False
    else:
        rows = sample_rows(n, n_clusters * points_per_cluster, seed)
        x, sampled = np.ascontiguousarray(features[rows], dtype=np.float32), len(rows) < n
    with one_faiss_thread():  # one run from a fixed start: keep its last bits independent of the core count
        fit = _faiss.kmeans(x, n_clusters, n_iter=n_iter, n_init=1, seed=seed, spherical=True, init=start,
                            max_points_per_centroid=x.shape[0])
    return assign([features], fit.centroids)[0] if sampled else fit.labels


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


def sampled_kmeans(
    parts: Sequence[np.ndarray],
    k: int,
    *,
    weights: Sequence[float] | None = None,
    points_per_cluster: int = KMEANS_POINTS_PER_CLUSTER,
    n_iter: int = KMEANS_N_ITER,
    n_init: int = 1,
    seed: int = 0,
    temperature: float = 0.05,
    block: int = BLOCK_ROWS,
) -> tuple[_faiss.KMeansResult, np.ndarray]:
    """Spherical k-means fitted on a subsample, then every row assigned in blocks.

    Parameters
    ----------
    parts : sequence of ndarray of shape (n_samples, d_i)
        The features are ``[w_0 * parts[0], w_1 * parts[1], ...]`` (e.g.
        ``[u, s]`` for TAC no-train); never concatenated for all rows at once.
    k : int
        Clusters, ``2 <= k <= n_samples``.
    points_per_cluster : int
        The fit uses ``min(n, k * points_per_cluster)`` random rows.
    n_iter, n_init, seed
        As in :func:`tacluster.cluster._faiss.kmeans`.
    temperature : float
        Confidence = max of softmax(cos(x, c) / temperature), as
        :func:`tacluster.cluster.kmeans.assign`.

    Returns
    -------
    result : KMeansResult
        Centroids (k, sum d_i), labels of all rows, objective of the sample fit.
    confidence : ndarray of shape (n_samples,), float32
    """
    n = check_parts(parts)
    if not 2 <= k <= n:
        raise InputError(f"k={k} clusters for {n} samples; use 2 <= k <= {n}")
    if points_per_cluster < 1:
        raise InputError(f"points_per_cluster={points_per_cluster}; use a positive integer, e.g. 256")
    rows = sample_rows(n, k * points_per_cluster, seed)
    fit = _faiss.kmeans(
        joint_rows(parts, rows, weights), k, n_iter=n_iter, n_init=n_init, seed=seed, spherical=True
    )
    labels, confidence = assign(parts, fit.centroids, weights=weights, temperature=temperature, block=block)
    return _faiss.KMeansResult(fit.centroids, labels, fit.objective, fit.n_iter), confidence
