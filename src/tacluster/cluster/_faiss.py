"""Thin wrappers over faiss k-means and nearest-centroid search (neighbours: ``neighbours.py``).

Contiguous float32 is enforced here and nowhere else. Two faiss defaults are
set deliberately:

* ``max_points_per_centroid`` (faiss: 256) silently fits k-means on a
  subsample of ``256 * k`` points; tacluster fits on every point unless the
  caller asks for a subsample (the reference TAC code fitted its final K=10
  k-means on 2,560 of 50,000 points).
* ``seed`` (faiss: fixed 1234) comes from the caller's ``random_state``.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from tacluster._threads import one_thread_if_busy
from tacluster.errors import DependencyError

#: First faiss-cpu release with k-means++ initialisation (measured: 1.7.4 to
#: 1.13.2 have no ``ClusteringInitMethod_KMEANS_PLUS_PLUS``; 1.14.2 has it).
MIN_FAISS = "1.14.2"


def _kmeans_plus_plus() -> int:
    init = getattr(faiss, "ClusteringInitMethod_KMEANS_PLUS_PLUS", None)
    if init is None:
        raise DependencyError(
            f"faiss {getattr(faiss, '__version__', '?')} has no k-means++ initialisation; tacluster needs "
            f"faiss >= {MIN_FAISS} (pip install -U 'faiss-cpu>={MIN_FAISS}')"
        )
    return init


@dataclass
class KMeansResult:
    centroids: np.ndarray  # (k, d) float32
    labels: np.ndarray  # (n,) int64
    objective: float  # faiss objective of the kept restart
    n_iter: int  # iterations the kept restart ran


def _f32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


def use_gpu() -> bool:
    """True when this faiss build sees a GPU."""
    return hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0


def kmeans(
    x: np.ndarray,
    k: int,
    *,
    n_iter: int = 300,
    n_init: int = 10,
    seed: int = 0,
    spherical: bool = False,
    max_points_per_centroid: int | None = None,
    init: np.ndarray | None = None,
) -> KMeansResult:
    """k-means with faiss; k-means++ initialisation, best of ``n_init`` runs (or one run from ``init``).

    Parameters
    ----------
    x : ndarray of shape (n_samples, n_features)
    k : int
        Number of centroids (``2 <= k <= n_samples`` is the caller's check).
    n_iter : int
        Iteration cap per run (faiss stops earlier once the objective settles).
    n_init : int
        Restarts; the run with the best objective is kept.
    seed : int
        Seeds faiss's sampling and initialisation.
    spherical : bool
        Normalise centroids after each step (use on unit-norm data).
    max_points_per_centroid : int or None
        Fit on a random subsample of at most ``k * max_points_per_centroid``
        points; None fits on all points.
    init : ndarray of shape (k, n_features), optional
        Start from these centroids (one run: ``n_init`` must be 1).

    Returns
    -------
    KMeansResult
        Centroids, the label of every point (assigned on all points, also
        when the fit used a subsample), objective and iterations.
    """
    x = _f32(x)
    n, d = x.shape
    if init is not None and int(n_init) != 1:
        raise ValueError(f"a start (init) makes one run; got n_init={n_init}")
    mppc = max_points_per_centroid if max_points_per_centroid is not None else -(-n // k) + 1
    km = faiss.Kmeans(
        d,
        k,
        niter=int(n_iter),
        nredo=int(n_init),
        seed=int(seed) % (2**31 - 1),
        spherical=bool(spherical),
        max_points_per_centroid=int(mppc),
        min_points_per_centroid=1,  # small collections are normal here; no warning spam
        gpu=use_gpu(),
        verbose=False,
    )
    # k-means++ seeding: fewer bad local optima than faiss's random init, and
    # the restarts then disagree less (issue: results moving with faiss builds).
    km.cp.init_method = _kmeans_plus_plus()
    with one_thread_if_busy():
        km.train(x, init_centroids=None if init is None else _f32(init))
        _, labels = km.index.search(x, 1)
    iters = len(km.iteration_stats) // max(int(n_init), 1)
    return KMeansResult(
        centroids=np.asarray(km.centroids, dtype=np.float32),
        labels=labels[:, 0].astype(np.int64),
        objective=float(km.obj[-1]) if len(km.obj) else 0.0,
        n_iter=max(iters, 1),
    )


def assign(x: np.ndarray, centroids: np.ndarray, *, inner_product: bool = False) -> np.ndarray:
    """Index of the nearest centroid for every row of ``x`` (L2, or max inner product)."""
    x, centroids = _f32(x), _f32(centroids)
    index = faiss.IndexFlatIP(x.shape[1]) if inner_product else faiss.IndexFlatL2(x.shape[1])
    index.add(centroids)
    _, labels = index.search(x, 1)
    return labels[:, 0].astype(np.int64)


