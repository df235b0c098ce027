"""Thin wrappers over faiss k-means and exact nearest-neighbour search.

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
) -> KMeansResult:
    """k-means with faiss; k-means++ initialisation, best of ``n_init`` runs.

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

    Returns
    -------
    KMeansResult
        Centroids, the label of every point (assigned on all points, also
        when the fit used a subsample), objective and iterations.
    """
    x = _f32(x)
    n, d = x.shape
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
        km.train(x)
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


#: Up to this many points ``knn(..., method="auto")`` searches exactly; above it,
#: a faiss HNSW graph. IVF with 8 probes kept only 33 % of the true 50
#: neighbours on a 1000-class world at 50k (HNSW 88 %, docs/scaling.md), so it
#: is never chosen automatically. Exact search is deterministic; HNSW may break
#: near-ties differently from run to run.
EXACT_KNN_MAX = 100_000


def knn(x: np.ndarray, k: int, *, method: str = "auto", seed: int = 0, block: int = 16384) -> np.ndarray:
    """``k`` nearest neighbours by inner product, each point's own row excluded.

    Parameters
    ----------
    x : ndarray of shape (n_samples, n_features)
        Unit-norm rows (inner product = cosine).
    k : int
        Neighbours per point, ``k < n_samples``.
    method : {"auto", "exact", "hnsw", "ivf"}
        ``"exact"``: brute force (faiss ``IndexFlatIP``). ``"hnsw"``: a faiss
        HNSW graph (:func:`knn_hnsw`). ``"ivf"``: faiss ``IndexIVFFlat`` with
        ``sqrt(n)`` lists, 8 of them probed, trained on 40 points per list
        (never chosen automatically: low recall with many small clusters).
        ``"auto"``: exact up to :data:`EXACT_KNN_MAX` points, HNSW above.

    Returns
    -------
    ndarray of shape (n_samples, k), int64
        Neighbour indices, nearest first. Where duplicates tie with the point
        itself, the point's own index is still the one removed.
    """
    x = _f32(x)
    n, d = x.shape
    if method == "auto":
        method = "exact" if n <= EXACT_KNN_MAX else "hnsw"
    if method == "hnsw":
        return knn_hnsw(x, k, block=block)
    if method not in ("exact", "ivf"):
        raise ValueError(f"knn method={method!r}; use 'auto', 'exact', 'hnsw' or 'ivf'")
    out = np.empty((n, k), dtype=np.int64)
    # No load-dependent thread drop here (k-means has one): the thread count
    # can reorder near-tied neighbours, and TAC's result would then depend on
    # the machine's load at that moment, not only on its core count.
    index = _knn_index(x, method, seed)
    _search_excluding_self(index, x, k, block, out)
    return out


def knn_torch(x: np.ndarray, k: int, *, device: str = "cuda", max_block_bytes: int = 2**30) -> np.ndarray:
    """Exact ``k`` nearest neighbours by inner product with torch matrix products.

    For a GPU: the rows go to ``device`` once, each block of queries is
    multiplied with all rows (a block's similarities stay under
    ``max_block_bytes``), the query's own column is masked and ``topk``
    keeps the ``k`` best. TF32 is switched off so the products are full
    float32, like faiss's ``IndexFlatIP``; neighbours then agree with
    :func:`knn` (``"exact"``) except where two similarities tie within
    rounding. Measured on an H200 at 50k x 512: see ``docs/scaling.md``.

    Returns
    -------
    ndarray of shape (n_samples, k), int64
    """
    import torch

    x = _f32(x)
    n = x.shape[0]
    if not 0 < k < n:
        raise ValueError(f"k={k} must be in [1, {n - 1}]")
    dev = torch.device(device)
    block = int(max(1, min(n, max_block_bytes // (4 * n))))
    out = np.empty((n, k), dtype=np.int64)
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.no_grad():
            xt = torch.from_numpy(x).to(dev)
            for start in range(0, n, block):
                stop = min(start + block, n)
                sims = xt[start:stop] @ xt.T
                rows = torch.arange(stop - start, device=dev)
                sims[rows, rows + start] = float("-inf")
                out[start:stop] = sims.topk(k, dim=1).indices.cpu().numpy()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev
    return out


def _knn_index(x: np.ndarray, method: str, seed: int):
    n, d = x.shape
    if method == "exact":
        index = faiss.IndexFlatIP(d)
    elif method == "ivf":
        nlist = int(max(1, min(np.sqrt(n), n // 40)))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = int(seed)
        rng = np.random.default_rng(seed)
        train = x[rng.choice(n, size=40 * nlist, replace=False)] if n > 40 * nlist else x
        index.train(train)
        index.nprobe = min(8, nlist)
    index.add(x)
    return index


def _search_excluding_self(index, x: np.ndarray, k: int, block: int, out: np.ndarray) -> None:
    n, d = x.shape
    for start in range(0, n, block):
        stop = min(start + block, n)
        _, idx = index.search(x[start:stop], k + 1)
        if (idx < 0).any():  # IVF probed too few points: fall back to exact for those rows
            bad = np.flatnonzero((idx < 0).any(axis=1))
            exact = faiss.IndexFlatIP(d)
            exact.add(x)
            _, idx[bad] = exact.search(x[start:stop][bad], k + 1)
        out[start:stop] = _drop_self(idx, start)


def _drop_self(idx: np.ndarray, start: int) -> np.ndarray:
    """The k + 1 hits of rows ``start...`` without each row's own index.

    A row whose own index is not among its hits (an exact duplicate ranked
    first, or -1 padding) drops its last hit instead.
    """
    rows, width = idx.shape
    own = idx == np.arange(start, start + rows)[:, None]
    missing = ~own.any(axis=1)
    own[missing, -1] = True
    return idx[~own].reshape(rows, width - 1)


def knn_hnsw(
    x: np.ndarray,
    k: int,
    *,
    m: int = 32,
    ef_search: int = 64,
    ef_construction: int = 40,
    block: int = 16384,
) -> np.ndarray:
    """``k`` approximate nearest neighbours by inner product with a faiss HNSW graph.

    For many small clusters (ImageNet-1K: ~1,300 images per class) IVF with a
    few probes misses most true neighbours, because a class's images spread
    over many inverted lists; the graph does not care. Measured on a synthetic
    1000-class world at 50k x 512 (``benchmarks/scale.py``): recall@50 0.88
    and neighbour class purity 0.88 (exact: 0.84) for 33 s, where IVF with 8
    probes gave recall 0.33, purity 0.34. The graph is built with faiss's
    threads, so ties between near-equal neighbours may differ between runs.

    Parameters
    ----------
    x : ndarray of shape (n_samples, n_features)
        Unit-norm rows (inner product = cosine).
    k : int
        Neighbours per point, ``k < n_samples``.
    m, ef_search, ef_construction : int
        Graph degree, search and construction beam widths (faiss HNSW).

    Returns
    -------
    ndarray of shape (n_samples, k), int64
        Neighbour indices, nearest first, each point's own index removed.
    """
    x = _f32(x)
    n, d = x.shape
    if not 1 <= k < n:
        raise ValueError(f"k={k} neighbours for {n} points; use 1 <= k < {n}")
    index = faiss.IndexHNSWFlat(d, int(m), faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = int(ef_construction)
    index.add(x)
    index.hnsw.efSearch = max(int(ef_search), k + 1)
    out = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, block):
        stop = min(start + block, n)
        _, idx = index.search(x[start:stop], k + 1)
        out[start:stop] = _drop_self(idx, start)
    # -1 padding (a graph search that found fewer than k + 1 points) -> the point's best hit.
    bad = out < 0
    if bad.any():
        out[bad] = np.broadcast_to(out[:, :1], out.shape)[bad]
    return out
