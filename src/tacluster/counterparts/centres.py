"""Semantic centres: spherical k-means centres of the images in the noun space
(METHOD.md, counterpart construction step 1)."""

from __future__ import annotations

import numpy as np
import torch

from tacluster._blocks import check_parts, joint_rows, sample_rows
from tacluster.cluster import _faiss
from tacluster.errors import InputError

#: Points per centre in the sampled centre fit (large collections; L = 4271 -> 137k points).
CENTRE_POINTS_PER_CENTRE = 32

#: Iteration cap of the sampled centre fit (one iteration at L = 4271 on 1.28 M
#: rows' 137k-point sample is ~1.2 TFLOP; benchmarks/scale.py measures its ACC).
CENTRE_N_ITER = 10


def default_n_centres(n_samples: int, n_clusters: int) -> int:
    """Number of semantic centres L when the user does not set one.

    The paper uses L = N / 300 (CIFAR-10: 167, ImageNet-1K: 4271) but 3 x classes
    where that is larger (DTD 141, UCF-101 303); ``max(N // 300, 3K)``
    reproduces every setting except STL-10 (17 where this gives 30). Capped at
    N // 2 so tiny collections still get centres with members.
    """
    return int(max(1, min(max(n_samples // 300, 3 * n_clusters), n_samples // 2)))



def semantic_centres(
    image_embeddings: np.ndarray,
    n_centres: int,
    *,
    points_per_centre: int | None = None,
    seed: int = 0,
    n_iter: int = 300,
    n_init: int = 3,
) -> np.ndarray:
    """Spherical k-means centres of the image embeddings.

    Parameters
    ----------
    image_embeddings : ndarray of shape (n_samples, d)
        Unit-norm rows in the noun space (CLIP image embeddings); may be
        memory-mapped.
    n_centres : int
        L, the number of centres.
    points_per_centre : int, optional
        ``None``: fit on every row (the paper). An integer (large collections,
        e.g. :data:`CENTRE_POINTS_PER_CENTRE`): fit on ``n_centres *
        points_per_centre`` random rows only; centre l is then the mean of its
        members *in the sample* (noun selection needs only the centres, and a
        32-point mean moves a centre by ~1/sqrt(32) of the within-centre
        spread, which does not change which nouns rank top).

    Returns
    -------
    ndarray of shape (n_centres, d), float32
        c_l = normalised mean of the members of centre l (an empty centre keeps
        its k-means centroid).
    """
    n = check_parts([image_embeddings])
    if not 1 <= n_centres <= n:
        raise InputError(f"n_centres={n_centres} for {n} samples; use 1 <= n_centres <= {n}")
    if points_per_centre is None:
        x = np.ascontiguousarray(image_embeddings, dtype=np.float32)
    else:
        x = joint_rows([image_embeddings], sample_rows(n, n_centres * points_per_centre, seed))
    res = _faiss.kmeans(x, n_centres, n_iter=n_iter, n_init=n_init, seed=seed, spherical=True)
    sums = torch.zeros(res.centroids.shape, dtype=torch.float32)
    sums.index_add_(0, torch.from_numpy(res.labels), torch.from_numpy(x))
    sums = sums.numpy()
    empty = ~sums.any(axis=1)
    sums[empty] = res.centroids[empty]
    return (sums / np.linalg.norm(sums, axis=1, keepdims=True)).astype(np.float32)
