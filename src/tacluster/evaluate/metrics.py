"""Clustering metrics: ACC (Hungarian match), NMI, ARI, confusion matrix."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from tacluster.errors import InputError


def _encode(y: Sequence) -> tuple[np.ndarray, np.ndarray]:
    values, codes = np.unique(np.asarray(y), return_inverse=True)
    return values, codes.reshape(-1)


def confusion(y_true: Sequence, y_pred: Sequence) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts of (cluster, class) pairs.

    Returns
    -------
    matrix : ndarray of shape (n_clusters, n_classes), int64
    clusters : ndarray of the cluster ids (row order)
    classes : ndarray of the class labels (column order)
    """
    if len(y_true) != len(y_pred):
        raise InputError(f"y_true has {len(y_true)} labels but y_pred has {len(y_pred)}; they must match")
    if len(y_true) == 0:
        raise InputError("no labels to evaluate")
    classes, t = _encode(y_true)
    clusters, p = _encode(y_pred)
    m = np.zeros((len(clusters), len(classes)), dtype=np.int64)
    np.add.at(m, (p, t), 1)
    return m, clusters, classes


def hungarian_mapping(y_true: Sequence, y_pred: Sequence) -> dict:
    """Best one-to-one map cluster -> class (maximum matched count)."""
    m, clusters, classes = confusion(y_true, y_pred)
    rows, cols = linear_sum_assignment(m, maximize=True)
    return {clusters[r].item(): classes[c].item() for r, c in zip(rows, cols)}


def cluster_accuracy(y_true: Sequence, y_pred: Sequence) -> float:
    """ACC in [0, 1]: accuracy under the best one-to-one map of clusters to classes."""
    m, _, _ = confusion(y_true, y_pred)
    rows, cols = linear_sum_assignment(m, maximize=True)
    return float(m[rows, cols].sum() / m.sum())


def evaluate_clustering(y_true: Sequence, y_pred: Sequence) -> dict[str, float]:
    """ACC, NMI and ARI in percent, plus the sample count."""
    acc = cluster_accuracy(y_true, y_pred)
    _, t = _encode(y_true)
    _, p = _encode(y_pred)
    return {
        "acc": 100.0 * acc,
        "nmi": 100.0 * float(normalized_mutual_info_score(t, p)),
        "ari": 100.0 * float(adjusted_rand_score(t, p)),
        "n": int(len(t)),
    }
