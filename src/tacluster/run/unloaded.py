"""Vectors made elsewhere, clustered where their backbone cannot be loaded (offline
and not cached, or a failed fetch): the image-only methods need no model, so the
run goes ahead without cluster names, and says so (issue 29, item 26). The text
methods need the model's noun side and are refused with what to do instead."""

from __future__ import annotations

from dataclasses import dataclass, field

from tacluster.errors import BackboneError
from tacluster.evaluate.naming import ClusterNames


@dataclass
class UnloadedBackbone:
    """Stands for a backbone named with ``--backbone`` that could not be loaded: no
    fingerprint, no noun side; its vectors come from ``--embeddings``."""

    name: str
    reason: str
    fingerprint: None = None
    outputs: tuple[str, ...] = ("image",)
    retrieval_tau: None = None
    prompt_templates: tuple = field(default_factory=tuple)

    def note(self) -> str:
        """The one line a run records and prints."""
        return (f"no cluster names: {self.reason}; the vectors were clustered without the model's noun side "
                "(re-run once the model is here to name the clusters)")


def backbone_or_stand_in(load, name: str, *, from_embeddings: bool, text_method: bool, method: str):
    """``load()``, or an :class:`UnloadedBackbone` where the run can do without the model:
    vectors from ``--embeddings`` clustered by an image-only method."""
    try:
        return load()
    except BackboneError as exc:
        if not from_embeddings:
            raise
        why = str(exc).rstrip(".")
        if text_method:
            raise BackboneError(f"{why}; method {method!r} needs the model's noun side. Pre-fetch the model, or "
                                "cluster these vectors without it (and without cluster names) with --method kmeans "
                                "or --method spectral") from None
        return UnloadedBackbone(name, why)


def unnamed_clusters(n_clusters: int) -> ClusterNames:
    """Names when no noun side exists: ``cluster 0``, ``cluster 1``, ... and no top nouns."""
    return ClusterNames([f"cluster {i}" for i in range(n_clusters)], [[] for _ in range(n_clusters)])
