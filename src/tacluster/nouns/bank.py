"""Noun banks: build them from prompt templates, cache them on disk.

A noun bank depends only on the backbone and the word list (METHOD.md, stage
0), so it is computed once and memory-mapped afterwards. A cache entry lives
in ``<cache>/nounbanks/<key>/`` with

* ``embeddings.npy`` -- float32, shape (n_words, d), row-wise unit norm;
* ``words.json`` -- the words, in row order;
* ``meta.json`` -- backbone name and fingerprint, word-list digest, shape.

``<key>`` is a sha256 of (backbone fingerprint, sha256 of the word list). An
entry is written to a temporary folder and renamed into place, so a killed run
never leaves a half-written entry under the final name.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from tacluster._atomic import dir_mode
from tacluster.errors import CacheError, InputError

if TYPE_CHECKING:  # the backbones import this module, never the other way round
    from tacluster.embed.backbones.base import Backbone

__all__ = [
    "PROMPT_TEMPLATES",
    "NounBank",
    "cached_noun_bank",
    "default_cache_dir",
    "embed_with_templates",
    "words_digest",
]

_FORMAT_VERSION = 1

#: The 7 prompt templates TAC averages per noun (METHOD.md, stage 0).
PROMPT_TEMPLATES: tuple[str, ...] = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)


@dataclass(frozen=True)
class NounBank:
    """Nouns embedded in a backbone's joint space.

    Attributes
    ----------
    words : list of str, length n_nouns
        The nouns, in row order (a backbone may drop words it cannot embed).
    embeddings : ndarray of shape (n_nouns, d_joint), float32
        Row-wise L2-normalised noun vectors (may be a read-only memory map).
    """

    words: list[str]
    embeddings: np.ndarray


def default_cache_dir() -> Path:
    """tacluster's cache root.

    ``$TACLUSTER_CACHE`` if set, else ``$XDG_CACHE_HOME/tacluster``, else
    ``~/.cache/tacluster``. The folder is not created here.
    """
    explicit = os.environ.get("TACLUSTER_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "tacluster"
    return Path.home() / ".cache" / "tacluster"


def _check_words(words: Sequence[str]) -> list[str]:
    if isinstance(words, str):
        raise InputError(f"words must be a list of strings, not the string {words[:40]!r}")
    words = list(words)
    if not words:
        raise InputError("words is empty: pass at least one noun")
    for i, w in enumerate(words):
        if not isinstance(w, str) or not w.strip():
            raise InputError(f"words[{i}]={w!r} is not a non-empty string")
    return words


def words_digest(words: Sequence[str]) -> str:
    """sha256 hex digest of a word list (order matters).

    JSON-encoding the list makes the digest unambiguous for words that contain
    separators (``["a b"]`` vs ``["a", "b"]``).
    """
    data = json.dumps(list(words), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


def embed_with_templates(
    encode_text: Callable[[list[str]], np.ndarray],
    words: Sequence[str],
    templates: Sequence[str] = PROMPT_TEMPLATES,
    batch_size: int = 256,
    progress: bool = True,
    desc: str = "noun bank",
) -> np.ndarray:
    """Embed each word as the normalised mean of its normalised prompt embeddings.

    Parameters
    ----------
    encode_text : callable
        Maps a list of P prompts to an array of shape (P, d).
    words : sequence of str, length n_words
    templates : sequence of str, length T
        Format strings with one ``{}``; TAC's 7 by default.
    batch_size : int
        Words per call of ``encode_text`` (each call sees ``batch_size * T``
        prompts).
    progress : bool
        Show a tqdm bar (only when stderr is a terminal).

    Returns
    -------
    ndarray of shape (n_words, d), float32
        Row-wise L2-normalised.
    """
    from tqdm.auto import tqdm

    words = _check_words(words)
    if batch_size < 1:
        raise InputError(f"batch_size={batch_size} must be >= 1")
    n_t = len(templates)
    # Similar-length words share a batch: tokenizers pad to the batch's longest
    # prompt, so length-sorted batches waste less compute on padding.
    order = sorted(range(len(words)), key=lambda i: len(words[i]))
    out: np.ndarray | None = None
    quiet = not (progress and sys.stderr.isatty())
    with tqdm(total=len(words), desc=desc, unit="word", disable=quiet) as bar:
        for start in range(0, len(words), batch_size):
            rows = order[start : start + batch_size]
            prompts = [t.format(words[i]) for i in rows for t in templates]
            emb = np.asarray(encode_text(prompts), dtype=np.float32)
            if emb.ndim != 2 or emb.shape[0] != len(prompts):
                raise CacheError(
                    f"text encoder returned shape {emb.shape} for {len(prompts)} prompts"
                )
            emb = emb.reshape(len(rows), n_t, -1)
            emb /= np.maximum(np.linalg.norm(emb, axis=2, keepdims=True), 1e-12)
            mean = emb.mean(axis=1)
            mean /= np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
            if out is None:
                out = np.empty((len(words), mean.shape[1]), dtype=np.float32)
            out[rows] = mean
            bar.update(len(rows))
    assert out is not None  # words is non-empty
    return out


def _entry_key(fingerprint: str, wdigest: str) -> str:
    return hashlib.sha256(f"{fingerprint}\n{wdigest}".encode()).hexdigest()[:32]


def _read_entry(entry: Path, wdigest: str, fingerprint: str) -> NounBank:
    """Open a cache entry; raise CacheError describing what is wrong with it."""
    try:
        meta = json.loads((entry / "meta.json").read_text(encoding="utf-8"))
        stored_words = json.loads((entry / "words.json").read_text(encoding="utf-8"))
        emb = np.load(entry / "embeddings.npy", mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:  # JSONDecodeError and bad npy headers are ValueErrors
        raise CacheError(f"cannot read {entry}: {exc}") from exc
    if meta.get("fingerprint") != fingerprint or meta.get("words_sha256") != wdigest:
        raise CacheError(f"{entry}/meta.json does not match this backbone and word list")
    if not isinstance(stored_words, list) or words_digest(stored_words) != meta.get("stored_words_sha256"):
        raise CacheError(f"{entry}/words.json does not match its meta.json")
    if emb.dtype != np.float32 or emb.ndim != 2 or list(emb.shape) != meta.get("shape") or emb.shape[0] != len(stored_words):
        raise CacheError(
            f"{entry}/embeddings.npy has dtype {emb.dtype} and shape {emb.shape}, "
            f"expected float32 {tuple(meta.get('shape') or ())} for {len(stored_words)} words"
        )
    return NounBank(words=stored_words, embeddings=emb)


def _write_entry(entry: Path, bank: NounBank, meta: dict) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        tmp.chmod(dir_mode())  # mkdtemp's 0700 would survive the rename
        np.save(tmp / "embeddings.npy", np.ascontiguousarray(bank.embeddings, dtype=np.float32))
        (tmp / "words.json").write_text(json.dumps(bank.words, ensure_ascii=False), encoding="utf-8")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        if entry.exists():  # a corrupt entry being replaced
            shutil.rmtree(entry)
        try:
            os.replace(tmp, entry)
        except OSError:
            # Another process renamed a complete entry into place first: keep theirs.
            if not entry.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def cached_noun_bank(
    backbone: Backbone,
    words: Sequence[str],
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> NounBank:
    """The backbone's noun bank for ``words``, computed once and memory-mapped after.

    Parameters
    ----------
    backbone : Backbone
        Its :attr:`~Backbone.fingerprint` is half of the cache key.
    words : sequence of str, length n_words
    cache_dir : path or None
        Cache root; :func:`default_cache_dir` when None.
    progress : bool
        Show a progress bar while building (only on a terminal).

    Returns
    -------
    NounBank
        ``embeddings`` of shape (n_words', d), float32; a read-only memory map
        when it came from (or was just written to) the cache. ``n_words'`` can
        be smaller than ``n_words`` if the backbone drops words it cannot embed.

    Raises
    ------
    CacheError
        The cache folder cannot be written.

    Notes
    -----
    A corrupted entry (unreadable ``.npy``, wrong shape, mismatching metadata)
    is reported with a :class:`UserWarning` and rebuilt.
    """
    words = _check_words(words)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    fingerprint = backbone.fingerprint
    wdigest = words_digest(words)
    entry = root / "nounbanks" / _entry_key(fingerprint, wdigest)

    if entry.exists():
        try:
            return _read_entry(entry, wdigest, fingerprint)
        except CacheError as exc:
            warnings.warn(f"noun-bank cache entry is corrupted, rebuilding it: {exc}", UserWarning, stacklevel=2)

    log = progress and not sys.stderr.isatty()  # a log file or pipe: plain lines (a terminal gets the bar)
    if log:
        print(f"embedding {len(words):,} nouns ({backbone.name or 'backbone'}); once per backbone, "
              "then cached", file=sys.stderr, flush=True)
    tic = time.perf_counter()
    bank = backbone.noun_bank(words, progress=progress)
    if log:
        print(f"{len(bank.words):,} nouns embedded in {time.perf_counter() - tic:.1f} s", file=sys.stderr, flush=True)
    stored_words = list(bank.words)  # fewer than ``words`` if the backbone dropped some
    meta = {
        "format_version": _FORMAT_VERSION,
        "backbone": backbone.name,
        "fingerprint": fingerprint,
        "words_sha256": wdigest,
        "stored_words_sha256": words_digest(stored_words),
        "shape": list(bank.embeddings.shape),
    }
    try:
        _write_entry(entry, NounBank(stored_words, bank.embeddings), meta)
    except OSError as exc:
        raise CacheError(
            f"cannot write the noun-bank cache under {root}: {exc}; "
            "set TACLUSTER_CACHE or pass cache_dir= to a writable folder"
        ) from exc
    # Re-open from disk so a fresh bank and a reused one are the same kind of object.
    return _read_entry(entry, wdigest, fingerprint)

