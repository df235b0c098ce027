"""Hugging Face ``transformers`` CLIP backbone (``hf:<model id or directory>``).

The model, tokenizer and image processor are read from one folder: an existing
directory, or a model id resolved in the local Hugging Face cache only.
Nothing is downloaded (``local_files_only=True`` everywhere).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from tacluster.backbones import file_digest
from tacluster.backbones.base import PROMPT_TEMPLATES, CLIPBackbone
from tacluster.errors import BackboneError

_INSTALL_HINT = "pip install 'tacluster[hf]'"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
)


def _import_transformers():
    try:
        import transformers
    except ImportError as exc:
        raise BackboneError(
            f"the 'hf' backbone needs the transformers package ({exc}); install it with {_INSTALL_HINT}"
        ) from exc
    return transformers


def _resolve_dir(source: str) -> Path:
    """An existing directory, or the cached snapshot of a Hub model id."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path.resolve()
    looks_like_path = source.startswith((".", "/", "~")) or source.count("/") > 1 or "\\" in source
    if looks_like_path:
        raise BackboneError(
            f"hf backbone: directory {source!r} does not exist; pass a folder written by "
            "CLIPModel.save_pretrained (with its tokenizer and image processor): 'hf:/path/to/clip'"
        )
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=source, local_files_only=True))
    except Exception as exc:  # huggingface_hub raises several unrelated types here
        raise BackboneError(
            f"hf backbone: the weights of {source!r} are not available locally and tacluster "
            "never downloads them. Save the model to a folder (CLIPModel, tokenizer and image "
            "processor .save_pretrained(dir)) and pass 'hf:/path/to/dir'"
        ) from exc


def _features(output) -> "torch.Tensor":  # noqa: F821
    # transformers < 5 returns the projected tensor; 5.x a ModelOutput whose
    # pooler_output holds the projected embedding.
    if hasattr(output, "pooler_output"):
        return output.pooler_output
    return output


class HFCLIPBackbone(CLIPBackbone):
    """A ``transformers`` ``CLIPModel`` with its tokenizer and image processor.

    Parameters
    ----------
    source : str
        A directory written by ``save_pretrained`` or a cached Hub model id.
    device : str
        Torch device (``"cpu"``, ``"cuda"``).
    text_batch_size : int
        Words per text-encoder call when building a noun bank (x7 prompts).

    Notes
    -----
    ``outputs`` is ``("image",)``: CLIP's image embedding already lives in the
    noun space, so there is no separate ``"joint"`` array.
    """

    outputs = ("image",)

    def __init__(self, source: str, device: str = "cpu", text_batch_size: int = 256):
        transformers = _import_transformers()
        import torch

        self.name = f"hf:{source}"
        self.text_batch_size = int(text_batch_size)
        self._dir = _resolve_dir(source)
        if not (self._dir / "config.json").is_file():
            raise BackboneError(
                f"hf backbone: {self._dir} has no config.json; pass a folder written by "
                "CLIPModel.save_pretrained"
            )
        try:
            self._model = transformers.CLIPModel.from_pretrained(self._dir, local_files_only=True)
            self._tokenizer = transformers.AutoTokenizer.from_pretrained(self._dir, local_files_only=True)
            self._processor = transformers.AutoImageProcessor.from_pretrained(
                self._dir, local_files_only=True
            )
        except (OSError, ValueError, KeyError) as exc:
            raise BackboneError(
                f"hf backbone: cannot load a CLIP model, tokenizer and image processor from "
                f"{self._dir} ({exc}); the folder needs config.json, the weights, the tokenizer "
                "files and preprocessor_config.json"
            ) from exc
        self._model.eval()
        self._context_length = int(self._model.config.text_config.max_position_embeddings)
        self._device = torch.device("cpu")
        self._fingerprint = self._compute_fingerprint()
        self.to(device)

    # -- identity -------------------------------------------------------------
    def _compute_fingerprint(self) -> str:
        config = self._model.config.to_dict()
        config.pop("transformers_version", None)  # a library upgrade keeps the outputs
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
        blob = json.dumps(identity, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    # -- images ---------------------------------------------------------------
    def preprocess(self, image) -> "torch.Tensor":  # noqa: F821
        """The model's own processor (shorter-side resize, centre crop, CLIP mean/std).

        Returns a float32 tensor of shape (3, H, W).
        """
        return self._processor(images=image.convert("RGB"), return_tensors="pt")["pixel_values"][0]

    def encode_images(self, batch) -> dict[str, np.ndarray]:
        """Embed preprocessed images.

        Parameters
        ----------
        batch : torch.Tensor of shape (N, 3, H, W)

        Returns
        -------
        dict
            ``{"image": ndarray of shape (N, d)}``, float32, unit rows.
        """
        import torch

        with torch.inference_mode():
            out = self._model.get_image_features(pixel_values=batch.to(self._device, torch.float32))
            feats = torch.nn.functional.normalize(_features(out).float(), dim=-1)
        return {"image": feats.cpu().numpy().astype(np.float32, copy=False)}

    # -- text -----------------------------------------------------------------
    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """Embed raw strings with the text encoder; shape (len(texts), d), float32, unit rows."""
        import torch

        tokens = self._tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self._context_length,
            return_tensors="pt",
        ).to(self._device)
        with torch.inference_mode():
            out = self._model.get_text_features(
                input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
            )
            feats = torch.nn.functional.normalize(_features(out).float(), dim=-1)
        return feats.cpu().numpy().astype(np.float32, copy=False)


def load(argument: str, device: str = "cpu") -> HFCLIPBackbone:
    """Registry factory for ``hf:<model id or directory>``."""
    if not argument:
        raise BackboneError("hf backbone needs a model: 'hf:/path/to/clip' or 'hf:<cached model id>'")
    return HFCLIPBackbone(argument, device=device)
