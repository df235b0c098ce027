"""Running tacluster: the run directory, the cluster / predict / evaluate
workflows, edits of a finished run (rename, merge, split, move, add), duplicates, and the command line."""

from tacluster.run.add import AddResult, add_images
from tacluster.run.duplicates import find_duplicates
from tacluster.run.edit import export_run, merge_clusters, rename_cluster
from tacluster.run.move import MoveResult, move_images
from tacluster.run.split import SplitResult, split_cluster
from tacluster.run.workflows import (
    cluster_embeddings, cluster_images, evaluate_assignments, folder_duplicates, predict_images,
)

__all__ = ["AddResult", "MoveResult", "SplitResult", "add_images", "cluster_embeddings", "cluster_images",
           "evaluate_assignments", "export_run", "find_duplicates", "folder_duplicates", "merge_clusters",
           "move_images", "predict_images", "rename_cluster", "split_cluster"]
