"""The saved model's clusters as the run's clusters, after merges and splits.

A model assigns an image to one of its K clusters, its *leaves* 0..K-1.
``split`` adds a *refinement*: the images whose leaf is one of its ``parents``
are assigned among the refinement's centroids, with
:func:`tacluster.cluster.kmeans.assign` on the features the model's clusters
are defined on (``TextAidedClustering.features``), to new leaves K, K+1, ...
``label_map`` (model metadata) gives every leaf its run cluster; ``merge`` and
``split`` rewrite it. :func:`assign_run_clusters` is the one function that
turns embeddings into run clusters: ``predict``, ``split`` and ``add`` all
call it, so a split's parts are what ``predict`` later returns.

A refined image's confidence is the product of its model confidence and its
confidence among the parts (the probability of the path to its leaf).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tacluster._blocks import iter_blocks
from tacluster.cluster.kmeans import assign
from tacluster.errors import ModelFileError

#: Key prefix of the refinements' centroids in ``model/arrays.safetensors``.
REFINE_PREFIX = "refine."


@dataclass
class Refinement:
    """One split: images on a ``parents`` leaf go to the nearest of ``centroids`` (leaf ``leaves[j]``)."""

    parents: list[int]
    leaves: list[int]
    centroids: np.ndarray


@dataclass
class ClusterMap:
    """How a saved model's outputs become run clusters (see the module docstring)."""

    label_map: list[int]
    names: list[str]
    outlier_below: list[float | None]
    refinements: list[Refinement] = field(default_factory=list)

    @property
    def n_leaves(self) -> int:
        return len(self.label_map)

    def metadata(self) -> dict:
        """The model metadata entries this map is saved as (the centroids go to :meth:`arrays`)."""
        return {"label_map": list(self.label_map), "cluster_names": list(self.names),
                "outlier_below": list(self.outlier_below),
                "refinements": [{"parents": r.parents, "leaves": r.leaves} for r in self.refinements]}

    def arrays(self) -> dict[str, np.ndarray]:
        """The refinements' centroids, by their key in ``model/arrays.safetensors``."""
        return {f"{REFINE_PREFIX}{i}.centroids": np.ascontiguousarray(r.centroids, dtype=np.float32)
                for i, r in enumerate(self.refinements)}


def _int_list(value, what: str, where: str) -> list[int]:
    if not (isinstance(value, list) and all(isinstance(c, int) and not isinstance(c, bool) and c >= 0
                                            for c in value)):
        raise ModelFileError(f"model {where!r}: metadata.{what} is malformed; the model is corrupted")
    return list(value)


def read_cluster_map(est, model_dir: str | Path) -> ClusterMap:
    """The :class:`ClusterMap` of a loaded model (``est.metadata_``) and its directory's arrays.

    Raises :class:`ModelFileError` (one line, naming the model) when the metadata is malformed.
    """
    where = str(model_dir)
    meta = est.metadata_
    if not isinstance(meta, dict):
        raise ModelFileError(f"model {where!r}: metadata in config.json is not an object; the model is corrupted")
    refinements: list[Refinement] = []
    raw = meta.get("refinements") or []
    if raw:
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            arrays = load_file(str(Path(model_dir) / "arrays.safetensors"))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelFileError(f"model {where!r}: arrays.safetensors is unreadable ({exc})") from None
        n_leaves = est.n_clusters_
        for i, r in enumerate(raw if isinstance(raw, list) else [None]):
            if not isinstance(r, dict):
                raise ModelFileError(f"model {where!r}: metadata.refinements is malformed; the model is corrupted")
            parents = _int_list(r.get("parents"), "refinements.parents", where)
            leaves = _int_list(r.get("leaves"), "refinements.leaves", where)
            c = arrays.get(f"{REFINE_PREFIX}{i}.centroids")
            if (c is None or c.ndim != 2 or c.shape[0] != len(leaves) or not np.isfinite(c).all()
                    or leaves != list(range(n_leaves, n_leaves + len(leaves))) or any(p >= n_leaves for p in parents)):
                raise ModelFileError(f"model {where!r}: refinement {i} is inconsistent; the model is corrupted")
            n_leaves += len(leaves)
            refinements.append(Refinement(parents, leaves, c))
    else:
        n_leaves = est.n_clusters_
    label_map = meta.get("label_map")
    label_map = list(range(n_leaves)) if label_map is None else _int_list(label_map, "label_map", where)
    if len(label_map) != n_leaves:
        raise ModelFileError(f"model {where!r}: metadata.label_map is malformed; the model is corrupted")
    k_out = max(label_map) + 1
    names = meta.get("cluster_names")
    if names is None:
        names = [str(i) for i in range(k_out)]
    if not isinstance(names, list) or len(names) != k_out or not all(isinstance(n, str) for n in names):
        raise ModelFileError(f"model {where!r}: metadata.cluster_names must list {k_out} names; "
                             "the model is corrupted, re-run `tacluster cluster`")
    below = meta.get("outlier_below")
    if not (isinstance(below, list) and len(below) == k_out
            and all(b is None or (isinstance(b, (int, float)) and not isinstance(b, bool)) for b in below)):
        below = [None] * k_out
    return ClusterMap(label_map, list(names), list(below), refinements)


def refine(refinements: list[Refinement], parts, weights, leaves: np.ndarray, confidence: np.ndarray):
    """Apply ``refinements`` in order to ``(leaves, confidence)`` (copies), reading ``parts`` in blocks."""
    leaves = np.array(leaves, dtype=np.int64)
    confidence = np.array(confidence, dtype=np.float32)
    for r in refinements:
        to = np.asarray(r.leaves, dtype=np.int64)
        for sl in iter_blocks(leaves.shape[0]):
            rows = np.flatnonzero(np.isin(leaves[sl], r.parents))
            if not rows.size:
                continue
            sub = [np.asarray(p[sl], dtype=np.float32)[rows] for p in parts]
            lab, conf = assign(sub, r.centroids, weights=weights)
            leaves[sl.start + rows] = to[lab]
            confidence[sl.start + rows] *= conf
    return leaves, confidence


def assign_run_clusters(est, cmap: ClusterMap, image_embeddings, joint_embeddings=None):
    """``(run clusters, confidence)`` of images: the model's clusters, then the
    splits' refinements, then ``label_map`` (what ``predict`` writes)."""
    leaves, conf = est.predict_with_confidence(image_embeddings, joint_embeddings=joint_embeddings)
    if cmap.refinements:
        parts, weights = est.features(image_embeddings, joint_embeddings=joint_embeddings)
        leaves, conf = refine(cmap.refinements, parts, weights, leaves, conf)
    return np.asarray(cmap.label_map, dtype=np.int64)[leaves], conf
