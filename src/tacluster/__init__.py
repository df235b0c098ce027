"""tacluster: image clustering with external guidance (Text-Aided Clustering)."""

from __future__ import annotations

from tacluster.errors import (
    BackboneError,
    CacheError,
    CollapseWarning,
    DependencyError,
    InputError,
    ModelFileError,
    NotFittedError,
    TaclusterError,
    UnusedSettingWarning,
)

__version__ = "0.1.0"

__all__ = [
    "BackboneError",
    "CacheError",
    "CollapseWarning",
    "DependencyError",
    "InputError",
    "ModelFileError",
    "NotFittedError",
    "TaclusterError",
    "TextAidedClustering",
    "UnusedSettingWarning",
    "__version__",
]


def __getattr__(name: str):  # lazy: keep `import tacluster` cheap (no torch/faiss)
    if name == "TextAidedClustering":
        from tacluster.estimator import TextAidedClustering

        return TextAidedClustering
    raise AttributeError(f"module 'tacluster' has no attribute {name!r}")
