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
    # Several parts: each written into one output, one part's selected rows
    # alive beside it at a time (TAC no-train at 1.28 M, K = 1000: the 256k-row
    # [u, s] sample is 1 GB, each part's rows 0.5 GB; both parts' rows alive
    # together set the fit's peak RSS, docs/scaling.md).
    block = parts[0][rows]
    out = np.empty((block.shape[0], sum(p.shape[1] for p in parts)), dtype=np.float32)
    col = 0
    for i, (part, w) in enumerate(zip(parts, weights)):
        if i:
            block = part[rows]
        dst = out[:, col:col + part.shape[1]]
        dst[...] = block
        del block
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


def power_normalise(x: np.ndarray, power: float) -> np.ndarray:
    """``sign(x) * |x| ** power``, rows L2-normalised, float32 (``x`` itself at power 1)."""
    if power == 1.0:
        return x
    v = np.sign(x) * np.abs(x) ** power
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return np.ascontiguousarray(v / np.maximum(norms, 1e-12), dtype=np.float32)


def concatenated_views(x: np.ndarray, powers: Sequence[float]) -> np.ndarray:
    """``[x ** p_1, x ** p_2, ...] / sqrt(m)`` (each view power-normalised): unit rows
    whose cosine is the mean of the views' cosines."""
    n, d = x.shape
    out = np.empty((n, d * len(powers)), dtype=np.float32)
    scale = np.sqrt(len(powers))  # a float64 scalar: each value divided in float64, then rounded to float32
    for i, p in enumerate(powers):
        # Straight into the output: the same values as dividing the stacked views and casting
        # (no float64 copy of them all: 20 MB at 1,000 x 2 x 1280; 1.3 GB per large-N block).
        np.divide(power_normalise(x, float(p)), scale, out=out[:, i * d:(i + 1) * d], casting="same_kind")
    return out


class _RowView:
    """An (N, d) float32 array computed from ``base`` for the rows asked for (``view[rows]``:
    a slice or an index array); ``np.asarray(view)`` materialises it block by block."""

    def __init__(self, base: np.ndarray):
        self.base = base
        self.shape, self.ndim, self.dtype = base.shape, 2, np.dtype(np.float32)

    def _rows(self, block: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows) -> np.ndarray:
        if isinstance(rows, tuple):
            raise TypeError(f"{type(self).__name__} takes row indices only")
        return self._rows(np.asarray(self.base[rows], dtype=np.float32))

    def __array__(self, dtype=None, copy=None):
        out = np.empty(self.shape, dtype=np.float32)
        for sl in iter_blocks(self.shape[0]):
            out[sl] = self[sl]
        return out if dtype is None else out.astype(dtype, copy=False)


class NormalisedRows(_RowView):
    """An (N, d) array (e.g. a float16 memory map) read as L2-normalised float32 rows.

    Each row is divided by its float32 norm: the values a whole normalised copy
    would hold, for readers that go block by block (naming, the report).
    """

    def _rows(self, block: np.ndarray) -> np.ndarray:
        return block / np.linalg.norm(block, axis=-1, keepdims=True)


class PowerRows(_RowView):
    """The power-normalised view (:func:`power_normalise`) of an (N, d) array, per block of rows.

    Same values as normalising the whole array: at 1.28 M x 1280 the full view
    would be a second 6.6 GB array beside the input. Every blocked pass
    (:func:`joint_rows`, ``assign``, landmarks) reads it like an array.
    """

    def __init__(self, base: np.ndarray, power: float):
        super().__init__(base)
        self.power = float(power)

    def _rows(self, block: np.ndarray) -> np.ndarray:
        return power_normalise(block, self.power)


class ViewsRows(_RowView):
    """:func:`concatenated_views` of an (N, d) array, per block of rows: shape (N, d * len(powers))."""

    def __init__(self, base: np.ndarray, powers: Sequence[float]):
        super().__init__(base)
        self.powers = tuple(float(p) for p in powers)
        self.shape = (base.shape[0], base.shape[1] * len(self.powers))

    def _rows(self, block: np.ndarray) -> np.ndarray:
        return concatenated_views(block, self.powers)
