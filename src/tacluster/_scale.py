"""The large-N switch: when a collection takes each stage's large-collection setting.

A leaf below the estimator and the label-free choices (``cluster/choose_method``)
so that both read one threshold; see ``docs/scaling.md``.
"""

from __future__ import annotations

import numpy as np

from tacluster._validation import as_float_matrix
from tacluster.errors import InputError

#: ``large_scale="auto"`` switches every stage to its large-collection
#: setting at this many samples. Below it the exact path fits in a few GB and minutes (200k x 512: about 0.4 GB
#: per matrix); above it, its (n, K) probabilities and full-data k-means fits
#: grow past what a laptop holds or waits for (benchmarks/scale.py).
LARGE_SCALE_MIN_SAMPLES = 100_000


def use_large_scale(n_samples: int, large_scale: bool | str = "auto") -> bool:
    """Resolve the ``large_scale`` setting for a collection of ``n_samples``.

    Parameters
    ----------
    n_samples : int
    large_scale : {"auto", True, False}
        ``"auto"``: the large-collection settings from :data:`LARGE_SCALE_MIN_SAMPLES` samples.

    Returns
    -------
    bool
    """
    if large_scale == "auto":
        return n_samples >= LARGE_SCALE_MIN_SAMPLES
    if isinstance(large_scale, (bool, np.bool_)):
        return bool(large_scale)
    raise InputError(f"large_scale={large_scale!r}; use 'auto', True or False")


def checked_images(image_embeddings, large_scale: bool | str = "auto"):
    """``image_embeddings`` checked and normalised by :func:`as_float_matrix`; on the
    large-N path a float16 (or not yet unit-length) input is read through a
    normalising row view instead of a float32 copy (docs/scaling.md)."""
    shape = getattr(image_embeddings, "shape", None)  # rows before any conversion
    n = int(shape[0]) if shape is not None and len(shape) == 2 else 0
    return as_float_matrix(image_embeddings, "image_embeddings", lazy=use_large_scale(n, large_scale))
