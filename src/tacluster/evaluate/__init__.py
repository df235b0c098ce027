"""Evaluation stage: clustering metrics against labels, and cluster names
from the noun bank."""

from tacluster.evaluate.metrics import cluster_accuracy, confusion, evaluate_clustering, hungarian_mapping
from tacluster.evaluate.naming import ClusterNames, name_clusters, noun_zscores

__all__ = [
    "ClusterNames",
    "cluster_accuracy",
    "confusion",
    "evaluate_clustering",
    "hungarian_mapping",
    "name_clusters",
    "noun_zscores",
]
