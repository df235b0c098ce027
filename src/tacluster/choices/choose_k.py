"""Choosing K from the data (``n_clusters="auto"``) and consensus of partitions.

Default criterion: plateau of kNN-graph modularity (``criterion="modularity"``)
------------------------------------------------------------------------------
The default clustering (``method="auto"``, :mod:`tacluster.choices.choose_method`)
is spectral clustering of the image kNN graph, on the raw or the
power-normalised features, chosen by the modularity of the partition on the
collection's own kNN graphs. K is chosen in the same view:

1. For each view (raw features, and their power normalisation
   ``sign(u) |u| ** 0.5``, L2 rows) the spectral embedding of its 20-NN graph
   (the graph :func:`tacluster.cluster.spectral.spectral_cluster` clusters) is
   computed once, with ``k_max`` eigenvectors.
2. For every candidate k: k-means (``n_init`` restarts) on the first k
   eigenvectors, then every point moved to the nearest normalised mean of its
   view's clusters (what the estimator does with spectral labels).
3. Each partition is scored by its modularity at resolution ``resolution``
   (``Q = share of edges inside clusters - resolution * sum_c (degree share_c) ** 2``),
   averaged over four symmetrised graphs: the 10- and 20-NN graphs of both
   views. The score of k is the better of the two views' partitions (the
   method choice also keeps the better-scoring candidate).
4. **The plateau: every k whose score is within ``tolerance`` (relative) of
   the best score.** Modularity curves on real embeddings have a flat top and their
   maximum sits below the number of classes (modularity's resolution limit
   merges small communities; measured on the nine domains of issue 19: argmax
   at resolution 1 chose 5-11 for 7-25 classes); the resolution 1.1 and the
   plateau take that bias out. Both settings were fixed on the fit parts
   of the nine domains and checked leave-one-domain-out (``docs/tuning.md`` §7).
5. **Which end of the plateau (issue 30): K = its smallest k when the raw
   view's largest eigengap over the candidates is at least
   ``eigengap_threshold`` (0.09), else its largest.** The far end suits many
   fine classes (the resolution limit), but few large classes split into
   sub-communities that modularity still rewards (CIFAR-10 subsets: 9-12
   clusters for 3-7 classes). A large gap in the spectrum of the normalised
   20-NN graph (eigenvalues from the same ``eigsh`` as step 1) marks a
   collection of few, well separated groups, where the near end held. The
   threshold was fixed on the fit parts of the twelve domains and 27 class
   subsets (the centre of the range that scored best; every
   leave-one-domain-out fold chose 0.08-0.09), ``docs/tuning.md`` §9.1.

Cost: two kNN searches per view, one ``eigsh`` per view (its eigenvalues give the eigengap), and per k two
k-means fits on at most ``k_max`` columns; about 5 s for 1,000 images and
k up to 30 on 2 cores. The search runs on at most ``max_samples`` points.
Labels are never used. The text side is not used by this criterion (it is
refused with it); ``criterion="stability"`` uses it.

Alternative criterion: null-corrected clustering stability (``criterion="stability"``)
------------------------------------------------------------------------------------
The criterion before issue 19; on the nine domains it chose 4-6 for most sets
whose true K is 7-25 (``docs/tuning.md`` §7).
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

from tacluster._blocks import power_normalise
from tacluster.cluster import _faiss
from tacluster._validation import as_float_matrix, check_positive
from tacluster.errors import InputError

__all__ = ["AutoKResult", "eigengap", "estimate_n_clusters", "modularity_curves", "plateau_choice",
           "search_range"]

#: Modularity resolution of the default criterion (fixed on the nine domains' fit parts).
RESOLUTION = 1.1
#: Relative plateau: every k scoring within this share of the best score is on the plateau.
TOLERANCE = 0.02
#: The raw view's largest eigengap (over the candidates) at or above which K is the plateau's near end
#: instead of its far end (fixed on the fit parts of the twelve domains and 27 class subsets; docs/tuning.md §9.1).
EIGENGAP_THRESHOLD = 0.09
#: Neighbours of the graph each view's spectral embedding is computed on (as ``spectral_neighbors``).
SPECTRAL_NEIGHBORS = 20
#: Neighbour counts of the graphs the partitions are scored on (each for both views).
SCORE_NEIGHBORS = (10, 20)
#: The views: feature power 1 (raw) and 0.5 (power-normalised), as ``choose_method``'s candidates.
VIEW_POWERS = (1.0, 0.5)
#: Settings (and text sides) only ``criterion="stability"`` reads; refused under ``"modularity"``.
STABILITY_ONLY = ("joint_embeddings", "counterparts", "n_components", "n_bootstrap", "subsample_fraction",
                  "text_weight", "n_references")
#: Settings only ``criterion="modularity"`` reads; refused under ``"stability"``.
MODULARITY_ONLY = ("resolution", "tolerance", "eigengap_threshold")
#: What a setting left at None means.
_DEFAULTS = {"n_components": 64, "n_bootstrap": 20, "subsample_fraction": 0.8, "text_weight": 1.0,
             "n_references": 10, "resolution": RESOLUTION, "tolerance": TOLERANCE,
             "eigengap_threshold": EIGENGAP_THRESHOLD}


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
        The criterion of each candidate (higher is better): modularity of
        the best view's spectral partition (default) or null-corrected
        stability (``criterion="stability"``).
    details : dict
        The criterion's name, per-view curves, the threshold K was chosen
        against, sample sizes, settings and seconds; lists aligned with
        ``candidates``. JSON-serialisable.
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


#: ``n_clusters="auto"`` asks for at least this many samples per cluster on average.
SAMPLES_PER_CLUSTER = 10


def search_range(n_samples: int, k_range: tuple[int, int] = (2, 30)) -> tuple[int, int]:
    """The K range the estimator searches for ``n_samples`` images: ``k_range`` with its top
    capped at ``max(k_min, n // SAMPLES_PER_CLUSTER, 2)`` and at ``4 n // 5``.

    Small collections: at least 10 images per cluster on average (30 photos
    of one cat gave K = 23 without a cap; the earlier sqrt(n / 2) cap, 18 for
    700 images, was below the 25 classes of uiuc-texture).
    """
    k_lo, k_hi = k_range
    return k_lo, min(k_hi, max(k_lo, n_samples // SAMPLES_PER_CLUSTER, 2), (4 * n_samples) // 5)


def estimate_n_clusters(
    image_embeddings,
    *,
    joint_embeddings=None,
    counterparts=None,
    k_range: tuple[int, int] = (2, 30),
    seed: int = 0,
    max_samples: int = 2000,
    n_components: int | None = None,
    n_bootstrap: int | None = None,
    subsample_fraction: float | None = None,
    text_weight: float | None = None,
    n_init: int = 10,
    n_references: int | None = None,
    criterion: str = "modularity",
    resolution: float | None = None,
    tolerance: float | None = None,
    eigengap_threshold: float | None = None,
) -> AutoKResult:
    """Estimate the number of clusters K (see the module docstring).

    Parameters
    ----------
    image_embeddings : array-like of shape (n_samples, d)
        Image features u; L2-normalised here.
    joint_embeddings : array-like of shape (n_samples, d_joint), optional
        ``"stability"`` only: the images in the noun space, the text side when
        ``counterparts`` is None.
    counterparts : array-like of shape (n_samples, d_joint), optional
        ``"stability"`` only: text counterparts s
        (``TextAidedClustering.counterparts_``); preferred text side when given.
    k_range : (int, int)
        Smallest and largest K to try, inclusive; ``2 <= k_min <= k_max``.
    seed : int
        Seeds the search subsample, the bootstrap subsamples, k-means and the
        reference; the same seed gives the same result on the same machine
        and thread count.
    max_samples : int
        The search runs on a random subsample of at most this many points.
    n_components : int, default 64
        PCA dimensions of each view during the search.
    n_bootstrap : int, default 20
        k-means fits per k, view and data/reference (all pairs are compared).
        With 6 the score curve was noisy enough on real embeddings that the
        seed decided K (15-Scene: 3, 16, 12, 12 over four seeds); 20 fits
        (190 pairs) made it 14, 18, 16.
    subsample_fraction : float, default 0.8
        Fraction of the search sample each fit sees, in (0, 1].
    text_weight : float, default 1.0
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
    criterion : {"modularity", "stability"}, default "modularity"
        ``"modularity"``: the plateau of kNN-graph modularity of spectral
        partitions (image side only). ``"stability"``: null-corrected k-means
        stability, the criterion before issue 19. The settings one criterion
        does not use (:data:`STABILITY_ONLY`, :data:`MODULARITY_ONLY`) are
        refused with it, as is a text side under ``"modularity"``: a value
        given is a value used. Left at None, each takes the default shown.
    resolution : float, default 1.1
        Modularity resolution (``"modularity"``); above 1 favours more clusters.
    tolerance : float, default 0.02
        ``"modularity"``: the plateau is every k scoring at least
        ``best - tolerance * |best|``.
    eigengap_threshold : float, default 0.09
        ``"modularity"``: K is the plateau's smallest k when the raw view's
        largest eigengap over the candidates is at least this, else its
        largest (``float("inf")``: always the largest, the rule before
        issue 30).

    Returns
    -------
    AutoKResult

    Raises
    ------
    InputError
        On malformed embeddings, mismatched row counts, a ``k_range`` outside
        ``[2, n]``, bad search settings, or a setting the criterion does not use.
    """
    tic = time.perf_counter()
    if criterion not in ("modularity", "stability"):
        raise InputError(f"criterion must be 'modularity' or 'stability'; got {criterion!r}")
    given = {"joint_embeddings": joint_embeddings, "counterparts": counterparts, "n_components": n_components,
             "n_bootstrap": n_bootstrap, "subsample_fraction": subsample_fraction, "text_weight": text_weight,
             "n_references": n_references, "resolution": resolution, "tolerance": tolerance,
             "eigengap_threshold": eigengap_threshold}
    _refuse_unused(criterion, given)
    (n_components, n_bootstrap, subsample_fraction, text_weight, n_references, resolution, tolerance,
     eigengap_threshold) = (
        _DEFAULTS[name] if given[name] is None else given[name]
        for name in ("n_components", "n_bootstrap", "subsample_fraction", "text_weight", "n_references",
                     "resolution", "tolerance", "eigengap_threshold"))
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
    check_positive(resolution, "resolution")
    if not (isinstance(tolerance, (int, float)) and 0 <= tolerance < 1):
        raise InputError(f"tolerance={tolerance!r} must be a number in [0, 1)")
    if isinstance(eigengap_threshold, bool) or not isinstance(eigengap_threshold, (int, float)) or not (
            eigengap_threshold >= 0):
        raise InputError(f"eigengap_threshold={eigengap_threshold!r} must be a number >= 0 (inf: always the "
                         "plateau's largest k)")
    if criterion == "modularity":
        return _modularity_search(u, k_range, seed, max_samples, n_init, resolution, tolerance,
                                  float(eigengap_threshold), tic)
    return _stability_search(u, text, text_name, k_range, seed, max_samples, n_components, n_bootstrap,
                             subsample_fraction, text_weight, n_init, n_references, tic)


def _stability_search(u, text, text_name: str | None, k_range, seed: int, max_samples: int, n_components: int,
                      n_bootstrap: int, subsample_fraction: float, text_weight: float, n_init: int,
                      n_references: int, tic: float) -> AutoKResult:
    """``criterion="stability"`` (module docstring): null-corrected k-means stability of the image view
    and, with a text side, the text-aided view. ``u`` and ``text`` are :func:`_check_inputs`' (row
    views or arrays); the settings are checked by the caller."""
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


def _spectral_embedding(x: np.ndarray, n_vectors: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The leading ``n_vectors`` eigenvectors of the normalised 20-NN graph, rows scaled by 1 / sqrt(degree),
    and the leading ``n_vectors + 1`` eigenvalues, descending (the last one for the eigengap at ``n_vectors``).

    The graph is :func:`tacluster.cluster.spectral.spectral_cluster`'s (each
    point joined to itself and its 19 nearest others, symmetrised by
    ``(A + A.T) / 2``) and the scaling is scikit-learn's ``spectral_embedding``,
    so k-means on the first k columns is spectral clustering with k clusters;
    one eigendecomposition serves every k.
    """
    from scipy import sparse
    from scipy.sparse.linalg import eigsh

    from tacluster.cluster import neighbours

    n = x.shape[0]
    k = max(1, min(SPECTRAL_NEIGHBORS - 1, n - 1))
    nn = neighbours.knn(x, k, seed=seed)
    rows = np.repeat(np.arange(n), k + 1)
    cols = np.hstack([np.arange(n)[:, None], nn]).ravel()
    conn = sparse.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n))
    a = (0.5 * (conn + conn.T)).tocsr()
    d = np.asarray(a.sum(axis=1)).ravel()
    scale = sparse.diags(1.0 / np.sqrt(d))
    m = min(n_vectors + 1, n - 1)
    # v0 fixed: ARPACK's default start vector is random, which would make
    # the result depend on the global random state.
    vals, vecs = eigsh(scale @ a @ scale, k=m, which="LA", tol=1e-6, v0=np.ones(n) / np.sqrt(n))
    order = np.argsort(-vals)
    emb = vecs[:, order[:n_vectors]] / np.sqrt(d)[:, None]
    return np.ascontiguousarray(emb, dtype=np.float32), vals[order]


def eigengap(values, candidates) -> tuple[int, float]:
    """(the candidate k with the largest gap ``values[k - 1] - values[k]``, that gap).

    ``values``: eigenvalues of a normalised graph, descending (``values[0]``
    the largest); candidates beyond ``len(values) - 1`` are skipped.
    """
    values = np.asarray(values, dtype=np.float64)
    ks = [int(k) for k in candidates if 1 <= int(k) <= len(values) - 1]
    if not ks:
        return int(np.asarray(candidates).min()), 0.0
    gaps = [values[k - 1] - values[k] for k in ks]
    j = int(np.argmax(gaps))
    return ks[j], float(gaps[j])


def _modularity_parts(adjacency, labels: np.ndarray) -> tuple[float, float]:
    """(share of edge weight inside clusters, sum of squared degree shares) of ``labels``."""
    deg = np.asarray(adjacency.sum(axis=1)).ravel()
    total = deg.sum()
    coo = adjacency.tocoo()
    inside = coo.data[labels[coo.row] == labels[coo.col]].sum() / total
    share = np.bincount(labels, weights=deg) / total
    return float(inside), float((share ** 2).sum())


def modularity_curves(x: np.ndarray, candidates, *, seed: int = 0, n_init: int = 10) -> np.ndarray:
    """Raw material of the default criterion, for the search and for tuning (``benchmarks/autok.py``).

    Returns an array of shape ``(n_views, n_candidates, n_graphs, 2)``: for
    each view (:data:`VIEW_POWERS`) and candidate k, the spectral partition's
    share of edge weight inside clusters and its sum of squared degree shares
    on each scoring graph (the :data:`SCORE_NEIGHBORS`-NN graphs of every
    view, view-major), so the modularity at resolution r is
    ``out[..., 0] - r * out[..., 1]``. ``x``: unit rows.
    """
    return _curves(x, candidates, seed, n_init)[0]


def _curves(x: np.ndarray, candidates, seed: int, n_init: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """:func:`modularity_curves`' array and each view's eigenvalues (``k_max + 1``, descending)."""
    from tacluster.choices.choose_method import knn_graph

    candidates = np.asarray(candidates, dtype=np.int64)
    views = [power_normalise(x, p) for p in VIEW_POWERS]
    graphs = [knn_graph(v, nb, seed=seed) for v in views for nb in SCORE_NEIGHBORS]
    out = np.zeros((len(views), len(candidates), len(graphs), 2))
    spectra = []
    for i, v in enumerate(views):
        emb, values = _spectral_embedding(v, int(candidates.max()), seed)
        spectra.append(values)
        for j, k in enumerate(candidates):
            fit = _faiss.kmeans(np.ascontiguousarray(emb[:, :k]), int(k), n_init=n_init, seed=_seed(seed, 9, k))
            # every point to the nearest normalised mean of its view's clusters, as the estimator does
            means = np.zeros((int(k), v.shape[1]))
            np.add.at(means, fit.labels, v)
            labels = np.argmax(v @ _unit(means + 1e-12).T, axis=1)
            out[i, j] = [_modularity_parts(g, labels) for g in graphs]
    return out, spectra


def plateau_choice(scores, candidates, tolerance: float) -> tuple[int, float]:
    """(the largest candidate scoring at least ``best - tolerance * |best|``, that threshold)."""
    scores = np.asarray(scores, dtype=np.float64)
    threshold = float(scores.max() - tolerance * abs(scores.max()))
    return int(np.asarray(candidates)[np.flatnonzero(scores >= threshold).max()]), threshold


def _modularity_search(u, k_range, seed, max_samples, n_init, resolution, tolerance, eigengap_threshold, tic):
    """The default criterion (module docstring): plateau of the spectral partitions' modularity, its near
    end when the raw view's eigengap is strong, else its far end."""
    n = u.shape[0]
    m = min(n, int(max_samples))
    lo, hi = _check_k_range(k_range, m - 1, n)
    rng = np.random.default_rng(_seed(seed, 0))
    search = np.sort(rng.choice(n, m, replace=False)) if m < n else np.arange(n)
    candidates = np.arange(lo, hi + 1, dtype=np.int64)
    parts, spectra = _curves(_unit(u[search]), candidates, seed, n_init)
    per_view = (parts[..., 0] - resolution * parts[..., 1]).mean(axis=2)  # (view, k)
    scores = per_view.max(axis=0)
    far, threshold = plateau_choice(scores, candidates, tolerance)
    near = candidates[scores >= threshold]
    gap_k, gap = eigengap(spectra[0], candidates)  # the raw view (feature power 1)
    end = "near" if gap >= eigengap_threshold else "far"
    best = int(near.min()) if end == "near" else far
    details = {
        "criterion": (f"plateau of kNN-graph modularity (resolution {resolution:g}) of spectral partitions: "
                      f"every k within {tolerance:.0%} of the best score; the smallest when the raw view's "
                      f"eigengap is >= {eigengap_threshold:g}, else the largest"),
        "views": [f"feature power {p:g}" for p in VIEW_POWERS],
        "modularity": {f"feature power {p:g}": [float(v) for v in curve] for p, curve in zip(VIEW_POWERS, per_view)},
        "argmax_k": int(candidates[int(np.argmax(scores))]),
        "threshold": threshold,
        # how sure: every k scoring within the tolerance of the best is about as well supported (on the
        # twelve shared domains' fit parts this range held the true K on 9 of 12; docs/tuning.md §9)
        "plateau": [int(near.min()), int(near.max())],
        # which end: a strong eigengap (few, well separated groups) takes the near end (docs/tuning.md §9.1)
        "eigengap": gap,
        "eigengap_k": int(gap_k),
        "eigengap_threshold": float(eigengap_threshold),
        "plateau_end": end,
        "resolution": float(resolution),
        "tolerance": float(tolerance),
        "spectral_neighbors": SPECTRAL_NEIGHBORS,
        "score_neighbors": list(SCORE_NEIGHBORS),
        "n_samples": int(n),
        "n_search": int(m),
        "n_init": int(n_init),
        "seed": int(seed),
        "seconds": time.perf_counter() - tic,
    }
    return AutoKResult(k=best, candidates=candidates, scores=scores.astype(np.float64), details=details)


def _refuse_unused(criterion: str, given: dict) -> None:
    """An :class:`InputError` naming the first setting in ``given`` (not None) that ``criterion`` does not use."""
    unused = STABILITY_ONLY if criterion == "modularity" else MODULARITY_ONLY
    for name in unused:
        if given[name] is not None:
            other = "stability" if criterion == "modularity" else "modularity"
            raise InputError(f"{name} is used only by criterion={other!r}, not by criterion={criterion!r}; "
                             f"drop it or pass criterion={other!r}")


def _check_inputs(image_embeddings, counterparts, joint_embeddings):
    """``(u, text, text_name)``: the image features and the text side (counterparts preferred), checked."""
    # Row views pass as given: only sampled rows (u[search]) are read.
    u = as_float_matrix(image_embeddings, "image_embeddings", lazy=True)
    text, text_name = None, None
    for arr, name in ((counterparts, "counterparts"), (joint_embeddings, "joint_embeddings")):
        if arr is not None:
            text, text_name = as_float_matrix(arr, name, lazy=True), name
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
