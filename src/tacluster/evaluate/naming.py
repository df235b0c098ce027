"""Human-readable cluster names from the noun bank (tacluster's addition; TAC has none).

A noun describes cluster c well when the members of c are, on average, much
more similar to it than the collection is: the z-score

    z_cj = (mean_{i in c} <x_i, t_j> - mean_i <x_i, t_j>) / std_i <x_i, t_j>

Scoring against the collection mean is what keeps generic nouns out: a root
noun such as "entity" is close to every image, so its z-score is near 0
(OFFLINE-FINDINGS.md: raw similarity picked "entity" for 60-70 % of images).
Similarities are dot products, so every term comes from cluster means and the
covariance of x: cost O(n d^2 + n_nouns d^2), never an n x n_nouns matrix, and x
is read in blocks (no full-size copy of it either).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ClusterNames:
    names: list[str]  # one per cluster id 0..K-1
    top_nouns: list[list[tuple[str, float]]]  # per cluster, best first, (noun, z-score)


def noun_zscores(
    joint_embeddings: np.ndarray, labels: np.ndarray, n_clusters: int, noun_embeddings: np.ndarray,
    *, block: int = 16384, row_block: int = 8192,
) -> np.ndarray:
    """z-scores of every noun for every cluster, shape (n_clusters, n_nouns).

    Parameters
    ----------
    joint_embeddings : ndarray of shape (n_samples, d)
        Images in the noun space (any float dtype; may be a memory map).
    labels : ndarray of shape (n_samples,)
        Cluster of each image (0..n_clusters-1).
    noun_embeddings : ndarray of shape (n_nouns, d)

    Notes
    -----
    The statistics (collection mean, per-cluster means, covariance) are
    accumulated over blocks of ``row_block`` images: each block is read as
    float32 and only the small (d x d, K x d) accumulators are float64, so
    memory beyond the input is O(row_block * d + d^2 + K d), never a copy of the
    whole (n_samples, d) matrix.
    """
    x = joint_embeddings
    n, d = x.shape
    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=n_clusters).astype(np.float64)
    sums = np.zeros((n_clusters, d))
    for start in range(0, n, row_block):
        xb = np.asarray(x[start:start + row_block], dtype=np.float32)
        # per-cluster sums of the block: a one-hot (K x b) sparse product
        sums += _cluster_sums(xb, labels[start:start + row_block], n_clusters)
    mu = sums.sum(axis=0) / max(n, 1)
    cov = np.zeros((d, d))
    mu32 = mu.astype(np.float32)
    for start in range(0, n, row_block):
        xc = np.asarray(x[start:start + row_block], dtype=np.float32) - mu32
        cov += (xc.T @ xc).astype(np.float64)
    cov /= max(n - 1, 1)
    means = sums / np.maximum(counts, 1)[:, None] - mu  # cluster mean minus collection mean
    out = np.empty((n_clusters, noun_embeddings.shape[0]), dtype=np.float32)
    for start in range(0, noun_embeddings.shape[0], block):
        t = np.asarray(noun_embeddings[start : start + block], dtype=np.float64)
        std = np.sqrt(np.maximum(np.einsum("jd,de,je->j", t, cov, t, optimize=True), 1e-12))
        out[:, start : start + len(t)] = (means @ t.T) / std
    out[counts == 0] = 0.0
    return out


def _cluster_sums(xb: np.ndarray, labels: np.ndarray, n_clusters: int) -> np.ndarray:
    """Per-cluster sums of the rows of ``xb`` (float64, shape (n_clusters, d))."""
    from scipy.sparse import csr_matrix

    onehot = csr_matrix((np.ones(len(labels)), (labels, np.arange(len(labels)))),
                        shape=(n_clusters, len(labels)))
    return np.asarray(onehot @ xb.astype(np.float64))


def name_clusters(
    joint_embeddings: np.ndarray,
    labels: np.ndarray,
    n_clusters: int,
    noun_embeddings: np.ndarray,
    nouns: list[str],
    *,
    top: int = 5,
) -> ClusterNames:
    """Name each cluster by its highest-z-score noun; also return the top nouns.

    Where two clusters would get the same name, the smaller one is named by
    its best noun not already taken, so names tell clusters apart; with fewer
    nouns than clusters the repeats are numbered ("car (2)").
    """
    z = noun_zscores(joint_embeddings, labels, n_clusters, noun_embeddings)
    # Synonyms share one vector and so one score; among tied nouns prefer the
    # everyday word: no capitals ("limpkin" over "Aramus pictus"), then shorter.
    capitals = np.array([w != w.lower() for w in nouns])
    length = np.array([len(w) for w in nouns])
    order = np.stack([
        np.lexsort((length, capitals, -np.round(z[c].astype(np.float64), 4)))[: max(top, 1) + n_clusters]
        for c in range(n_clusters)
    ])
    sizes = np.bincount(labels, minlength=n_clusters)
    names: list[str] = [""] * n_clusters
    taken: set[str] = set()
    for c in np.argsort(-sizes, kind="stable"):
        if sizes[c] == 0:
            names[c] = f"cluster {c} (empty)"
            continue
        pick = next((nouns[j] for j in order[c] if nouns[j] not in taken), None)
        if pick is None:  # fewer nouns than clusters: number the repeats ("car (2)")
            base, i = nouns[order[c, 0]], 2
            while f"{base} ({i})" in taken:
                i += 1
            pick = f"{base} ({i})"
        names[c] = pick
        taken.add(pick)
    tops = [[(nouns[j], float(z[c, j])) for j in order[c, :top]] for c in range(n_clusters)]
    return ClusterNames(names=names, top_nouns=tops)
