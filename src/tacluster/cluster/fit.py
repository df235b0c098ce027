"""The cluster stage's fitters: ``"kmeans"``, ``"no-train"`` and ``"spectral"``,
each returning a :class:`tacluster.cluster.model.Fitted` whose model is a
:class:`~tacluster.cluster.model.CentroidModel`.

Every fitter takes the power view ``u`` of checked unit rows and its settings
by the estimator's parameter names; ``large`` selects the large-N path (sampled
k-means with capped iterations, landmark spectral, no N x K probabilities).
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from tacluster._blocks import ViewsRows, concatenated_views
from tacluster.cluster.kmeans import (
    KMEANS_N_ITER,
    KMEANS_POINTS_PER_CLUSTER,
    assign,
    consensus_kmeans,
    joint_features,
    kmeans_cluster,
    normalised_means,
    refined_kmeans,
    sampled_kmeans,
)
from tacluster.cluster.model import Assignment, CentroidModel, Fitted
from tacluster.cluster.spectral import landmark_spectral_cluster, spectral_cluster
from tacluster.counterparts.side import TextFit

#: Above this many clusters ``"spectral"`` goes through landmarks at any N: the
#: exact graph's eigensolver needs K eigenvectors, and its time grows steeply
#: with K (20k images: K = 300 took 111 s, K = 1000 did not finish in 18 min on
#: 2 cores; docs/scaling.md).
SPECTRAL_EXACT_MAX_CLUSTERS = 300
#: On the large-N path the landmark embedding's k-means restarts all of them up
#: to this many clusters, one above: restarts cost n_init x 256 K x K^2 (100k
#: images, K = 50: ACC 85.0 with 10, 77.7 with 1; K = 1000: 10 TFLOP each).
LANDMARK_RESTARTS_MAX_CLUSTERS = 100


def kmeans_iterations(kmeans_n_iter: int, large: bool) -> int:
    """The iteration cap: as set, and at most :data:`KMEANS_N_ITER` on the large-N path."""
    return min(kmeans_n_iter, KMEANS_N_ITER) if large else kmeans_n_iter


def fit_kmeans(u, k: int, *, kmeans_n_init: int, kmeans_n_iter: int, consensus: int, feature_power: float,
               large: bool, seed: int, timings: dict, text: TextFit | None = None,
               text_weight: float | None = None) -> Fitted:
    """k-means on ``u`` (``"kmeans"``), or on ``[u, text_weight * s]`` with ``text`` (``"no-train"``).

    ``consensus >= 2`` clusters the co-association of that many single-restart
    partitions instead of keeping the best of ``kmeans_n_init`` restarts.
    """
    tic = time.perf_counter()
    parts, weights = ([u], None) if text is None else ([u, text.counterparts], [1.0, float(text_weight)])
    if large:
        res, conf = sampled_kmeans(parts, k, weights=weights, n_iter=kmeans_iterations(kmeans_n_iter, large),
                                   seed=seed + 1)
        fitted = Assignment(np.asarray(res.labels, dtype=np.int64), np.asarray(conf, dtype=np.float32))
    else:
        x = u if text is None else joint_features(u, text.counterparts, weights[1])
        if consensus >= 2:
            res = consensus_kmeans(x, k, n_partitions=consensus, seed=seed + 1, n_iter=kmeans_n_iter)
        else:
            res = kmeans_cluster(x, k, seed=seed + 1, n_iter=kmeans_n_iter, n_init=kmeans_n_init)
        fitted = Assignment(*assign(parts, res.centroids, weights=weights, proba=True))
    model = CentroidModel(res.centroids, u.shape[1], feature_power, None if text is None else text.side,
                          None if text is None else float(text_weight))
    timings["kmeans"] = time.perf_counter() - tic
    return Fitted(model, fitted)


def fit_spectral(u, k: int, *, spectral_neighbors: int, spectral_views: Sequence[float] | None,
                 spectral_refine: bool, kmeans_n_init: int, kmeans_n_iter: int, feature_power: float,
                 large: bool, seed: int, timings: dict) -> Fitted:
    """Spectral clustering of the kNN graph of ``u`` (of its ``spectral_views`` side by side),
    optionally refined by k-means; every image then goes to the nearest normalised mean."""
    tic = time.perf_counter()
    graph_u = u
    if spectral_views is not None:
        powers = [float(p) for p in np.asarray(spectral_views, dtype=np.float64).ravel()]
        graph_u = ViewsRows(u, powers) if large else concatenated_views(u, powers)
    n_iter = kmeans_iterations(kmeans_n_iter, large)
    if large or k > SPECTRAL_EXACT_MAX_CLUSTERS:  # the exact eigensolver cannot finish (docs/scaling.md)
        restarts = kmeans_n_init if (not large or k <= LANDMARK_RESTARTS_MAX_CLUSTERS) else 1
        labels = landmark_spectral_cluster(graph_u, k, seed=seed + 1, n_init=restarts, n_iter=n_iter)
    else:
        labels = spectral_cluster(graph_u, k, n_neighbors=spectral_neighbors, seed=seed + 1, n_init=kmeans_n_init)
    if spectral_refine:
        labels = refined_kmeans(u, labels, k, n_iter=n_iter, seed=seed + 1,
                                points_per_cluster=KMEANS_POINTS_PER_CLUSTER if large else None)
    # Every image, fitted or new, goes to the nearest normalised mean of the
    # graph's clusters, so `predict` agrees with `labels_`. That one
    # reassignment also scored higher than the graph's own labels
    # (transductive ACC, 3 seeds: 15-Scene 85.7 vs 84.8, CIFAR-10 3k 49.8 vs 48.5).
    model = CentroidModel(normalised_means(u, labels, k), u.shape[1], feature_power)
    timings["spectral"] = time.perf_counter() - tic
    return Fitted(model, Assignment(*assign([u], model.centroids, proba=not large)))
