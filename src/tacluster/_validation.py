"""Input checks shared by the public entry points (raise early, in words)."""

from __future__ import annotations

import numpy as np

from tacluster.errors import InputError


def as_float_matrix(x, name: str, *, normalise: bool = True) -> np.ndarray:
    """Return ``x`` as a C-contiguous float32 matrix, optionally L2-normalised.

    Raises :class:`InputError` naming ``name`` when ``x`` is not 2-D, is empty,
    holds NaN/inf, or (when normalising) has an all-zero row.
    """
    try:
        arr = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be a numeric array; got {type(x).__name__} ({exc})") from None
    if arr.ndim != 2:
        raise InputError(f"{name} must be 2-D (n_samples, n_features); got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"{name} is empty (shape {arr.shape}); nothing to cluster")
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise InputError(
            f"{name} has {bad.size} row(s) with NaN or inf values (first: row {bad[0]}); "
            "drop or re-embed those samples"
        )
    if normalise:
        norms = np.linalg.norm(arr, axis=1, keepdims=True)
        if (norms == 0).any():
            bad = np.flatnonzero(norms[:, 0] == 0)
            raise InputError(
                f"{name} has {bad.size} all-zero row(s) (first: row {bad[0]}); "
                "they have no direction to compare; drop them"
            )
        arr = arr / norms
    return np.ascontiguousarray(arr, dtype=np.float32)


def check_n_clusters(n_clusters, n_samples: int) -> int:
    """Validate the number of clusters against the number of samples."""
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer)):
        raise InputError(f"n_clusters must be an integer >= 2; got {n_clusters!r}")
    k = int(n_clusters)
    if k < 2:
        raise InputError(f"n_clusters={k} is too small: clustering needs at least 2 clusters")
    if k > n_samples:
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
