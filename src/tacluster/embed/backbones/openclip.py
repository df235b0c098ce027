"""OpenCLIP backbone (``openclip:<arch>/<tag or checkpoint>``, ``openclip:hf-hub:<repo>``,
``openclip:local-dir:<dir>``).

Name syntax (see :mod:`tacluster.embed.backbones`): ``<arch>`` is everything before
the first ``/``; the rest is a checkpoint path when it contains ``/`` or ends
in a weights suffix, else an open_clip pretrained tag. A tag whose weights are
not cached is downloaded by open_clip itself (``download_pretrained``, into
its cache: the Hugging Face cache for Hub-hosted tags); ``hf-hub:`` models are
fetched like every Hub model (:mod:`tacluster.embed.backbones.hub`). With
``offline=True`` or ``HF_HUB_OFFLINE=1`` only the caches are read.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path


from tacluster.embed.backbones import file_digest
from tacluster.embed.backbones.base import PROMPT_TEMPLATES, CLIPBackbone
from tacluster.nouns.bank import RANKING_TEMPLATES
from tacluster.embed.backbones.hub import first_line
from tacluster.errors import BackboneError

_INSTALL_HINT = "pip install 'tacluster[openclip]'"
_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
_LOCAL_DIR = "local-dir:"
_HF_HUB = "hf-hub:"


def _import_open_clip():
    try:
        import open_clip
    except (ImportError, RuntimeError) as exc:  # open_clip imports torchvision at package import
        import torch

        raise BackboneError(
            f"the 'openclip' backbone needs open_clip_torch and a torchvision built for torch "
            f"{torch.__version__} ({first_line(exc)}); CPU-only: pip install torch=={torch.__version__.split('+')[0]} "
            "torchvision --index-url https://download.pytorch.org/whl/cpu, then "
            f"{_INSTALL_HINT}; with CUDA: {_INSTALL_HINT}"
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
    if argument.startswith(_HF_HUB):
        if argument[len(_HF_HUB) :].count("/") != 1:
            raise BackboneError("openclip:hf-hub: needs a Hub model id: 'openclip:hf-hub:<org>/<repo>'")
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


def _cached_tag_file(open_clip, arch: str, tag: str, cache_dir: str | None) -> str | None:
    """Local path of a pretrained tag's weights in open_clip's caches, or None (no request)."""
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if not cfg:
        known = open_clip.list_pretrained_tags_by_model(arch)
        raise BackboneError(
            f"openclip: {tag!r} is neither a pretrained tag of {arch!r} (known: {known}) "
            "nor a checkpoint path (a path must contain '/' or end in .pt/.pth/.bin/.safetensors)"
        )
    if cfg.get("file"):
        return cfg["file"]
    if cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache

        repo, names = _hub_files(cfg)
        for name in names:
            found = try_to_load_from_cache(repo_id=repo, filename=name, cache_dir=_hub_cache(cache_dir))
            if isinstance(found, str):
                return found
    if cfg.get("url"):
        target = Path(cache_dir or os.path.expanduser("~/.cache/clip")) / os.path.basename(cfg["url"])
        if target.is_file():
            return str(target)
    return None


def _hub_files(cfg: dict) -> tuple[str, list[str]]:
    """A Hub-hosted tag's repository and candidate weight files (open_clip's choice: safetensors first)."""
    repo, filename = os.path.split(cfg["hf_hub"])
    if not filename:
        return repo, ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    if filename.endswith((".bin", ".pth")):
        return repo, [filename[:-4] + ".safetensors", filename]
    return repo, [filename]


def _hub_cache(cache_dir: str | None) -> str:
    from tacluster.embed.backbones.hub import hub_cache_dir

    return cache_dir or str(hub_cache_dir())


def _tag_file(open_clip, arch: str, tag: str, cache_dir: str | None, offline: bool | None, name: str) -> str:
    """The weights of a pretrained tag: from open_clip's caches, else downloaded by open_clip."""
    from tacluster.embed.backbones.hub import _network_errors, first_line, offline_mode, prefetch_hint

    found = _cached_tag_file(open_clip, arch, tag, cache_dir)
    if found is not None:
        return found
    if offline_mode(offline):
        raise BackboneError(
            f"backbone {name!r}: the weights of {arch}/{tag} are not available locally (searched "
            f"open_clip's caches: {cache_dir or 'the Hugging Face cache and ~/.cache/clip'}) and offline "
            f"mode is on (--offline / HF_HUB_OFFLINE); {prefetch_hint(name)}, or pass a checkpoint file "
            f"as 'openclip:{arch}//path/to/checkpoint.pt'"
        )
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    try:
        path = _download_tag(open_clip, cfg, cache_dir)
    except BackboneError as exc:
        raise BackboneError(f"backbone {name!r}: {exc}") from exc
    except _network_errors() as exc:
        reason = first_line(exc)
        raise BackboneError(
            f"backbone {name!r}: cannot download the weights of {arch}/{tag} ({reason}); retry, or "
            f"{prefetch_hint(name)}, or pass a checkpoint file as 'openclip:{arch}//path/to/checkpoint.pt'"
        ) from exc
    return path


def _download_tag(open_clip, cfg: dict, cache_dir: str | None) -> str:
    """Fetch a tag's weights the way open_clip does, into the cache tacluster reads."""
    if cfg.get("hf_hub"):
        from huggingface_hub import errors, hf_hub_download

        from tacluster.embed.backbones.hub import hub_endpoint

        repo, names = _hub_files(cfg)
        for name in names:
            try:
                return hf_hub_download(repo_id=repo, filename=name, cache_dir=_hub_cache(cache_dir),
                                       endpoint=hub_endpoint())
            except errors.EntryNotFoundError:
                continue
        raise BackboneError(f"the Hub repository {repo!r} has none of {', '.join(names)}")
    if cfg.get("url"):
        return open_clip.download_pretrained_from_url(cfg["url"], cache_dir=cache_dir)
    raise BackboneError("open_clip has no download source for this tag")


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
    text_modules = ("transformer", "text")  # CLIP's text transformer; CustomTextCLIP's text tower
    image_modules = ("visual",)

    def __init__(
        self,
        argument: str,
        device: str = "cpu",
        text_batch_size: int = 256,
        cache_dir: str | None = None,
        offline: bool | None = None,
    ):
        open_clip = _import_open_clip()
        import torch

        from tacluster.embed.backbones.hub import hub_offline

        self.name = f"openclip:{argument}"
        self.text_batch_size = int(text_batch_size)
        model_name, pretrained, model_cfg, weight_files, oc_cache, build_offline = _locate(
            open_clip, argument, self.name, cache_dir, offline)

        # open_clip may fetch a Hugging Face tokenizer (SigLIP's) by name: the
        # Hub's offline switch covers that too when offline is asked for.
        try:
            with hub_offline(build_offline):
                model, _, preprocess = open_clip.create_model_and_transforms(
                    model_name, pretrained=pretrained, cache_dir=oc_cache, device="cpu"
                )
            with hub_offline(offline):
                self._tokenizer = open_clip.get_tokenizer(model_name, cache_dir=cache_dir)
        except (RuntimeError, ValueError, OSError, KeyError) as exc:
            reason = " ".join(str(exc).split())[:300]
            raise BackboneError(f"openclip: cannot build {self.name!r}: {reason}") from exc
        self._model = model.eval()
        self._transform = preprocess
        #: Where the weights are on disk (a file, or the folder of a local-dir / hf-hub model).
        self.weights_location = weight_files[0] if len(weight_files) == 1 else weight_files[0].parent
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

    def _image_features(self, pixels):
        return self._model.encode_image(pixels)

    def _text_features(self, texts: list[str]):
        return self._model.encode_text(self._tokenizer(texts).to(self._device))

    def _text_tower(self):
        """The causal, argmax-pooled text tower with prefix reuse; None for others (SigLIP, CoCa)."""
        from tacluster.embed.backbones.text_prefix import open_clip_tower

        return open_clip_tower(self._model, self._token_ids, PROMPT_TEMPLATES + RANKING_TEMPLATES)

    def _token_ids(self, texts: list[str]) -> list[list[int]]:
        return self._tokenizer(texts).tolist()


def load(argument: str, device: str = "cpu", offline: bool | None = None) -> OpenCLIPBackbone:
    """Registry factory for ``openclip:...`` names."""
    return OpenCLIPBackbone(argument, device=device, offline=offline)


def _locate(open_clip, argument: str, name: str, cache_dir: str | None, offline: bool | None):
    """Where an ``openclip:`` model's config and weights are, fetched on first use.

    Returns ``(model_name, pretrained, model_cfg, weight_files, oc_cache, build_offline)``:
    what ``open_clip.create_model_and_transforms`` is given, the architecture's
    config (for the fingerprint), the weight files on disk, the cache open_clip
    reads and whether building must stay offline (the weights are already here).
    """
    from tacluster.embed.backbones.hub import fetch_snapshot

    arch, tag, ckpt = parse_openclip_name(argument)
    if arch.startswith(_HF_HUB):
        snapshot = fetch_snapshot(
            arch[len(_HF_HUB) :], name=name, offline=offline,
            cache_dir=Path(cache_dir) if cache_dir else None, required=("open_clip_config.json",),
        )
        arch = f"{_LOCAL_DIR}{snapshot}"
    if arch.startswith(_LOCAL_DIR):
        folder = Path(arch[len(_LOCAL_DIR) :]).expanduser()
        config_file = folder / "open_clip_config.json"
        if not config_file.is_file():
            raise BackboneError(
                f"openclip: {folder} has no open_clip_config.json; pass a folder with "
                "open_clip_config.json and its weights, or 'openclip:<arch>//path/ckpt.pt'"
            )
        weight_files = sorted(p for p in folder.iterdir() if p.suffix in _WEIGHT_SUFFIXES)
        if not weight_files:
            raise BackboneError(f"openclip: no weights file ({', '.join(_WEIGHT_SUFFIXES)}) in {folder}")
        model_cfg = json.loads(config_file.read_text(encoding="utf-8"))
        return f"{_LOCAL_DIR}{folder}", None, model_cfg, weight_files, cache_dir, offline
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
        return arch, str(path), model_cfg, [path], cache_dir, offline
    weights = _tag_file(open_clip, arch, tag, cache_dir, offline, name)
    if tag is None:
        return arch, weights, model_cfg, [Path(weights)], cache_dir, offline
    # A tag also carries preprocessing settings: let open_clip apply them,
    # reading (with no request) the file now in the cache.
    oc_cache = _hub_cache(cache_dir) if open_clip.get_pretrained_cfg(arch, tag).get("hf_hub") else cache_dir
    return arch, tag, model_cfg, [Path(weights)], oc_cache, True
