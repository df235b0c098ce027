"""Hugging Face two-tower backbones (``hf:<model id or directory>[@revision]``).

Any ``transformers`` model with ``get_image_features`` and
``get_text_features`` works: CLIP, SigLIP, SigLIP 2 (fixed resolution), ALIGN
and their fine-tunes. The model, tokenizer and image processor are read from
one folder: an existing directory, or the snapshot of a Hub model id, which is
fetched into the Hugging Face cache on first use (:mod:`tacluster.embed.backbones.hub`;
``offline=True`` or ``HF_HUB_OFFLINE=1`` never downloads). Loading itself
always reads local files only.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from tacluster.embed.backbones import file_digest
from tacluster.embed.backbones.base import PROMPT_TEMPLATES, CLIPBackbone
from tacluster.nouns.bank import RANKING_TEMPLATES
from tacluster.errors import BackboneError

_INSTALL_HINT = "pip install 'tacluster[hf]'"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "spiece.model",
    "tokenizer.model",
)


def _import_transformers():
    try:
        import transformers
    except ImportError as exc:
        raise BackboneError(
            f"the 'hf' backbone needs the transformers package ({exc}); install it with {_INSTALL_HINT}"
        ) from exc
    return transformers


def _resolve_dir(source: str, offline: bool | None, name: str) -> Path:
    """An existing directory, or the (fetched on first use) snapshot of a Hub model id."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path.resolve()
    looks_like_path = source.startswith((".", "/", "~")) or source.count("/") > 1 or "\\" in source
    if looks_like_path:
        raise BackboneError(
            f"hf backbone: directory {source!r} does not exist; pass a folder written by "
            "save_pretrained (model, tokenizer and image processor), e.g. 'hf:/path/to/clip', "
            "or a Hub model id such as 'hf:openai/clip-vit-base-patch32'"
        )
    from tacluster.embed.backbones.hub import fetch_snapshot

    repo_id, _, revision = source.partition("@")
    return fetch_snapshot(repo_id, name=name, revision=revision or None, offline=offline)


#: Text padding per model type. SigLIP's text tower was trained on sequences
#: padded to its full length (64) and pools the last token, so shorter padding
#: changes its embeddings; CLIP pools the end-of-text token and pads to the
#: longest prompt in the batch.
_PAD_TO_MAX = {"siglip", "siglip2"}


def _features(output) -> "torch.Tensor":  # noqa: F821
    # transformers < 5 returns the projected tensor; 5.x a ModelOutput whose
    # pooler_output holds the projected embedding.
    if hasattr(output, "pooler_output"):
        return output.pooler_output
    return output


class HFTwoTowerBackbone(CLIPBackbone):
    """A ``transformers`` image-text model with its tokenizer and image processor.

    Parameters
    ----------
    source : str
        A directory written by ``save_pretrained``, or a Hub model id
        (``"openai/clip-vit-base-patch32"``, optionally ``@revision``),
        fetched into the Hugging Face cache on first use.
    device : str
        Torch device (``"cpu"``, ``"cuda"``).
    text_batch_size : int
        Words per text-encoder call when building a noun bank (x7 prompts).
    offline : bool or None
        Never download (``HF_HUB_OFFLINE=1`` does the same); a model missing
        from the cache is then a one-line :class:`BackboneError`.
    name : str or None
        The registry name to report (default ``hf:<source>``).

    Notes
    -----
    ``outputs`` is ``("image",)``: the image embedding already lives in the
    noun space, so there is no separate ``"joint"`` array.
    :attr:`retrieval_tau` scales TAC's retrieval temperature to the model's
    own learned logit scale (see its docstring).
    """

    outputs = ("image",)
    text_modules = ("text_model", "text_projection")
    image_modules = ("vision_model", "visual_projection")  # SigLIP has no visual_projection (its head is inside)

    def __init__(self, source: str, device: str = "cpu", text_batch_size: int = 256,
                 offline: bool | None = None, name: str | None = None):
        transformers = _import_transformers()
        import torch

        self.name = name or f"hf:{source}"
        self.text_batch_size = int(text_batch_size)
        self._dir = _resolve_dir(source, offline, self.name)
        if not (self._dir / "config.json").is_file():
            raise BackboneError(
                f"hf backbone: {self._dir} has no config.json; pass a folder written by "
                "save_pretrained (model, tokenizer and image processor)"
            )
        try:
            self._model = transformers.AutoModel.from_pretrained(self._dir, local_files_only=True)
            self._tokenizer = transformers.AutoTokenizer.from_pretrained(self._dir, local_files_only=True)
            self._processor = transformers.AutoImageProcessor.from_pretrained(
                self._dir, local_files_only=True
            )
        except (OSError, ValueError, KeyError, ImportError) as exc:
            raise BackboneError(
                f"hf backbone: cannot load a model, tokenizer and image processor from "
                f"{self._dir} ({' '.join(str(exc).split())[:300]}); the folder needs config.json, the "
                "weights, the tokenizer files and preprocessor_config.json"
            ) from exc
        for method in ("get_image_features", "get_text_features"):
            if not callable(getattr(self._model, method, None)):
                raise BackboneError(
                    f"hf backbone: {type(self._model).__name__} ({self._dir}) has no {method}(); "
                    "tacluster needs an image-text model such as CLIP or SigLIP"
                )
        self._model.eval()
        config = self._model.config
        self.model_type = str(getattr(config, "model_type", ""))
        self._pad_to_max = self.model_type in _PAD_TO_MAX
        # SigLIP 2 (Gemma tokenizer) was trained on lower-cased text.
        self._lowercase = self.model_type == "siglip2" or "gemma" in type(self._tokenizer).__name__.lower()
        text_config = getattr(config, "text_config", config)
        self._context_length = int(getattr(text_config, "max_position_embeddings", 77))
        self._device = torch.device("cpu")
        self._fingerprint = self._compute_fingerprint()
        self.to(device)

    # -- identity -------------------------------------------------------------
    def _compute_fingerprint(self) -> str:
        config = self._model.config.to_dict()
        config.pop("transformers_version", None)  # a library upgrade keeps the outputs
        config.pop("_name_or_path", None)  # where the folder is (copied, or in the Hub cache) changes nothing
        preprocess = self._processor.to_dict()
        preprocess.pop("processor_class", None)
        weights = {
            p.name: file_digest(p)
            for p in sorted(self._dir.iterdir())
            if p.is_file() and p.suffix in _WEIGHT_SUFFIXES
        }
        if not weights:
            raise BackboneError(f"hf backbone: no weights file ({', '.join(_WEIGHT_SUFFIXES)}) in {self._dir}")
        tokenizer = {
            name: file_digest(self._dir / name) for name in _TOKENIZER_FILES if (self._dir / name).is_file()
        }
        identity = {
            "kind": "hf-clip",
            "config": config,
            "weights": weights,
            "tokenizer": tokenizer,
            "preprocess": preprocess,
            "templates": list(PROMPT_TEMPLATES),
        }
        if self._pad_to_max:  # kept out of CLIP's identity so its caches stay valid
            identity["text_padding"] = "max_length"
        if self._lowercase:
            identity["lowercase"] = True
        blob = json.dumps(identity, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    @property
    def logit_scale(self) -> float | None:
        """The model's learned image-text logit scale (CLIP ~100, SigLIP ~110), if it has one."""
        value = getattr(self._model, "logit_scale", None)
        if value is None:
            return None
        return float(value.detach().float().exp().item())

    @property
    def retrieval_tau(self) -> float:
        """TAC's retrieval temperature for this model (METHOD.md stage 2).

        The paper's tau = 0.005 on CLIP ViT-B/32, whose learned logit scale is
        100: tau is half the model's own contrastive temperature 1/100. The
        retrieval softmax runs over the nouns of one image, so an additive
        logit bias (SigLIP's sigmoid loss has one) cancels; what carries over
        from model to model is the scale. So tau = 0.5 / logit_scale: 0.005
        for CLIP, ~0.0045 for SigLIP. ``benchmarks/retrieval_tau.py`` checks
        the rule on synthetic worlds whose similarity spread is stretched the
        way a different logit scale stretches it. Models without a logit
        scale (or an untrained one below 20) keep the paper's 0.005.
        """
        scale = self.logit_scale
        if scale is None or not np.isfinite(scale) or scale < 20.0:
            return 0.005
        return 0.5 / scale

    # -- images ---------------------------------------------------------------
    def preprocess(self, image) -> "torch.Tensor":  # noqa: F821
        """The model's own processor (resize, crop where it crops, mean/std).

        Returns a float32 tensor of shape (3, H, W).
        """
        return self._processor(images=image.convert("RGB"), return_tensors="pt")["pixel_values"][0]

    def _image_features(self, pixels):
        return _features(self._model.get_image_features(pixel_values=pixels))

    # -- text -----------------------------------------------------------------
    def _text_tower(self):
        """CLIP's causal text tower with prefix reuse; None for SigLIP (bidirectional) and others."""
        from tacluster.embed.backbones.text_prefix import hf_clip_tower

        if self._pad_to_max:
            return None
        return hf_clip_tower(self._model, self._tokenizer, self._token_ids, PROMPT_TEMPLATES + RANKING_TEMPLATES)

    def _token_ids(self, texts: list[str]) -> list[list[int]]:
        if self._lowercase:
            texts = [t.lower() for t in texts]
        return self._tokenizer(texts, truncation=True, max_length=self._context_length)["input_ids"]

    def _text_features(self, texts: list[str]):
        """CLIP pads each batch to its longest prompt; SigLIP to its full context
        length (``padding="max_length"``), and SigLIP 2 lower-cases, as they
        were trained."""
        if self._lowercase:
            texts = [t.lower() for t in texts]
        tokens = self._tokenizer(
            texts,
            padding="max_length" if self._pad_to_max else True,
            truncation=True,
            max_length=self._context_length,
            return_tensors="pt",
        ).to(self._device)
        # SigLIP was trained without a text mask (it pools the last position,
        # a pad token, attending to everything): give it the ids alone.
        keys = ("input_ids",) if self._pad_to_max else ("input_ids", "attention_mask")
        return _features(self._model.get_text_features(**{k: tokens[k] for k in keys if k in tokens}))


#: Former name, kept for code that imported it.
HFCLIPBackbone = HFTwoTowerBackbone


def load(argument: str, device: str = "cpu", offline: bool | None = None,
         name: str | None = None) -> HFTwoTowerBackbone:
    """Registry factory for ``hf:<model id or directory>``."""
    if not argument:
        raise BackboneError("hf backbone needs a model: 'hf:/path/to/clip' or 'hf:<Hub model id>'")
    return HFTwoTowerBackbone(argument, device=device, offline=offline, name=name)
