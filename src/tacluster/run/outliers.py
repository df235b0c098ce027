"""Outliers of a cluster: members whose confidence lies far below the cluster's
typical one. The thresholds are saved with the model so ``predict`` flags new
images by the same rule."""

from __future__ import annotations

import numpy as np


#: An outlier's confidence lies this many robust standard deviations (1.4826 MAD) below its
#: cluster's median, and at least :data:`OUTLIER_MIN_GAP` below it.
OUTLIER_ROBUST_Z = 3.0



OUTLIER_MIN_GAP = 0.1



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
