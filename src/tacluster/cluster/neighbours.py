"""Nearest neighbours by inner product (cosine on unit rows), each point's own
row excluded: exact or HNSW with faiss, exact with torch on a GPU."""

from __future__ import annotations

import faiss
import numpy as np

from tacluster.cluster._faiss import _f32


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
        out[start:stop] = drop_self(idx, start)



def drop_self(idx: np.ndarray, start: int) -> np.ndarray:
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
        out[start:stop] = drop_self(idx, start)
    # -1 padding (a graph search that found fewer than k + 1 points) -> the point's best hit.
    bad = out < 0
    if bad.any():
        out[bad] = np.broadcast_to(out[:, :1], out.shape)[bad]
    return out
