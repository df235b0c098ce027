"""A label-free choice of clustering method, per collection (``method="auto"``).

No single method wins on every kind of image: spectral clustering of the kNN
graph beats k-means by 10-15 ACC points on textures, flowers and traffic signs
and loses 6 on weather photos (fit parts of the twelve shared domains,
``docs/tuning.md`` §8). The choice is built so that no one fragile decision
carries the gain:

* **No choice between graph views: they are fused.** Whether the raw or the
  power-normalised features give the better graph decided 10-15 ACC points
  on some domains, and no label-free score predicted it (modularity agreed
  with the sign of the ACC difference on 7 of 12 domains). The graph
  candidate, ``spectral-fused``, cuts the kNN graph of both views side by
  side (``spectral_views=(1, 0.5)``) and then runs k-means from its clusters
  (``spectral_refine``): a partition between the two views, pulled toward
  k-means where its clusters are not compact.
* **One decision, in the direction the criterion predicts, and safe by
  construction.** k-means replaces the graph candidate only when its
  partition scores higher on the criterion, the **modularity** of the
  partition on the symmetrised ``n_neighbors``-NN graphs of the raw and the
  power-normalised features (mean over both), ``Q = sum_c [e_cc / m -
  (d_c / 2m) ** 2]``. Between k-means and a graph candidate, the modularity
  difference had the sign of the ACC difference on 10-12 of 12 domains
  (``docs/domains.md``: 10 of 12 held-out for spectral-fused, Spearman
  +0.80). A wrong switch costs only the graph's gain, never more than
  k-means itself: k-means is the baseline.

Held-out on the twelve shared domains (10 seeds): mean +4.5, worst -1.6
against k-means (``docs/tuning.md`` §8, where the goals it misses are listed).

Everything is computed on the collection being clustered; labels are never
used. Cost: one fit per candidate plus one kNN search per view. The candidates
are fitted by a function the caller passes (the estimator's), so this layer
sits below the estimator and never imports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from tacluster._blocks import power_normalise, sample_rows
from tacluster._scale import checked_images, use_large_scale
from tacluster._validation import as_float_matrix, check_n_clusters

#: Candidate name -> estimator settings (``TextAidedClustering`` keyword
#: arguments, handed to the ``fit`` the caller gives). Order matters only for
#: exact ties (the first wins).
IMAGE_CANDIDATES: dict[str, dict] = {
    "kmeans": {"method": "kmeans"},
    "spectral-fused": {"method": "spectral", "spectral_views": [1.0, 0.5], "spectral_refine": True},
}
#: The candidate every other one has to beat by ``margin``.
REFERENCE = "spectral-fused"
#: Feature powers of the views whose kNN graphs score the partitions (the mean over them).
SCORE_VIEWS = (1.0, 0.5)
#: Neighbours per image in the graph the partitions are scored on.
N_NEIGHBORS = 10
#: How much higher a candidate must score than the reference, relative to the reference's score
#: (0: any higher score; leave-one-domain-out over margins -1 % to 2 %, docs/tuning.md §8).
MARGIN = 0.0
#: On the large-N path (``large_scale``) the partitions are scored on this many
#: sampled images (the kNN graph among them): the graphs of all 1.28 M images
#: would be two neighbour searches of ~40 min each on 2 cores (docs/scaling.md).
SCORE_SAMPLE = 30_000
CRITERION = (f"modularity of the partition on the symmetrised {N_NEIGHBORS}-NN graphs of the image features "
             "(mean over the raw and power-normalised views); spectral-fused (spectral on both views, refined by "
             "k-means) kept unless k-means scores higher (tacluster.choices.choose_method)")


@dataclass
class MethodChoice:
    """What :func:`choose_method` decided.

    Attributes
    ----------
    method : str
        Name of the chosen candidate (a key of the candidates given).
    params : dict
        Its estimator settings (``method`` plus e.g. ``feature_power``).
    scores : dict of str to float
        The criterion for every candidate (higher is better).
    criterion : str
        What the scores are.
    reason : str
        One line saying why, for logs, run.json and the report.
    """

    method: str
    params: dict
    scores: dict[str, float]
    criterion: str
    reason: str
    details: dict = field(default_factory=dict)


def knn_graph(features: np.ndarray, n_neighbors: int = N_NEIGHBORS, seed: int = 0):
    """Symmetrised kNN adjacency (scipy CSR, self excluded) of unit-norm rows."""
    from scipy import sparse

    from tacluster.cluster import neighbours

    n = features.shape[0]
    k = max(1, min(n_neighbors, n - 1))
    nn = neighbours.knn(np.ascontiguousarray(features, dtype=np.float32), k, seed=seed)
    a = sparse.csr_matrix((np.ones(n * k), (np.repeat(np.arange(n), k), nn.ravel())), shape=(n, n))
    return (a + a.T).tocsr()


def modularity(adjacency, labels: np.ndarray) -> float:
    """Newman's modularity of ``labels`` on a symmetric weighted graph."""
    labels = np.asarray(labels)
    deg = np.asarray(adjacency.sum(axis=1)).ravel()
    total = deg.sum()
    if total == 0:
        return 0.0
    coo = adjacency.tocoo()
    inside = coo.data[labels[coo.row] == labels[coo.col]].sum() / total
    share = np.bincount(labels, weights=deg) / total
    return float(inside - (share ** 2).sum())


def partition_scores(image_embeddings, partitions: dict[str, np.ndarray], *, powers=(1.0, 0.5),
                     n_neighbors: int = N_NEIGHBORS, seed: int = 0) -> dict[str, float]:
    """The criterion for each partition: mean modularity over the kNN graphs of the views ``powers``."""
    u = as_float_matrix(image_embeddings, "image_embeddings")
    graphs = [knn_graph(power_normalise(u, float(p)), n_neighbors, seed=seed) for p in powers]
    return {name: float(np.mean([modularity(g, lb) for g in graphs])) for name, lb in partitions.items()}


def choose_method(
    image_embeddings,
    n_clusters: int,
    fit: Callable[[dict], Any],
    *,
    candidates: dict[str, dict] | None = None,
    reference: str = REFERENCE,
    margin: float = MARGIN,
    n_neighbors: int = N_NEIGHBORS,
    seed: int = 0,
    large_scale: bool | str = "auto",
) -> tuple[MethodChoice, Any]:
    """Fit every candidate on the collection and keep the one the criterion prefers.

    Parameters
    ----------
    image_embeddings : array-like of shape (n_samples, d)
    n_clusters : int
        K.
    fit : callable
        ``fit(params)`` fits one candidate, given its settings (a value of
        ``candidates``), on ``image_embeddings`` with K clusters and returns
        the fitted model (anything with ``labels_``). The estimator passes
        one that builds a ``TextAidedClustering`` with its own settings, so
        this layer never imports the estimator.
    candidates : dict of str to dict, optional
        Name -> settings; default :data:`IMAGE_CANDIDATES`.
    reference : str
        Candidate kept unless another beats it by more than ``margin``.
    margin : float
        Relative: a candidate must score above ``(1 + margin)`` times the
        reference's score (modularity is positive for any useful partition).
    n_neighbors : int
        Neighbours per image in the scoring graph.
    seed : int
        Seed of the kNN search and of the scored sample.
    large_scale : {"auto", True, False}
        As the estimator's: on the large-N path the partitions are scored on
        :data:`SCORE_SAMPLE` sampled rows.

    Returns
    -------
    (MethodChoice, fitted model)
        The decision and the chosen candidate, fitted.
    """
    # Large N: a row view is kept as given (each candidate reads sampled rows and blocks).
    u = checked_images(image_embeddings, large_scale)
    k = check_n_clusters(n_clusters, u.shape[0])
    cands = dict(IMAGE_CANDIDATES if candidates is None else candidates)
    if reference not in cands:
        raise ValueError(f"reference candidate {reference!r} is not among {sorted(cands)}")

    n = u.shape[0]
    # Rows the partitions are scored on: all of them, or a sample on the large-N path.
    scored = sample_rows(n, SCORE_SAMPLE, seed) if use_large_scale(n, large_scale) else np.arange(n)
    u_scored = u if len(scored) == n else u[scored]
    fitted = {name: fit(dict(params)) for name, params in cands.items()}
    for name, model in fitted.items():
        if len(model.labels_) != n:
            raise ValueError(f"fit({cands[name]!r}) labelled {len(model.labels_)} rows, not the {n} given (K={k})")
    powers = list(SCORE_VIEWS)
    scores = partition_scores(u_scored, {name: est.labels_[scored] for name, est in fitted.items()}, powers=powers,
                              n_neighbors=n_neighbors, seed=seed)
    best = max(scores, key=lambda name: (scores[name], name == reference))
    if best != reference and scores[best] <= scores[reference] + margin * abs(scores[reference]):
        best = reference
    by = f" by more than {margin:.1%}" if margin else ""
    reason = (f"{best}: modularity {scores[best]:.4f}" + (
        " >= every other candidate's" if best == reference else f" > {reference}'s {scores[reference]:.4f}{by}"))
    details: dict = {"n_neighbors": n_neighbors, "views_feature_power": powers, "margin": margin,
                     "scored_rows": int(len(scored))}
    choice = MethodChoice(method=best, params=dict(cands[best]), scores=scores, criterion=CRITERION,
                          reason=reason, details=details)
    return choice, fitted[best]
