"""Input checks shared by the public entry points (raise early, in words)."""

from __future__ import annotations

import numpy as np

from tacluster._blocks import NormalisedRows, _RowView
from tacluster.errors import InputError


#: Rows per block of the input checks (a 65536 x 1280 float32 block is 335 MB).
CHECK_BLOCK_ROWS = 65_536

#: Rows whose float32 norm is within this of 1 are already unit norm: a
#: float32 array normalised anywhere (in float32 or float64) lands within a
#: few 1e-7, and dividing by such a norm moves each value by about one ulp.
UNIT_NORM_TOLERANCE = 1e-5


def as_float_matrix(x, name: str, *, normalise: bool = True, lazy: bool = False):
    """Return ``x`` as a C-contiguous float32 matrix, optionally L2-normalised.

    No full-size temporaries: the checks run in blocks of
    :data:`CHECK_BLOCK_ROWS` rows. A C-contiguous float32 input whose rows are
    all unit norm already (within :data:`UNIT_NORM_TOLERANCE`) is returned as
    it is, not copied (at 1.28 M x 512 a copy is 2.6 GB); it is never written
    to. Anything else is normalised into one new float32 array, block by
    block, with the same values as normalising it whole.

    ``lazy=True`` (the large-N path, whose every pass reads sampled rows or
    blocks): instead of that new array, a
    :class:`tacluster._blocks.NormalisedRows` view of ``x`` with the same
    values (a float16 1.28 M x 1280 input stays 3.3 GB instead of a 6.6 GB
    float32 copy beside it); a row view (``_blocks._RowView``, already checked)
    is returned as it is. Without ``lazy`` a row view is materialised.

    Raises :class:`InputError` naming ``name`` when ``x`` is not 2-D, is empty,
    holds NaN/inf, or (when normalising) has an all-zero row.
    """
    if isinstance(x, _RowView):
        if lazy:
            return x
        x = np.asarray(x)
    if hasattr(x, "toarray") and hasattr(x, "nnz"):  # scipy.sparse, without importing scipy
        raise InputError(f"{name} is a sparse matrix; sparse input is not supported: pass a dense array "
                         "(x.toarray())")
    if np.iscomplexobj(x):
        raise InputError(f"{name}: Complex data not supported; pass real-valued embeddings")
    if not (isinstance(x, np.ndarray) and x.dtype in (np.float32, np.float16, np.float64)):
        try:
            x = np.asarray(x, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{name} must be a numeric array; got {type(x).__name__} ({exc})") from None
    if x.ndim != 2:
        raise InputError(f"{name} must be 2-D (n_samples, n_features); got shape {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        what = "sample(s)" if x.shape[0] == 0 else "feature(s)"
        raise InputError(f"{name} is empty: 0 {what} (shape={x.shape}) while a minimum of 1 is required; "
                         "nothing to cluster")
    n = x.shape[0]
    norms = np.empty(n, dtype=np.float32)
    bad = []
    for start in range(0, n, CHECK_BLOCK_ROWS):
        block = np.asarray(x[start:start + CHECK_BLOCK_ROWS], dtype=np.float32)
        bad.append(start + np.flatnonzero(~np.isfinite(block).all(axis=1)))
        if normalise and not bad[-1].size:
            norms[start:start + len(block)] = np.linalg.norm(block, axis=1)
    bad = np.concatenate(bad)
    if bad.size:
        raise InputError(
            f"{name} has {bad.size} row(s) with NaN or inf values (first: row {bad[0]}); "
            "drop or re-embed those samples"
        )
    same = x.dtype == np.float32 and x.flags.c_contiguous
    if not normalise:
        return x if same else np.ascontiguousarray(x, dtype=np.float32)
    if (norms == 0).any():
        bad = np.flatnonzero(norms == 0)
        raise InputError(
            f"{name} has {bad.size} all-zero row(s) (first: row {bad[0]}); "
            "they have no direction to compare; drop them"
        )
    if same and np.abs(norms - 1.0).max() <= UNIT_NORM_TOLERANCE:
        return x
    if lazy:
        return NormalisedRows(x)
    out = np.empty(x.shape, dtype=np.float32)
    for start in range(0, n, CHECK_BLOCK_ROWS):
        stop = min(start + CHECK_BLOCK_ROWS, n)
        out[start:stop] = np.asarray(x[start:stop], dtype=np.float32) / norms[start:stop, None]
    return out


def check_n_clusters(n_clusters, n_samples: int | None = None, *, name: str = "n_clusters",
                     allow_auto: bool = False):
    """The one rule for K: an integer >= 2 (or ``"auto"`` where ``allow_auto``), at most
    ``n_samples`` when that is known. ``name`` says where K came from in the error
    (``"n_clusters"``, the CLI's ``"--k"``). Returns ``int(K)`` (or ``"auto"``)."""
    if allow_auto and isinstance(n_clusters, str) and n_clusters == "auto":
        return "auto"
    label = f"{name} {n_clusters!r}" if name.startswith("--") else f"{name}={n_clusters!r}"
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer)) or n_clusters < 2:
        raise InputError(f"{label}: clustering needs at least 2 clusters; give an integer >= 2"
                         + (", or 'auto'" * allow_auto))
    k = int(n_clusters)
    if n_samples is not None and k > n_samples:
        raise InputError(
            f"n_clusters={k} is larger than the {n_samples} samples given; "
            f"use n_clusters <= {n_samples} or add samples"
        )
    return k


def check_choice(value, name: str, choices) -> str:
    if value not in choices:
        raise InputError(f"{name}={value!r} is not one of {sorted(choices)}")
    return value


def check_positive(value, name: str, *, integer: bool = False, allow_zero: bool = False):
    ok_type = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, ok_type):
        kind = "an integer" if integer else "a number"
        raise InputError(f"{name} must be {kind}; got {value!r}")
    if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise InputError(f"{name} must be {bound}; got {value!r}")
    return value
