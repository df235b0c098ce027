"""tacluster's exception hierarchy.

Every error tacluster raises on purpose is a :class:`TaclusterError`. Each
subclass also inherits the matching builtin, so callers may catch either
(``except ValueError`` keeps working).
"""

from __future__ import annotations

from sklearn.exceptions import NotFittedError as _SklearnNotFittedError


class TaclusterError(Exception):
    """Base class of every error tacluster raises on purpose."""


class InputError(TaclusterError, ValueError):
    """Input data or a parameter is invalid; the message names the fix."""


class NotFittedError(TaclusterError, _SklearnNotFittedError):
    """A method that needs a fitted estimator was called before ``fit``
    (also a :class:`sklearn.exceptions.NotFittedError`, hence a ValueError)."""


class ModelFileError(TaclusterError, ValueError):
    """A saved model directory is missing, corrupted, or incompatible."""


class BackboneError(TaclusterError, RuntimeError):
    """A backbone cannot be loaded or used (unknown name, missing extra, ...)."""


class CacheError(TaclusterError, RuntimeError):
    """An embedding cache is unusable (corrupted shard, wrong fingerprint, ...)."""


class DependencyError(TaclusterError, RuntimeError):
    """A required package is missing or too old; the message names the upgrade."""


class CollapseWarning(UserWarning):
    """A fit produced fewer distinct clusters than were asked for, or TAC's trained
    heads collapsed onto fewer clusters (as scikit-learn's ``ConvergenceWarning``:
    the result is usable, but not what the settings asked for)."""


class UnusedSettingWarning(UserWarning):
    """A setting was changed from its default but the method being fitted never reads it
    (e.g. ``n_epochs`` with ``method="kmeans"``): the fit runs as if it were not given."""
