"""Utilities for tests and benchmarks: tiny models built locally (nothing downloaded), planted image copies."""

from __future__ import annotations

import json
import os

import numpy as np
from pathlib import Path

from tacluster.embed.backbones.base import Backbone, NounBank
from tacluster.errors import BackboneError

WIDTH = 16  # projection width shared by both towers of the tiny CLIPs


def save_tiny_hf_clip(folder: str | os.PathLike, seed: int = 0) -> Path:
    """Save a tiny randomly initialised Hugging Face CLIP to ``folder``; returns it.

    2 layers, width 32, projection width :data:`WIDTH`, 32-px images, a
    character-level BPE tokenizer and an image processor: a real
    ``CLIPModel`` directory that ``hf:<folder>`` loads, built without any
    download. Random weights: for testing the loading and pipeline code only.
    """
    folder = Path(folder)
    try:
        import transformers
    except ImportError as exc:
        raise BackboneError("save_tiny_hf_clip needs transformers: pip install tacluster[hf]") from exc
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    # Printable ASCII covers every prompt used here; no merges keeps it tiny
    # (each character is one token).
    chars = [chr(i) for i in range(33, 127)]
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    bos, eos = len(vocab), len(vocab) + 1
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = bos, eos
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    tokenizer.model_max_length = 77
    torch.manual_seed(seed)
    config = transformers.CLIPConfig(
        text_config=dict(
            vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=77,
            bos_token_id=bos, eos_token_id=eos, pad_token_id=eos,
        ),
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, image_size=32, patch_size=8,
        ),
        projection_dim=WIDTH,
    )
    transformers.CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    transformers.CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(folder)
    return folder


class TinyBackbone(Backbone):
    """Deterministic test backbone: fixed random linear maps of a 16x16 image.

    An all-black image has a zero feature vector, and the plain division in
    the normalisation then gives NaN: the path a broken model would take.
    """

    name = "tiny"
    outputs = ("image", "joint")

    def __init__(self, fail_after: int | None = None):
        import torch

        g = torch.Generator().manual_seed(0)
        self.w_image = torch.randn(3 * 16 * 16, 8, generator=g)
        self.w_joint = torch.randn(3 * 16 * 16, 5, generator=g)
        self.fail_after = fail_after
        self.n_calls = 0
        self.n_images = 0

    @property
    def fingerprint(self) -> str:
        return "tiny0001"

    def preprocess(self, image):
        import torch
        from PIL import Image

        small = image.resize((16, 16), Image.BILINEAR)
        return torch.from_numpy(np.asarray(small, dtype=np.float32) / 255.0).permute(2, 0, 1)

    def encode_images(self, batch):
        self.n_calls += 1
        if self.fail_after is not None and self.n_calls > self.fail_after:
            raise RuntimeError("simulated crash")
        self.n_images += batch.shape[0]
        x = batch.flatten(1)
        out = {}  # y / |y| on purpose (not F.normalize): a black image gives NaN
        for name, w in (("image", self.w_image), ("joint", self.w_joint)):
            y = x @ w
            out[name] = (y / y.norm(dim=1, keepdim=True)).numpy()
        return out

    def noun_bank(self, words, progress=True):
        return NounBank(list(words), np.zeros((len(words), 5), np.float32))


SIGLIP_WIDTH = 32  # embedding width of the tiny SigLIP (its vision hidden size)


def save_tiny_hf_siglip(folder: str | os.PathLike, seed: int = 0) -> Path:
    """Save a tiny randomly initialised Hugging Face SigLIP to ``folder``; returns it.

    2 layers, width :data:`SIGLIP_WIDTH`, 32-px images, a 16-token text
    context, a character-level fast tokenizer (``tokenizers``) and SigLIP's
    image processor: a real ``SiglipModel`` directory, built without any
    download. Random weights: for testing the loading and pipeline code only.
    """
    folder = Path(folder)
    try:
        import transformers
        from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    except ImportError as exc:
        raise BackboneError("save_tiny_hf_siglip needs transformers: pip install tacluster[hf]") from exc
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    vocab.update({chr(i): 3 + k for k, i in enumerate(range(32, 127))})
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")  # one token per character
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
        model_input_names=["input_ids"],
    )
    torch.manual_seed(seed)
    config = transformers.SiglipConfig(
        text_config=dict(
            vocab_size=len(vocab), hidden_size=SIGLIP_WIDTH, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=16, projection_size=SIGLIP_WIDTH,
            pad_token_id=0, bos_token_id=1, eos_token_id=1,
        ),
        vision_config=dict(
            hidden_size=SIGLIP_WIDTH, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, image_size=32, patch_size=8,
        ),
    )
    transformers.SiglipModel(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    transformers.SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def real_size_config(short: str):
    """The architecture of a short-name model (:mod:`tacluster.embed.backbones.catalog`) as a
    ``transformers`` config, for speed measurements with random weights (no download)."""
    import transformers

    if short == "clip":  # transformers' CLIPConfig defaults are ViT-B/32
        return transformers.CLIPConfig()
    if short == "clip-l":
        return transformers.CLIPConfig(
            text_config=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12),
            vision_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                               num_attention_heads=16, patch_size=14),
            projection_dim=768,
        )
    if short == "siglip":  # SiglipConfig defaults are base, patch 16, 224 px
        return transformers.SiglipConfig()
    if short == "siglip2":  # SigLIP 2 base: the same towers, a 256k Gemma vocabulary
        return transformers.SiglipConfig(text_config=dict(vocab_size=256_000))
    raise BackboneError(f"no real-size config for {short!r}")


def save_random_real_size_model(short: str, folder: str | os.PathLike, seed: int = 0,
                                bpe: str | os.PathLike | None = None) -> Path:
    """A short-name model's full-size architecture with random weights, saved as an
    ``hf:`` folder (the tiny tokenizer and processor of the test models, 224 px).

    ``bpe``, for the CLIP models: a folder with CLIP's real ``vocab.json`` and
    ``merges.txt`` (e.g. ``../shared/models/clip-bpe``), whose tokenizer then
    replaces the tiny one, so that prompts have their true token counts."""
    import transformers
    import torch

    folder = Path(folder)
    tiny = save_tiny_hf_siglip(folder, seed) if short.startswith("siglip") else save_tiny_hf_clip(folder, seed)
    if bpe is not None and not short.startswith("siglip"):
        bpe = Path(bpe)
        tokenizer = transformers.CLIPTokenizer(str(bpe / "vocab.json"), str(bpe / "merges.txt"))
        tokenizer.model_max_length = 77
        tokenizer.save_pretrained(tiny)
    torch.manual_seed(seed)
    config = real_size_config(short)
    model_cls = transformers.SiglipModel if short.startswith("siglip") else transformers.CLIPModel
    model_cls(config).save_pretrained(tiny)
    if short.startswith("siglip"):
        transformers.SiglipImageProcessor(size={"height": 224, "width": 224}).save_pretrained(tiny)
    else:
        transformers.CLIPImageProcessor().save_pretrained(tiny)
    return tiny


#: The copies :func:`plant_copy` makes.
COPY_TRANSFORMS = ("jpeg40", "half", "crop5", "colour", "all", "identical")


def _colour(im):
    from PIL import Image, ImageEnhance

    im = ImageEnhance.Brightness(ImageEnhance.Color(im).enhance(1.15)).enhance(1.05)
    r, g, b = im.split()
    return Image.merge("RGB", (r.point(lambda v: min(255, int(v * 1.04))), g, b.point(lambda v: int(v * 0.96))))


def _half(im):
    from PIL import Image

    return im.resize((max(1, im.width // 2), max(1, im.height // 2)), Image.LANCZOS)


def _crop5(im):
    return im.crop((round(0.05 * im.width), round(0.05 * im.height), im.width, im.height))


def _jpeg(im, quality: int) -> bytes:
    import io

    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def plant_copy(src: str | os.PathLike, dst: str | os.PathLike, transform: str) -> None:
    """Write a copy of the image ``src`` made by ``transform`` (one of :data:`COPY_TRANSFORMS`) to ``dst``:
    ``jpeg40`` re-encoded at JPEG quality 40; ``half`` resized to half width and height
    (Lanczos); ``crop5`` 5 % of the width and height cut off (left and top); ``colour``
    saturation x1.15, brightness x1.05, red x1.04, blue x0.96; ``all`` the four together
    (colour, half, crop, JPEG 40); ``identical`` the same bytes. The others are saved as
    JPEG quality 95. What ``benchmarks/duplicates.py`` plants to measure the threshold."""
    import shutil

    from PIL import Image

    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if transform == "identical":
        shutil.copyfile(src, dst)
        return
    with Image.open(src) as opened:
        im = opened.convert("RGB")
    if transform == "jpeg40":
        data = _jpeg(im, 40)
    elif transform == "all":
        data = _jpeg(_crop5(_half(_colour(im))), 40)
    else:
        data = _jpeg({"half": _half, "crop5": _crop5, "colour": _colour}[transform](im), 95)
    dst.write_bytes(data)
