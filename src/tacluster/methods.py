"""The methods the estimator can fit: each one's fitter, the settings only it
uses, and the model kinds a saved model may hold.

A fitter is called as ``fitter(u, k, **settings)``: the power view ``u`` of the
images, K, and every estimator parameter its signature names (same name), plus
``large``, ``seed``, ``timings`` and, for the text methods, ``text`` (the
fitted :class:`tacluster.counterparts.side.TextFit`). So a setting reaches a
method exactly when its fitter takes it. Fitters load lazily: ``"tac"`` needs
torch's training code, the others do not.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable, Mapping

import numpy as np

from tacluster.errors import InputError, ModelFileError

#: method -> "module:function" of its fitter (returns a :class:`tacluster.cluster.model.Fitted`).
FITTERS = {
    "kmeans": "tacluster.cluster.fit:fit_kmeans",
    "no-train": "tacluster.cluster.fit:fit_kmeans",
    "spectral": "tacluster.cluster.fit:fit_spectral",
    "tac": "tacluster.train.model:fit_tac",
}
METHODS = (*FITTERS, "auto")
#: Methods fitted on the images and their text counterparts (they need the noun bank).
TEXT_METHODS = ("tac", "no-train")
#: The methods whose final k-means ``consensus`` replaces (``"auto"``: its k-means candidate).
CONSENSUS_METHODS = ("kmeans", "no-train", "auto")
#: Model kind (``config.json`` "model") -> "module:class" with ``from_saved``.
MODEL_KINDS = {
    "centroids": "tacluster.cluster.model:CentroidModel",
    "heads": "tacluster.train.model:HeadsModel",
}
#: The kind of model each method's fitter returns.
MODEL_OF = {"kmeans": "centroids", "no-train": "centroids", "spectral": "centroids", "tac": "heads"}


def _load(ref: str) -> Any:
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


def _named(fn: Callable) -> set[str]:
    return set(inspect.signature(fn).parameters)


def call_with_settings(fn: Callable, args: tuple, params: Mapping[str, Any], **fixed) -> Any:
    """``fn(*args, ...)`` given every setting of ``params`` its signature names (same name), and
    those of ``fixed`` it names (they win over ``params``)."""
    names = _named(fn)
    return fn(*args, **{name: params[name] for name in names if name in params and name not in fixed},
              **{name: v for name, v in fixed.items() if name in names})


def fit_method(method: str, u, k: int, params: Mapping[str, Any], **fixed) -> Any:
    """Fit ``method`` on ``u`` with K = ``k``: its fitter gets the settings it names from ``params``."""
    return call_with_settings(_load(FITTERS[method]), (u, k), params, **fixed)


def load_saved_model(config: Mapping[str, Any], arrays: Mapping[str, np.ndarray], params: Mapping[str, Any]) -> Any:
    """The model of a saved config, checked against the method it was saved with (its kind, and
    a text side exactly for :data:`TEXT_METHODS`); saved before "model" existed: the method's kind."""
    method = params["method"]
    kind = config.get("model", MODEL_OF[method])
    if kind != MODEL_OF[method]:
        raise ModelFileError(f"config.json holds a {kind!r} model, but method={method!r} fits a "
                             f"{MODEL_OF[method]!r} one")
    return _load(MODEL_KINDS[kind]).from_saved(config, arrays, params, text=method in TEXT_METHODS)


#: Settings every fit reads, or that say how rather than what it runs (the device, the progress bar).
COMMON_SETTINGS = ("n_clusters", "method", "random_state", "large_scale", "device", "verbose")


def settings_used(method: str, n_clusters) -> set[str]:
    """The estimator settings a fit of ``method`` reads (``"auto"``: those of its candidates)."""
    if method == "auto":
        from tacluster.choices.choose_method import IMAGE_CANDIDATES

        return set().union(*(settings_used(c["method"], n_clusters) for c in IMAGE_CANDIDATES.values()))
    from tacluster.counterparts.side import fit_text_side

    names = _named(_load(FITTERS[method]))
    if method in TEXT_METHODS:  # the text side is fitted first, with the settings it names
        names |= _named(fit_text_side)
    else:  # fit_kmeans weighs a text side for "no-train" only
        names.discard("text_weight")
    return names | set(COMMON_SETTINGS) | ({"k_range"} if n_clusters == "auto" else set())


def unused_settings(params: Mapping[str, Any], defaults: Mapping[str, Any]) -> list[str]:
    """One line per setting changed from its default that the fit will not read."""
    method = params["method"]
    used = settings_used(method, params["n_clusters"])
    lines = []
    for name, value in params.items():
        if name in used or _same(value, defaults[name]):
            continue
        users = [m for m in FITTERS if name in settings_used(m, "auto")]
        where = "only when n_clusters='auto'" if name == "k_range" else f"by method {' / '.join(map(repr, users))}"
        lines.append(f"{name}={value!r} is not used by method={method!r} (it is read {where}); "
                     "this fit runs as if it were not given")
    return lines


def _same(a: Any, b: Any) -> bool:
    """Equal as settings: sequences element by element (a tuple from the code, a list from JSON)."""
    if isinstance(a, (list, tuple, np.ndarray)) or isinstance(b, (list, tuple, np.ndarray)):
        return a is not None and b is not None and list(np.ravel(a)) == list(np.ravel(b))
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def collapse_message(found: int, text_head: int | None, k: int, method: str, balance_weight: float) -> str | None:
    """Why a fit is suspect, or None: fewer than ``k`` distinct clusters came out (``text_head``:
    the clusters the text head uses, for a model with heads)."""
    if text_head is not None:
        if found >= k and text_head >= k:
            return None
        return (f"the trained heads collapsed: the image head puts the images in {found} and the text head in "
                f"{text_head} of the n_clusters={k} clusters asked for; try a larger balance_weight (now "
                f"{balance_weight:g}), more epochs, or fewer clusters")
    if found >= k:
        return None
    return (f"the fit produced {found} distinct clusters of the n_clusters={k} asked for (method={method!r}); "
            "the data holds fewer distinct groups than that: ask for fewer clusters")


def check_combinations(params: Mapping[str, Any]) -> None:
    """The rules between settings (each setting alone is the estimator's ``_parameter_constraints``)."""
    method, consensus = params["method"], params["consensus"]
    if params["noun_pool"] < params["nouns_per_centre"]:
        raise InputError(f"noun_pool={params['noun_pool']} must be >= nouns_per_centre={params['nouns_per_centre']}")
    if consensus == 1:
        raise InputError("consensus=1 combines nothing; use 0 (best of the restarts) or >= 2 partitions, e.g. 20")
    if consensus >= 2 and method not in CONSENSUS_METHODS:
        raise InputError(f"consensus={consensus} combines k-means runs, which method={method!r} does not make; "
                         f"use it with method {' / '.join(map(repr, CONSENSUS_METHODS))}, or drop it")
    views = params["spectral_views"]
    if views is not None:
        flat = np.asarray(views, dtype=object).ravel()
        if not len(flat) or not all(isinstance(p, (int, float, np.number)) and not isinstance(p, bool) and p > 0
                                    for p in flat):
            raise InputError(f"spectral_views={views!r} must be a non-empty list of positive feature powers, "
                             "e.g. [1.0, 0.5]")
    for name in ("spectral_views", "spectral_refine"):
        if params[name] not in (None, False) and method != "spectral":
            why = ("is chosen by method='auto' (its graph candidate uses views [1, 0.5], refined)"
                   if method == "auto" else f"shapes the graph cut of method='spectral', which "
                   f"method={method!r} does not make")
            raise InputError(f"{name}={params[name]!r} {why}; drop it, or use method='spectral'")
    if method == "auto" and params["feature_power"] != 1.0:
        raise InputError(f"feature_power={params['feature_power']} is chosen by method='auto' (its candidates use 1 "
                         "and 0.5); drop it, or give a method such as 'spectral'")
    if params["device"] == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise InputError("device='cuda' was asked for but no CUDA GPU is available; use 'cpu' or 'auto'")
