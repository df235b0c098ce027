"""A label-free choice of clustering method, per collection (``method="auto"``).

No single method wins on every kind of image: spectral clustering of the kNN
graph beats k-means by 10-15 ACC points on textures and flowers and loses a
few on other sets (issue 19, ``docs/tuning.md``). Without labels, each
candidate partition of the collection is scored by how well it follows the
collection's own neighbourhood graph, and the best-scoring one is kept:

* **Criterion: modularity** of the partition on the symmetrised
  ``n_neighbors``-nearest-neighbour graph of the image features,
  ``Q = sum_c [e_cc / m - (d_c / 2m) ** 2]`` (share of graph edges inside
  clusters minus what random edges with the same degrees would give). Unlike
  the plain share of neighbours kept together, it does not reward merging
  classes or leaving a few images in clusters of their own. The graph is built
  once for each view of the features that a candidate clusters (the raw
  features and their power normalisation, ``feature_power``) and the scores
  are averaged over the views, so no candidate is judged only in its own space.
* **A reference candidate is kept unless clearly beaten**: spectral
  clustering of the raw features (the offline default before this choice
  existed, never more than 0.5 ACC below k-means on the nine domains) is
  replaced only by a candidate whose score is higher by more than the
  relative ``margin`` (2 %). Reference and margin were fixed on the fit parts
  of the nine sets and checked leave-one-domain-out (``docs/tuning.md``).
* **No text candidate.** TAC without training with the trust mechanism
  was once offered here, given a noun bank, and chosen when the trust
  mechanism trusted the text fully (weight 1). Nothing passed it a noun bank,
  and with the offline ``lite`` backbone (the only one whose ``--method auto``
  is this choice; CLIP backbones run TAC) the trust mechanism never chose
  weight 1 (``benchmarks/text_candidate.py``, issue 28), so it went.

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
    "spectral": {"method": "spectral"},
    "spectral-pow": {"method": "spectral", "feature_power": 0.5},
}
#: The candidate every other one has to beat by ``margin``.
REFERENCE = "spectral"
#: Neighbours per image in the graph the partitions are scored on.
N_NEIGHBORS = 10
#: How much higher a candidate must score than the reference, relative to the reference's score.
MARGIN = 0.02
#: On the large-N path (``large_scale``) the partitions are scored on this many
#: sampled images (the kNN graph among them): the graphs of all 1.28 M images
#: would be two neighbour searches of ~40 min each on 2 cores (docs/scaling.md).
SCORE_SAMPLE = 30_000
CRITERION = (f"modularity of the partition on the symmetrised {N_NEIGHBORS}-NN graph of the image features "
             "(mean over the raw and power-normalised views); spectral kept unless another candidate scores over 2 % higher "
             "(tacluster.cluster.choose_method)")


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
    powers = sorted({float(p.get("feature_power", 1.0)) for p in cands.values()} | {1.0}, reverse=True)
    scores = partition_scores(u_scored, {name: est.labels_[scored] for name, est in fitted.items()}, powers=powers,
                              n_neighbors=n_neighbors, seed=seed)
    best = max(scores, key=lambda name: (scores[name], name == reference))
    if best != reference and scores[best] <= scores[reference] + margin * abs(scores[reference]):
        best = reference
    reason = (f"{best}: modularity {scores[best]:.4f}" + (
        "" if best == reference else f" > {reference}'s {scores[reference]:.4f} by more than {margin:.1%}"))
    details: dict = {"n_neighbors": n_neighbors, "views_feature_power": powers, "margin": margin,
                     "scored_rows": int(len(scored))}
    choice = MethodChoice(method=best, params=dict(cands[best]), scores=scores, criterion=CRITERION,
                          reason=reason, details=details)
    return choice, fitted[best]
