"""How alike two looks are once a slight crop is undone: the similarity of near duplicates.

A look (:mod:`tacluster.embed.look`) is a grey thumbnail of the whole frame.
A copy that is re-encoded, resized or recoloured has nearly the same look; a
cropped copy shows a part of the original's frame, stretched. The
*aligned similarity* of looks A and B is the Pearson correlation of A with the
part of B it shows, resampled to :data:`COMPARE_SIZE` pixels a side, taken at
the best of :data:`CROPS` per axis (each side cut by up to 10 %), in both
directions (A inside B and B inside A), the larger of the two. The part is
found per axis from the row and column means (one correlation of length
:data:`COMPARE_SIZE` per candidate), so a pair costs two small matrix
products per direction, not a 2-D search.

The correlation removes brightness and contrast; grey removes hue shifts.
Measured on planted copies (``benchmarks/duplicates.py``): the copies of a
photo score >= 0.95, two different photos below (``docs/duplicates.md``).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from tacluster.embed.look import LOOK_SIZE

#: Side of the resampled looks that are correlated.
COMPARE_SIZE = 24
#: Fractions cut from the start and from the end of an axis that the search tries.
CUTS = (0.0, 0.025, 0.05, 0.075, 0.1)
#: Every (start, end) part of an axis that is tried; the first is the whole axis.
CROPS = tuple((s, 1.0 - e) for s in CUTS for e in CUTS)
#: Parts per axis (the best by row / column means) whose combinations are correlated in 2-D.
SEARCH_TOP = 1  # 2 measured: 4x slower; textures +3 recall, fit precision 98 -> 91 (docs/duplicates.md)
#: Pairs scored at once (memory: about 100 KB a pair).
BLOCK = 2048


@lru_cache(maxsize=1)
def _resamplers() -> np.ndarray:
    """``(len(CROPS), COMPARE_SIZE, LOOK_SIZE)``: box (area) resampling of each part of an axis."""
    out = np.zeros((len(CROPS), COMPARE_SIZE, LOOK_SIZE), dtype=np.float32)
    pixels = np.arange(LOOK_SIZE, dtype=np.float64)
    for c, (s, e) in enumerate(CROPS):
        edges = (s + (e - s) * np.arange(COMPARE_SIZE + 1) / COMPARE_SIZE) * LOOK_SIZE
        lo, hi = edges[:-1, None], edges[1:, None]
        overlap = np.clip(np.minimum(hi, pixels + 1) - np.maximum(lo, pixels), 0.0, None)
        out[c] = overlap / overlap.sum(axis=1, keepdims=True)
    return out


def _unit(t, dim: int = -1):
    t = t - t.mean(dim=dim, keepdim=True)
    return t / t.norm(dim=dim, keepdim=True).clamp_min(1e-6)


def look_vectors(looks: np.ndarray) -> np.ndarray:
    """``(n, COMPARE_SIZE ** 2)`` float32: each whole look resampled, mean removed, unit norm.

    Their cosine is the unaligned similarity; the kNN graph of these vectors
    gives the candidate pairs that :func:`aligned_similarity` then scores."""
    import torch

    whole = torch.from_numpy(_resamplers()[0])
    out = np.empty((len(looks), COMPARE_SIZE * COMPARE_SIZE), dtype=np.float32)
    for start in range(0, len(looks), 4 * BLOCK):
        x = _as_images(looks[start:start + 4 * BLOCK])
        out[start:start + len(x)] = _unit((whole @ x @ whole.T).flatten(1)).numpy()
    return out


def aligned_similarity(looks: np.ndarray, rows: np.ndarray, cols: np.ndarray,
                       vectors: np.ndarray | None = None) -> np.ndarray:
    """The aligned similarity (module docstring) of each pair ``(looks[rows[p]], looks[cols[p]])``.

    Parameters
    ----------
    looks : ndarray of shape (n, LOOK_SIZE ** 2), uint8
    rows, cols : ndarray of shape (p,), int
    vectors : ndarray of shape (n, COMPARE_SIZE ** 2), optional
        :func:`look_vectors` of ``looks``, when the caller has them (saves a third of the work).

    Returns
    -------
    ndarray of shape (p,), float32, in [-1, 1]; symmetric in the two images.
    """
    import torch

    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    out = np.empty(rows.size, dtype=np.float32)
    maps = torch.from_numpy(_resamplers())
    if vectors is None:
        vectors = look_vectors(looks)
    with torch.inference_mode():
        for start in range(0, rows.size, BLOCK):
            r, c = rows[start:start + BLOCK], cols[start:start + BLOCK]
            a, b = _as_images(looks[r]), _as_images(looks[c])
            ta, tb = (torch.from_numpy(vectors[i]).view(-1, COMPARE_SIZE, COMPARE_SIZE) for i in (r, c))
            out[start:start + r.size] = torch.maximum(_inside(ta, b, maps), _inside(tb, a, maps)).numpy()
    return out


def _as_images(looks: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(looks, dtype=np.float32)).view(-1, LOOK_SIZE, LOOK_SIZE)


def _inside(target, moving, maps):
    """Correlation of each ``target`` (a whole look resampled, ``(p, C, C)``) with the best-matching
    part of ``moving`` (looks, ``(p, M, M)``): ``(p,)``."""
    flat = maps.reshape(-1, LOOK_SIZE)                               # (crops * C, M)
    n_crops = maps.shape[0]
    col_part = (moving.mean(dim=1) @ flat.T).view(-1, n_crops, COMPARE_SIZE)   # column means of each part
    row_part = (moving.mean(dim=2) @ flat.T).view(-1, n_crops, COMPARE_SIZE)
    k = min(SEARCH_TOP, n_crops)
    ix = (_unit(col_part) * _unit(target.mean(dim=1))[:, None]).sum(-1).topk(k, dim=1).indices   # (p, k)
    iy = (_unit(row_part) * _unit(target.mean(dim=2))[:, None]).sum(-1).topk(k, dim=1).indices
    rows_done = maps[iy] @ moving[:, None]                            # (p, k, C, M)
    warped = rows_done[:, :, None] @ maps[ix].transpose(2, 3)[:, None]  # (p, k, k, C, C)
    corr = (_unit(warped.flatten(3)) * _unit(target.flatten(1))[:, None, None]).sum(-1)
    return corr.flatten(1).max(dim=1).values.clamp(-1.0, 1.0)
