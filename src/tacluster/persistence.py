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
from tacluster.errors import InputError, ModelFileError

MODEL_FORMAT = "tacluster-model"
MODEL_FORMAT_VERSION = 1


def save_model(model, path, *, metadata: dict | None = None) -> Path:
    """Write a fitted ``TextAidedClustering`` to directory ``path`` (see the module docstring)."""
    from safetensors.numpy import save_file

    model._check_fitted()
    out = Path(path)
    arrays: dict[str, np.ndarray] = {}
    if model.cluster_centers_ is not None:
        arrays["cluster_centers"] = model.cluster_centers_
    if model.kept_noun_embeddings_ is not None:
        arrays["kept_noun_embeddings"] = model.kept_noun_embeddings_
        arrays["kept_noun_indices"] = model.kept_noun_indices_
    for prefix, head in (("image_head.", model.image_head_), ("text_head.", model.text_head_)):
        if head is not None:
            for key, val in head.state_dict().items():
                arrays[prefix + key] = val.detach().cpu().numpy()
    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    params = {k: _plain(v) for k, v in model.get_params().items()}
    if not isinstance(params["random_state"], (int, type(None))):
        params["random_state"] = None
    choice = getattr(model, "choice_", None)
    if model.method == "auto" and choice is not None:
        # A saved "auto" model is the candidate it chose: load() rebuilds that method.
        params.update({k: _plain(v) for k, v in choice.params.items()})
    config = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "tacluster_version": _version(),
        "params": params,
        "n_clusters": int(model.n_clusters_),
        "n_features_in": int(model.n_features_in_),
        "n_joint_features": None if model.n_joint_features_ is None else int(model.n_joint_features_),
        "text_head_in": None if model.text_head_ is None else int(model.n_joint_features_),
        "kept_nouns": list(model.kept_nouns_),
        "text_weight_used": model.text_weight_,
        "large_scale_used": bool(getattr(model, "large_scale_", False)),
        **({"method_choice": {"chosen": choice.method, "scores": choice.scores, "criterion": choice.criterion}}
           if model.method == "auto" and choice is not None else {}),
        "metadata": metadata if metadata is not None else getattr(model, "metadata_", {}),
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
        model._check_params()
        _restore(model, config, arrays)
    except ModelFileError as exc:
        raise ModelFileError(f"model {str(d)!r}: {exc}; re-run `tacluster cluster` to rebuild it") from None
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ModelFileError(f"model in {str(d)!r} is inconsistent ({type(exc).__name__}: {exc})") from None
    return model


def _restore(model, config: dict, arrays: dict[str, np.ndarray]) -> None:
    from tacluster.train.heads import ClusterHead  # torch only when heads exist
    import torch

    model._loaded = True
    model.metadata_ = config.get("metadata") or {}
    model.n_features_in_ = int(config["n_features_in"])
    k_saved = config.get("n_clusters", model.n_clusters)
    if isinstance(k_saved, bool) or not isinstance(k_saved, int) or k_saved < 2:
        raise ModelFileError(f"config.json n_clusters={k_saved!r} is not an integer >= 2; the model is corrupted")
    model.n_clusters_ = k_saved
    model.auto_k_ = None
    nj = config.get("n_joint_features")
    model.n_joint_features_ = None if nj is None else int(nj)
    model.kept_nouns_ = list(config.get("kept_nouns", []))
    used = config.get("text_weight_used", None if model.text_weight == "auto" else model.text_weight)
    if model.method == "no-train" and used is None:
        raise ModelFileError("config.json lacks text_weight_used for a text_weight='auto' model")
    model.text_weight_ = None if used is None else float(used)
    model.large_scale_ = bool(config.get("large_scale_used", False))  # models before it: the exact path
    model.trust_ = None
    model.choice_ = None
    model.feature_power_ = float(model.feature_power)
    model.cluster_centers_ = arrays.get("cluster_centers")
    model.kept_noun_embeddings_ = arrays.get("kept_noun_embeddings")
    model.kept_noun_indices_ = arrays.get("kept_noun_indices", np.zeros(0, dtype=np.int64))
    model.image_head_ = model.text_head_ = None
    model.loss_history_ = []
    k = model.n_clusters_
    if model.method in ("kmeans", "no-train", "spectral"):
        c = model.cluster_centers_
        want = model.n_features_in_ + (model.n_joint_features_ or 0) * (model.method == "no-train")
        if c is None or c.shape != (k, want):
            raise ModelFileError(f"cluster_centers missing or of the wrong shape (want {(k, want)})")
    if model.method in ("tac", "no-train"):
        e = model.kept_noun_embeddings_
        if e is None or e.ndim != 2 or e.shape[1] != model.n_joint_features_ or len(model.kept_nouns_) != e.shape[0]:
            raise ModelFileError("kept noun embeddings missing or inconsistent with config.json")
    if model.method == "tac":
        heads = []
        for prefix, width in (("image_head.", model.n_features_in_), ("text_head.", int(config["text_head_in"]))):
            head = ClusterHead(width, k)
            state = {key[len(prefix):]: torch.from_numpy(v.copy()) for key, v in arrays.items() if key.startswith(prefix)}
            head.load_state_dict(state, strict=True)
            heads.append(head.eval())
        model.image_head_, model.text_head_ = heads
    for a in (model.cluster_centers_, model.kept_noun_embeddings_):
        if a is not None and not np.isfinite(a).all():
            raise ModelFileError("model arrays hold NaN or inf values")


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
