"""Row blocks: every pass over N rows reads a bounded block at a time.

Stages that may see ImageNet-size collections (k-means assignment,
counterpart retrieval, naming) never hold an (N, d_u + d_s) joint matrix or an
(N, K) matrix: ``[w_0 * parts[0], w_1 * parts[1], ...]`` is built per block
from its parts, which may be memory-mapped. docs/scaling.md has the numbers.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from tacluster.errors import InputError

#: Rows per block in every blocked pass (a 65536 x 1024 float32 block is 256 MB).
BLOCK_ROWS = 65536


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
    if len(parts) == 1:
        b = np.asarray(parts[0][rows], dtype=np.float32)
        return np.ascontiguousarray(b if weights[0] == 1.0 else b * np.float32(weights[0]))
    # Several parts: each written into one output (no per-part copies beside it).
    first = parts[0][rows]
    out = np.empty((first.shape[0], sum(p.shape[1] for p in parts)), dtype=np.float32)
    col = 0
    for part, w in zip(parts, weights):
        b = first if col == 0 else part[rows]
        dst = out[:, col:col + part.shape[1]]
        dst[...] = b
        if w != 1.0:
            dst *= np.float32(w)
        col += part.shape[1]
    return out


def check_parts(parts: Sequence[np.ndarray]) -> int:
    """Rows shared by every part; a clear error when the parts disagree or are not 2-D."""
    if not parts:
        raise InputError("no feature arrays given; pass at least one (n_samples, d) array")
    n = parts[0].shape[0]
    for i, p in enumerate(parts):
        if p.ndim != 2 or p.shape[0] != n:
            raise InputError(f"feature part {i} has shape {p.shape}; every part needs ({n}, d)")
    return n


def sample_rows(n: int, size: int, seed: int) -> np.ndarray:
    """``size`` distinct rows of ``range(n)`` drawn under ``seed``, sorted (all rows when size >= n)."""
    if size >= n:
        return np.arange(n)
    # Sorted, so memory-mapped parts are read front to back.
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))
