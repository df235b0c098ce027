"""Writer: a content-keyed, crash-safe cache of image embeddings.

Layout, one folder per backbone fingerprint (a changed model never reads
another model's vectors)::

    <cache_dir>/embeddings/<fingerprint>/
        info.json                   backbone name, output names and widths
        shards/<id>.safetensors     one batch: {output name: (n, d) float32}
        manifest/<id>.jsonl         one line per row: {"key": ..., "row": i}
        failures/<id>.jsonl         {"key": ..., "reason": ...} for undecodable files

Keys are the SHA-256 of the file's bytes, so a renamed or copied file is a
hit. Each file is written to a temporary name and moved into place with
``os.replace`` (atomic on POSIX), and a shard's manifest is written only after
the shard itself, so a process killed at any moment leaves either a complete
entry or an orphan shard that nothing points to: at most the batch in flight
is lost. Shard ids start with a nanosecond timestamp, so when a key was
written twice the newest entry wins.

No pickle is involved: arrays are safetensors, metadata is JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from tacluster._atomic import atomic_write_bytes, file_mode
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from tacluster.errors import CacheError

_FORMAT_VERSION = 1


#: Rows this process has written to any cache (what an interrupted run keeps).
_ROWS_WRITTEN = 0


def rows_written_this_process() -> int:
    """Embeddings this process has cached so far (a rerun will not recompute them)."""
    return _ROWS_WRITTEN


class CorruptShardWarning(UserWarning):
    """A cache shard could not be read or has the wrong shape; its rows are
    recomputed and the shard is set aside (renamed ``*.corrupt``)."""


def content_key(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file's bytes: the cache key of an image.

    Raises
    ------
    OSError
        When the file cannot be read.
    """
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk_size), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class CacheHits:
    """Result of :meth:`EmbeddingCache.lookup`.

    Attributes
    ----------
    positions : ndarray of shape (n_hits,), int64
        Indices into the looked-up key sequence that were found, ascending.
    arrays : dict of str to ndarray of shape (n_hits, d_name), float32
        Cached rows, aligned with ``positions`` (empty dict when no hits).
    """

    positions: np.ndarray
    arrays: dict[str, np.ndarray]


class EmbeddingCache:
    """Embeddings of one backbone, stored as shards keyed by file content.

    Parameters
    ----------
    cache_dir : str or path-like
        Root cache folder; this backbone's data goes under
        ``<cache_dir>/embeddings/<fingerprint>/``.
    fingerprint : str
        The backbone's :attr:`~tacluster.embed.backbones.base.Backbone.fingerprint`.
    outputs : sequence of str
        Names of the arrays each row has (the backbone's ``outputs``).
    backbone_name : str, optional
        Recorded in ``info.json`` for people browsing the cache.
    dtype : numpy dtype, default float32
        Element type of every stored array (``uint8`` for image thumbnails,
        :mod:`tacluster.embed.look`); rows come back in it.
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike,
        fingerprint: str,
        outputs: Sequence[str],
        backbone_name: str = "",
        dtype=np.float32,
    ):
        if not fingerprint or os.sep in fingerprint or fingerprint in (".", ".."):
            raise CacheError(
                f"backbone fingerprint {fingerprint!r} cannot name a cache folder; "
                "the backbone must return a non-empty hex digest"
            )
        self.root = Path(cache_dir) / "embeddings" / fingerprint
        self.fingerprint = fingerprint
        self.outputs = tuple(outputs)
        self.backbone_name = backbone_name
        self.dtype = np.dtype(dtype)
        self._index: dict[str, tuple[str, int]] | None = None
        self._n_rows: dict[str, int] = {}  # shard id -> rows its manifest lists
        self._dims_cache: dict[str, int] | None = None

    # -- paths ---------------------------------------------------------------
    @property
    def shard_dir(self) -> Path:
        return self.root / "shards"

    @property
    def manifest_dir(self) -> Path:
        return self.root / "manifest"

    @property
    def failure_dir(self) -> Path:
        return self.root / "failures"

    def _ensure_dirs(self) -> None:
        try:
            for d in (self.shard_dir, self.manifest_dir, self.failure_dir):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CacheError(
                f"cannot create the embedding cache under {str(self.root)!r}: {err}; "
                "choose a writable cache folder (--cache-dir DIR or $TACLUSTER_CACHE; cache_dir= in the API)"
            ) from err

    # -- index ---------------------------------------------------------------
    def index(self) -> dict[str, tuple[str, int]]:
        """Map every cached key to ``(shard id, row)``; read once, then kept
        up to date by :meth:`write_shard`."""
        if self._index is None:
            self._remove_stale_temp_files()
            index: dict[str, tuple[str, int]] = {}
            # Sorted ids = write order, so a later entry for a key wins.
            for part in sorted(self.manifest_dir.glob("*.jsonl")):
                shard_id = part.stem
                entries = _read_manifest(part)
                self._n_rows[shard_id] = 1 + max((r for _, r in entries), default=-1)
                for key, row in entries:
                    index[key] = (shard_id, row)
            self._index = index
        return self._index

    def _remove_stale_temp_files(self, max_age_s: float = 3600.0) -> None:
        """Delete temp files that a killed writer left behind. Only old ones:
        a young one may belong to another process writing right now."""
        cutoff = time.time() - max_age_s
        for d in (self.shard_dir, self.manifest_dir, self.failure_dir, self.root):
            for tmp in d.glob(".*.tmp"):
                try:
                    if tmp.stat().st_mtime < cutoff:
                        tmp.unlink()
                except OSError:
                    pass

    def __len__(self) -> int:
        return len(self.index())

    def __contains__(self, key: str) -> bool:
        return key in self.index()

    # -- read ----------------------------------------------------------------
    def lookup(self, keys: Sequence[str]) -> CacheHits:
        """Fetch the cached rows of ``keys``, loading each needed shard once.

        A shard that cannot be read, or whose arrays have the wrong names,
        shape, dtype or non-finite values, triggers a
        :class:`CorruptShardWarning`; its keys count as misses (so they are
        recomputed) and it is set aside.

        Parameters
        ----------
        keys : sequence of str, length n
            Content keys (:func:`content_key`).

        Returns
        -------
        CacheHits
        """
        index = self.index()
        by_shard: dict[str, list[tuple[int, int]]] = {}
        for pos, key in enumerate(keys):
            loc = index.get(key)
            if loc is not None:
                by_shard.setdefault(loc[0], []).append((pos, loc[1]))

        hit_pos: list[np.ndarray] = []
        hit_rows: dict[str, list[np.ndarray]] = {name: [] for name in self.outputs}
        for shard_id, pairs in by_shard.items():
            data = self._load_shard(shard_id)
            if data is None:
                continue
            pos = np.fromiter((p for p, _ in pairs), dtype=np.int64, count=len(pairs))
            rows = np.fromiter((r for _, r in pairs), dtype=np.int64, count=len(pairs))
            hit_pos.append(pos)
            for name in self.outputs:
                hit_rows[name].append(data[name][rows])

        if not hit_pos:
            return CacheHits(np.zeros(0, dtype=np.int64), {})
        positions = np.concatenate(hit_pos)
        order = np.argsort(positions, kind="stable")
        arrays = {
            name: np.ascontiguousarray(np.concatenate(parts)[order], dtype=self.dtype)
            for name, parts in hit_rows.items()
        }
        return CacheHits(positions[order], arrays)

    def _load_shard(self, shard_id: str) -> dict[str, np.ndarray] | None:
        path = self.shard_dir / f"{shard_id}.safetensors"
        n_rows = self._n_rows.get(shard_id, 0)
        try:
            data = load_file(str(path))
            problem = self._check_shard(data, n_rows)
        except (OSError, SafetensorError, ValueError) as err:
            problem = f"unreadable ({err})"
        if problem is None:
            return data
        warnings.warn(
            f"embedding cache shard {str(path)!r} is corrupt: {problem}; "
            "its images will be embedded again",
            CorruptShardWarning,
            stacklevel=3,
        )
        self._quarantine(shard_id)
        return None

    def _check_shard(self, data: Mapping[str, np.ndarray], n_rows: int) -> str | None:
        dims = self._dims()
        for name in self.outputs:
            arr = data.get(name)
            if arr is None:
                return f"array {name!r} is missing"
            if arr.dtype != self.dtype or arr.ndim != 2 or arr.shape[0] < n_rows:
                return f"array {name!r} has shape {arr.shape} {arr.dtype}, expected ({n_rows}, d) {self.dtype}"
            if name in dims and arr.shape[1] != dims[name]:
                return f"array {name!r} has width {arr.shape[1]}, expected {dims[name]}"
            if not np.isfinite(arr).all():
                return f"array {name!r} holds NaN or inf"
        return None

    def _dims(self) -> dict[str, int]:
        if self._dims_cache is None:
            try:
                info = json.loads((self.root / "info.json").read_text(encoding="utf-8"))
                self._dims_cache = {str(k): int(v) for k, v in info.get("dims", {}).items()}
            except (OSError, ValueError, AttributeError, TypeError):
                self._dims_cache = {}
        return self._dims_cache

    def _quarantine(self, shard_id: str) -> None:
        """Drop a bad shard from the index and rename its files so later runs
        neither trust nor warn about it again."""
        if self._index is not None:
            self._index = {k: v for k, v in self._index.items() if v[0] != shard_id}
        for path in (
            self.manifest_dir / f"{shard_id}.jsonl",
            self.shard_dir / f"{shard_id}.safetensors",
        ):
            try:
                os.replace(path, path.with_name(path.name + ".corrupt"))
            except OSError:
                pass  # already gone or read-only cache: the warning is enough

    # -- write ---------------------------------------------------------------
    def write_shard(self, keys: Sequence[str], arrays: Mapping[str, np.ndarray]) -> str:
        """Store one batch of rows atomically; returns the new shard id.

        Parameters
        ----------
        keys : sequence of str, length n
            Content keys of the rows.
        arrays : mapping of str to ndarray of shape (n, d_name)
            One entry per name in :attr:`outputs`; finite values, stored as :attr:`dtype`.
        """
        n = len(keys)
        tensors = {}
        for name in self.outputs:
            arr = np.ascontiguousarray(arrays[name], dtype=self.dtype)
            if arr.ndim != 2 or arr.shape[0] != n:
                raise CacheError(
                    f"cannot cache output {name!r} of shape {arr.shape} for {n} keys; "
                    "expected one row per key"
                )
            tensors[name] = arr
        self._ensure_dirs()
        self._write_info({name: int(a.shape[1]) for name, a in tensors.items()})
        shard_id = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        shard = self.shard_dir / f"{shard_id}.safetensors"
        tmp = shard.with_name(f".{shard.name}.tmp")
        save_file(tensors, str(tmp), metadata={"format": str(_FORMAT_VERSION)})
        os.chmod(tmp, file_mode())  # safetensors writes 0600 whatever the umask
        os.replace(tmp, shard)
        # The manifest goes last: until it exists the shard is invisible.
        lines = "".join(json.dumps({"key": k, "row": i}) + "\n" for i, k in enumerate(keys))
        atomic_write_bytes(self.manifest_dir / f"{shard_id}.jsonl", lines.encode("utf-8"))
        global _ROWS_WRITTEN
        _ROWS_WRITTEN += n
        index = self.index()
        for i, k in enumerate(keys):
            index[k] = (shard_id, i)
        self._n_rows[shard_id] = n
        return shard_id

    def _write_info(self, dims: dict[str, int]) -> None:
        path = self.root / "info.json"
        if path.exists():
            return
        self._dims_cache = dims
        info = {
            "format": _FORMAT_VERSION,
            "backbone": self.backbone_name,
            "fingerprint": self.fingerprint,
            "outputs": list(self.outputs),
            "dims": dims,
        }
        atomic_write_bytes(path, (json.dumps(info, indent=1) + "\n").encode("utf-8"))

    # -- undecodable files -----------------------------------------------------
    def failures(self) -> dict[str, str]:
        """Map keys of files known to be undecodable to their reason."""
        out: dict[str, str] = {}
        if not self.failure_dir.is_dir():
            return out
        for part in sorted(self.failure_dir.glob("*.jsonl")):
            for rec in _read_jsonl(part):
                if isinstance(rec.get("key"), str) and isinstance(rec.get("reason"), str):
                    out[rec["key"]] = rec["reason"]
        return out

    def record_failures(self, items: Iterable[tuple[str, str]]) -> None:
        """Remember ``(key, reason)`` pairs so those bytes are not decoded again."""
        items = list(items)
        if not items:
            return
        self._ensure_dirs()
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.jsonl"
        text = "".join(json.dumps({"key": k, "reason": r}) + "\n" for k, r in items)
        atomic_write_bytes(self.failure_dir / name, text.encode("utf-8"))


def _read_jsonl(path: Path) -> list[dict]:
    out = []
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return out
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def _read_manifest(path: Path) -> list[tuple[str, int]]:
    out = []
    for rec in _read_jsonl(path):
        key, row = rec.get("key"), rec.get("row")
        if isinstance(key, str) and isinstance(row, int) and row >= 0:
            out.append((key, row))
    return out
