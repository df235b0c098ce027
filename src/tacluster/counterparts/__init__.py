"""Counterparts stage: semantic centres, noun selection and text-counterpart
retrieval (METHOD.md). Each function takes a setting for large collections
(a sampled centre fit, top-k retrieval) instead of a second implementation."""

from tacluster.counterparts.centres import (
    CENTRE_N_ITER,
    CENTRE_POINTS_PER_CENTRE,
    default_n_centres,
    semantic_centres,
)
from tacluster.counterparts.retrieval import RETRIEVAL_TOP, retrieval_weights, retrieve_counterparts
from tacluster.counterparts.selection import NounSelection, select_nouns

__all__ = [
    "CENTRE_N_ITER",
    "CENTRE_POINTS_PER_CENTRE",
    "RETRIEVAL_TOP",
    "NounSelection",
    "default_n_centres",
    "retrieval_weights",
    "retrieve_counterparts",
    "select_nouns",
    "semantic_centres",
]
