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

import contextvars
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

from tacluster._atomic import atomic_write, atomic_write_bytes, dir_mode
from tacluster._progress import duration
from tacluster.errors import CacheError, InputError

if TYPE_CHECKING:  # the backbones import this module, never the other way round
    from tacluster.embed.backbones.base import Backbone

__all__ = [
    "PROMPT_TEMPLATES",
    "RANKING_TEMPLATES",
    "NounBank",
    "cached_noun_bank",
    "default_cache_dir",
    "embed_with_templates",
    "noun_bank_entry",
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

#: The one template of ``--noun-bank candidates``'s ranking bank (also lite's ConSE template;
#: :mod:`tacluster.nouns.exact`). Here, beside TAC's 7, so that a causal text tower caches its
#: prefix too (:mod:`tacluster.embed.backbones.text_prefix`).
RANKING_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)


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


@dataclass
class _Build:
    """What :func:`cached_noun_bank` tells :func:`embed_with_templates` about the build in progress."""

    blocks: Path | None  # finished blocks are kept here (resume after an interruption)
    entry: Path | None  # where the finished bank will live (named in the cost line)
    note: str = ""  # what this build is and what it saves, said in the cost line


_BUILD: contextvars.ContextVar[_Build | None] = contextvars.ContextVar("tacluster_bank_build", default=None)


class _BankProgress:
    """Noun-bank progress: a tqdm bar on a terminal, plain lines with done/total and
    ETA otherwise (one every :attr:`every_s` seconds), and, before the bulk of the
    work, one cost line: prompts, the estimated time measured on the first batch,
    the alternatives."""

    every_s = 30.0

    def __init__(self, total_words: int, n_templates: int, done_words: int, desc: str,
                 progress: bool, entry: Path | None, note: str = ""):
        self.total, self.n_t, self.done, self.desc = total_words, n_templates, done_words, desc
        self.entry, self.note = entry, note
        self.tty = sys.stderr.isatty()
        self.on = progress
        self.bar = None
        if progress and self.tty:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total_words, initial=done_words, desc=desc, unit="word")
        self.t0 = self.last = time.perf_counter()
        self.fresh = 0  # words embedded in this run (not read back from finished blocks)
        self.costed = False

    def _say(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

    def update(self, n: int) -> None:
        self.done += n
        self.fresh += n
        now = time.perf_counter()
        if not self.on:
            return
        left = self.total - self.done
        rate = self.fresh / max(now - self.t0, 1e-9)  # words/s on this machine, this run
        if not self.costed:
            self.costed = True
            self._say(self.cost_line(rate))
        if self.bar is not None:
            self.bar.update(n)
        elif now - self.last >= self.every_s and left > 0:
            self.last = now
            self._say(f"{self.desc}: {self.done:,}/{self.total:,} nouns ({100 * self.done / self.total:.0f} %, "
                      f"{now - self.t0:.0f} s, ETA {duration(left / rate)})")

    def cost_line(self, words_per_s: float) -> str:
        left = self.total - self.done + self.fresh  # what this run has to embed
        prompts = left * self.n_t
        est = left / max(words_per_s, 1e-9)
        where = f"copy a bank built elsewhere to {self.entry}" if self.entry else "copy a bank cache built elsewhere"
        resumed = f" (resuming: {self.total - left:,} of {self.total:,} nouns already done)" if left < self.total else ""
        templates = "template" if self.n_t == 1 else "templates"
        return (f"{self.desc}: {left:,} nouns x {self.n_t} {templates} = {prompts:,} prompts{resumed}, "
                f"about {duration(est)} on this machine ({words_per_s * self.n_t:,.0f} prompts/s on the first batch); "
                f"{self.note + '; ' if self.note else ''}faster: a GPU (--device cuda), a shorter --vocabulary FILE, or {where}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _blocks_state(folder: Path, key: dict) -> dict[int, Path]:
    """Finished blocks in ``folder`` made with the same words, templates and batch
    size (``key``); a folder from another build layout is cleared."""
    meta = folder / "blocks.json"
    try:
        same = json.loads(meta.read_text(encoding="utf-8")) == key
    except (OSError, ValueError):
        same = False
    if not same:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(meta, json.dumps(key).encode("utf-8"))
        return {}
    found = {}
    for f in folder.glob("block-*.npy"):
        try:
            found[int(f.stem.split("-")[1])] = f
        except (IndexError, ValueError):
            continue
    return found


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
        Report progress on stderr: a tqdm bar on a terminal, plain lines with
        ETA otherwise, and before the bulk of the work one line with the number
        of prompts and the estimated time (measured on the first batch).

    Returns
    -------
    ndarray of shape (n_words, d), float32
        Row-wise L2-normalised.

    Notes
    -----
    Inside :func:`cached_noun_bank` each finished batch (a block) is written to
    disk as it completes; an interrupted build resumes after the last finished
    block and returns exactly what an uninterrupted one would.
    """
    words = _check_words(words)
    if batch_size < 1:
        raise InputError(f"batch_size={batch_size} must be >= 1")
    n_t = len(templates)
    build = _BUILD.get()
    # Similar-length words share a batch: tokenizers pad to the batch's longest
    # prompt, so length-sorted batches waste less compute on padding.
    order = sorted(range(len(words)), key=lambda i: len(words[i]))
    starts = range(0, len(words), batch_size)
    build, done, pending = _finished_blocks(build, words, templates, batch_size, order, starts)
    out: np.ndarray | None = None
    n_done = sum(len(rows) for rows, _ in pending)
    for rows, block in pending:
        if out is None:
            out = np.empty((len(words), block.shape[1]), dtype=np.float32)
        out[rows] = block
    bar = _BankProgress(len(words), n_t, n_done, desc, progress, build.entry if build else None,
                        build.note if build else "")
    try:
        for b, start in enumerate(starts):
            if b in done:
                continue
            rows = order[start : start + batch_size]
            mean = _embed_batch(encode_text, [words[i] for i in rows], templates)
            if out is None:
                out = np.empty((len(words), mean.shape[1]), dtype=np.float32)
            out[rows] = mean
            if build is not None and build.blocks is not None:
                try:
                    atomic_write(build.blocks / f"block-{b:06d}.npy",
                                 lambda tmp, m=mean: _save_npy(tmp, m))
                except OSError:
                    pass  # resuming is a convenience; the build itself goes on
            bar.update(len(rows))
    finally:
        bar.close()
    assert out is not None  # words is non-empty
    return out


def _finished_blocks(build: _Build | None, words: list[str], templates: Sequence[str], batch_size: int,
                     order: list[int], starts: range) -> tuple[_Build | None, dict[int, Path], list]:
    """``(build, done, pending)``: the blocks an interrupted build of this bank already finished
    (``done``: by batch number) and, for those still readable, ``(rows, vectors)`` (``pending``);
    ``build`` loses its blocks folder where that cannot be kept (the build goes on without resume)."""
    done: dict[int, Path] = {}
    if build is not None and build.blocks is not None:
        key = {"format_version": _FORMAT_VERSION, "words_sha256": words_digest(words),
               "templates_sha256": words_digest(list(templates)), "batch_size": batch_size}
        try:
            done = _blocks_state(build.blocks, key)
        except OSError:
            build = _Build(None, build.entry, build.note)  # cannot keep blocks: build without resume
    pending: list[tuple[list[int], np.ndarray]] = []
    for b, start in enumerate(starts):
        if b in done:
            try:
                block = np.load(done[b], allow_pickle=False)
                if block.dtype == np.float32 and block.ndim == 2 and block.shape[0] == len(order[start : start + batch_size]):
                    pending.append((order[start : start + batch_size], block))
                    continue
            except (OSError, ValueError):
                pass
            del done[b]  # unreadable: embed it again
    return build, done, pending


def _embed_batch(encode_text: Callable[[list[str]], np.ndarray], batch: list[str],
                 templates: Sequence[str]) -> np.ndarray:
    """(len(batch), d) float32: each word's normalised mean of its normalised prompt embeddings."""
    prompts = [t.format(w) for w in batch for t in templates]
    emb = np.asarray(encode_text(prompts), dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != len(prompts):
        raise CacheError(
            f"text encoder returned shape {emb.shape} for {len(prompts)} prompts"
        )
    emb = emb.reshape(len(batch), len(templates), -1)
    emb /= np.maximum(np.linalg.norm(emb, axis=2, keepdims=True), 1e-12)
    mean = emb.mean(axis=1)
    mean /= np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
    return mean


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.save(fh, np.ascontiguousarray(arr, dtype=np.float32))


def _entry_key(fingerprint: str, wdigest: str, templates: Sequence[str] | None = None,
               precision: str = "float32") -> str:
    # The backbone's own templates in float32 keep the key they always had (existing caches stay valid).
    extra = "" if templates is None else "\n" + words_digest(list(templates))
    extra += "" if precision == "float32" else f"\ntext precision {precision}"
    return hashlib.sha256(f"{fingerprint}\n{wdigest}{extra}".encode()).hexdigest()[:32]


def _precision(backbone: Backbone) -> str:
    """The text tower's precision (``"int8"`` on :func:`tacluster.nouns.precision.int8_text_backbone`'s copies)."""
    return getattr(backbone, "text_precision", "float32")


def noun_bank_entry(backbone: Backbone, words: Sequence[str], cache_dir: str | os.PathLike | None = None,
                    templates: Sequence[str] | None = None, precision: str | None = None) -> Path:
    """The folder :func:`cached_noun_bank` keeps this bank in (it may not exist yet); ``precision``:
    the text tower's (default: the backbone's own, ``"float32"`` but on an int8 copy)."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / "nounbanks" / _entry_key(backbone.fingerprint, words_digest(list(words)), templates,
                                           precision or _precision(backbone))


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
    templates: Sequence[str] | None = None,
    note: str = "",
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
    templates : sequence of str, optional
        Prompt templates other than the backbone's own (a backbone with
        :attr:`~Backbone.prompt_templates`); part of the cache key.
    note : str
        Said in the cost line before the build (what this bank is for).

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
    entry = noun_bank_entry(backbone, words, root, templates)

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
    blocks = entry.parent / f".{entry.name}.blocks"
    token = _BUILD.set(_Build(blocks, entry, note))
    try:
        bank = (backbone.noun_bank(words, progress=progress) if templates is None
                else backbone.noun_bank(words, progress=progress, templates=templates))
    finally:
        _BUILD.reset(token)
    if log:
        known = "" if len(bank.words) == len(words) else (
            f" of {len(words):,} (the other {len(words) - len(bank.words):,} are not known to the backbone)")
        print(f"{len(bank.words):,}{known} nouns embedded in {time.perf_counter() - tic:.1f} s",
              file=sys.stderr, flush=True)
    stored_words = list(bank.words)  # fewer than ``words`` if the backbone dropped some
    meta = {
        "format_version": _FORMAT_VERSION,
        "backbone": backbone.name,
        "fingerprint": fingerprint,
        "words_sha256": wdigest,
        "stored_words_sha256": words_digest(stored_words),
        "shape": list(bank.embeddings.shape),
        **({} if _precision(backbone) == "float32" else {"text_precision": _precision(backbone)}),
    }
    try:
        _write_entry(entry, NounBank(stored_words, bank.embeddings), meta)
    except OSError as exc:
        raise CacheError(
            f"cannot write the noun-bank cache under {root}: {exc}; "
            "set TACLUSTER_CACHE or pass cache_dir= to a writable folder"
        ) from exc
    shutil.rmtree(blocks, ignore_errors=True)  # the finished blocks are in the entry now
    # Re-open from disk so a fresh bank and a reused one are the same kind of object.
    return _read_entry(entry, wdigest, fingerprint)

