"""Backbone registry: one name string picks a backbone.

Names have the form ``<scheme>`` or ``<scheme>:<argument>``:

``lite`` / ``lite:<spec>``
    The offline EfficientNet-Lite backbone (:class:`~tacluster.backbones.lite.LiteBackbone`).
``openclip:<arch>/<pretrained>``
    An OpenCLIP model. ``<arch>`` is an open_clip architecture name (no ``/``);
    everything after the *first* ``/`` is the weights: a checkpoint **path** when
    it contains a ``/`` or ends in ``.pt``, ``.pth``, ``.bin`` or
    ``.safetensors``, otherwise a pretrained **tag** looked up in open_clip's
    cache (never downloaded)::

        openclip:ViT-B-32/openai                  # tag, must already be cached
        openclip:ViT-B-32//data/ckpt/vitb32.pt    # absolute path (note the //)
        openclip:ViT-B-32/./vitb32.safetensors    # relative path

``openclip:local-dir:<dir>``
    open_clip's own folder format: ``<dir>/open_clip_config.json`` plus the
    weights file beside it.
``hf:<model id or local directory>``
    A Hugging Face ``CLIPModel``; an existing directory is loaded from disk, a
    model id only from the local Hugging Face cache (never downloaded).

New backbones are added with :func:`register_backbone`; callers never change.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from typing import Callable, Union

from tacluster.backbones.base import PROMPT_TEMPLATES, Backbone, NounBank
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
#: ``argument`` is the part of the name after ``<scheme>:`` ("" when absent).
Factory = Callable[..., Backbone]

# Factories are data ("module:function" strings) so that registering a
# backbone imports nothing: torch/open_clip/transformers load only on use.
_REGISTRY: dict[str, Union[str, Factory]] = {
    "lite": "tacluster.backbones:_load_lite",
    "openclip": "tacluster.backbones.openclip:load",
    "hf": "tacluster.backbones.hf:load",
}


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
    """Return the registered schemes, sorted (``["hf", "lite", "openclip"]``)."""
    return sorted(_REGISTRY)


def resolve_device(device: str) -> str:
    """Map ``"cpu" | "cuda" | "auto"`` to a concrete torch device string.

    ``"auto"`` picks ``"cuda"`` when torch sees a GPU. ``"cuda:N"`` is accepted.

    Raises
    ------
    BackboneError
        For an unknown device, or ``cuda`` requested where torch sees no GPU.
    """
    if not isinstance(device, str):
        raise BackboneError(f"device={device!r} is invalid: use 'cpu', 'cuda' or 'auto'")
    dev = device.strip().lower()
    if dev == "cpu":
        return "cpu"
    if dev != "auto" and dev != "cuda" and not dev.startswith("cuda:"):
        raise BackboneError(f"device={device!r} is invalid: use 'cpu', 'cuda' or 'auto'")
    import torch

    has_cuda = torch.cuda.is_available()
    if dev == "auto":
        return "cuda" if has_cuda else "cpu"
    if not has_cuda:
        raise BackboneError(
            f"device={device!r} was requested but torch sees no CUDA GPU "
            f"(torch {torch.__version__}); use device='cpu' or 'auto'"
        )
    return dev


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


def load_backbone(name: str = "lite", device: str = "cpu") -> Backbone:
    """Build the backbone that ``name`` describes, on ``device``.

    Parameters
    ----------
    name : str
        A registry name, see the module docstring (``"lite"``,
        ``"openclip:ViT-B-32//path/ckpt.pt"``, ``"hf:/path/to/clip"``).
    device : {"cpu", "cuda", "auto"}
        ``"auto"`` uses CUDA when available.

    Returns
    -------
    Backbone
        In eval mode, on ``device``.

    Raises
    ------
    BackboneError
        Unknown scheme (the message lists the known ones), weights not found,
        missing optional package, or an unusable device.
    """
    if not isinstance(name, str) or not name.strip():
        raise BackboneError(
            f"backbone name {name!r} is invalid: use one of {available_backbones()}, "
            "e.g. 'lite' or 'hf:/path/to/clip'"
        )
    scheme, _, argument = name.strip().partition(":")
    if scheme not in _REGISTRY:
        raise BackboneError(
            f"unknown backbone {name!r}: the scheme {scheme!r} is not registered; "
            f"known schemes: {', '.join(available_backbones())} "
            "(e.g. 'lite', 'openclip:ViT-B-32//path/ckpt.pt', 'hf:/path/to/clip')"
        )
    resolved = resolve_device(device)
    return _resolve_factory(scheme)(argument, device=resolved)


def _load_lite(spec: str, device: str = "cpu") -> Backbone:
    # Imported here: the lite module pulls in torch and the EfficientNet weights.
    from tacluster.backbones.lite import LiteBackbone

    backbone = LiteBackbone.from_spec(spec)
    return backbone.to(device)


# Files up to this size are hashed whole (64 MiB hashes in about 0.1 s).
_FULL_HASH_LIMIT = 64 << 20
_SAMPLE = 4 << 20


def file_digest(path: Union[str, os.PathLike]) -> str:
    """sha256 hex digest identifying a weights file, cheap for large files.

    Files up to 64 MiB are hashed whole. Larger ones hash their size plus
    three 4 MiB samples (start, middle, end): a 600 MB ViT-B/32 checkpoint is
    identified in milliseconds rather than a second per load, and, unlike an
    mtime, the digest survives copying the file, so the noun-bank cache stays
    valid. Two trained checkpoints of one architecture differ in every
    sample, so the chance of a collision is negligible in practice.
    """
    h = hashlib.sha256()
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        if size <= _FULL_HASH_LIMIT:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        else:
            h.update(f"size={size}".encode())
            for offset in (0, size // 2 - _SAMPLE // 2, size - _SAMPLE):
                f.seek(offset)
                h.update(f.read(_SAMPLE))
    return h.hexdigest()
