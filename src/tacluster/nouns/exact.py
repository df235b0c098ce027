"""Exact noun vectors cached per noun, and the cheap ranking bank of ``--noun-bank candidates``.

TAC keeps only a few nouns per semantic centre, so only the candidates need
the exact vector (all prompt templates, METHOD.md stage 0); every other noun
is ranked with a one-template bank (1/7 of the prompts). Every exact vector
computed is kept in ``<cache>/nounvectors/<key>/`` (``<key>``: sha256 of the
backbone fingerprint and the templates), one shard per build:

* ``shard-<digest>.npy`` -- float32, shape (n, d), unit rows;
* ``shard-<digest>.json`` -- the n words, in row order, written after the
  ``.npy`` (a shard without its ``.json`` is unfinished and ignored).

A later collection reads the shards and embeds only the candidates no shard
holds; an interrupted build resumes from its finished blocks
(:func:`tacluster.nouns.bank.embed_with_templates`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from tacluster._atomic import atomic_write, atomic_write_bytes
from tacluster.errors import CacheError, InputError
from tacluster.nouns.bank import (
    _BUILD,
    RANKING_TEMPLATES,
    NounBank,
    _Build,
    _save_npy,
    cached_noun_bank,
    default_cache_dir,
    words_digest,
)
from tacluster.nouns.precision import RankingPrecision

if TYPE_CHECKING:
    from tacluster.embed.backbones.base import Backbone

__all__ = ["NOUN_BANK_MODES", "RANKING_TEMPLATES", "ExactNounStore", "candidate_banks", "resolve_noun_bank",
           "with_exact_rows"]



class ExactNounStore:
    """A backbone's exact noun vectors (all its :attr:`~Backbone.prompt_templates`), cached per noun.

    Attributes
    ----------
    embedded : int
        Nouns this store embedded (not read from the cache) so far.
    from_cache : int
        Nouns it read back from the cache so far.
    """

    def __init__(self, backbone: Backbone, cache_dir: str | os.PathLike | None = None, progress: bool = True):
        if backbone.prompt_templates is None:
            raise InputError(f"backbone {backbone.name!r} does not build its noun bank from prompt templates")
        if getattr(backbone, "text_precision", "float32") != "float32":
            raise InputError("exact noun vectors come from the float32 text tower, not an int8 copy")
        root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        key = hashlib.sha256(f"{backbone.fingerprint}\n{words_digest(list(backbone.prompt_templates))}".encode())
        self.folder = root / "nounvectors" / key.hexdigest()[:32]
        self.backbone, self.progress = backbone, progress
        self.embedded = self.from_cache = 0

    def _shards(self) -> dict[str, tuple[np.ndarray, int]]:
        """Every cached word -> (its shard's array, row); unreadable shards are skipped."""
        found: dict[str, tuple[np.ndarray, int]] = {}
        for meta in sorted(self.folder.glob("shard-*.json")):
            try:
                words = json.loads(meta.read_text(encoding="utf-8"))
                arr = np.load(meta.with_suffix(".npy"), mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError):
                continue
            if isinstance(words, list) and arr.dtype == np.float32 and arr.ndim == 2 and arr.shape[0] == len(words):
                found.update((w, (arr, i)) for i, w in enumerate(words))
        return found

    def vectors(self, words: Sequence[str], note: str = "") -> np.ndarray:
        """Exact vectors of ``words``, shape (len(words), d), float32; only uncached words are embedded.

        ``note`` goes into the cost line of that build.
        """
        known = self._shards()
        missing = list(dict.fromkeys(w for w in words if w not in known))
        self.from_cache += len(set(words)) - len(missing)
        if missing:
            known.update(self._embed(missing, note))
        if not words:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([np.asarray(known[w][0][known[w][1]], dtype=np.float32) for w in words])

    def _embed(self, words: list[str], note: str) -> dict[str, tuple[np.ndarray, int]]:
        digest = words_digest(words)[:16]
        blocks = self.folder / f".blocks-{digest}"
        token = _BUILD.set(_Build(blocks, self.folder, note))
        try:
            bank: NounBank = self.backbone.noun_bank(words, progress=self.progress)
        finally:
            _BUILD.reset(token)
        if list(bank.words) != words:
            raise CacheError(f"backbone {self.backbone.name!r} dropped nouns from its bank; "
                             "exact vectors are cached for template backbones only")
        emb = np.ascontiguousarray(bank.embeddings, dtype=np.float32)
        self.embedded += len(words)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            shard = self.folder / f"shard-{digest}"
            atomic_write(shard.with_suffix(".npy"), lambda tmp: _save_npy(tmp, emb))
            atomic_write_bytes(shard.with_suffix(".json"), json.dumps(words, ensure_ascii=False).encode("utf-8"))
        except OSError as exc:
            raise CacheError(f"cannot write the noun-vector cache {self.folder}: {exc}; "
                             "set TACLUSTER_CACHE or --cache-dir to a writable folder") from exc
        shutil.rmtree(blocks, ignore_errors=True)
        return {w: (emb, i) for i, w in enumerate(words)}


def candidate_banks(
    backbone: Backbone, words: Sequence[str], cache_dir: str | os.PathLike | None = None, progress: bool = True,
    *, ranking_precision: str = "auto", device: str = "cpu",
) -> tuple[NounBank, Callable[[np.ndarray], np.ndarray], ExactNounStore, RankingPrecision]:
    """The ranking bank of ``words`` (one template, cached), the function that gives the exact
    vectors of its rows (through an :class:`ExactNounStore`), that store, and the precision
    the ranking bank was built in (:func:`~tacluster.nouns.precision.choose_ranking_precision`:
    ``ranking_precision`` ``"auto"`` keeps int8 only where it is measured faster on this
    machine; the exact vectors are always float32).

    The function's rows index ``ranking.words``; pass it as ``exact_noun_embeddings``
    to :meth:`tacluster.estimator.TextAidedClustering.fit`.
    """
    from tacluster.nouns.bank import noun_bank_entry
    from tacluster.nouns.precision import choose_ranking_precision

    words = list(words)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    cached = [p for p in ("float32", "int8")
              if noun_bank_entry(backbone, words, root, RANKING_TEMPLATES, precision=p).is_dir()]
    choice, ranker = choose_ranking_precision(backbone, words, RANKING_TEMPLATES, requested=ranking_precision,
                                              device=device, cache_dir=root, cached=cached, progress=progress)
    n_t = len(backbone.prompt_templates or ())
    full = f"the full bank: {len(words):,} nouns x {n_t} = {len(words) * n_t:,} prompts, --noun-bank full"
    in_int8 = ", text tower in int8" if choice.precision == "int8" else ""
    ranking = cached_noun_bank(ranker, words, cache_dir=root, progress=progress, templates=RANKING_TEMPLATES,
                               note=f"the ranking bank of --noun-bank candidates{in_int8} ({full})")
    store = ExactNounStore(backbone, root, progress)

    def exact(rows: np.ndarray) -> np.ndarray:
        picked = [ranking.words[i] for i in rows]
        return store.vectors(picked, note=f"exact vectors of the candidate pool only "
                                          f"({len(picked):,} of {len(words):,} nouns; {full})")

    return ranking, exact, store, choice


#: Values of ``--noun-bank``.
NOUN_BANK_MODES: tuple[str, ...] = ("auto", "full", "candidates")


def resolve_noun_bank(requested: str, backbone: Backbone, words: Sequence[str],
                      cache_dir: str | os.PathLike | None, device: str) -> str:
    """``"full"`` or ``"candidates"``: what ``--noun-bank requested`` runs.

    ``auto`` keeps the paper's full bank wherever it is already fast (cached,
    or on a GPU, ``device == "cuda"``) and for backbones whose bank is not
    built from templates; elsewhere (a CPU, bank not cached) the candidate
    pool. ``candidates`` with a backbone without templates is refused.
    """
    from tacluster.nouns.bank import noun_bank_entry

    if requested not in NOUN_BANK_MODES:
        raise InputError(f"--noun-bank {requested!r} is not one of {', '.join(NOUN_BANK_MODES)}")
    if requested == "full":
        return "full"
    if backbone.prompt_templates is None:
        if requested == "candidates":
            raise InputError(f"--noun-bank candidates: backbone {backbone.name!r} does not build its noun bank "
                             "from prompt templates, so there is no work to skip; use --noun-bank full or auto")
        return "full"
    if requested == "candidates":
        return "candidates"
    return "full" if device == "cuda" or noun_bank_entry(backbone, words, cache_dir).is_dir() else "candidates"


def with_exact_rows(ranking: np.ndarray, rows: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """A copy of the ranking bank with ``rows`` replaced by their exact vectors (for cluster names)."""
    out = np.array(ranking, dtype=np.float32)
    out[rows] = exact
    return out
