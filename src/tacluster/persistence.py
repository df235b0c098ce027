"""Saving and loading a fitted ``TextAidedClustering``: a directory holding
``config.json`` (parameters, kept nouns, what the fit chose) and
``arrays.safetensors`` (centroids, kept noun embeddings, head weights). No
pickle: loading never executes anything from the directory, and a corrupted or
inconsistent directory is a :class:`~tacluster.errors.ModelFileError`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tacluster._atomic import atomic_write
from tacluster._validation import check_n_clusters
from tacluster.errors import InputError, ModelFileError

MODEL_FORMAT = "tacluster-model"
MODEL_FORMAT_VERSION = 1


def save_model(est, path, *, metadata: dict | None = None) -> Path:
    """Write a fitted ``TextAidedClustering`` to directory ``path`` (see the module docstring):
    the estimator's settings and what its fit resolved, then its model's own arrays and config."""
    from safetensors.numpy import save_file

    est._check_fitted()
    out = Path(path)
    arrays = {k: np.ascontiguousarray(v) for k, v in est.model_.arrays().items()}
    params = {k: _plain(v) for k, v in est.get_params().items()}
    if not isinstance(params["random_state"], (int, type(None))):
        params["random_state"] = None
    choice = getattr(est, "choice_", None)
    if choice is not None:  # a saved "auto" model is the candidate it chose: load() rebuilds that method
        params.update({k: _plain(v) for k, v in choice.params.items()})
    config = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "tacluster_version": _version(),
        "params": params,
        "n_clusters": int(est.n_clusters_),
        "n_features_in": int(est.n_features_in_),
        "n_joint_features": None,
        "text_head_in": None,
        "kept_nouns": [],
        "text_weight_used": est.text_weight_,
        "large_scale_used": bool(getattr(est, "large_scale_", False)),
        **est.model_.config(),
        **({"method_choice": {"chosen": choice.method, "scores": choice.scores, "criterion": choice.criterion}}
           if choice is not None else {}),
        "metadata": metadata if metadata is not None else getattr(est, "metadata_", {}),
    }
    # Everything is checked before the first byte is written: a model
    # directory is either whole or untouched.
    try:
        config_text = json.dumps(config, indent=2, default=_plain_or_raise)
    except (TypeError, ValueError) as exc:
        raise InputError(f"cannot save the model: params or metadata are not JSON-serialisable ({exc})") from None
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "arrays.safetensors", lambda p: save_file(arrays, str(p)))
    atomic_write(out / "config.json", lambda p: p.write_text(config_text))
    return out


def load_model(cls, path):
    """Rebuild a saved model from ``config.json`` + ``arrays.safetensors``.

    Never unpickles or executes anything from the directory. Raises
    :class:`ModelFileError` when files are missing, corrupted or
    inconsistent.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    d = Path(path)
    cfg_path, arr_path = d / "config.json", d / "arrays.safetensors"
    if not d.is_dir():
        raise ModelFileError(f"model directory {str(d)!r} does not exist")
    for p in (cfg_path, arr_path):
        if not p.is_file():
            raise ModelFileError(f"{p.name} is missing from model directory {str(d)!r}; it is not a tacluster model")
    try:
        config = json.loads(cfg_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{cfg_path} is not valid JSON ({exc}); the model is corrupted") from None
    if not isinstance(config, dict) or config.get("format") != MODEL_FORMAT:
        raise ModelFileError(f"{cfg_path} is not a tacluster model config")
    if config.get("format_version") != MODEL_FORMAT_VERSION:
        raise ModelFileError(
            f"{cfg_path} has format_version {config.get('format_version')!r}; this tacluster reads "
            f"{MODEL_FORMAT_VERSION}"
        )
    try:
        arrays = load_file(str(arr_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{arr_path} is corrupted ({exc})") from None
    try:
        params = dict(config["params"])
        if isinstance(params.get("k_range"), list):  # JSON has no tuples
            params["k_range"] = tuple(params["k_range"])
        model = cls(**params)
        model.validate_params()
        _restore(model, config, arrays)
    except ModelFileError as exc:
        raise ModelFileError(f"model {str(d)!r}: {exc}; re-run `tacluster cluster` to rebuild it") from None
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ModelFileError(f"model in {str(d)!r} is inconsistent ({type(exc).__name__}: {exc})") from None
    return model


def _restore(est, config: dict, arrays: dict[str, np.ndarray]) -> None:
    """The saved model (its class's ``from_saved``) and what the estimator's fit had resolved."""
    from tacluster.methods import load_saved_model

    try:
        k_saved = check_n_clusters(config.get("n_clusters", est.n_clusters), name="config.json n_clusters")
    except InputError as exc:
        raise ModelFileError(f"{exc}; the model is corrupted") from None
    config = {**config, "n_clusters": k_saved, "n_features_in": int(config["n_features_in"])}
    params = est.get_params()
    model = load_saved_model(config, arrays, params)
    for a in model.arrays().values():
        if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
            raise ModelFileError("model arrays hold NaN or inf values")
    est.model_, est.metadata_ = model, config.get("metadata") or {}
    est.n_features_in_, est.n_clusters_ = config["n_features_in"], k_saved
    est.auto_k_ = est.trust_ = est.choice_ = None
    used = config.get("text_weight_used", None if est.text_weight == "auto" else est.text_weight)
    est.text_weight_ = None if used is None else float(used)
    est.large_scale_ = bool(config.get("large_scale_used", False))  # models before it: the exact path
    est.feature_power_ = float(model.feature_power)
    est.loss_history_ = []


def _plain(value):
    """numpy scalars (np.int64(10) is a valid K) and tuples as plain JSON values."""
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _plain_or_raise(value):
    plain = _plain(value)
    if plain is value:
        raise TypeError(f"{type(value).__name__} {value!r} is not JSON-serialisable")
    return plain


def _version() -> str:
    from tacluster import __version__

    return __version__
