"""Outliers of a cluster: members whose confidence lies far below the cluster's
typical one. The thresholds are saved with the model so ``predict`` flags new
images by the same rule."""

from __future__ import annotations

import numpy as np


#: An outlier's confidence lies this many robust standard deviations (1.4826 MAD) below its
#: cluster's median, and at least :data:`OUTLIER_MIN_GAP` below it.
OUTLIER_ROBUST_Z = 3.0



OUTLIER_MIN_GAP = 0.1



#: ``add``'s centre rule (:func:`novelty_mask`): robust standard deviations below the fit members' cosines.
NOVELTY_ROBUST_Z = 4.0
#: ``add``'s group rule: neighbours looked at, and the chance level under which their share of added
#: images counts as a group the fit has no cluster for (fit parts of eight domains, docs/results.md).
NOVELTY_NEIGHBOURS = 20
NOVELTY_ALPHA = 0.1

#: Outliers listed per cluster in clusters.json (the lowest first); assignments flag every one.
OUTLIERS_LISTED = 20



def outlier_mask(labels: np.ndarray, confidence: np.ndarray, n_clusters: int) -> np.ndarray:
    """Which images are outliers of their cluster: confidence far below the cluster's typical one.

    Typical is the median confidence of the cluster; "far below" is more than
    :data:`OUTLIER_ROBUST_Z` robust standard deviations (1.4826 x the median
    absolute deviation) and at least :data:`OUTLIER_MIN_GAP` (probability)
    below it. A cluster whose members are all confident has none; the rule
    never just takes the lowest few.
    """
    labels = np.asarray(labels)
    conf = np.asarray(confidence, dtype=np.float64)
    below = outlier_thresholds(labels, conf, n_clusters)
    limit = np.array([-np.inf if b is None else b for b in below])
    return conf < limit[labels] if labels.size else np.zeros(0, dtype=bool)



def outlier_thresholds(labels: np.ndarray, confidence: np.ndarray, n_clusters: int) -> list[float | None]:
    """Per cluster, the confidence below which a member is an outlier (see
    :func:`outlier_mask`); None for a cluster of fewer than 3 images. Saved
    with the model so ``predict`` flags new images by the same rule."""
    labels = np.asarray(labels)
    conf = np.asarray(confidence, dtype=np.float64)
    out: list[float | None] = []
    for c in range(n_clusters):
        member = conf[labels == c]
        if member.size < 3:
            out.append(None)
            continue
        med = float(np.median(member))
        spread = 1.4826 * float(np.median(np.abs(member - med)))
        out.append(med - max(OUTLIER_ROBUST_Z * spread, OUTLIER_MIN_GAP))
    return out


def novelty_mask(fit_rows: np.ndarray, fit_labels: np.ndarray, new_rows: np.ndarray, new_labels: np.ndarray,
                 n_clusters: int) -> np.ndarray:
    """Which added images fit no cluster well: far from their cluster's centre
    (:func:`far_from_centre`), or one of a group of added images that the fit
    has no cluster for (:func:`among_added`).

    Rows are unit-length features (those the model's clusters are defined on).
    The first rule finds a lone odd photo, the second a new kind of photo that
    comes several at a time: on the fit parts of eight shared domains (one class
    held out, 70 % of the others fitted) the centre rule alone marked 11 % of
    the held-out class, both 80 %, at 6 % of the seen classes' new photos
    (docs/results.md).
    """
    return far_from_centre(fit_rows, fit_labels, new_rows, new_labels, n_clusters) | among_added(fit_rows, new_rows)


def far_from_centre(fit_rows: np.ndarray, fit_labels: np.ndarray, new_rows: np.ndarray, new_labels: np.ndarray,
                    n_clusters: int) -> np.ndarray:
    """Added images whose cosine to their cluster's centre lies far below that of the cluster's
    members from the fit.

    A cluster's centre is the normalised mean of its fit members; a member's
    own cosine is taken to the mean of the *other* members (leave one out),
    as an added image is not part of the mean it is compared with. "Far
    below" is :data:`NOVELTY_ROBUST_Z` robust standard deviations (1.4826 MAD)
    under the members' median. A cluster of fewer than 3 fit members marks
    nothing. The softmax confidence is not used: it says how much nearer one
    cluster is than the others, not how near (benchmarks/lifecycle.py: a
    held-out class was as confident as the seen classes' new photos).
    """
    fit_labels = np.asarray(fit_labels, dtype=np.int64)
    new_labels = np.asarray(new_labels, dtype=np.int64)
    sums = np.zeros((n_clusters, fit_rows.shape[1]), dtype=np.float64)
    np.add.at(sums, fit_labels, fit_rows)
    counts = np.bincount(fit_labels, minlength=n_clusters)
    loo = sums[fit_labels] - fit_rows  # each member's cluster mean without it
    own = np.einsum("nd,nd->n", fit_rows, loo) / np.maximum(np.linalg.norm(loo, axis=1), 1e-12)
    limit = np.full(n_clusters, -np.inf)
    for c in np.flatnonzero(counts >= 3):
        member = own[fit_labels == c]
        med = float(np.median(member))
        limit[c] = med - NOVELTY_ROBUST_Z * 1.4826 * float(np.median(np.abs(member - med)))
    centres = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    score = np.einsum("nd,nd->n", new_rows, centres[new_labels]) if new_labels.size else np.zeros(0)
    return score < limit[new_labels]


def among_added(fit_rows: np.ndarray, new_rows: np.ndarray) -> np.ndarray:
    """Added images whose :data:`NOVELTY_NEIGHBOURS` nearest images (fit and added together, itself
    excluded) hold more added ones than chance allows: binomial tail below :data:`NOVELTY_ALPHA` at the
    added images' share of the others. A photo like the fitted ones has fitted neighbours in
    proportion; a photo of a kind the fit lacked has mostly other added photos of its kind."""
    import faiss
    from scipy.stats import binom

    from tacluster.cluster.neighbours import drop_self

    n, m = len(fit_rows), len(new_rows)
    if m < 2 or n == 0:
        return np.zeros(m, dtype=bool)
    k = min(NOVELTY_NEIGHBOURS, n + m - 1)
    index = faiss.IndexFlatIP(fit_rows.shape[1])
    index.add(np.ascontiguousarray(fit_rows, dtype=np.float32))
    queries = np.ascontiguousarray(new_rows, dtype=np.float32)
    index.add(queries)
    _, idx = index.search(queries, k + 1)
    added = (drop_self(idx, n) >= n).sum(axis=1)
    return binom.sf(added - 1, k, (m - 1) / (n + m - 1)) < NOVELTY_ALPHA
