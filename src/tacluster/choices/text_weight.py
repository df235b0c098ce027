"""How much to trust the text side: a label-free text weight for ``[u, w * s]``.

TAC helps when the text counterparts s carry class structure that the image
embeddings u hold only weakly; with a weak text side (the offline ``lite``
backbone, OFFLINE-FINDINGS.md) the same concatenation loses 15-35 ACC points.
No labels are available to tell the two apart, so the image side is the
anchor and the text side has to earn its weight:

1. **Relatedness** ``r``: k-means the text view alone and measure how often
   an image and its nearest image-space neighbours land in the same text
   cluster, relative to the image partition's own rate. Text that is noise,
   constant, or about something the pixels do not show cuts image
   neighbourhoods at random (``r`` near 1/K); text derived from what the image
   shows keeps them together (``r`` near 1).
2. **Neighbourhood preservation**: for each candidate weight w (ascending),
   k-means ``[u, w * s]`` and measure the same neighbour agreement of that
   partition. The chosen w is the largest one whose partition cuts image
   neighbourhoods no more than the image-only partition does (up to
   ``tolerance``). Text can then only break ties the image side cannot
   resolve, e.g. class versus a nuisance style that both respect image
   neighbourhoods equally (the synthetic style world), and cannot override
   what the image neighbourhoods say (``docs/tuning.md``).

Everything is measured on the data being clustered; nothing here needs
labels. Cost: ``len(weights) + 1`` k-means runs per seed plus one exact kNN
search on u.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from tacluster.cluster import neighbours
from tacluster._validation import as_float_matrix, check_n_clusters, check_positive
from tacluster.cluster.kmeans import joint_features, kmeans_cluster
from tacluster.errors import InputError

#: Candidate text weights, ascending; 0 (image-only) is always a candidate.
DEFAULT_WEIGHTS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass
class TrustDecision:
    """What :func:`choose_text_weight` decided.

    Attributes
    ----------
    text_weight : float
        w in [0, 1] for k-means on ``[u, w * s]``; 0 means image-only k-means.
    relatedness : float
        ``r``: neighbour agreement of the text-only partition divided by that
        of the image-only partition (about 1/K for unrelated text, about 1
        for text that follows the images).
    reason : str
        One line saying why, for logs and run.json.
    agreement : dict of float to float
        Image-neighbour agreement of the ``[u, w * s]`` partition for every
        weight tried (mean over seeds).
    """

    text_weight: float
    relatedness: float
    reason: str
    agreement: dict[float, float] = field(default_factory=dict)


def neighbour_agreement(neighbours: np.ndarray, labels: np.ndarray) -> float:
    """Share of (sample, neighbour) pairs that carry the same label.

    Parameters
    ----------
    neighbours : ndarray of shape (n_samples, n_neighbors), int
        Neighbour indices (e.g. from :func:`tacluster.cluster.neighbours.knn`).
    labels : ndarray of shape (n_samples,)

    Returns
    -------
    float in [0, 1]
    """
    labels = np.asarray(labels)
    return float((labels[neighbours] == labels[:, None]).mean())


def choose_text_weight(
    image_embeddings,
    text_view,
    n_clusters: int,
    *,
    weights: Sequence[float] = DEFAULT_WEIGHTS,
    n_neighbors: int = 5,
    tolerance: float = 0.02,
    min_relatedness: float = 0.5,
    n_seeds: int = 2,
    n_init: int = 3,
    max_samples: int | None = 20_000,
    seed: int = 0,
) -> TrustDecision:
    """Pick the weight of the text side for k-means on ``[u, w * s]``, without labels.

    Parameters
    ----------
    image_embeddings : array-like of shape (n_samples, d)
        u; L2-normalised here.
    text_view : array-like of shape (n_samples, d_text)
        s, the second view (TAC's text counterparts, or the joint vectors).
        Rows need not be unit norm; all-zero rows count as "no text" and a
        view that is the same for every sample gets weight 0.
    n_clusters : int
        K.
    weights : sequence of float
        Candidate weights in [0, 1]; 0 is added when missing.
    n_neighbors : int
        Image-space neighbours per sample (capped at n_samples - 1). Small on
        purpose: the nearest few neighbours share the finest structure (class
        *and* style); with 10 neighbours on 1,000 synthetic images a correct
        class partition already looked like it cut neighbourhoods.
    tolerance : float
        Relative loss of neighbour agreement against the image-only
        partition that a weight may cause and still be accepted (0.02: keep
        98 %); absorbs k-means seed noise (docs/tuning.md).
    min_relatedness : float
        Below this ``r`` the text side is declared unrelated to the images
        and gets weight 0 without trying weights.
    n_seeds : int
        k-means seeds averaged per candidate (k-means varies by several ACC
        points from seed to seed; one seed made the choice flip).
    n_init : int
        Restarts per k-means run.
    max_samples : int or None
        Decide on a random subsample of this many images (the decision is a
        property of the collection; this bounds its cost). None: all.
    seed : int
        First seed (also seeds the subsample); seeds ``seed .. seed + n_seeds - 1``
        are used.

    Returns
    -------
    TrustDecision

    Raises
    ------
    InputError
        On mismatched shapes, NaN/inf, weights outside [0, 1] or bad counts.
    """
    u = as_float_matrix(image_embeddings, "image_embeddings")
    s = as_float_matrix(text_view, "text_view", normalise=False)
    if s.shape[0] != u.shape[0]:
        raise InputError(
            f"text_view has {s.shape[0]} rows but image_embeddings has {u.shape[0]}; give one row per image"
        )
    k = check_n_clusters(n_clusters, u.shape[0])
    grid = _weight_grid(weights, n_neighbors, tolerance, min_relatedness, n_seeds, n_init)
    u, s = _decision_sample(u, s, max_samples, seed)
    n = u.shape[0]

    if n < 3 or float(s.var(axis=0).sum()) < 1e-8:
        return TrustDecision(0.0, 0.0, "text view is the same for every image: image-only k-means")

    nn = neighbours.knn(u, min(n_neighbors, n - 1))
    seeds = [seed + i for i in range(n_seeds)]

    def agreement(x: np.ndarray) -> float:
        return float(np.mean([
            neighbour_agreement(nn, kmeans_cluster(x, k, seed=sd + 1, n_init=n_init).labels) for sd in seeds
        ]))

    base = agreement(u)
    related = agreement(s) / max(base, 1e-12)
    scores = {0.0: base}
    if related < min_relatedness:
        return TrustDecision(
            0.0, related,
            f"text clusters ignore image neighbourhoods (relatedness {related:.2f} < {min_relatedness}): "
            "image-only k-means",
            scores,
        )
    chosen = 0.0
    for w in grid[1:]:
        scores[w] = agreement(joint_features(u, s, w))
        if scores[w] < (1.0 - tolerance) * base:
            break  # monotone: a larger weight only moves further from the image side
        chosen = w
    reason = (
        f"relatedness {related:.2f}; text weight raised while clusters kept image neighbourhoods "
        f"(agreement >= {1.0 - tolerance:.2f} x {base:.3f}): {chosen}"
    )
    return TrustDecision(chosen, related, reason, scores)


def _weight_grid(weights: Sequence[float], n_neighbors: int, tolerance: float, min_relatedness: float,
                 n_seeds: int, n_init: int) -> list[float]:
    """The candidate weights, ascending and with 0, once the search's settings are checked."""
    for name, value in (("n_neighbors", n_neighbors), ("n_seeds", n_seeds), ("n_init", n_init)):
        check_positive(value, name, integer=True)
    for name, value in (("tolerance", tolerance), ("min_relatedness", min_relatedness)):
        check_positive(value, name, allow_zero=True)
    grid = sorted({0.0, *(float(w) for w in weights)})
    if grid[0] < 0 or grid[-1] > 1:
        raise InputError(f"weights={list(weights)!r} must lie in [0, 1]")
    return grid


def _decision_sample(u: np.ndarray, s: np.ndarray, max_samples: int | None,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(u, s)`` the decision is made on: at most ``max_samples`` random rows (seeded by ``seed``),
    the text rows L2-normalised (an all-zero row stays zero: no text)."""
    if max_samples is not None:
        check_positive(max_samples, "max_samples", integer=True)
        if u.shape[0] > max_samples:
            pick = np.sort(np.random.default_rng(seed).choice(u.shape[0], int(max_samples), replace=False))
            u, s = u[pick], s[pick]
    norms = np.linalg.norm(s, axis=1, keepdims=True)
    s = np.where(norms > 0, s / np.maximum(norms, 1e-12), 0.0).astype(np.float32)
    return u, s
