"""Cluster stage: k-means (all rows, sampled, consensus) with the one
assignment function ``fit`` and ``predict`` share, spectral clustering (exact
and landmark), nearest neighbours, the fitters of the image-side methods
(``fit``) and their model (``model``). The label-free choices of K, method and
text weight sit one layer above, in :mod:`tacluster.choices`."""

from tacluster.cluster.kmeans import (
    assign,
    consensus_kmeans,
    consensus_labels,
    joint_features,
    kmeans_cluster,
    normalised_means,
    sampled_kmeans,
    soft_assign,
)
from tacluster.cluster.neighbours import knn
from tacluster.cluster.spectral import landmark_spectral_cluster, spectral_cluster

__all__ = [
    "assign",
    "consensus_kmeans",
    "consensus_labels",
    "joint_features",
    "kmeans_cluster",
    "knn",
    "landmark_spectral_cluster",
    "normalised_means",
    "sampled_kmeans",
    "soft_assign",
    "spectral_cluster",
]
