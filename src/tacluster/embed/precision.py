"""Image embedding in float32, or int8 where it is faster here (``--image-precision``), and the
pieces both reduced-precision paths share (the ranking bank's: :mod:`tacluster.nouns.precision`).

int8 dynamic quantisation of the image tower's Linear layers
(``torch.ao.quantization.quantize_dynamic``, CPU only) ran 1.74x and 1.83x
float32 on a random real-size CLIP ViT-B/32 at a min cosine of 0.9996 to the
float32 vectors (docs/backbones.md), while bfloat16 autocast was slower
(0.89x). Trained weights have outlier activations that per-tensor int8 may
handle worse, and the speed-up depends on the CPU, so ``auto`` decides **per
machine, by measurement**, on the collection's own images: before a
collection is embedded on a CPU, :func:`choose_image_precision` embeds
:data:`PROBE_IMAGES` of its decoded images both ways (a warm-up call each,
whose vectors give the agreement, then two timed calls each, interleaved, the
faster counting) and keeps int8 only
if it is at least :data:`MIN_SPEEDUP` times faster and every probe vector is
at cosine >= :data:`MIN_IMAGE_COSINE` to its float32 one. The decision is
remembered per backbone and machine (``<cache>/image-precision.json``).
Vectors of each precision are cached apart (:func:`image_cache_key`), and a
collection already cached in one precision is served from it (a rerun never
re-embeds). A saved model records the precision its images were embedded
in, and the commands that embed more images for it (``predict``, ``add``,
``split``) use the same one.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import platform
import sys
import time
import warnings
from dataclasses import asdict, dataclass, replace
from functools import cache, partial
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from tacluster._atomic import atomic_write_bytes
from tacluster.errors import InputError

if TYPE_CHECKING:
    from tacluster.embed.backbones.base import Backbone
    from tacluster.embed.cache import EmbeddingCache

__all__ = ["IMAGE_DECISIONS_FILE", "IMAGE_PRECISIONS", "MIN_IMAGE_COSINE", "MIN_IMAGES_TO_PROBE", "MIN_SPEEDUP",
           "PROBE_IMAGES", "SPEED_PROBES", "ImagePrecision", "PrecisionChoice", "check_image_precision",
           "check_image_request", "choose_image_precision", "compare_speed",
           "image_cache", "image_cache_key", "int8_image_backbone", "machine_key", "measure_int8_images", "quantised_copy",
           "remember", "remembered"]

#: Values of ``--image-precision`` (and ``--ranking-precision``).
IMAGE_PRECISIONS: tuple[str, ...] = ("auto", "float32", "int8")
#: int8 must be at least this much faster than float32 on the probe to be used by ``auto``.
MIN_SPEEDUP = 1.2
#: ... and every probe image vector at least this close (cosine) to its float32 one. Stricter than
#: the ranking bank's 0.99: these vectors are what is clustered, not a shortlist that is re-embedded.
MIN_IMAGE_COSINE = 0.999
#: Decoded images in the probe.
PROBE_IMAGES = 8
#: With fewer images to embed than this, ``auto`` embeds them in float32 without measuring
#: (the probe and the quantisation would cost more than int8 could save).
MIN_IMAGES_TO_PROBE = 256
#: A float32 decision made on speed alone (the cosine passed) is measured again on the next collections
#: until this many probes agree, the best speed-up counting: one probe on a busy moment of a shared
#: machine measured 1.14x where the whole path ran 2.08x. Agreement (the cosine) is kept after one.
SPEED_PROBES = 3
#: The file under the cache root that remembers each machine's image decision.
IMAGE_DECISIONS_FILE = "image-precision.json"


# -- shared by the image and the ranking-bank precision -----------------------


def machine_key(backbone) -> str:
    """A digest of the backbone, torch version, CPU type and core count: where a measured decision holds."""
    import torch

    identity = f"{backbone.fingerprint}\n{torch.__version__}\n{platform.machine()}\n{os.cpu_count()}"
    return hashlib.sha256(identity.encode()).hexdigest()[:32]


def remembered(cache_dir: Path, file: str, key: str) -> dict | None:
    """The decision remembered under ``key`` in ``<cache_dir>/<file>``, or None."""
    try:
        found = json.loads((Path(cache_dir) / file).read_text(encoding="utf-8")).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    return found if isinstance(found, dict) else None


def remember(cache_dir: Path, file: str, key: str, record: dict) -> None:
    """Remember ``record`` under ``key`` in ``<cache_dir>/<file>`` (atomically; a failure is ignored)."""
    path = Path(cache_dir) / file
    try:
        known = json.loads(path.read_text(encoding="utf-8"))
        known = known if isinstance(known, dict) else {}
    except (OSError, ValueError):
        known = {}
    known[key] = record
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps(known, indent=1).encode("utf-8"))
    except OSError:
        pass  # remembering is a convenience: the next run measures again


def _present(backbone, names: Sequence[str]) -> list[str]:
    """The names among ``names`` that are top-level submodules of the backbone's model, where torch
    has a quantised CPU engine; empty otherwise."""
    import torch

    modules = getattr(getattr(backbone, "_model", None), "_modules", None) or {}
    engines = set(getattr(torch.backends.quantized, "supported_engines", ())) - {"none"}
    return [n for n in names if n in modules] if engines else []


def quantised_copy(backbone, names: Sequence[str]):
    """A shallow copy of ``backbone`` whose model's top-level submodules ``names`` have int8
    Linear layers (dynamic quantisation, CPU); None where none of them exists or torch has no
    quantised CPU engine. Every other module is shared with ``backbone``, not copied, and
    ``backbone`` itself is left as it was."""
    import torch

    present = _present(backbone, names)
    if not present:
        return None
    model = copy.copy(backbone._model)
    model._modules = backbone._model._modules.copy()  # a shallow copy shares its children's dict otherwise
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices
        for name in present:
            model._modules[name] = torch.ao.quantization.quantize_dynamic(
                backbone._model._modules[name], {torch.nn.Linear}, dtype=torch.qint8)
    quantised = copy.copy(backbone)
    quantised._model = model
    return quantised


def compare_speed(reference: Callable[[], np.ndarray], approx: Callable[[], np.ndarray],
                  repeats: int = 1) -> tuple[float, float]:
    """``(speedup, min_cosine)`` of ``approx`` against ``reference``, two calls that return unit rows.

    One warm-up call each (their rows give the agreement), then ``repeats`` timed calls each,
    interleaved; each side's fastest call counts.
    """
    ref, got = reference(), approx()
    best = [float("inf"), float("inf")]
    for _ in range(repeats):
        for i, fn in enumerate((reference, approx)):
            tic = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - tic)
    cosine = float(np.min(np.sum(np.asarray(ref) * np.asarray(got), axis=1)))
    return best[0] / max(best[1], 1e-9), cosine


# -- the image side -----------------------------------------------------------


@dataclass(frozen=True)
class PrecisionChoice:
    """What a tower ran in, and why (the image tower: :class:`ImagePrecision`; the ranking bank's
    text tower: :class:`tacluster.nouns.precision.RankingPrecision`).

    Attributes
    ----------
    precision : str
        ``"float32"`` or ``"int8"``.
    reason : str
        Why, in words (run.json, and the line said before the work).
    speedup : float or None
        int8 items/s over float32 on the probe (None: not measured).
    min_cosine : float or None
        The lowest cosine of an int8 probe vector to its float32 one.
    """

    precision: str
    reason: str
    speedup: float | None = None
    min_cosine: float | None = None

    def record(self) -> dict:
        """The JSON record of the choice (run.json)."""
        return asdict(self)


@dataclass(frozen=True)
class ImagePrecision(PrecisionChoice):
    """What the image tower ran in, and why (run.json's ``counts.image_precision``); see
    :class:`PrecisionChoice`. ``probe_images``: images the measurement embedded (0: none)."""

    probe_images: int = 0
    #: Probes behind the decision: a float32 decision on speed alone is measured again on the next
    #: collections up to :data:`SPEED_PROBES`, the best speed-up counting (a busy moment is not kept).
    probes: int = 0


def image_cache_key(backbone, precision: str | None = None) -> str:
    """The embedding cache folder of ``backbone``'s image vectors: its fingerprint for float32,
    ``<fingerprint>-image-int8`` for an int8 copy (:func:`int8_image_backbone`); ``precision``
    names another precision than the backbone's own. Noun banks and a saved model's backbone
    check keep the plain fingerprint."""
    precision = precision or getattr(backbone, "image_precision", "float32")
    return backbone.fingerprint if precision == "float32" else f"{backbone.fingerprint}-image-{precision}"


def int8_image_backbone(backbone: Backbone) -> Backbone | None:
    """A copy of ``backbone`` whose image tower's Linear layers are int8 (:func:`quantised_copy` of its
    :attr:`image_modules`), with :attr:`image_precision` ``"int8"``; None where it names no image
    modules (``lite``) or torch has no quantised CPU engine. The text tower is shared, not copied."""
    quantised = quantised_copy(backbone, getattr(backbone, "image_modules", ()))
    if quantised is not None:
        quantised.image_precision = "int8"
    return quantised


def measure_int8_images(backbone: Backbone, quantised: Backbone, pixels) -> tuple[float, float]:
    """``(speedup, min_cosine)`` of ``quantised`` against ``backbone`` on the preprocessed ``pixels``
    (N, 3, H, W): a warm-up and two timed calls each, interleaved, the faster counting
    (:func:`compare_speed`). Two, not one: on this project's shared 2-core machine one timed call
    each once measured 1.14x where the whole path ran 2.08x (docs/image_precision.json), and a
    decision is remembered; the second pair costs about 3 s on 8 images of ViT-B/32."""
    import torch

    with torch.inference_mode():
        return compare_speed(lambda: backbone.encode_images(pixels)["image"],
                             lambda: quantised.encode_images(pixels)["image"], repeats=2)


def _device_of(backbone) -> str:
    return str(getattr(backbone, "_device", "cpu")).split(":")[0]


def check_image_request(requested: str | None, device: str, engine: str = "local") -> None:
    """Refuse, in one line, an unknown ``image_precision``, or int8 asked for off a CPU (``device``:
    ``"cpu"``, ``"cuda"``, ...) or off the local engine. Also run before a backbone is loaded
    (:func:`tacluster.run.workflows.cluster_images`)."""
    if requested is not None and requested not in IMAGE_PRECISIONS:
        raise InputError(f"--image-precision {requested!r} is not one of {', '.join(IMAGE_PRECISIONS)}")
    if requested == "int8" and (device != "cpu" or engine != "local"):
        raise InputError(f"--image-precision int8 runs on a CPU with the local engine only (device "
                         f"{device!r}, engine {engine!r}); use --image-precision float32 or auto there")


def check_image_precision(backbone, requested: str | None, engine: str = "local") -> None:
    """Refuse, in one line, an ``image_precision`` that cannot run here: what
    :func:`check_image_request` refuses, a request other than the copy's own on an int8 copy, or
    int8 without an image tower."""
    check_image_request(requested, _device_of(backbone), engine)
    current = getattr(backbone, "image_precision", "float32")
    if current != "float32":
        if requested not in (None, current):
            raise InputError(f"image_precision={requested!r} needs the float32 backbone, and this one is its "
                             f"{current} copy; pass the backbone as loaded")
        return
    if requested != "int8":
        return
    if not _present(backbone, getattr(backbone, "image_modules", ())):
        raise InputError(f"--image-precision int8: backbone {backbone.name!r} has no image tower to quantise "
                         "(or this torch has no quantised CPU engine); use --image-precision float32")


def choose_image_precision(
    backbone: Backbone,
    requested: str | None = None,
    *,
    keys: Sequence[str] = (),
    cache_dir: str | os.PathLike | None = None,
    engine: str = "local",
    probe: Callable[[int], object] | None = None,
    progress: bool = True,
    open_cache: Callable[[str], EmbeddingCache] | None = None,
) -> tuple[ImagePrecision, Backbone]:
    """The precision a collection's images are embedded in, and the backbone that embeds them.

    Parameters
    ----------
    backbone : Backbone
        The backbone as loaded (float32), or an int8 copy of it.
    requested : None, ``"auto"``, ``"float32"`` or ``"int8"``
        None: the backbone as given. ``auto``: int8 only on a CPU with the local engine, where
        the images are already cached in int8 (more of them than in float32), or remembered
        for this machine, or measured now (below :data:`MIN_IMAGES_TO_PROBE` images to embed:
        float32, not measured, not remembered).
    keys : the collection's content keys (``auto`` counts them in both caches)
    cache_dir : the cache root (None: no cache, nothing remembered)
    engine : ``"local"`` or ``"ray"`` (int8 runs locally only)
    probe : ``probe(n)`` -> up to ``n`` of the collection's images, preprocessed and stacked
        (N, 3, H, W), or None where none decodes
    progress : say a measured or an int8 decision on stderr
    open_cache : ``open_cache(precision)`` -> the embedding cache of that precision under ``cache_dir``
        (default: :func:`image_cache`); a caller that embeds next passes a memoised one, so the
        chosen precision's index is read once

    Raises
    ------
    InputError
        What :func:`check_image_precision` refuses.
    """
    check_image_precision(backbone, requested, engine)
    current = getattr(backbone, "image_precision", "float32")
    if requested is None or current != "float32":
        return ImagePrecision(current, "the backbone as given"), backbone
    if requested == "float32":
        return ImagePrecision("float32", "requested (--image-precision float32)"), backbone
    if requested == "int8":
        return ImagePrecision("int8", "requested (--image-precision int8)"), int8_image_backbone(backbone)
    if _device_of(backbone) != "cpu" or engine != "local":
        return ImagePrecision("float32", f"not on a CPU with the local engine (device {_device_of(backbone)}, "
                                         f"engine {engine})"), backbone
    if not _present(backbone, getattr(backbone, "image_modules", ())):
        return ImagePrecision("float32", "no int8 image path for this backbone here"), backbone
    # built once, and only where int8 is measured or used: quantising ViT-B/32 takes seconds
    quantised = cache(partial(int8_image_backbone, backbone))
    if open_cache is None and cache_dir is not None:
        open_cache = partial(image_cache, cache_dir, backbone)
    choice = _auto_choice(backbone, quantised, keys, cache_dir, probe, open_cache)
    if progress and (choice.precision == "int8" or choice.probe_images):
        print(f"images embedded in {choice.precision}: {choice.reason}; --image-precision float32 | int8 to choose",
              file=sys.stderr, flush=True)
    return choice, (quantised() if choice.precision == "int8" else backbone)


def image_cache(cache_dir: str | os.PathLike, backbone: Backbone, precision: str | None = None) -> EmbeddingCache:
    """The embedding cache of ``backbone``'s image vectors in ``precision`` (default: the backbone's
    own) under ``cache_dir`` (:func:`image_cache_key`)."""
    from tacluster.embed.cache import EmbeddingCache

    return EmbeddingCache(cache_dir, image_cache_key(backbone, precision), backbone.outputs, backbone.name)


def _auto_choice(backbone, quantised: Callable[[], Backbone], keys: Sequence[str], cache_dir, probe,
                 open_cache: Callable[[str], EmbeddingCache] | None) -> ImagePrecision:
    """``auto`` on a CPU: the cache's precision, the remembered decision, float32 for a few images, or a measurement."""
    keys = list(dict.fromkeys(keys))
    n = {p: 0 if open_cache is None else sum(1 for k in keys if k in open_cache(p)) for p in ("float32", "int8")}
    if n["float32"] != n["int8"]:
        use = max(n, key=n.get)
        other = "int8" if use == "float32" else "float32"
        return ImagePrecision(use, f"{n[use]} of these {len(keys)} images are cached in {use} ({n[other]} in {other})")
    root = None if cache_dir is None else Path(cache_dir).expanduser()
    key = machine_key(backbone)
    known = _known_choice(root, key)
    if known is not None and not _measure_again(known):
        return replace(known, reason=f"remembered: {known.reason}")
    to_embed = len(keys) - n["float32"]
    if to_embed < MIN_IMAGES_TO_PROBE:
        if known is not None:
            return replace(known, reason=f"remembered: {known.reason}")
        return ImagePrecision("float32", f"{to_embed} images to embed, fewer than {MIN_IMAGES_TO_PROBE}: "
                                         "not worth measuring int8")
    pixels = probe(PROBE_IMAGES) if probe is not None else None
    if pixels is None:
        return known or ImagePrecision("float32", "no probe image decoded")
    speedup, cosine = measure_int8_images(backbone, quantised(), pixels)
    probes = 1
    if known is not None:  # a float32 decision on speed alone, measured again: the best speed-up counts
        speedup, cosine, probes = max(speedup, known.speedup or 0.0), min(cosine, known.min_cosine), known.probes + 1
    use = speedup >= MIN_SPEEDUP and cosine >= MIN_IMAGE_COSINE
    choice = ImagePrecision(
        "int8" if use else "float32",
        f"measured on this machine: int8 {speedup:.2f}x float32 (best of {probes} probe(s) of {len(pixels)} "
        f"images), min cosine {cosine:.5f} (int8 needs >= {MIN_SPEEDUP}x and min cosine >= {MIN_IMAGE_COSINE})",
        speedup, cosine, len(pixels), probes)
    if root is not None:
        remember(root, IMAGE_DECISIONS_FILE, key, choice.record())
    return choice


def _known_choice(root: Path | None, key: str) -> ImagePrecision | None:
    """The decision remembered for this machine, or None (none, or a record of another shape)."""
    known = remembered(root, IMAGE_DECISIONS_FILE, key) if root is not None else None
    try:
        return ImagePrecision(**known) if known is not None else None
    except TypeError:
        return None


def _measure_again(known: ImagePrecision) -> bool:
    """True for a measured float32 decision on speed alone (the cosine passed) behind fewer than
    :data:`SPEED_PROBES` probes: a busy moment of a shared machine must not keep int8 off for good."""
    return (known.precision == "float32" and known.speedup is not None and known.min_cosine is not None
            and known.min_cosine >= MIN_IMAGE_COSINE and known.probes < SPEED_PROBES)
