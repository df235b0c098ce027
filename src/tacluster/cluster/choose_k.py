"""Choosing K from the data (``n_clusters="auto"``) and consensus of partitions.

Criterion: null-corrected clustering stability
----------------------------------------------
For every candidate k the search measures how reproducible k-means is:
``n_bootstrap`` random subsamples (``subsample_fraction`` of the search
sample) are clustered independently, every fit labels the whole search
sample by its nearest centroid, and the stability is the mean adjusted Rand
index (ARI) over all pairs of fits (Ben-Hur et al. 2002; Lange et al. 2004).

Raw stability is biased to small k: k-means splits *any* elongated cloud
into the same two halves every time (measured on the Lite0 embeddings:
stability 0.97-0.99 at k = 2 on CIFAR-10 and 15-Scene, 0.5-0.75 near the true
K). So the same stability is measured on a structureless reference with the
data's mean and per-axis variance (a Gaussian in the PCA basis, projected to
the sphere, in the spirit of Tibshirani's gap statistic), and the score is
the difference ``stability(data) - stability(reference)``: what is reproducible
*because of cluster structure*, not because of the shape of the cloud.
One reference draw is itself a noisy yardstick (its stability at a given k
moved by 0.1-0.3 between draws on a 4-class synthetic world, enough to pick
2 or 5), so the reference term is averaged over ``n_references`` independent
draws, the reference's fits split among them.

When a text side is given (the text counterparts s, or the images in the noun
space), the same score is computed on the text-aided view ``[u, s]`` (the
features TAC (no train) clusters) and the two views are averaged, so K is the
one both the image-only and the text-aided partitions reproduce. The
agreement (ARI) between the image-only and the text-only partition of the
search sample is reported in ``details`` for inspection; it is not part of
the score because it falls with k on every data set measured and has no
useful reference.

The chosen K is the candidate with the highest score (smallest k on ties).
The cosine silhouette of the image view, minus its reference value, is also
reported in ``details`` as a second opinion.

Cost is capped: the search runs on at most ``max_samples`` points reduced by
PCA to ``n_components`` dimensions, with ``n_bootstrap`` fits (``n_init``
restarts each) per k and view on the data and as many on the reference; the
pairwise ARIs use a one-``bincount`` contingency table (:func:`_ari`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
from sklearn.metrics import silhouette_score
from sklearn.utils.extmath import randomized_svd

from tacluster.cluster import _faiss
from tacluster._validation import as_float_matrix, check_positive
from tacluster.errors import InputError

__all__ = ["AutoKResult", "estimate_n_clusters"]


@dataclass
class AutoKResult:
    """Outcome of :func:`estimate_n_clusters`.

    Attributes
    ----------
    k : int
        The chosen number of clusters.
    candidates : ndarray of shape (n_candidates,), int64
        Every k tried, ascending.
    scores : ndarray of shape (n_candidates,), float64
        Null-corrected stability of each candidate (higher is better).
    details : dict
        Per-view stability on the data and on the reference, the silhouette
        gap, the image/text agreement, sample sizes, settings and seconds;
        lists aligned with ``candidates``. JSON-serialisable.
    """

    k: int
    candidates: np.ndarray
    scores: np.ndarray
    details: dict = field(default_factory=dict)


def _seed(*parts: int) -> int:
    # One independent, order-free seed per (seed, view, k, fit): adding a view
    # or a candidate never shifts the random numbers of the others.
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] % (2**31 - 1))


def _unit(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12), dtype=np.float32)


def _reduce(x: np.ndarray, n_components: int, seed: int) -> np.ndarray:
    """PCA coordinates of the centred rows, shape (m, c), c = min(n_components, m, d)."""
    centred = x - x.mean(axis=0)
    c = min(n_components, *centred.shape)
    # Randomised SVD: an exact SVD of 2000 x 1280 took 22 s on one shared
    # core; this takes well under a second and is seeded. sign flipping
    # (svd_flip, on by default) fixes the arbitrary sign of each component.
    _, _, vt = randomized_svd(centred, c, n_iter=4, random_state=seed)
    return np.ascontiguousarray(centred @ vt.T, dtype=np.float32)


def _reference(z: np.ndarray, seed: int) -> np.ndarray:
    """Structureless Gaussian with the per-axis mean and std of ``z`` (PCA coordinates), unit rows."""
    rng = np.random.default_rng(seed)
    g = rng.standard_normal(z.shape) * z.std(axis=0) + z.mean(axis=0)
    return _unit(g)


def _stability(x: np.ndarray, k: int, subsets: list[np.ndarray], seeds: list[int], n_init: int) -> float:
    """Mean pairwise ARI of k-means fits on ``subsets``, each labelling all rows of ``x``."""
    labels = []
    for idx, s in zip(subsets, seeds):
        res = _faiss.kmeans(x[idx], k, n_init=n_init, seed=s, spherical=True)
        labels.append(_faiss.assign(x, res.centroids, inner_product=True))
    return float(np.mean([_ari(a, b, k) for a, b in combinations(labels, 2)]))


def _ari(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """Adjusted Rand index of two labelings with values in ``[0, k)``.

    The same number as ``sklearn.metrics.adjusted_rand_score`` (tested), from
    one ``bincount`` contingency table: the search computes it for every pair
    of fits, every k and view (tens of thousands of times), where sklearn's
    input checks dominate.
    """
    n = a.shape[0]
    table = np.bincount(a.astype(np.int64) * k + b, minlength=k * k).astype(np.float64)
    pairs = lambda x: float((x * (x - 1)).sum() / 2)  # noqa: E731
    both = pairs(table)
    rows, cols = pairs(table.reshape(k, k).sum(1)), pairs(table.reshape(k, k).sum(0))
    expected = rows * cols / (n * (n - 1) / 2) if n > 1 else 0.0
    top = (rows + cols) / 2
    if top == expected:  # both labelings trivial (one cluster, or all singletons): identical
        return 1.0
    return (both - expected) / (top - expected)


def _check_k_range(k_range, n_max: int, n: int) -> tuple[int, int]:
    try:
        lo, hi = (int(v) for v in k_range)
        ok = all(float(v) == int(v) for v in k_range)
    except (TypeError, ValueError):
        raise InputError(f"k_range must be a pair of integers (k_min, k_max); got {k_range!r}") from None
    if not ok or lo < 2 or hi < lo:
        raise InputError(f"k_range={tuple(k_range)!r} must satisfy 2 <= k_min <= k_max; e.g. k_range=(2, 30)")
    if hi > n_max:
        raise InputError(
            f"k_range={tuple(k_range)!r} asks for up to {hi} clusters but the search can fit at most "
            f"{n_max} on the {n} samples given (subsamples of them); use k_max <= {n_max} or add samples"
        )
    return lo, hi


def estimate_n_clusters(
    image_embeddings,
    *,
    joint_embeddings=None,
    counterparts=None,
    k_range: tuple[int, int] = (2, 30),
    seed: int = 0,
    max_samples: int = 2000,
    n_components: int = 64,
    n_bootstrap: int = 20,
    subsample_fraction: float = 0.8,
    text_weight: float = 1.0,
    n_init: int = 10,
    n_references: int = 10,
) -> AutoKResult:
    """Estimate the number of clusters K by null-corrected stability (see the module docstring).

    Parameters
    ----------
    image_embeddings : array-like of shape (n_samples, d)
        Image features u; L2-normalised here.
    joint_embeddings : array-like of shape (n_samples, d_joint), optional
        The images in the noun space. Used as the text side when
        ``counterparts`` is None.
    counterparts : array-like of shape (n_samples, d_joint), optional
        Text counterparts s (``TextAidedClustering.counterparts_``); preferred
        text side when given.
    k_range : (int, int)
        Smallest and largest K to try, inclusive; ``2 <= k_min <= k_max``.
    seed : int
        Seeds the search subsample, the bootstrap subsamples, k-means and the
        reference; the same seed gives the same result on the same machine
        and thread count.
    max_samples : int
        The search runs on a random subsample of at most this many points.
    n_components : int
        PCA dimensions of each view during the search.
    n_bootstrap : int, default 20
        k-means fits per k, view and data/reference (all pairs are compared).
        With 6 the score curve was noisy enough on real embeddings that the
        seed decided K (15-Scene: 3, 16, 12, 12 over four seeds); 20 fits
        (190 pairs) made it 14, 18, 16.
    subsample_fraction : float
        Fraction of the search sample each fit sees, in (0, 1].
    text_weight : float
        Weight of the text side in the text-aided view ``[u, w * s]``.
    n_init : int, default 10
        k-means restarts per fit; more restarts keep bad local optima from
        lowering the stability at the true K (8-class synthetic world, 20
        fits: 3 restarts gave stability 0.89 at K = 8 and chose 9; 5 gave
        0.97 and still chose 9 on one seed of four; 10 gave 1.0).
    n_references : int, default 10
        Independent reference draws; the reference's ``n_bootstrap`` fits are
        split among them (at least 2 each). With 1 draw the 4-class synthetic
        world gave K = 2, 4, 4, 2 over four seeds; with 10, 4 every time.

    Returns
    -------
    AutoKResult

    Raises
    ------
    InputError
        On malformed embeddings, mismatched row counts, a ``k_range`` outside
        ``[2, n]`` or bad search settings.
    """
    tic = time.perf_counter()
    u, text, text_name = _check_inputs(image_embeddings, counterparts, joint_embeddings)
    for name in ("max_samples", "n_components", "n_bootstrap", "n_init", "n_references"):
        check_positive(locals()[name], name, integer=True)
    if n_bootstrap < 2:
        raise InputError(f"n_bootstrap={n_bootstrap} must be >= 2: stability compares pairs of fits")
    check_positive(subsample_fraction, "subsample_fraction")
    if subsample_fraction > 1:
        raise InputError(f"subsample_fraction={subsample_fraction} must be in (0, 1]")
    check_positive(text_weight, "text_weight")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InputError(f"seed must be an integer; got {seed!r}")

    n = u.shape[0]
    m = min(n, int(max_samples))
    sub_size = max(int(round(subsample_fraction * m)), 1)
    lo, hi = _check_k_range(k_range, sub_size, n)
    rng = np.random.default_rng(_seed(seed, 0))
    search = np.sort(rng.choice(n, m, replace=False)) if m < n else np.arange(n)
    views = {"image": u[search]}
    if text is not None:
        views["text-aided"] = np.hstack([u[search], text_weight * text[search]])
    pcs = {name: _reduce(x, n_components, _seed(seed, 6, i)) for i, (name, x) in enumerate(views.items())}
    reduced = {name: _unit(z) for name, z in pcs.items()}
    references = {name: [_reference(z, _seed(seed, 1, i, r)) for r in range(n_references)]
                  for i, (name, z) in enumerate(pcs.items())}
    candidates = np.arange(lo, hi + 1, dtype=np.int64)
    subsets = [np.sort(rng.choice(m, sub_size, replace=False)) for _ in range(n_bootstrap)]
    text_only = _unit(_reduce(text[search], n_components, _seed(seed, 7))) if text is not None else None

    stab, stab_ref = _stability_curves(reduced, references, candidates, subsets, seed, n_init,
                                       n_ref_fits=max(2, n_bootstrap // n_references))
    sil_gap, agreement = _diagnostics(reduced["image"], references["image"][0], text_only, candidates, seed)
    gaps = {name: np.asarray(stab[name]) - np.asarray(stab_ref[name]) for name in reduced}
    scores = np.mean(np.stack(list(gaps.values())), axis=0)
    best = int(candidates[int(np.argmax(scores))])  # argmax: first (smallest k) on ties
    details = {
        "criterion": "null-corrected stability (mean pairwise ARI, data minus Gaussian reference)",
        "views": list(reduced),
        "text_side": text_name,
        "stability": {name: [float(v) for v in vals] for name, vals in stab.items()},
        "stability_reference": {name: [float(v) for v in vals] for name, vals in stab_ref.items()},
        "silhouette_gap": [float(v) for v in sil_gap],
        "silhouette_gap_k": int(candidates[int(np.argmax(sil_gap))]),
        "image_text_agreement": agreement,
        "n_samples": int(n),
        "n_search": int(m),
        "n_components": int(min(n_components, m, max(x.shape[1] for x in views.values()))),
        "n_bootstrap": int(n_bootstrap),
        "n_init": int(n_init),
        "n_references": int(n_references),
        "subsample_fraction": float(subsample_fraction),
        "seed": int(seed),
        "seconds": time.perf_counter() - tic,
    }
    return AutoKResult(k=best, candidates=candidates, scores=scores.astype(np.float64), details=details)


def _check_inputs(image_embeddings, counterparts, joint_embeddings):
    """``(u, text, text_name)``: the image features and the text side (counterparts preferred), checked."""
    u = as_float_matrix(image_embeddings, "image_embeddings")
    text, text_name = None, None
    for arr, name in ((counterparts, "counterparts"), (joint_embeddings, "joint_embeddings")):
        if arr is not None:
            text, text_name = as_float_matrix(arr, name), name
            break
    if text is not None and text.shape[0] != u.shape[0]:
        raise InputError(
            f"{text_name} has {text.shape[0]} rows but image_embeddings has {u.shape[0]}; "
            "give one row per image in both"
        )
    return u, text, text_name


def _stability_curves(reduced: dict, references: dict, candidates, subsets, seed: int, n_init: int,
                      n_ref_fits: int) -> tuple[dict, dict]:
    """Per view, the stability of k-means at each candidate K on the data and on its references."""
    n_bootstrap = len(subsets)
    stab = {name: [] for name in reduced}
    stab_ref = {name: [] for name in reduced}
    for k in candidates:
        for v, name in enumerate(reduced):
            seeds = [_seed(seed, 2, v, k, b) for b in range(n_bootstrap)]
            stab[name].append(_stability(reduced[name], int(k), subsets, seeds, n_init))
            stab_ref[name].append(float(np.mean([
                _stability(ref, int(k), subsets[:n_ref_fits], [_seed(seed, 8, v, k, r, b) for b in range(n_ref_fits)],
                           n_init)
                for r, ref in enumerate(references[name])])))
    return stab, stab_ref


def _diagnostics(x: np.ndarray, ref: np.ndarray, text_only, candidates, seed: int) -> tuple[list, list]:
    """Recorded beside the score, not used by it: the silhouette gap to the reference and the
    image/text agreement (ARI) at each candidate K."""
    sil_gap, agreement = [], []
    for k in candidates:
        fx = _faiss.kmeans(x, int(k), n_init=1, seed=_seed(seed, 3, k), spherical=True)
        fr = _faiss.kmeans(ref, int(k), n_init=1, seed=_seed(seed, 4, k), spherical=True)
        sil_gap.append(_silhouette(x, fx.labels) - _silhouette(ref, fr.labels))
        if text_only is not None:
            ft = _faiss.kmeans(text_only, int(k), n_init=1, seed=_seed(seed, 5, k), spherical=True)
            agreement.append(_ari(fx.labels, ft.labels, int(k)))
    return sil_gap, agreement


def _silhouette(x: np.ndarray, labels: np.ndarray) -> float:
    # silhouette_score needs 2 <= n_labels <= n - 1; a degenerate fit scores 0.
    if not 2 <= len(np.unique(labels)) <= len(x) - 1:
        return 0.0
    return float(silhouette_score(x, labels, metric="cosine"))
