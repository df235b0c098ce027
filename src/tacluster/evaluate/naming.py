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

Each cluster's list of top nouns holds one noun per distinct noun vector:
synonyms that share a vector (one WordNet synset in the ``lite`` hierarchy
bank: "artifact" / "artefact") share a score and would otherwise fill the list
with one meaning.

Broader nouns (class-indicator banks only). When the noun bank embeds every
noun as the normalised indicator of a set of classes (``lite``'s hierarchy
side: a noun is the ImageNet classes below it in WordNet) and the images'
class probabilities are given, two of each cluster's top nouns (third and
fourth place) are the nouns under which the cluster puts far more probability
mass than chance: score ``m log(m / prior)`` (only positive scores count) with ``m`` the cluster's mean mass
under the noun and ``prior`` the noun's share of the classes. The z-score
names what sets a cluster apart *within this collection* (in a flower
collection "flower" scores near 0 for every cluster); these broader nouns say
what the cluster is ("jean" -> "garment", "clothing"; "daisy" -> "flower").
Measured with ``benchmarks/name_hits.py`` (docs/tuning.md, "names").
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
    counts, sums = _blockwise_cluster_sums(x, labels, n_clusters, row_block)
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


def _blockwise_cluster_sums(x, labels: np.ndarray, n_clusters: int, row_block: int):
    """Cluster sizes and per-cluster row sums of ``x`` (float64), read ``row_block`` rows at a time as float32."""
    counts = np.bincount(labels, minlength=n_clusters).astype(np.float64)
    sums = np.zeros((n_clusters, x.shape[1]))
    for start in range(0, x.shape[0], row_block):
        xb = np.asarray(x[start:start + row_block], dtype=np.float32)
        # per-cluster sums of the block: a one-hot (K x b) sparse product
        sums += _cluster_sums(xb, labels[start:start + row_block], n_clusters)
    return counts, sums


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
    class_probs: np.ndarray | None = None,
    n_broader: int = 2,
) -> ClusterNames:
    """Name each cluster by its highest-z-score noun; also return the top nouns.

    Where two clusters would get the same name, the smaller one is named by
    its best noun not already taken, so names tell clusters apart; with fewer
    nouns than clusters the repeats are numbered ("car (2)"). Nouns whose
    vector repeats one already listed for the cluster (synonyms) are skipped.

    Parameters
    ----------
    class_probs : ndarray of shape (n_samples, n_classes), optional
        Class probabilities of the images (``lite``'s ``probs``). Used only when
        ``noun_embeddings`` is a class-indicator bank of the same width
        (non-negative rows): then ``n_broader`` of each cluster's top nouns,
        from third place on, are its broader nouns (see the module docstring).
        Ignored otherwise, so any backbone can pass what it has.
    """
    z = noun_zscores(joint_embeddings, labels, n_clusters, noun_embeddings)
    broader = None
    if class_probs is not None and n_broader > 0 and _is_indicator_bank(noun_embeddings, class_probs):
        broader = broader_scores(class_probs, labels, n_clusters, noun_embeddings)
    # Synonyms share one vector and so one score; among tied nouns prefer the
    # everyday word: no capitals ("limpkin" over "Aramus pictus"), then shorter.
    capitals = np.array([w != w.lower() for w in nouns])
    length = np.array([len(w) for w in nouns])
    depth = max(top, 1) + n_clusters
    order = [
        _distinct(np.lexsort((length, capitals, -np.round(z[c].astype(np.float64), 4))), noun_embeddings, depth)
        for c in range(n_clusters)
    ]
    sizes = np.bincount(labels, minlength=n_clusters)
    names: list[str] = [""] * n_clusters
    taken: set[str] = set()
    for c in np.argsort(-sizes, kind="stable"):
        if sizes[c] == 0:
            names[c] = f"cluster {c} (empty)"
            continue
        pick = next((nouns[j] for j in order[c] if nouns[j] not in taken), None)
        if pick is None:  # fewer nouns than clusters: number the repeats ("car (2)")
            base, i = nouns[order[c][0]], 2
            while f"{base} ({i})" in taken:
                i += 1
            pick = f"{base} ({i})"
        names[c] = pick
        taken.add(pick)
    tops = []
    for c in range(n_clusters):
        listed = list(order[c][:top])
        if broader is not None and sizes[c] > 0:
            # third place on: the broader nouns (distinct from the two z-score nouns before them)
            ranked = np.lexsort((length, capitals, -np.round(broader[c], 6)))
            ranked = ranked[broader[c, ranked] > 0]  # only nouns holding more mass than their share
            head = listed[:2]
            extra = _distinct(ranked, noun_embeddings, n_broader, exclude=head)
            listed = head + extra + [j for j in listed[2:] if j not in extra]
            listed = _distinct(np.array(listed), noun_embeddings, top)
        tops.append([(nouns[j], float(z[c, j])) for j in listed])
    return ClusterNames(names=names, top_nouns=tops)


def _distinct(ranked: np.ndarray, noun_embeddings: np.ndarray, n: int, exclude=()) -> list[int]:
    """The first ``n`` of ``ranked`` (noun indices) whose vectors differ from each
    other's and from those of ``exclude``; only the rows looked at are read."""
    def key(j) -> bytes:  # equal rows, equal bytes (-0.0 read as 0.0, as array_equal does)
        return (np.asarray(noun_embeddings[int(j)]) + 0).tobytes()

    kept: list[int] = []
    # A set, not a list scanned per noun: n = top + K nouns per cluster made
    # that O(K^2) comparisons per cluster, hours of naming at K = 1000.
    seen = {key(j) for j in exclude}
    for j in ranked:
        j = int(j)
        row = key(j)
        if row in seen:
            continue
        seen.add(row)
        kept.append(j)
        if len(kept) >= n:
            break
    return kept


def _is_indicator_bank(noun_embeddings: np.ndarray, class_probs: np.ndarray, block: int = 16384) -> bool:
    """True when nouns live in the class space (same width) with non-negative rows."""
    if class_probs.ndim != 2 or noun_embeddings.shape[1] != class_probs.shape[1]:
        return False
    return all(np.min(noun_embeddings[s:s + block]) >= 0 for s in range(0, noun_embeddings.shape[0], block))


def broader_scores(
    class_probs: np.ndarray, labels: np.ndarray, n_clusters: int, noun_embeddings: np.ndarray,
    *, block: int = 16384, row_block: int = 8192,
) -> np.ndarray:
    """``m log(m / prior)`` per cluster and noun, shape (n_clusters, n_nouns), float64.

    ``m``: the cluster's mean class-probability mass under the noun (the classes
    where the noun's indicator row is non-zero); ``prior``: the noun's share of
    all classes. Cost O(n C + K C n_nouns / block), memory O(K C + K n_nouns);
    ``class_probs`` is read in blocks of ``row_block`` rows.
    """
    n_classes = class_probs.shape[1]
    counts, sums = _blockwise_cluster_sums(class_probs, np.asarray(labels), n_clusters, row_block)
    mean = sums / np.maximum(counts, 1)[:, None]
    out = np.empty((n_clusters, noun_embeddings.shape[0]))
    for start in range(0, noun_embeddings.shape[0], block):
        member = (np.asarray(noun_embeddings[start:start + block]) > 0).astype(np.float64)
        mass = mean @ member.T
        prior = np.maximum(member.sum(1), 1) / n_classes
        out[:, start:start + len(member)] = mass * np.log(np.maximum(mass, 1e-12) / prior)
    return out
