"""Fitted cluster models: what a method's fitter returns and ``predict`` calls.

Every model answers ``assign(u, joint)`` (labels, confidence, probabilities)
for images it has never seen exactly as its fit assigned its own, and gives
its arrays and config for saving (``tacluster.persistence`` saves any model
alike). :class:`CentroidModel` serves ``"kmeans"``, ``"spectral"`` and
``"no-train"``; the heads of ``"tac"`` are :class:`tacluster.train.model.HeadsModel`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple, Protocol

import numpy as np

from tacluster._blocks import PowerRows, power_normalise
from tacluster.cluster.kmeans import assign as assign_rows
from tacluster.counterparts.side import TextSide
from tacluster.errors import ModelFileError


class Assignment(NamedTuple):
    """Cluster of each row, its probability, and (small collections) every cluster's."""

    labels: np.ndarray
    confidence: np.ndarray
    probabilities: np.ndarray | None = None


class ClusterModel(Protocol):
    """What the estimator keeps from a fit and the persistence saves (and rebuilds with the
    class method ``from_saved(config, arrays, params, *, text)``)."""

    kind: ClassVar[str]
    n_clusters: int
    n_features_in: int
    feature_power: float
    text: TextSide | None
    needs_joint: bool  # whether assign reads the images in the noun space

    def assign(self, u, joint=None, *, proba: bool = False) -> Assignment: ...
    def features(self, u, joint=None) -> tuple[list, list[float]]: ...
    def arrays(self) -> dict[str, np.ndarray]: ...
    def config(self) -> dict: ...


@dataclass
class Fitted:
    """A fitter's result: the model, the fitted rows' assignment, and what only the fit saw."""

    model: ClusterModel
    assignment: Assignment
    info: dict = field(default_factory=dict)

    @property
    def labels_(self) -> np.ndarray:
        """The fitted rows' clusters (what :func:`tacluster.choices.choose_method.choose_method` scores)."""
        return self.assignment.labels


def image_view(u, power: float, *, lazy: bool = False):
    """``u`` after the ``feature_power`` normalisation (``u`` itself at 1); ``lazy``: a
    :class:`tacluster._blocks.PowerRows` view (same values, computed per block)."""
    if power == 1.0:
        return u
    return PowerRows(u, power) if lazy else power_normalise(u, power)


@dataclass
class CentroidModel:
    """Nearest normalised centroid of ``[u, text_weight * s]`` (:func:`tacluster.cluster.kmeans.assign`).

    ``text`` and ``text_weight`` are set for ``"no-train"`` (centroids of
    width d + d_joint), None for the image-only methods.
    """

    kind: ClassVar[str] = "centroids"
    centroids: np.ndarray
    n_features_in: int
    feature_power: float = 1.0
    text: TextSide | None = None
    text_weight: float | None = None

    @property
    def n_clusters(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def needs_joint(self) -> bool:
        """Whether ``assign`` reads the images in the noun space (the text side)."""
        return self.text is not None

    def features(self, u, joint=None) -> tuple[list, list[float]]:
        """``(parts, weights)`` the centroids live on, for the power view ``u`` of the images."""
        if self.text is None:
            return [u], [1.0]
        return [u, self.text.counterparts(u if joint is None else joint)], [1.0, float(self.text_weight)]

    def assign(self, u, joint=None, *, proba: bool = False) -> Assignment:
        """Assign checked unit rows ``u`` (before ``feature_power``), in blocks."""
        parts, weights = self.features(image_view(u, self.feature_power, lazy=True), joint)
        return Assignment(*assign_rows(parts, self.centroids, weights=weights, proba=proba))

    def arrays(self) -> dict[str, np.ndarray]:
        return {"cluster_centers": self.centroids, **(self.text.arrays() if self.text is not None else {})}

    def config(self) -> dict:
        text = {**self.text.config(), "text_weight_used": self.text_weight} if self.text is not None else {}
        return {"model": self.kind, "feature_power": self.feature_power, **text}

    @classmethod
    def from_saved(cls, config: dict, arrays: dict[str, np.ndarray], params: dict, *, text: bool) -> "CentroidModel":
        """The saved model; ``text``: whether it was fitted with a text side (``"no-train"``)."""
        text = TextSide.from_saved(config, arrays, params["tau"]) if text else None
        weight = config.get("text_weight_used")
        if text is not None and weight is None:
            raise ModelFileError("config.json lacks text_weight_used for a text_weight='auto' model")
        d, k = int(config["n_features_in"]), int(config["n_clusters"])
        c = arrays.get("cluster_centers")
        want = (k, d + (text.width if text is not None else 0))
        if c is None or c.shape != want:
            raise ModelFileError(f"cluster_centers missing or of the wrong shape (want {want})")
        power = float(config.get("feature_power", params["feature_power"]))
        return cls(c, d, power, text, None if text is None else float(weight))
