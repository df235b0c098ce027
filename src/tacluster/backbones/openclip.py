"""OpenCLIP backbone (``openclip:<arch>/<tag or checkpoint>``, ``openclip:local-dir:<dir>``).

Name syntax (see :mod:`tacluster.backbones`): ``<arch>`` is everything before
the first ``/``; the rest is a checkpoint path when it contains ``/`` or ends
in a weights suffix, else an open_clip pretrained tag. Tags are resolved in
open_clip's local caches only; tacluster never downloads weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from tacluster.backbones import file_digest
from tacluster.backbones.base import PROMPT_TEMPLATES, CLIPBackbone
from tacluster.errors import BackboneError

_INSTALL_HINT = "pip install 'tacluster[openclip]'"
_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
_LOCAL_DIR = "local-dir:"


def _import_open_clip():
    try:
        import open_clip
    except ImportError as exc:  # open_clip imports torchvision at package import
        raise BackboneError(
            f"the 'openclip' backbone needs open_clip_torch and torchvision ({exc}); "
            f"install them with {_INSTALL_HINT}"
        ) from exc
    return open_clip


def parse_openclip_name(argument: str) -> tuple[str, str | None, str | None]:
    """Split the part after ``openclip:`` into (arch, tag, checkpoint path).

    Returns
    -------
    tuple
        ``(arch, tag, None)`` for a pretrained tag, ``(arch, None, path)`` for
        a checkpoint file, ``("local-dir:<dir>", None, None)`` for open_clip's
        folder format.

    Raises
    ------
    BackboneError
        When the weights part is missing.
    """
    if argument.startswith(_LOCAL_DIR):
        if not argument[len(_LOCAL_DIR) :]:
            raise BackboneError("openclip:local-dir: needs a folder: 'openclip:local-dir:/path/to/dir'")
        return argument, None, None
    arch, sep, weights = argument.partition("/")
    if not arch or not sep or not weights:
        raise BackboneError(
            f"openclip backbone {argument!r} names no weights: use 'openclip:<arch>/<tag>' "
            "(e.g. 'openclip:ViT-B-32/openai', cached locally) or "
            "'openclip:<arch>/<checkpoint path>' (e.g. 'openclip:ViT-B-32//abs/ckpt.pt', "
            "'openclip:ViT-B-32/./ckpt.pt') or 'openclip:local-dir:/path/to/dir'"
        )
    if "/" in weights or "\\" in weights or weights.endswith(_WEIGHT_SUFFIXES):
        return arch, None, weights
    return arch, weights, None


def _cached_tag_file(open_clip, arch: str, tag: str, cache_dir: str | None) -> str:
    """Local path of a pretrained tag's weights, from open_clip's caches only."""
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if not cfg:
        known = open_clip.list_pretrained_tags_by_model(arch)
        raise BackboneError(
            f"openclip: {tag!r} is neither a pretrained tag of {arch!r} (known: {known}) "
            "nor a checkpoint path (a path must contain '/' or end in .pt/.pth/.bin/.safetensors)"
        )
    if cfg.get("file"):
        return cfg["file"]
    candidates = []
    if cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache

        # Same file choice as open_clip's download: safetensors twin first.
        repo, filename = os.path.split(cfg["hf_hub"])
        if not filename:
            names = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        elif filename.endswith((".bin", ".pth")):
            names = [filename[:-4] + ".safetensors", filename]
        else:
            names = [filename]
        for name in names:
            found = try_to_load_from_cache(repo_id=repo, filename=name, cache_dir=cache_dir)
            if isinstance(found, str):
                return found
            candidates.append(f"{repo}/{name}")
    if cfg.get("url"):
        target = Path(cache_dir or os.path.expanduser("~/.cache/clip")) / os.path.basename(cfg["url"])
        if target.is_file():
            return str(target)
        candidates.append(str(target))
    raise BackboneError(
        f"openclip: the weights of {arch}/{tag} are not available locally (looked for "
        f"{', '.join(candidates) or 'nothing'}) and tacluster never downloads them. Download "
        f"the checkpoint yourself and pass it as a file: 'openclip:{arch}//path/to/checkpoint.pt'"
    )


def _stable_repr(obj) -> str:
    # Transform reprs embed function addresses ("at 0x7f..."), which change every run.
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(obj))


class OpenCLIPBackbone(CLIPBackbone):
    """An OpenCLIP model with its own validation transform and tokenizer.

    Parameters
    ----------
    argument : str
        The part of the registry name after ``openclip:`` (see
        :func:`parse_openclip_name`).
    device : str
        Torch device.
    text_batch_size : int
        Words per text-encoder call when building a noun bank (x7 prompts).
    cache_dir : str or None
        open_clip / Hugging Face cache to look up pretrained tags in.

    Notes
    -----
    ``outputs`` is ``("image",)``: the CLIP image embedding is already in the
    noun space.
    """

    outputs = ("image",)

    def __init__(
        self,
        argument: str,
        device: str = "cpu",
        text_batch_size: int = 256,
        cache_dir: str | None = None,
    ):
        open_clip = _import_open_clip()
        import torch

        self.name = f"openclip:{argument}"
        self.text_batch_size = int(text_batch_size)
        arch, tag, ckpt = parse_openclip_name(argument)
        model_cfg: dict | None
        if arch.startswith(_LOCAL_DIR):
            folder = Path(arch[len(_LOCAL_DIR) :]).expanduser()
            config_file = folder / "open_clip_config.json"
            if not config_file.is_file():
                raise BackboneError(
                    f"openclip: {folder} has no open_clip_config.json; pass a folder with "
                    "open_clip_config.json and its weights, or 'openclip:<arch>//path/ckpt.pt'"
                )
            model_name, pretrained = f"{_LOCAL_DIR}{folder}", None
            model_cfg = json.loads(config_file.read_text(encoding="utf-8"))
            weight_files = sorted(p for p in folder.iterdir() if p.suffix in _WEIGHT_SUFFIXES)
            if not weight_files:
                raise BackboneError(f"openclip: no weights file ({', '.join(_WEIGHT_SUFFIXES)}) in {folder}")
        else:
            model_cfg = open_clip.get_model_config(arch)
            if model_cfg is None:
                raise BackboneError(
                    f"openclip: unknown architecture {arch!r}; known: {', '.join(open_clip.list_models())} "
                    "(a custom one can be registered with open_clip.add_model_config or loaded "
                    "with 'openclip:local-dir:/path')"
                )
            if ckpt is not None:
                path = Path(ckpt).expanduser()
                if not path.is_file():
                    raise BackboneError(
                        f"openclip: checkpoint {ckpt!r} does not exist; pass an existing file, "
                        f"e.g. 'openclip:{arch}//abs/path/ckpt.pt'"
                    )
                pretrained = str(path)
            else:
                pretrained = _cached_tag_file(open_clip, arch, tag, cache_dir)
            weight_files = [Path(pretrained)]
            # A tag also carries preprocessing settings: let open_clip apply them,
            # reading the file we just found in its cache.
            model_name = arch
            if tag is not None:
                pretrained = tag

        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=pretrained, cache_dir=cache_dir, device="cpu"
            )
        except (RuntimeError, ValueError, OSError, KeyError) as exc:
            raise BackboneError(f"openclip: cannot build {self.name!r}: {exc}") from exc
        self._model = model.eval()
        self._transform = preprocess
        self._tokenizer = open_clip.get_tokenizer(model_name)
        preprocess_cfg = getattr(model.visual, "preprocess_cfg", None) or _stable_repr(preprocess)
        identity = {
            "kind": "openclip",
            "config": model_cfg,
            "weights": [file_digest(p) for p in weight_files],
            "preprocess": preprocess_cfg,
            "tokenizer": _stable_repr(type(self._tokenizer)),
            "context_length": getattr(self._tokenizer, "context_length", None),
            "templates": list(PROMPT_TEMPLATES),
        }
        blob = json.dumps(identity, sort_keys=True, default=str)
        self._fingerprint = hashlib.sha256(blob.encode("utf-8")).hexdigest()
        self._device = torch.device("cpu")
        self.to(device)

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def preprocess(self, image) -> "torch.Tensor":  # noqa: F821
        """open_clip's validation transform (shorter-side bicubic resize, centre
        crop, CLIP mean/std); returns a float32 tensor of shape (3, H, W)."""
        return self._transform(image)

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
            feats = self._model.encode_image(batch.to(self._device, torch.float32))
            feats = torch.nn.functional.normalize(feats.float(), dim=-1)
        return {"image": feats.cpu().numpy().astype(np.float32, copy=False)}

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """Embed raw strings; shape (len(texts), d), float32, unit rows."""
        import torch

        tokens = self._tokenizer(list(texts)).to(self._device)
        with torch.inference_mode():
            feats = self._model.encode_text(tokens)
            feats = torch.nn.functional.normalize(feats.float(), dim=-1)
        return feats.cpu().numpy().astype(np.float32, copy=False)


def load(argument: str, device: str = "cpu") -> OpenCLIPBackbone:
    """Registry factory for ``openclip:...`` names."""
    return OpenCLIPBackbone(argument, device=device)
