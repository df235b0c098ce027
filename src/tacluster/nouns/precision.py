"""The precision of the ranking bank of ``--noun-bank candidates``: float32, or int8 where it is faster here.

The ranking bank only decides which nouns become candidates; every candidate
then gets its exact float32 vector (:mod:`tacluster.nouns.exact`), and the
paper's selection runs on those. So a cheaper approximation of the ranking
vectors can move a noun in or out of the pool only where its rank sits near
the pool's edge (200 per centre), never change the selection among the
candidates. int8 dynamic quantisation of the text tower's Linear layers
(``torch.ao.quantization.quantize_dynamic``) is such an approximation: on a
random real-size SigLIP text tower it ran 1.51x float32 at a min cosine of
0.998 (docs/backbones.md); on CLIP's prefix-reuse path it was faster in one
measurement and slower in another. So the choice is made **per machine, by
measurement**: before a ranking bank is built on a CPU, :func:`choose_ranking_precision`
embeds one probe batch of the bank's own prompts both ways (interleaved, the
faster of two timed calls each) and keeps int8 only if it is at least
:data:`MIN_SPEEDUP` times faster and every probe vector is within
:data:`MIN_COSINE` of its float32 one. The decision is remembered per
backbone and machine (``<cache>/ranking-precision.json``), so later runs on
this machine make the same one without measuring again, and a ranking bank
already cached in either precision is reused as it is.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from tacluster.embed.precision import (IMAGE_PRECISIONS, MIN_SPEEDUP, PrecisionChoice, compare_speed, machine_key,
                                       quantised_copy)
from tacluster.embed.precision import remember as _remember_record
from tacluster.embed.precision import remembered as _remembered_record
from tacluster.errors import InputError

if TYPE_CHECKING:
    from tacluster.embed.backbones.base import CLIPBackbone

__all__ = ["MIN_COSINE", "MIN_SPEEDUP", "RANKING_PRECISIONS", "RankingPrecision", "choose_ranking_precision",
           "int8_text_backbone", "measure_int8"]

#: Values of ``--ranking-precision`` (those of ``--image-precision``).
RANKING_PRECISIONS: tuple[str, ...] = IMAGE_PRECISIONS
# int8 must be at least MIN_SPEEDUP (tacluster.embed.precision's, as for the image tower) times
# faster than float32 on the probe to be used by ``auto``...
#: ... and every probe vector at least this close (cosine) to its float32 one.
MIN_COSINE = 0.99
#: Prompts in the probe batch (spread over the vocabulary's word lengths).
PROBE_PROMPTS = 64
#: The file under the cache root that remembers each machine's decision.
DECISIONS_FILE = "ranking-precision.json"


@dataclass(frozen=True)
class RankingPrecision(PrecisionChoice):
    """What the ranking bank runs in, and why (run.json's ``counts.noun_bank.ranking_precision``); see
    :class:`~tacluster.embed.precision.PrecisionChoice` (``speedup``: prompts/s). ``probe_prompts``:
    prompts the measurement embedded (0: none)."""

    probe_prompts: int = 0


def int8_text_backbone(backbone: CLIPBackbone) -> CLIPBackbone | None:
    """A copy of ``backbone`` whose text tower's Linear layers are int8 (dynamic quantisation, CPU).

    The image tower and every other module are shared with ``backbone``, not
    copied. None where the backbone names no text modules or torch has no
    quantised CPU engine. The copy's :attr:`text_precision` is ``"int8"``,
    which keeps its banks apart from the float32 ones in the cache.
    """
    quantised = quantised_copy(backbone, getattr(backbone, "text_modules", ()))
    if quantised is not None:
        quantised._tower, quantised.text_precision = None, "int8"
    return quantised


def _probe_prompts(words: Sequence[str], templates: Sequence[str], n: int = PROBE_PROMPTS) -> list[str]:
    """``n`` prompts of the bank, their words spread evenly over the vocabulary sorted by length."""
    by_length = sorted(words, key=len)
    picks = np.linspace(0, len(by_length) - 1, num=min(n, len(by_length))).round().astype(int)
    return [templates[i % len(templates)].format(by_length[j]) for i, j in enumerate(picks)]


def measure_int8(backbone: CLIPBackbone, quantised: CLIPBackbone, prompts: list[str]) -> tuple[float, float]:
    """``(speedup, min_cosine)`` of ``quantised`` against ``backbone`` on ``prompts``.

    One warm-up call each (their vectors give the agreement), then two timed
    calls each, interleaved; each side's faster call counts.
    """
    return compare_speed(lambda: backbone.encode_text(prompts), lambda: quantised.encode_text(prompts), repeats=2)


def _remembered(cache_dir: Path, key: str) -> RankingPrecision | None:
    found = _remembered_record(cache_dir, DECISIONS_FILE, key)
    try:
        return RankingPrecision(**found) if found is not None else None
    except TypeError:
        return None


def _remember(cache_dir: Path, key: str, choice: RankingPrecision) -> None:
    _remember_record(cache_dir, DECISIONS_FILE, key, choice.record())


def choose_ranking_precision(
    backbone: CLIPBackbone,
    words: Sequence[str],
    templates: Sequence[str],
    *,
    requested: str = "auto",
    device: str = "cpu",
    cache_dir: str | os.PathLike,
    cached: Sequence[str] = (),
    progress: bool = True,
) -> tuple[RankingPrecision, CLIPBackbone]:
    """The precision the ranking bank is built in, and the backbone that builds it.

    Parameters
    ----------
    backbone : CLIPBackbone
        The float32 backbone.
    words, templates : the ranking bank's vocabulary and template(s) (the probe is drawn from them)
    requested : ``"auto"``, ``"float32"`` or ``"int8"`` (``--ranking-precision``)
    device : where the text tower runs; int8 is CPU only
    cache_dir : the cache root (the decision is remembered there)
    cached : precisions whose ranking bank of these words is already cached (``auto`` reuses it)
    progress : say the decision on stderr when it was measured now

    Raises
    ------
    InputError
        ``int8`` requested on a GPU, or for a backbone without an int8 text path.
    """
    if requested not in RANKING_PRECISIONS:
        raise InputError(f"--ranking-precision {requested!r} is not one of {', '.join(RANKING_PRECISIONS)}")
    if requested == "float32":
        return RankingPrecision("float32", "requested (--ranking-precision float32)"), backbone
    on_cpu = str(device).split(":")[0] == "cpu"
    if requested == "int8" and not on_cpu:
        raise InputError(f"--ranking-precision int8 runs on a CPU only (device {device!r}); "
                         "use --ranking-precision float32 or auto there")
    if requested == "auto" and not on_cpu:
        return RankingPrecision("float32", f"not on a CPU (device {device})"), backbone
    root = Path(cache_dir).expanduser()
    key = machine_key(backbone)
    known = _remembered(root, key) if requested == "auto" else None
    if requested == "auto" and ("float32" in cached or (known is not None and known.precision == "float32")):
        why = "its ranking bank is cached in float32" if "float32" in cached else f"remembered: {known.reason}"
        return replace(known or RankingPrecision("float32", ""), reason=why), backbone
    quantised = int8_text_backbone(backbone)
    if quantised is None:
        if requested == "int8":
            raise InputError(f"--ranking-precision int8: backbone {backbone.name!r} has no int8 text path "
                             "(no quantised CPU engine in this torch, or an unknown text tower); use float32")
        return RankingPrecision("float32", "no int8 text path for this backbone here"), backbone
    if requested == "auto" and ("int8" in cached or (known is not None and known.precision == "int8")):
        why = "its ranking bank is cached in int8" if "int8" in cached else f"remembered: {known.reason}"
        return replace(known or RankingPrecision("int8", ""), reason=why), quantised
    from tacluster._threads import one_thread_if_busy

    prompts = _probe_prompts(words, templates)
    with one_thread_if_busy():  # the threads the bank itself is built with (CLIPBackbone.noun_bank)
        speedup, cosine = measure_int8(backbone, quantised, prompts)
    measured = f"int8 {speedup:.2f}x float32 on {len(prompts)} probe prompts, min cosine {cosine:.4f}"
    if requested == "int8":
        choice = RankingPrecision("int8", f"requested (--ranking-precision int8); {measured}", speedup, cosine,
                                  len(prompts))
    else:
        use = speedup >= MIN_SPEEDUP and cosine >= MIN_COSINE
        rule = f"int8 needs >= {MIN_SPEEDUP}x and min cosine >= {MIN_COSINE}"
        choice = RankingPrecision("int8" if use else "float32", f"measured on this machine: {measured} ({rule})",
                                  speedup, cosine, len(prompts))
        _remember(root, key, choice)
    if progress:
        print(f"ranking bank in {choice.precision}: {measured}; the candidates' exact vectors stay float32"
              + ("" if requested == "int8" else "; --ranking-precision float32 | int8 to choose"),
              file=sys.stderr, flush=True)
    return choice, (quantised if choice.precision == "int8" else backbone)
