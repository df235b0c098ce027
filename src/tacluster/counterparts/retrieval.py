"""Text counterparts: each image's softmax mix of the kept nouns (METHOD.md,
counterpart construction step 3). Arrays in, arrays out; nothing opens a file."""

from __future__ import annotations

import faiss
import numpy as np
import torch
from scipy import sparse

from tacluster._blocks import check_parts, iter_blocks, joint_rows
from tacluster._threads import flush_denormals, one_torch_thread
from tacluster.errors import InputError

#: Kept nouns each image's counterpart is computed from on large collections
#: (``retrieve_counterparts(..., top=RETRIEVAL_TOP)``): with tau = 0.005 a noun
#: 0.05 below the best one weighs e^-10 of it, so the softmax over the top 64
#: of the (up to 5L = 21k) kept nouns equals the full one to ~1e-5 in cosine
#: (measured, benchmarks/scale.py) at half the flops and O(block) memory.
RETRIEVAL_TOP = 64


def retrieve_counterparts(
    joint_embeddings: np.ndarray,
    kept_noun_embeddings: np.ndarray,
    *,
    tau: float = 0.005,
    top: int | None = None,
    block: int | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Text counterparts s_i = normalise(sum_j softmax_j(cos(u_i, t_j) / tau) t_j).

    Parameters
    ----------
    joint_embeddings : ndarray of shape (n_samples, d)
        Images in the noun space, unit norm; may be memory-mapped.
    kept_noun_embeddings : ndarray of shape (n_kept, d)
        The selected nouns, unit norm.
    tau : float
        Softmax temperature (paper: 0.005).
    top : int, optional
        ``None``: the softmax runs over every kept noun (the paper). An
        integer (large collections, e.g. :data:`RETRIEVAL_TOP`): over each
        image's ``top`` most similar kept nouns only (capped at n_kept); the
        nouns left out weigh less than e^-10 each unless more than ``top`` lie
        within 0.05 cosine of the best one.
    block : int, optional
        Rows per block (default 8192 for the full softmax, 16384 for top-k).
    out : ndarray of shape (n_samples, d), optional
        Where to write (e.g. a float16 memory map).

    Returns
    -------
    ndarray of shape (n_samples, d), unit-norm rows (``out`` when given, else float32).
    """
    n = check_parts([joint_embeddings])
    t = np.ascontiguousarray(kept_noun_embeddings, dtype=np.float32)
    if t.ndim != 2 or t.shape[1] != joint_embeddings.shape[1] or len(t) == 0:
        raise InputError(
            f"kept_noun_embeddings has shape {t.shape}; need (n_kept >= 1, {joint_embeddings.shape[1]})"
        )
    if top is not None and top < 1:
        raise InputError(f"top={top}; use a positive number of nouns, e.g. 64, or None for all")
    if out is None:
        out = np.empty((n, t.shape[1]), dtype=np.float32)
    if top is None:
        _retrieve_all(joint_embeddings, t, tau, block or 8192, out)
    else:
        _retrieve_top(joint_embeddings, t, tau, min(top, len(t)), block or 16384, out)
    return out


def _retrieve_all(u_all: np.ndarray, t: np.ndarray, tau: float, block: int, out: np.ndarray) -> None:
    tt = torch.from_numpy(t)
    # One torch thread: with more, the products round differently and s (then
    # the neighbours and the trained heads) would depend on the core count.
    # With tau = 0.005 most softmax weights underflow to denormals, which made
    # later neighbour searches 3x slower in the reference code: they are
    # flushed to 0 here (and the state found is restored after).
    with torch.inference_mode(), flush_denormals(), one_torch_thread():
        for sl in iter_blocks(u_all.shape[0], block):
            u = torch.from_numpy(np.ascontiguousarray(u_all[sl], dtype=np.float32))
            w = torch.softmax((u @ tt.T) / tau, dim=1)
            out[sl] = torch.nn.functional.normalize(w @ tt, dim=1).numpy()


def _retrieve_top(u_all: np.ndarray, t: np.ndarray, tau: float, top: int, block: int, out: np.ndarray) -> None:
    index = faiss.IndexFlatIP(t.shape[1])  # exact top-k: a BLAS product + a heap
    index.add(t)
    for sl in iter_blocks(u_all.shape[0], block):
        sims, idx = index.search(joint_rows([u_all], sl), top)
        w = np.exp((sims - sims[:, :1]) / np.float32(tau), dtype=np.float32)
        w /= w.sum(axis=1, keepdims=True)
        m = len(w)
        # (m, n_kept) sparse weights times (n_kept, d): no (m, top, d) gather.
        weights = sparse.csr_matrix((w.ravel(), idx.ravel(), np.arange(0, m * top + 1, top)), shape=(m, len(t)))
        s = np.asarray(weights @ t, dtype=np.float32)
        s /= np.linalg.norm(s, axis=1, keepdims=True)
        out[sl] = s


def retrieval_weights(
    joint_embeddings: np.ndarray, kept_noun_embeddings: np.ndarray, *, tau: float = 0.005
) -> np.ndarray:
    """The softmax retrieval weights themselves, shape (n_samples, n_kept) (for inspection)."""
    u = torch.from_numpy(np.ascontiguousarray(joint_embeddings, dtype=np.float32))
    t = torch.from_numpy(np.ascontiguousarray(kept_noun_embeddings, dtype=np.float32))
    with torch.inference_mode():
        return torch.softmax((u @ t.T) / tau, dim=1).numpy()
