"""Training-free clustering: k-means on images, TAC (no train) on [u, s]."""

from __future__ import annotations

import numpy as np

from tacluster import _faiss


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


def soft_assign(features: np.ndarray, centroids: np.ndarray, temperature: float = 0.05) -> np.ndarray:
    """Soft cluster memberships softmax(cos(x, c_k) / temperature), shape (n, k).

    Used as a per-sample confidence for the k-means methods; the temperature
    (0.05) turns the usual 0.1-0.3 cosine gaps between clusters into
    confident-but-not-saturated probabilities.
    """
    x = features / np.linalg.norm(features, axis=1, keepdims=True)
    c = centroids / np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    logits = (x @ c.T) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)
