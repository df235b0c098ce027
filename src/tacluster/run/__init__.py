"""Running tacluster: the run directory, the cluster / predict / evaluate
workflows, edits of a finished run, duplicates, and the command line."""

from tacluster.run.duplicates import find_duplicates, folder_duplicates
from tacluster.run.workflows import cluster_embeddings, cluster_images, evaluate_assignments, predict_images

__all__ = ["cluster_embeddings", "cluster_images", "evaluate_assignments", "find_duplicates", "folder_duplicates",
           "predict_images"]
