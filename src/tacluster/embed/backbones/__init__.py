"""Backbone registry: one name string picks a backbone.

Names have the form ``<scheme>`` or ``<scheme>:<argument>``:

``lite`` / ``lite:<spec>``
    The offline EfficientNet-Lite backbone (:class:`~tacluster.embed.backbones.lite.LiteBackbone`).
``clip``, ``clip-l``, ``siglip``, ``siglip2``
    Short names of Hub models (:mod:`tacluster.embed.backbones.catalog`): the paper's
    CLIP ViT-B/32, CLIP ViT-L/14, SigLIP and SigLIP 2 base.
``hf:<model id or local directory>[@revision]``
    A Hugging Face image-text model (CLIP, SigLIP, ...); an existing directory
    is loaded from disk, a model id is fetched into the Hugging Face cache on
    first use.
``openclip:<arch>/<pretrained>``
    An OpenCLIP model. ``<arch>`` is an open_clip architecture name (no ``/``);
    everything after the *first* ``/`` is the weights: a checkpoint **path** when
    it contains a ``/`` or ends in ``.pt``, ``.pth``, ``.bin`` or
    ``.safetensors``, otherwise a pretrained **tag**, downloaded by open_clip
    into its cache on first use::

        openclip:ViT-B-32/openai                  # tag
        openclip:ViT-B-16-SigLIP/webli            # open_clip's SigLIP
        openclip:ViT-B-32//data/ckpt/vitb32.pt    # absolute path (note the //)
        openclip:ViT-B-32/./vitb32.safetensors    # relative path

``openclip:hf-hub:<org>/<repo>``
    An open_clip model published on the Hub (``open_clip_config.json`` + weights).
``openclip:local-dir:<dir>``
    open_clip's own folder format: ``<dir>/open_clip_config.json`` plus the
    weights file beside it.

Downloads honour ``offline=True`` (``--offline``) and ``HF_HUB_OFFLINE=1``:
then only the caches are read, and a missing model is a one-line
:class:`~tacluster.errors.BackboneError` that says how to pre-fetch it.

New backbones are added with :func:`register_backbone`; callers never change.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
from typing import Callable, Union

from tacluster._device import resolve_device
from tacluster.embed.backbones.base import PROMPT_TEMPLATES, Backbone, NounBank
from tacluster.embed.backbones.catalog import CARDS
from tacluster.errors import BackboneError

__all__ = [
    "PROMPT_TEMPLATES",
    "Backbone",
    "NounBank",
    "available_backbones",
    "file_digest",
    "load_backbone",
    "register_backbone",
    "resolve_device",
]

#: A factory is called as ``factory(argument, device=device)`` where
#: ``argument`` is the part of the name after ``<scheme>:`` ("" when absent);
#: factories that accept an ``offline`` keyword also get it.
Factory = Callable[..., Backbone]

# Factories are data ("module:function" strings) so that registering a
# backbone imports nothing: torch/open_clip/transformers load only on use.
_REGISTRY: dict[str, Union[str, Factory]] = {
    "lite": "tacluster.embed.backbones:_load_lite",
    "openclip": "tacluster.embed.backbones.openclip:load",
    "hf": "tacluster.embed.backbones.hf:load",
}
for _short in CARDS:  # the short names: one entry per model card
    _REGISTRY[_short] = "tacluster.embed.backbones:_load_short"


def register_backbone(scheme: str, factory: Union[str, Factory]) -> None:
    """Register (or replace) the factory for names ``<scheme>[:<argument>]``.

    Parameters
    ----------
    scheme : str
        Name prefix, letters/digits/``_``/``-`` only (no ``:``).
    factory : str or callable
        ``"package.module:function"`` (imported on first use) or a callable,
        called as ``factory(argument, device=device)`` and returning a
        :class:`Backbone`.
    """
    if not scheme or not scheme.replace("_", "").replace("-", "").isalnum():
        raise BackboneError(
            f"backbone scheme {scheme!r} is invalid: use letters, digits, '_' or '-'"
        )
    if isinstance(factory, str):
        if ":" not in factory:
            raise BackboneError(
                f"factory {factory!r} for scheme {scheme!r} must look like 'package.module:function'"
            )
    elif not callable(factory):
        raise BackboneError(f"factory for scheme {scheme!r} must be callable or an import path")
    _REGISTRY[scheme] = factory


def available_backbones() -> list[str]:
    """Return the registered schemes and short names, sorted (``["clip", "clip-l", "hf", ...]``)."""
    return sorted(_REGISTRY)


def _resolve_factory(scheme: str) -> Factory:
    factory = _REGISTRY[scheme]
    if callable(factory):
        return factory
    module_name, _, attr = factory.partition(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise BackboneError(
            f"backbone scheme {scheme!r}: cannot import its factory {factory!r} ({exc})"
        ) from exc


def load_backbone(name: str = "lite", device: str = "cpu", offline: bool | None = None) -> Backbone:
    """Build the backbone that ``name`` describes, on ``device``.

    Parameters
    ----------
    name : str
        A registry name, see the module docstring (``"lite"``,
        ``"openclip:ViT-B-32//path/ckpt.pt"``, ``"hf:/path/to/clip"``).
    device : {"cpu", "cuda", "auto"}
        ``"auto"`` uses CUDA when available.
    offline : bool or None
        Never download weights; read the caches only (``HF_HUB_OFFLINE=1``
        does the same). Named models are otherwise fetched on first use.

    Returns
    -------
    Backbone
        In eval mode, on ``device``.

    Raises
    ------
    BackboneError
        Unknown scheme (the message lists the known ones), weights not found,
        or a missing optional package.
    InputError
        An unusable device.
    """
    if not isinstance(name, str) or not name.strip():
        raise BackboneError(
            f"backbone name {name!r} is invalid: use one of {available_backbones()}, "
            "e.g. 'lite', 'clip' or 'hf:/path/to/clip'"
        )
    scheme, _, argument = name.strip().partition(":")
    if scheme not in _REGISTRY:
        raise BackboneError(
            f"unknown backbone {name!r}: the scheme {scheme!r} is not registered; "
            f"known schemes: {', '.join(available_backbones())} "
            "(e.g. 'lite', 'clip', 'siglip', 'openclip:ViT-B-32/openai', 'hf:openai/clip-vit-base-patch32'); "
            "`tacluster backbones` lists them"
        )
    resolved = resolve_device(device)
    factory = _resolve_factory(scheme)
    if scheme in CARDS:
        if argument:
            raise BackboneError(f"backbone {name!r}: the short name {scheme!r} takes no ':' argument")
        return factory(scheme, device=resolved, offline=offline)
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    if "offline" in params:
        return factory(argument, device=resolved, offline=offline)
    return factory(argument, device=resolved)


def _load_short(short: str, device: str = "cpu", offline: bool | None = None) -> Backbone:
    from tacluster.embed.backbones.hf import HFTwoTowerBackbone

    return HFTwoTowerBackbone(CARDS[short].repo_id, device=device, offline=offline, name=short)


def _load_lite(spec: str, device: str = "cpu") -> Backbone:
    # Imported here: the lite module pulls in torch and the EfficientNet weights.
    from tacluster.embed.backbones.lite import LiteBackbone

    backbone = LiteBackbone.from_spec(spec)
    return backbone.to(device)


def file_digest(path: Union[str, os.PathLike]) -> str:
    """sha256 hex digest of a whole weights file, remembered by path, size and mtime.

    Every byte counts (a checkpoint changed anywhere gets a new digest, so
    embeddings cached under the old one are never reused). Hashing a 600 MB
    ViT-B/32 takes about a second, so the digest is kept in
    ``<tacluster cache>/digests/`` under the file's real path, size and
    modification time, and a later load of the same file reads it back.
    """
    real = os.path.realpath(path)
    st = os.stat(real)
    key = hashlib.sha256(f"{real}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()
    memo = _digest_dir() / f"{key}.sha256"
    try:
        known = memo.read_text(encoding="ascii").strip()
        if len(known) == 64:
            return known
    except (OSError, UnicodeDecodeError):
        pass
    h = hashlib.sha256()
    with open(real, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    try:  # a read-only cache only costs the hashing next time
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_name(f".{memo.name}.{os.getpid()}.tmp")
        tmp.write_text(digest, encoding="ascii")
        os.replace(tmp, memo)
    except OSError:
        pass
    return digest


def _digest_dir():
    from tacluster.nouns.bank import default_cache_dir

    return default_cache_dir() / "digests"
