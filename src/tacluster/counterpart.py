"""Stage 1 of TAC: semantic centres, noun selection, text-counterpart retrieval.

All functions take and return arrays; nothing here opens a file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tacluster import _faiss
from tacluster._threads import flush_denormals, one_torch_thread


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
    seed: int = 0,
    n_iter: int = 300,
    n_init: int = 3,
) -> np.ndarray:
    """Spherical k-means centres of the image embeddings.

    Parameters
    ----------
    image_embeddings : ndarray of shape (n_samples, d)
        Unit-norm rows in the noun space (CLIP image embeddings).
    n_centres : int
        L, the number of centres.

    Returns
    -------
    ndarray of shape (n_centres, d)
        c_l = normalised mean of the members of centre l (an empty centre keeps
        its k-means centroid).
    """
    res = _faiss.kmeans(
        image_embeddings, n_centres, n_iter=n_iter, n_init=n_init, seed=seed, spherical=True
    )
    sums = np.zeros_like(res.centroids)
    np.add.at(sums, res.labels, image_embeddings)
    empty = ~sums.any(axis=1)
    sums[empty] = res.centroids[empty]
    return (sums / np.linalg.norm(sums, axis=1, keepdims=True)).astype(np.float32)


@dataclass
class NounSelection:
    """Nouns kept by reverse zero-shot selection.

    Attributes
    ----------
    indices : ndarray of shape (n_kept,), int64
        Rows of the noun bank, sorted by (centre, -confidence).
    centre : ndarray of shape (n_kept,), int64
        The centre each kept noun was assigned to.
    confidence : ndarray of shape (n_kept,), float32
        Softmax probability of that assignment.
    """

    indices: np.ndarray
    centre: np.ndarray
    confidence: np.ndarray


def select_nouns(
    centres: np.ndarray,
    noun_embeddings: np.ndarray,
    *,
    per_centre: int = 5,
    temperature: float = 1.0,
    block: int = 16384,
) -> NounSelection:
    """Reverse zero-shot: classify every noun into a centre, keep each centre's top nouns.

    Each noun j is softmax-classified over the L centres by cos(c_l, t_j) /
    ``temperature`` (the paper: no temperature, i.e. 1) and goes to its argmax
    centre with that probability as confidence; each centre keeps its
    ``per_centre`` most confident nouns.

    Parameters
    ----------
    centres : ndarray of shape (n_centres, d)
    noun_embeddings : ndarray of shape (n_nouns, d)
        Unit-norm rows. Processed in blocks of ``block`` nouns, so memory
        stays at ``block * n_centres`` floats.

    Returns
    -------
    NounSelection
    """
    c = torch.from_numpy(np.ascontiguousarray(centres, dtype=np.float32))
    n_nouns = noun_embeddings.shape[0]
    best = np.empty(n_nouns, dtype=np.int64)
    conf = np.empty(n_nouns, dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, n_nouns, block):
            t = torch.from_numpy(np.ascontiguousarray(noun_embeddings[start : start + block], dtype=np.float32))
            p = torch.softmax((t @ c.T) / temperature, dim=1)
            top = p.max(dim=1)
            best[start : start + len(t)] = top.indices.numpy()
            conf[start : start + len(t)] = top.values.numpy()
    # Group by centre, most confident first (index as the final tie-break, so
    # the choice is deterministic), then keep the first `per_centre` of each group.
    order = np.lexsort((np.arange(n_nouns), -conf, best))
    grouped = best[order]
    rank = np.arange(n_nouns) - np.searchsorted(grouped, grouped, side="left")
    keep = order[rank < per_centre]
    return NounSelection(indices=keep.astype(np.int64), centre=best[keep], confidence=conf[keep])


#: With tau = 0.005 most softmax weights underflow to denormals, which made
#: later neighbour searches 3x slower in the reference code; they are flushed
#: to 0 during retrieval (and the state found is restored after).
_flush_denormals = flush_denormals


def retrieve_counterparts(
    joint_embeddings: np.ndarray,
    kept_noun_embeddings: np.ndarray,
    *,
    tau: float = 0.005,
    block: int = 8192,
) -> np.ndarray:
    """Text counterparts s_i = normalise(sum_j softmax_j(cos(u_i, t_j) / tau) t_j).

    Parameters
    ----------
    joint_embeddings : ndarray of shape (n_samples, d)
        Images in the noun space, unit norm.
    kept_noun_embeddings : ndarray of shape (n_kept, d)
        The selected nouns, unit norm.
    tau : float
        Softmax temperature (paper: 0.005).

    Returns
    -------
    ndarray of shape (n_samples, d), float32, unit-norm rows.
    """
    t = torch.from_numpy(np.ascontiguousarray(kept_noun_embeddings, dtype=np.float32))
    n = joint_embeddings.shape[0]
    out = np.empty((n, t.shape[1]), dtype=np.float32)
    # One torch thread: with more, the products round differently and s (then
    # the neighbours and the trained heads) would depend on the core count.
    with torch.inference_mode(), _flush_denormals(), one_torch_thread():
        for start in range(0, n, block):
            u = torch.from_numpy(np.ascontiguousarray(joint_embeddings[start : start + block], dtype=np.float32))
            w = torch.softmax((u @ t.T) / tau, dim=1)
            s = torch.nn.functional.normalize(w @ t, dim=1)
            out[start : start + len(u)] = s.numpy()
    return out


def retrieval_weights(
    joint_embeddings: np.ndarray, kept_noun_embeddings: np.ndarray, *, tau: float = 0.005
) -> np.ndarray:
    """The softmax retrieval weights themselves, shape (n_samples, n_kept) (for inspection)."""
    u = torch.from_numpy(np.ascontiguousarray(joint_embeddings, dtype=np.float32))
    t = torch.from_numpy(np.ascontiguousarray(kept_noun_embeddings, dtype=np.float32))
    with torch.inference_mode():
        return torch.softmax((u @ t.T) / tau, dim=1).numpy()
