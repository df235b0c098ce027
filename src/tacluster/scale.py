"""Large-N helpers: every stage after embedding at ImageNet-1K size on one machine.

The exact path (``counterpart.py``, ``cluster.py``) holds several (n, d) and
(n, K) float32 arrays at once and fits every k-means on all points. At
N = 1.28 M, d = 512, K = 1000, L = 4271 that is 5 GB per (n, 1024) joint
matrix, 5 GB for the (n, K) probabilities, and hours of k-means. This module
keeps the same maths with three documented approximations and bounded memory:

* **k-means on a subsample, assignment of every point.** Semantic centres are
  fitted on :data:`CENTRE_POINTS_PER_CENTRE` points per centre (L = 4271:
  137k of 1.28 M points) and are the normalised means of their sampled members;
  the final k-means is fitted on :data:`KMEANS_POINTS_PER_CLUSTER` points per
  cluster (faiss's own default, 256) and then assigns all N points in blocks,
  computing the confidence in the same pass.
* **Retrieval over each image's top** :data:`RETRIEVAL_TOP` **nouns.** With
  tau = 0.005 a noun 0.05 below the best one weighs e^-10 of it, so the
  softmax over the top 64 of the (up to 5L = 21k) kept nouns equals the full
  one to ~1e-5 in cosine (measured, ``benchmarks/scale.py``) at half the
  flops (one matrix product instead of two) and O(block) memory.
* **Joint features never materialised.** ``[u, w s]`` is built per block from
  its parts, which may be float16 or memory-mapped (:func:`to_float16_memmap`).

Which path runs is decided by :func:`use_large_scale`
(:data:`LARGE_SCALE_MIN_SAMPLES`).
"""

from __future__ import annotations

import os
from typing import Iterator, Sequence

import faiss
import numpy as np
import torch
from scipy import sparse

from tacluster import _faiss
from tacluster.errors import InputError

#: ``large_scale="auto"`` switches to this module at this many samples. Below
#: it the exact path fits in a few GB and minutes (200k x 512: about 0.4 GB
#: per matrix); above it, its (n, K) probabilities and full-data k-means fits
#: grow past what a laptop holds or waits for (benchmarks/scale.py).
LARGE_SCALE_MIN_SAMPLES = 100_000

#: Points per semantic centre in the centre k-means sample (L = 4271 -> 137k).
CENTRE_POINTS_PER_CENTRE = 32

#: Points per cluster in the final k-means sample (faiss's default, 256).
KMEANS_POINTS_PER_CLUSTER = 256

#: Kept nouns each image's counterpart is computed from.
RETRIEVAL_TOP = 64

#: Iteration caps of the large-N k-means fits (faiss runs every iteration it is
#: given: early_stop_threshold is 0 by default). At 1.28 M one iteration of the final
#: k-means costs ~0.5 TFLOP and one of the centres ~1.2 TFLOP, i.e. 10-40 s on
#: 2 cores: the paper's 300 iterations x 10-20 restarts would take days.
#: benchmarks/scale.py measures the ACC these caps give against the exact path.
CENTRE_N_ITER = 10
KMEANS_N_ITER = 20

#: Rows per block in every blocked pass (a 65536 x 1024 float32 block is 256 MB).
BLOCK_ROWS = 65536


def use_large_scale(n_samples: int, large_scale: bool | str = "auto") -> bool:
    """Resolve the ``large_scale`` setting for a collection of ``n_samples``.

    Parameters
    ----------
    n_samples : int
    large_scale : {"auto", True, False}
        ``"auto"``: large-N path from :data:`LARGE_SCALE_MIN_SAMPLES` samples.

    Returns
    -------
    bool
    """
    if large_scale == "auto":
        return n_samples >= LARGE_SCALE_MIN_SAMPLES
    if isinstance(large_scale, (bool, np.bool_)):
        return bool(large_scale)
    raise InputError(f"large_scale={large_scale!r}; use 'auto', True or False")


def iter_blocks(n: int, block: int = BLOCK_ROWS) -> Iterator[slice]:
    """Consecutive row slices of at most ``block`` rows covering ``range(n)``."""
    for start in range(0, n, block):
        yield slice(start, min(start + block, n))


def joint_rows(parts: Sequence[np.ndarray], rows, weights: Sequence[float] | None = None) -> np.ndarray:
    """``[w_0 * parts[0][rows], w_1 * parts[1][rows], ...]`` as contiguous float32.

    ``parts`` may be float16 or memory-mapped; only the selected rows are read.

    Returns
    -------
    ndarray of shape (n_rows, sum of part widths), float32
    """
    weights = [1.0] * len(parts) if weights is None else list(weights)
    blocks = []
    for part, w in zip(parts, weights):
        b = np.asarray(part[rows], dtype=np.float32)
        blocks.append(b if w == 1.0 else b * np.float32(w))
    return np.ascontiguousarray(blocks[0] if len(blocks) == 1 else np.hstack(blocks))


def _check_parts(parts: Sequence[np.ndarray]) -> int:
    if not parts:
        raise InputError("no feature arrays given; pass at least one (n_samples, d) array")
    n = parts[0].shape[0]
    for i, p in enumerate(parts):
        if p.ndim != 2 or p.shape[0] != n:
            raise InputError(f"feature part {i} has shape {p.shape}; every part needs ({n}, d)")
    return n


def _sample_rows(n: int, size: int, seed: int) -> np.ndarray:
    if size >= n:
        return np.arange(n)
    # Sorted, so memory-mapped parts are read front to back.
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def sampled_kmeans(
    parts: Sequence[np.ndarray],
    k: int,
    *,
    weights: Sequence[float] | None = None,
    points_per_cluster: int = KMEANS_POINTS_PER_CLUSTER,
    n_iter: int = KMEANS_N_ITER,
    n_init: int = 1,
    seed: int = 0,
    temperature: float = 0.05,
    block: int = BLOCK_ROWS,
) -> tuple[_faiss.KMeansResult, np.ndarray]:
    """Spherical k-means fitted on a subsample, then every row assigned in blocks.

    Parameters
    ----------
    parts : sequence of ndarray of shape (n_samples, d_i)
        The features are ``[w_0 * parts[0], w_1 * parts[1], ...]`` (e.g.
        ``[u, s]`` for TAC no-train); never concatenated for all rows at once.
    k : int
        Clusters, ``2 <= k <= n_samples``.
    points_per_cluster : int
        The fit uses ``min(n, k * points_per_cluster)`` random rows.
    n_iter, n_init, seed
        As in :func:`tacluster._faiss.kmeans`.
    temperature : float
        Confidence = max of softmax(cos(x, c) / temperature), as
        :func:`tacluster.cluster.assign`.

    Returns
    -------
    result : KMeansResult
        Centroids (k, sum d_i), labels of all rows, objective of the sample fit.
    confidence : ndarray of shape (n_samples,), float32
    """
    n = _check_parts(parts)
    if not 2 <= k <= n:
        raise InputError(f"k={k} clusters for {n} samples; use 2 <= k <= {n}")
    if points_per_cluster < 1:
        raise InputError(f"points_per_cluster={points_per_cluster}; use a positive integer, e.g. 256")
    rows = _sample_rows(n, k * points_per_cluster, seed)
    fit = _faiss.kmeans(
        joint_rows(parts, rows, weights), k, n_iter=n_iter, n_init=n_init, seed=seed, spherical=True
    )
    from tacluster.cluster import assign

    labels, confidence = assign(parts, fit.centroids, weights=weights, temperature=temperature, block=block)
    return _faiss.KMeansResult(fit.centroids, labels, fit.objective, fit.n_iter), confidence


def sampled_semantic_centres(
    joint_embeddings: np.ndarray,
    n_centres: int,
    *,
    points_per_centre: int = CENTRE_POINTS_PER_CENTRE,
    n_iter: int = CENTRE_N_ITER,
    n_init: int = 1,
    seed: int = 0,
) -> np.ndarray:
    """Semantic centres from a subsample (large-N :func:`~tacluster.counterpart.semantic_centres`).

    Centre l is the normalised mean of its members *in the sample*; the
    remaining points are never assigned (noun selection only needs the
    centres, and a 32-point mean moves a centre by ~1/sqrt(32) of the
    within-centre spread, which does not change which nouns rank top).

    Parameters
    ----------
    joint_embeddings : ndarray of shape (n_samples, d)
        Unit-norm rows in the noun space; may be float16 / memory-mapped.
    n_centres : int
        L.

    Returns
    -------
    ndarray of shape (n_centres, d), float32, unit-norm rows.
    """
    n = _check_parts([joint_embeddings])
    if not 1 <= n_centres <= n:
        raise InputError(f"n_centres={n_centres} for {n} samples; use 1 <= n_centres <= {n}")
    rows = _sample_rows(n, n_centres * points_per_centre, seed)
    x = joint_rows([joint_embeddings], rows)
    res = _faiss.kmeans(x, n_centres, n_iter=n_iter, n_init=n_init, seed=seed, spherical=True)
    sums = torch.zeros(res.centroids.shape, dtype=torch.float32)
    sums.index_add_(0, torch.from_numpy(res.labels), torch.from_numpy(x))
    sums = sums.numpy()
    empty = ~sums.any(axis=1)
    sums[empty] = res.centroids[empty]
    return (sums / np.linalg.norm(sums, axis=1, keepdims=True)).astype(np.float32)


def retrieve_counterparts_topk(
    joint_embeddings: np.ndarray,
    kept_noun_embeddings: np.ndarray,
    *,
    tau: float = 0.005,
    top: int = RETRIEVAL_TOP,
    block: int = BLOCK_ROWS // 4,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Text counterparts from each image's ``top`` most similar kept nouns.

    s_i = normalise(sum over the top nouns j of softmax_j(cos(u_i, t_j) / tau) t_j);
    with tau = 0.005 the nouns left out weigh less than e^-10 each unless more
    than ``top`` nouns lie within 0.05 cosine of the best one.

    Parameters
    ----------
    joint_embeddings : ndarray of shape (n_samples, d)
        Unit-norm rows; may be float16 / memory-mapped.
    kept_noun_embeddings : ndarray of shape (n_kept, d)
    top : int
        Nouns per image (capped at n_kept).
    out : ndarray of shape (n_samples, d), optional
        Where to write (e.g. a float16 memmap from :func:`to_float16_memmap`).

    Returns
    -------
    ndarray of shape (n_samples, d), unit-norm rows (``out`` when given, else float32).
    """
    n = _check_parts([joint_embeddings])
    t = np.ascontiguousarray(kept_noun_embeddings, dtype=np.float32)
    if t.ndim != 2 or t.shape[1] != joint_embeddings.shape[1] or len(t) == 0:
        raise InputError(
            f"kept_noun_embeddings has shape {t.shape}; need (n_kept >= 1, {joint_embeddings.shape[1]})"
        )
    if top < 1:
        raise InputError(f"top={top}; use a positive number of nouns, e.g. 64")
    top = min(top, len(t))
    index = faiss.IndexFlatIP(t.shape[1])  # exact top-k: a BLAS product + a heap
    index.add(t)
    if out is None:
        out = np.empty((n, t.shape[1]), dtype=np.float32)
    for sl in iter_blocks(n, block):
        sims, idx = index.search(joint_rows([joint_embeddings], sl), top)
        w = np.exp((sims - sims[:, :1]) / np.float32(tau), dtype=np.float32)
        w /= w.sum(axis=1, keepdims=True)
        m = len(w)
        # (m, n_kept) sparse weights times (n_kept, d): no (m, top, d) gather.
        weights = sparse.csr_matrix((w.ravel(), idx.ravel(), np.arange(0, m * top + 1, top)), shape=(m, len(t)))
        s = np.asarray(weights @ t, dtype=np.float32)
        s /= np.linalg.norm(s, axis=1, keepdims=True)
        out[sl] = s
    return out


def to_float16_memmap(x: np.ndarray, path: str | os.PathLike, *, block: int = BLOCK_ROWS) -> np.ndarray:
    """Write ``x`` to ``path`` as a float16 ``.npy`` and return it memory-mapped (read-only).

    Half the bytes of float32; unit-norm embeddings lose < 1e-3 in cosine
    (float16 has an 11-bit mantissa), far below what changes a cluster.

    Returns
    -------
    numpy.memmap of shape x.shape, float16
    """
    mm = np.lib.format.open_memmap(os.fspath(path), mode="w+", dtype=np.float16, shape=x.shape)
    for sl in iter_blocks(x.shape[0], block):
        mm[sl] = x[sl]
    mm.flush()
    del mm
    return np.load(os.fspath(path), mmap_mode="r")
