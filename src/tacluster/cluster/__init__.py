"""Cluster stage: k-means (all rows, sampled, consensus) with the one
assignment function ``fit`` and ``predict`` share, spectral clustering (exact
and landmark), nearest neighbours, and the label-free choices: the number of
clusters (``choose_k``), the method (``choose_method``) and the text weight
(``text_weight``)."""

from tacluster.cluster.choose_k import AutoKResult, estimate_n_clusters
from tacluster.cluster.choose_method import MethodChoice, choose_method
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
from tacluster.cluster.text_weight import TrustDecision, choose_text_weight

__all__ = [
    "AutoKResult",
    "MethodChoice",
    "TrustDecision",
    "assign",
    "choose_method",
    "choose_text_weight",
    "consensus_kmeans",
    "consensus_labels",
    "estimate_n_clusters",
    "joint_features",
    "kmeans_cluster",
    "knn",
    "landmark_spectral_cluster",
    "normalised_means",
    "sampled_kmeans",
    "soft_assign",
    "spectral_cluster",
]
