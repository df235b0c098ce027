"""The one small interface every backbone implements.

A backbone turns decoded images into per-image arrays and words into vectors
in the same space as one of those arrays. Two spaces matter to TAC:

* ``"image"``: the image-side features that clustering uses (CLIP image
  embedding; EfficientNet-Lite visual features).
* ``"joint"``: the image represented in the *noun* space, the space of
  :meth:`Backbone.noun_bank` (for CLIP this is the image embedding itself; for
  the offline ``lite`` backbone it is a function of the class probabilities).

Every array is float32, one row per image, and L2-normalised row-wise unless
the backbone's docstring says otherwise.
"""

from __future__ import annotations

import abc
from typing import Sequence

import numpy as np

from tacluster.nouns.bank import PROMPT_TEMPLATES, NounBank, embed_with_templates

__all__ = ["PROMPT_TEMPLATES", "Backbone", "CLIPBackbone", "NounBank"]

class Backbone(abc.ABC):
    """A frozen model that embeds images and nouns.

    Subclasses set :attr:`name` to the registry string that rebuilds them
    (``"lite"``, ``"hf:/path/to/clip"``, ...) and :attr:`outputs` to the names of
    the arrays :meth:`encode_images` returns; ``"image"`` is always one of them,
    and ``"joint"`` is present when it differs from ``"image"``.
    """

    name: str = ""
    outputs: tuple[str, ...] = ("image",)
    #: The prompt templates :meth:`noun_bank` averages, when it takes a
    #: ``templates=`` argument (then a cheaper bank can rank the nouns,
    #: ``--noun-bank candidates``); None for a bank not built from templates.
    prompt_templates: tuple[str, ...] | None = None
    #: ``"float32"``, or ``"int8"`` on an int8 copy (:func:`tacluster.embed.precision.int8_image_backbone`);
    #: image vectors of another precision are cached apart (:func:`~tacluster.embed.precision.image_cache_key`).
    image_precision: str = "float32"

    @property
    @abc.abstractmethod
    def fingerprint(self) -> str:
        """Stable hex digest of everything that changes the outputs (weights,
        preprocessing, text side); used as the cache key."""

    @abc.abstractmethod
    def preprocess(self, image) -> "torch.Tensor":  # noqa: F821
        """Turn one RGB ``PIL.Image`` into a CHW float tensor ready to batch."""

    @abc.abstractmethod
    def encode_images(self, batch: "torch.Tensor") -> dict[str, np.ndarray]:  # noqa: F821
        """Embed a batch of preprocessed images (N, C, H, W).

        Returns a dict mapping each name in :attr:`outputs` to a float32 array
        of shape (N, d_name).
        """

    @abc.abstractmethod
    def noun_bank(self, words: Sequence[str], progress: bool = True) -> NounBank:
        """Embed ``words`` in the joint space (averaging the prompt templates
        where the backbone has a text encoder); ``progress`` shows a bar where
        the work is long. A backbone may drop words it cannot embed."""

    def to(self, device: str) -> "Backbone":
        """Move the model to ``device`` (``"cpu"``, ``"cuda"``); returns self."""
        return self


class CLIPBackbone(Backbone):
    """Shared part of the two-tower backbones (CLIP, SigLIP): images and nouns in one space.

    Subclasses hold ``self._model`` and ``self._device``, set
    ``text_batch_size`` and implement the two raw forwards,
    :meth:`_image_features` and :meth:`_text_features`; this class turns them
    into float32 unit rows.
    """

    outputs = ("image",)
    prompt_templates = PROMPT_TEMPLATES
    text_batch_size: int = 256
    #: Use the exact fast text path (:mod:`~tacluster.embed.backbones.text_prefix`)
    #: where the backbone has one; False runs the model's plain forward.
    prefix_reuse: bool = True
    _tower = None  # the fast text path, built on first use; False where there is none
    #: Top-level submodules of ``self._model`` the text features run through (int8 quantises
    #: their Linear layers: :func:`tacluster.nouns.precision.int8_text_backbone`).
    text_modules: tuple[str, ...] = ()
    #: ``"float32"``, or ``"int8"`` on an int8 copy; banks of another precision are cached apart.
    text_precision: str = "float32"
    #: Top-level submodules of ``self._model`` the image features run through (``--image-precision
    #: int8`` quantises their Linear layers: :func:`tacluster.embed.precision.int8_image_backbone`).
    image_modules: tuple[str, ...] = ()

    def _image_features(self, pixels: "torch.Tensor") -> "torch.Tensor":  # noqa: F821
        """Raw image embeddings (N, d) of preprocessed pixels already on the device."""
        raise NotImplementedError

    def _text_features(self, texts: list[str]) -> "torch.Tensor":  # noqa: F821
        """Raw text embeddings (N, d) of raw strings."""
        raise NotImplementedError

    def _text_tower(self):
        """The exact fast text path (a :class:`~tacluster.embed.backbones.text_prefix.CausalTextTower`),
        or None where the text tower is not one it reproduces (the default)."""
        return None

    def _token_ids(self, texts: list[str]) -> list[list[int]]:
        """``texts`` tokenised as :meth:`_text_features` tokenises them, one id list per text."""
        raise NotImplementedError

    def _fast_text_features(self, texts: list[str]):
        """Raw text embeddings from the fast path, or None where it does not apply."""
        if not self.prefix_reuse or self._tower is False:
            return None
        if self._tower is None:
            self._tower = self._text_tower() or False
            if self._tower is False:
                return None
        return self._tower.encode(self._token_ids(texts))

    def encode_images(self, batch: "torch.Tensor") -> dict[str, np.ndarray]:  # noqa: F821
        """Embed preprocessed images (N, 3, H, W): ``{"image": (N, d)}`` float32 unit rows."""
        import torch

        with torch.inference_mode():
            feats = self._image_features(batch.to(self._device, torch.float32))
        return {"image": _unit_rows(feats)}

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """Embed raw strings; shape (len(texts), d), float32 unit rows."""
        import torch

        texts = list(texts)
        with torch.inference_mode():
            feats = self._fast_text_features(texts)
            if feats is None:
                feats = self._text_features(texts)
        return _unit_rows(feats)

    def noun_bank(self, words: Sequence[str], progress: bool = True,
                  templates: Sequence[str] = PROMPT_TEMPLATES) -> NounBank:
        """The prompts of ``templates`` (TAC's 7) per word, embedded, normalised, averaged, normalised.

        Returns a :class:`NounBank` with ``embeddings`` of shape (n_words, d).

        On a busy machine (load average >= cores) the text tower runs on one
        torch thread: 2 threads spend their time waiting at barriers there
        (``benchmarks/nounbank_speed.py --model clip``, docs/scaling.md).
        """
        from tacluster._threads import one_thread_if_busy

        words = list(words)
        with one_thread_if_busy():
            emb = embed_with_templates(
                self.encode_text, words, templates, self.text_batch_size, progress, desc=self.name
            )
        return NounBank(words=words, embeddings=emb)

    def to(self, device: str) -> "CLIPBackbone":
        import torch

        self._device = torch.device(device)
        self._model.to(self._device)
        self._tower = None  # its cached prefix keys/values live on the old device
        return self


def _unit_rows(feats) -> np.ndarray:
    import torch

    feats = torch.nn.functional.normalize(feats.float(), dim=-1)
    return feats.cpu().numpy().astype(np.float32, copy=False)
