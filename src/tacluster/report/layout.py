"""2-D coordinates of every image for the report's map (stored as the x, y
columns of assignments.parquet)."""

from __future__ import annotations

import numpy as np


#: Images the map's t-SNE is fitted on; the others are placed at the mean position of
#: their nearest fitted images (docs/map.md: trustworthiness and time at 1k and 100k).
MAP_FIT_MAX = 1000



MAP_PLACE_NEIGHBOURS = 5



def map_coordinates(x: np.ndarray, seed: int) -> np.ndarray:
    """2-D coordinates for the report's map, shape (n, 2): t-SNE, which keeps
    neighbourhoods (trustworthiness 0.97-0.98 against PCA's 0.85-0.88 on the
    synthetic worlds of benchmarks/map_projection.py), fitted on at most
    :data:`MAP_FIT_MAX` images; every other image sits at the mean position of
    its :data:`MAP_PLACE_NEIGHBOURS` most similar fitted images."""
    from sklearn.manifold import TSNE

    n = x.shape[0]
    if n < 3:
        return np.zeros((n, 2))
    rng = np.random.default_rng(seed)
    fit_idx = np.sort(rng.choice(n, MAP_FIT_MAX, replace=False)) if n > MAP_FIT_MAX else np.arange(n)
    sample = np.ascontiguousarray(x[fit_idx], dtype=np.float32)
    perplexity = float(min(30.0, max(2.0, (len(fit_idx) - 1) / 3)))
    fitted = TSNE(2, init="pca", perplexity=perplexity, random_state=seed, max_iter=500).fit_transform(sample)
    if len(fit_idx) == n:
        return fitted.astype(np.float64)
    xy = np.empty((n, 2))
    k = min(MAP_PLACE_NEIGHBOURS, len(fit_idx))
    for start in range(0, n, 8192):
        block = np.asarray(x[start:start + 8192], dtype=np.float32)
        sims = block @ sample.T
        nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        xy[start:start + len(block)] = fitted[nearest].mean(axis=1)
    xy[fit_idx] = fitted
    return xy
