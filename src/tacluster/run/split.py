"""``tacluster split``: re-cluster one cluster's members into parts, the inverse of ``merge``.

The members are re-clustered (spherical k-means, 10 restarts) on the features
the model's clusters are defined on (``TextAidedClustering.features``),
with the embeddings the run used (:func:`tacluster.run.features.run_features`).
The model gains a refinement (:mod:`tacluster.run.cluster_map`): an image the
model puts in the cluster goes on to the nearest part, by the same
:func:`tacluster.cluster.kmeans.assign` that placed the members, so
``predict`` sends the members, and new images like them, to the parts. The
largest part keeps the cluster's id; the others get the next free ids. Parts
are named from the nouns as ``cluster`` names clusters (the z-score against
the whole collection), skipping names other clusters already have. Images a
person moved into the cluster go to the part their features fall in (still
marked moved). Everything goes through the edit journal of
:mod:`tacluster.run.edit`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tacluster._blocks import joint_rows
from tacluster.errors import InputError
from tacluster.run.edit import locked

if TYPE_CHECKING:
    from tacluster.evaluate.naming import ClusterNames
    from tacluster.run.cluster_map import ClusterMap, Refinement
    from tacluster.run.edit import _Run


@dataclass
class SplitResult:
    """What :func:`split_cluster` did: the cluster split and its parts (run ids, names, sizes)."""

    cluster: int
    ids: list[int]
    names: list[str]
    sizes: list[int]


def check_k(k, n_members: int) -> int | str:
    """``k`` as an int in [2, n_members], or ``"auto"``; one-line error otherwise."""
    if k == "auto":
        if n_members < 4:
            raise InputError(f"the cluster has {n_members} images; --k auto needs at least 4 (or give --k 2)")
        return "auto"
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 2 <= int(k) <= n_members:
        raise InputError(f"--k {k!r}: split a cluster of {n_members} images into 2 to {n_members} parts, or 'auto'")
    return int(k)


def _part_names(named, parts: list[int], taken: set[str], fallback: str) -> list[str]:
    """For each part (a cluster id of ``named``): its name, or its best top noun no other cluster is called."""
    out = []
    for j, c in enumerate(parts):
        options = [named.names[c]] + [w for w, _ in named.top_nouns[c]]
        pick = next((w for w in options if w not in taken), None) or f"{fallback} ({j + 1})"
        taken.add(pick)
        out.append(pick)
    return out


@locked
def split_cluster(run_dir: str | os.PathLike, cluster: str | int, k: int | str = 2, *, device: str = "auto",
                  cache_dir: str | os.PathLike | None = None, offline: bool | None = None,
                  progress: bool = False) -> SplitResult:
    """Split one cluster (by id or name) of a finished run into ``k`` parts (or ``"auto"``).

    Assignments, clusters.json, the model (``predict`` assigns the parts), the
    report and run.json's history are updated at once. ``cache_dir``: the
    embedding cache (default: the run's). Returns the parts.
    """
    from tacluster.run.edit import _Run, model_arrays_bytes
    from tacluster.run.features import run_features
    from tacluster.run.workflows import load_run_model, model_backbone

    run = _Run(run_dir)
    cid = run.cluster_id(cluster)
    labels = np.asarray(run.table["cluster"], dtype=np.int64)
    members = np.flatnonzero(labels == cid)
    k = check_k(k, members.size)
    settings = run.run.get("settings") or {}
    if not settings.get("embeddings"):
        run.require_digests("split")
    est, cmap, name = load_run_model(run.dir / "model")
    bb = model_backbone(est, name, run.dir / "model", device, offline, progress)
    feats = run_features(run, bb, cache_dir=cache_dir, progress=progress)
    k_requested = k
    split = _recluster(est, cmap, feats, members, k, int(settings.get("seed", 0) or 0),
                       np.asarray(run.table["confidence"], dtype=np.float32)[members], cid)
    k, part, conf, sizes, order = split.k, split.part, split.confidence, split.sizes, split.order
    k_run = len(run.by_id)
    run_id = {order[0]: cid, **{j: k_run + i for i, j in enumerate(order[1:])}}

    new_labels = labels.copy()
    new_labels[members] = [run_id[int(j)] for j in part]
    new_conf = np.asarray(run.table["confidence"], dtype=np.float64)
    new_conf[members] = conf
    k_new = k_run + k - 1
    named = _name_every_cluster(run, bb, feats, new_labels, k_new, settings.get("vocabulary"), cache_dir, progress)
    ids = [run_id[j] for j in order]
    taken = {c["name"] for i, c in run.by_id.items() if i != cid}
    names = _part_names(named, ids, taken, run.by_id[cid]["name"])

    _relabel_table(run.table, members, new_labels, new_conf, part, conf, k)
    entries = _split_entries(run.by_id, cid, ids, names, named)
    run.summarise(entries)
    _add_refinement(cmap, split, run_id, [entries[i]["name"] for i in range(k_new)])
    run.config.setdefault("metadata", {}).update(cmap.metadata())
    run.write({"action": "split", "cluster": cid, "k": k_requested, "into": ids,
               "names": names, "sizes": [int(sizes[j]) for j in order]},
              extra={"model/arrays.safetensors": model_arrays_bytes(run, cmap.arrays())})
    return SplitResult(cid, ids, names, [int(sizes[j]) for j in order])


@dataclass
class _Split:
    """The members of a cluster re-clustered into ``k`` parts, as ``predict`` will place them."""

    k: int
    refinement: Refinement  # sends the cluster's images to the parts
    part: np.ndarray  # (n_members,) each member's part, in [0, k)
    confidence: np.ndarray  # (n_members,) each member's confidence after the refinement
    sizes: np.ndarray  # (k,) members per part
    order: list[int]  # the parts, largest first (the largest keeps the cluster's id)


def _recluster(est, cmap: ClusterMap, feats: dict, members: np.ndarray, k: int | str, seed: int,
               member_conf: np.ndarray, cid: int) -> _Split:
    """Spherical k-means (``k="auto"``: K estimated) of the members on the model's features, then the
    members placed by the resulting refinement: on the cluster's leaf, then refined (``predict``'s code)."""
    from tacluster.choices.choose_k import estimate_n_clusters
    from tacluster.cluster.kmeans import kmeans_cluster
    from tacluster.run.cluster_map import Refinement, refine

    parts, weights = est.features(feats["image"][members],
                                  joint_embeddings=None if "joint" not in feats else feats["joint"][members])
    x = joint_rows(parts, slice(None), weights)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    if k == "auto":
        k = int(estimate_n_clusters(x, k_range=(2, max(2, min(30, members.size // 10))), seed=seed).k)
    centroids = kmeans_cluster(x, k, seed=seed + 1, n_init=10).centroids
    n_leaves = cmap.n_leaves
    r = Refinement([leaf for leaf, c in enumerate(cmap.label_map) if c == cid],
                   list(range(n_leaves, n_leaves + k)), centroids)
    leaves, conf = refine([r], parts, weights, np.full(members.size, r.parents[0]), member_conf)
    part = leaves - n_leaves
    sizes = np.bincount(part, minlength=k)
    if (sizes == 0).any():
        raise InputError(f"cluster {cid} holds too few distinct images to split into {k} parts; use a smaller --k")
    order = [int(j) for j in np.argsort(-sizes, kind="stable")]  # the largest part keeps the id
    return _Split(k, r, part, conf, sizes, order)


def _name_every_cluster(run: _Run, bb, feats: dict, labels: np.ndarray, k: int, vocabulary: str | None,
                        cache_dir: str | os.PathLike | None, progress: bool) -> ClusterNames:
    """Names of every cluster after the split, scored on the run's vocabulary as ``cluster`` scores them."""
    from tacluster.evaluate.naming import name_clusters
    from tacluster.nouns.bank import cached_noun_bank
    from tacluster.nouns.vocabulary import load_vocabulary
    from tacluster.run.features import run_cache_dir

    bank = cached_noun_bank(bb, load_vocabulary(None if vocabulary in (None, "wordnet") else vocabulary),
                            cache_dir=run_cache_dir(run, cache_dir), progress=progress)
    return name_clusters(feats.get("joint", feats["image"]), labels, k, bank.embeddings, bank.words,
                         class_probs=feats.get("probs"))


def _relabel_table(table: dict[str, list], members: np.ndarray, labels: np.ndarray, confidence: np.ndarray,
                   part: np.ndarray, member_conf: np.ndarray, k: int) -> None:
    """The assignments' cluster, confidence and outlier columns after the split (outliers of the members
    judged within their parts)."""
    from tacluster.run.outliers import outlier_mask

    table["cluster"] = labels.tolist()
    table["confidence"] = confidence.tolist()
    outlier = np.asarray(table["outlier"], dtype=bool)
    outlier[members] = outlier_mask(part, member_conf, k)
    table["outlier"] = outlier.tolist()


def _split_entries(by_id: dict, cid: int, ids: list[int], names: list[str], named: ClusterNames) -> dict:
    """clusters.json's entries after the split: the others as they were, each part the split
    cluster's entry with its own name and top nouns."""
    base = {kk: v for kk, v in by_id[cid].items() if kk not in ("name", "top_nouns")}
    entries = {i: c for i, c in by_id.items() if i != cid}
    for i, nm in zip(ids, names):
        entries[i] = {**base, "name": nm,
                      "top_nouns": [{"noun": w, "score": round(s, 4)} for w, s in named.top_nouns[i]]}
    return entries


def _add_refinement(cmap: ClusterMap, split: _Split, run_id: dict[int, int], names: list[str]) -> None:
    """The cluster map after the split: the refinement, its new leaves' run clusters, every cluster's
    name (``names``, by run id) and each part's outlier threshold."""
    from tacluster.run.outliers import outlier_thresholds

    k = split.k
    cmap.refinements.append(split.refinement)
    cmap.label_map = cmap.label_map + [run_id[j] for j in range(k)]
    cmap.names = names
    part_below = outlier_thresholds(split.part, split.confidence, k)
    cmap.outlier_below = list(cmap.outlier_below) + [None] * (k - 1)
    for j in range(k):
        cmap.outlier_below[run_id[j]] = part_below[j]
