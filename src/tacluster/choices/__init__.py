"""The label-free choices, one layer above the stages and below the estimator:
the number of clusters (``choose_k``), the method (``choose_method``: it fits
its candidates through the fit function its caller passes) and the text weight
(``text_weight``, "trust"). They call stage functions only, never the estimator."""

from tacluster.choices.choose_k import AutoKResult, estimate_n_clusters, search_range
from tacluster.choices.choose_method import MethodChoice, choose_method
from tacluster.choices.text_weight import TrustDecision, choose_text_weight

__all__ = [
    "AutoKResult",
    "MethodChoice",
    "TrustDecision",
    "choose_method",
    "choose_text_weight",
    "estimate_n_clusters",
    "search_range",
]
