"""Runner: reader -> mapper -> writer for a collection of images.

:func:`embed_images` lists the inputs, keys every file by its content, serves
what the cache already holds, and embeds only the misses: images are decoded
and preprocessed on worker threads (or DataLoader worker processes) a couple
of batches ahead of the model forward, and each finished batch is written to
the cache as one shard before the next is embedded, so an interrupted run
resumes where it stopped.

The distribution seam is :func:`run_tasks`: the misses are cut into tasks
(shards of the input) and ``run_tasks(tasks, worker)`` runs ``worker(task)``
on each. Today that is a loop; a Ray engine only has to replace this one
function (each task is self-contained: paths in, arrays out, shards written).
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache, partial
from itertools import islice
from collections.abc import Iterable
from typing import Callable, Iterator, Literal, Sequence, TypeVar

import numpy as np

from tacluster.embed.backbones.base import Backbone
from tacluster.embed.cache import EmbeddingCache, content_key
from tacluster.embed.look import image_look, look_store
from tacluster.embed.precision import ImagePrecision, check_image_precision, choose_image_precision, image_cache
from tacluster.embed.reader import (
    ImageDecodeError,
    InputList,
    check_paths,
    decode_image,
    list_inputs,
)
from tacluster._progress import Progress
from tacluster.errors import BackboneError, InputError, TaclusterError

T = TypeVar("T")
R = TypeVar("R")

#: Reason given for a file whose embedding was not finite.
NAN_REASON = "backbone produced NaN"

# Reasons that depend on settings rather than on the file's bytes are not
# remembered in the cache (a user may raise Image.MAX_IMAGE_PIXELS).
_NOT_REMEMBERED = ("too large", "unreadable")

# Misses per task. Large, because prefetching restarts at a task boundary and
# a cluster engine wants coarse tasks anyway.
_TASK_IMAGES = 4096


@dataclass
class EmbeddingStats:
    """Counts and time of one :func:`embed_images` call.

    Attributes
    ----------
    n_cached : int
        Usable paths served from the cache.
    n_computed : int
        Distinct images (by content) embedded by the backbone in this call.
    n_skipped : int
        Entries left out (see :attr:`EmbeddingResult.skipped`).
    n_duplicates : int
        Entries of a list naming a file listed before (used once).
    seconds : float
        Wall-clock time of the whole call.
    """

    n_cached: int = 0
    n_computed: int = 0
    n_skipped: int = 0
    seconds: float = 0.0
    n_duplicates: int = 0


@dataclass
class EmbeddingResult:
    """Embeddings of every usable image of a source.

    Attributes
    ----------
    paths : list of str, length n
        Usable images, in input order.
    arrays : dict of str to ndarray of shape (n, d_name), float32
        One entry per name in the backbone's ``outputs``; row i belongs to
        ``paths[i]``. With no usable image the arrays have shape (0, 0) when
        the width is not known.
    skipped : list of (str, str)
        ``(path, reason)`` for every input left out.
    stats : EmbeddingStats
    keys : list of str or None
        Content key (SHA-256 of the bytes) of each of ``paths``; None for
        vectors read from elsewhere (``--embeddings``).
    precision : ImagePrecision or None
        What the image tower ran in (:mod:`tacluster.embed.precision`).
    """

    paths: list[str]
    arrays: dict[str, np.ndarray]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    stats: EmbeddingStats = field(default_factory=EmbeddingStats)
    keys: list[str] | None = None
    #: The precision the image tower ran in and why (None: vectors read from elsewhere).
    precision: ImagePrecision | None = None


@dataclass(frozen=True)
class EmbedTask:
    """A shard of the work: distinct images (by content) to embed.

    Attributes
    ----------
    keys : tuple of str
        Content keys.
    paths : tuple of str
        One path holding each key's bytes.
    """

    keys: tuple[str, ...]
    paths: tuple[str, ...]


@dataclass
class TaskResult:
    """What a worker returns for one :class:`EmbedTask`.

    Attributes
    ----------
    keys : list of str, length m
        Keys embedded successfully.
    arrays : dict of str to ndarray of shape (m, d_name)
    failures : list of (str, str)
        ``(key, reason)`` for keys that could not be embedded.
    """

    keys: list[str]
    arrays: dict[str, np.ndarray]
    failures: list[tuple[str, str]]


def run_tasks(tasks: Sequence[T], worker: Callable[[T], R]) -> list[R]:
    """Run ``worker`` on every task and return the results in task order.

    This is the distribution seam: sequential here; a cluster engine (Ray)
    replaces this function without touching the worker.
    """
    return [worker(task) for task in tasks]


def embed_images(
    source_or_paths: str | os.PathLike | Sequence[str | os.PathLike],
    backbone: Backbone,
    *,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 64,
    num_workers: int = 2,
    progress: bool = True,
    decode_in: Literal["threads", "processes"] = "threads",
    engine: Literal["local", "ray"] = "local",
    image_precision: Literal["auto", "float32", "int8"] | None = None,
) -> EmbeddingResult:
    """Embed every usable image of a source, reusing cached embeddings.

    Parameters
    ----------
    source_or_paths : str, path-like, sequence of those, or InputList
        A folder, a ``.csv``/``.txt`` list of paths (see
        :func:`~tacluster.embed.reader.list_inputs`), the paths
        themselves, or what ``list_inputs`` returned.
    backbone : Backbone
        The model; its ``fingerprint`` names the cache folder.
    cache_dir : str or path-like, optional
        Root of the embedding cache; None disables caching (images with
        identical bytes are still embedded once).
    batch_size : int, default 64
        Images per forward pass, and rows per cache shard.
    num_workers : int, default 2
        Parallel decoders; 0 decodes on the calling thread.
    progress : bool, default True
        Show a tqdm bar (only when stderr is a terminal).
    decode_in : {"threads", "processes"}, default "threads"
        Decode on threads (measured faster on a 2-core machine, see
        ``benchmarks/embed_speed.py``) or in ``torch.utils.data.DataLoader``
        worker processes.
    engine : {"local", "ray"}, default "local"
        Run the embedding tasks in this process, or on Ray actors
        (:func:`tacluster.embed.ray_engine.run_tasks_ray`; ``RAY_ADDRESS``
        picks the cluster). Both write the same cache shards.
    image_precision : {None, "auto", "float32", "int8"}, default None
        None: the backbone as given (float32 as loaded; an int8 copy from
        :func:`~tacluster.embed.precision.int8_image_backbone` stays int8).
        ``"int8"``: the image tower's Linear layers quantised (CPU, local
        engine); ``"auto"``: int8 where the collection is cached in int8, or
        a probe on this machine measured it faster at min cosine >= 0.999
        (:func:`~tacluster.embed.precision.choose_image_precision`). Each
        precision has its own cache folder; ``result.precision`` says which ran.

    Returns
    -------
    EmbeddingResult
        An empty result (no paths) when nothing usable was found: the caller
        decides whether that is an error.

    Raises
    ------
    InputError
        When the source does not exist, a parameter is out of range, or
        ``image_precision`` cannot run here (int8 on a GPU, on Ray, or
        without an image tower).
    BackboneError
        When the backbone fails on a batch or returns malformed arrays (the
        batches finished before that are already cached).
    """
    t0 = time.perf_counter()
    _check_embed_args(batch_size, num_workers, decode_in, engine, backbone, image_precision)
    outputs = tuple(backbone.outputs)
    inputs = _resolve_inputs(source_or_paths)
    skipped: list[tuple[str, str]] = list(inputs.skipped)
    paths, keys = key_files(inputs.paths, num_workers, skipped)
    unique = list(dict.fromkeys(keys))
    first_path: dict[str, str] = {}
    for p, k in zip(paths, keys):
        first_path.setdefault(k, p)

    precision, backbone, cache = _precision_and_cache(backbone, image_precision, unique, first_path, cache_dir,
                                                      engine, progress)
    # Each decoded image's thumbnail (duplicates are found on them) is cached on the way: no second decode.
    look_cache = look_store(cache_dir) if cache_dir is not None else None
    found, blocks, failed, n_hit_keys = _cache_hits(cache, unique)
    misses = [k for k in unique if k not in found and k not in failed]
    tasks = [EmbedTask(tuple(chunk), tuple(first_path[k] for k in chunk)) for chunk in _chunks(misses, _TASK_IMAGES)]
    worker = partial(_embed_task, backbone=backbone, cache=cache, look_cache=look_cache, batch_size=batch_size,
                     num_workers=num_workers, decode_in=decode_in)
    results = _run_with_progress(tasks, worker, len(misses), backbone.name, progress, engine)

    n_computed = 0
    for res in results:
        if res.keys:
            b = len(blocks)
            blocks.append(res.arrays)
            for row, k in enumerate(res.keys):
                found[k] = (b, row)
            n_computed += len(res.keys)
        failed.update(res.failures)

    usable = [i for i, k in enumerate(keys) if k in found]
    for p, k in zip(paths, keys):
        if k not in found:
            skipped.append((p, failed.get(k, "not embedded")))
    arrays = _assemble([keys[i] for i in usable], found, blocks, outputs)
    stats = EmbeddingStats(
        n_cached=sum(1 for i in usable if keys[i] in n_hit_keys),
        n_computed=n_computed,
        n_skipped=len(skipped),
        seconds=time.perf_counter() - t0,
        n_duplicates=inputs.duplicates,
    )
    return EmbeddingResult([paths[i] for i in usable], arrays, skipped, stats, keys=[keys[i] for i in usable],
                           precision=precision)


def _precision_and_cache(backbone, image_precision, unique: list[str], first_path: dict[str, str], cache_dir,
                          engine: str, progress: bool):
    """``(ImagePrecision, backbone, cache)``: the precision the images are embedded in
    (:func:`~tacluster.embed.precision.choose_image_precision`), the backbone that embeds them, and
    its embedding cache (None without ``cache_dir``). Each precision's cache is opened once: ``auto``
    counts the collection in both, and the chosen one serves it with the index already read."""
    open_cache = lru_cache(maxsize=None)(partial(image_cache, cache_dir, backbone)) if cache_dir is not None else None
    precision, backbone = choose_image_precision(
        backbone, image_precision, keys=unique, cache_dir=cache_dir, engine=engine, progress=progress,
        probe=partial(_probe_pixels, [first_path[k] for k in unique], backbone.preprocess), open_cache=open_cache)
    return precision, backbone, (open_cache(precision.precision) if open_cache is not None else None)


def _check_embed_args(batch_size, num_workers, decode_in, engine, backbone=None, image_precision=None) -> None:
    """The arguments of :func:`embed_images`, before any file is hashed (``image_precision``:
    :func:`~tacluster.embed.precision.check_image_precision`)."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size={batch_size!r} must be a positive integer, e.g. 64")
    if not isinstance(num_workers, int) or num_workers < 0:
        raise InputError(f"num_workers={num_workers!r} must be an integer >= 0, e.g. 2")
    if decode_in not in ("threads", "processes"):
        raise InputError(f"decode_in={decode_in!r} must be 'threads' or 'processes'")
    if engine not in ("local", "ray"):
        raise InputError(f"engine={engine!r} must be 'local' or 'ray'")
    if backbone is not None:
        check_image_precision(backbone, image_precision, engine)


def key_files(files: Sequence[str], num_workers: int, skipped: list) -> tuple[list[str], list[str]]:
    """``(paths, keys)`` of the readable files, each keyed by its bytes (threads: hashing
    releases the GIL); unreadable ones are appended to ``skipped`` with the reason."""
    paths: list[str] = []
    keys: list[str] = []
    for path, (key, reason) in zip(files, _map_threads(_try_key, files, num_workers)):
        if key is None:
            skipped.append((path, reason))
        else:
            paths.append(path)
            keys.append(key)
    return paths, keys


def _cache_hits(cache: EmbeddingCache | None, unique: list[str]):
    """``(found, blocks, failed, hit_keys)``: where each cached key's row is (block, row), the
    cached arrays as block 0, the keys the cache remembers as undecodable, and the hit keys."""
    found: dict[str, tuple[int, int]] = {}
    blocks: list[dict[str, np.ndarray]] = []
    failed: dict[str, str] = {}
    hit_keys: set[str] = set()
    if cache is None:
        return found, blocks, failed, hit_keys
    hits = cache.lookup(unique)
    if len(hits.positions):
        blocks.append(hits.arrays)
        for row, pos in enumerate(hits.positions):
            found[unique[pos]] = (0, row)
            hit_keys.add(unique[pos])
    known_bad = cache.failures()
    for k in unique:
        if k not in found and k in known_bad:
            failed[k] = known_bad[k]
    return found, blocks, failed, hit_keys


def _run_with_progress(tasks, worker, n_images: int, name: str | None, progress: bool, engine: str):
    """Run the embedding tasks here or on Ray, with a tqdm bar on a terminal and plain lines otherwise."""
    with Progress(n_images, f"embedding ({name or 'backbone'})", "image", enabled=progress) as bar:
        work = partial(worker, on_batch=bar.update)
        if engine == "ray":
            from tacluster.embed.ray_engine import run_tasks_ray

            return run_tasks_ray(tasks, work)
        return run_tasks(tasks, work)


def _resolve_inputs(source_or_paths) -> InputList:
    if isinstance(source_or_paths, InputList):  # listed already (the caller checked its size)
        return source_or_paths
    if isinstance(source_or_paths, (str, os.PathLike)):
        return list_inputs(source_or_paths)
    if isinstance(source_or_paths, Iterable):
        return check_paths(source_or_paths)
    raise InputError(
        f"cannot read images from {type(source_or_paths).__name__}; pass a folder, "
        "a .csv/.txt list of paths, or a list of paths"
    )


def _try_key(path: str) -> tuple[str | None, str | None]:
    try:
        return content_key(path), None
    except OSError as err:
        return None, f"unreadable: {err.strerror or err}"


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _map_threads(fn: Callable[[T], R], items: Sequence[T], num_workers: int) -> list[R]:
    if num_workers <= 1 or len(items) < 2:
        return [fn(x) for x in items]
    # Submit a bounded window at a time: ``pool.map`` over everything would hold
    # one Future (about 1.7 KiB with its lock and condition) per item at once,
    # which measured as the largest per-image cost of a 20k-image run.
    out: list[R] = []
    with ThreadPoolExecutor(num_workers, thread_name_prefix="tacluster-hash") as pool:
        for chunk in _chunks(items, 256 * num_workers):
            out.extend(pool.map(fn, chunk))
    return out


def _assemble(
    keys: Sequence[str],
    found: dict[str, tuple[int, int]],
    blocks: list[dict[str, np.ndarray]],
    outputs: Sequence[str],
) -> dict[str, np.ndarray]:
    """Gather rows from the cached and computed blocks, one per key."""
    if not keys:
        widths = {n: next((b[n].shape[1] for b in blocks if n in b), 0) for n in outputs}
        return {n: np.zeros((0, widths[n]), dtype=np.float32) for n in outputs}
    block_of = np.fromiter((found[k][0] for k in keys), dtype=np.int64, count=len(keys))
    row_of = np.fromiter((found[k][1] for k in keys), dtype=np.int64, count=len(keys))
    out = {}
    for name in outputs:
        width = next(b[name].shape[1] for b in blocks if name in b)
        arr = np.empty((len(keys), width), dtype=np.float32)
        for b, block in enumerate(blocks):
            sel = block_of == b
            if sel.any():
                arr[sel] = block[name][row_of[sel]]
        out[name] = arr
    return out


# -- mapper ------------------------------------------------------------------


def _load_one(path: str, preprocess: Callable, look: bool = False
              ) -> tuple[object | None, str | None, bool, np.ndarray | None]:
    """Decode and preprocess one file: ``(tensor, None, _, thumbnail)`` or
    ``(None, reason, remember, None)``; never raises for a bad file. The thumbnail
    (:func:`tacluster.embed.look.image_look`) is made only when ``look``, else None."""
    try:
        image = decode_image(path)
    except ImageDecodeError as err:
        return None, err.reason, not err.reason.startswith(_NOT_REMEMBERED), None
    try:
        return preprocess(image), None, False, image_look(image) if look else None
    except Exception as err:  # a backbone's transform failing on one odd image
        return None, f"preprocess failed ({type(err).__name__}: {err})"[:120], False, None


def _probe_pixels(paths: Sequence[str], preprocess: Callable, n: int):
    """Up to ``n`` of ``paths`` decoded and preprocessed, stacked (N, C, H, W) (at most ``4 n`` tried);
    None where none decodes. The precision probe's images."""
    import torch

    tensors = []
    for path in paths[:4 * n]:
        tensor = _load_one(path, preprocess)[0]
        if tensor is not None:
            tensors.append(tensor)
            if len(tensors) == n:
                break
    return torch.stack(tensors) if tensors else None


class _DecodeDataset:
    """Map-style dataset for ``torch.utils.data.DataLoader`` workers."""

    def __init__(self, paths: Sequence[str], preprocess: Callable, look: bool):
        self.paths = paths
        self.preprocess = preprocess
        self.look = look

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        return _load_one(self.paths[i], self.preprocess, self.look)


def _decoded_batches(
    paths: Sequence[str],
    preprocess: Callable,
    batch_size: int,
    num_workers: int,
    decode_in: str,
    look: bool = False,
) -> Iterator[list[tuple[object | None, str | None, bool, np.ndarray | None]]]:
    """Yield per-batch lists of :func:`_load_one` results, in input order,
    decoding about two batches ahead of the consumer."""
    if decode_in == "processes" and num_workers > 0:
        from torch.utils.data import DataLoader

        loader = DataLoader(
            _DecodeDataset(paths, preprocess, look),
            batch_size=batch_size,
            num_workers=num_workers,
            collate_fn=list,
            prefetch_factor=2,
        )
        yield from loader
        return
    fn = partial(_load_one, preprocess=preprocess, look=look)
    if num_workers <= 0:
        for chunk in _chunks(paths, batch_size):
            yield [fn(p) for p in chunk]
        return
    pool = ThreadPoolExecutor(num_workers, thread_name_prefix="tacluster-decode")
    try:
        it = iter(paths)
        pending = deque(pool.submit(fn, p) for p in islice(it, 2 * batch_size))
        batch = []
        while pending:
            fut = pending.popleft()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(fn, nxt))
            batch.append(fut.result())
            if len(batch) == batch_size:
                yield batch
                batch = []
        if batch:
            yield batch
    finally:
        # Also reached when the consumer stops early (backbone error).
        pool.shutdown(wait=True, cancel_futures=True)


def _embed_task(
    task: EmbedTask,
    *,
    backbone: Backbone,
    cache: EmbeddingCache | None,
    batch_size: int,
    num_workers: int,
    decode_in: str = "threads",
    on_batch: Callable[[int], object] | None = None,
    look_cache: EmbeddingCache | None = None,
) -> TaskResult:
    """Worker: embed one task's images, writing each batch (and its thumbnails) to the caches."""
    import torch

    outputs = tuple(backbone.outputs)
    done_keys: list[str] = []
    parts: dict[str, list[np.ndarray]] = {n: [] for n in outputs}
    failures: list[tuple[str, str]] = []
    remembered: list[tuple[str, str]] = []
    start = 0
    for loaded in _decoded_batches(task.paths, backbone.preprocess, batch_size, num_workers, decode_in,
                                   look=look_cache is not None):
        keys = task.keys[start : start + len(loaded)]
        first_path = task.paths[start]
        start += len(loaded)
        ok_keys, tensors, looks = [], [], []
        for key, (tensor, reason, remember, look) in zip(keys, loaded):
            if tensor is None:
                failures.append((key, reason))
                if remember:
                    remembered.append((key, reason))
            else:
                ok_keys.append(key)
                tensors.append(tensor)
                looks.append(look)
        if look_cache is not None and ok_keys:
            look_cache.write_shard(ok_keys, {"look": np.stack(looks)})
        if tensors:
            out = _forward(backbone, torch.stack(tensors), outputs, first_path)
            finite = np.logical_and.reduce([np.isfinite(out[n]).all(axis=1) for n in outputs])
            if not finite.all():
                failures.extend((k, NAN_REASON) for k, f in zip(ok_keys, finite) if not f)
                ok_keys = [k for k, f in zip(ok_keys, finite) if f]
                out = {n: a[finite] for n, a in out.items()}
            if ok_keys:
                if cache is not None:
                    cache.write_shard(ok_keys, out)
                done_keys.extend(ok_keys)
                for n in outputs:
                    parts[n].append(out[n])
        if on_batch is not None:
            on_batch(len(loaded))
    if cache is not None:
        cache.record_failures(remembered)
    arrays = {n: np.concatenate(p) for n, p in parts.items() if p}
    return TaskResult(done_keys, arrays, failures)


def _forward(
    backbone: Backbone, batch, outputs: Sequence[str], first: str
) -> dict[str, np.ndarray]:
    """Run the model on one batch (N, C, H, W) and check what it returns."""
    import torch

    n = batch.shape[0]
    try:
        with torch.inference_mode():
            raw = backbone.encode_images(batch)
    except TaclusterError:
        raise
    except Exception as err:
        raise BackboneError(
            f"backbone {backbone.name!r} failed on a batch of {n} images starting near "
            f"{first!r}: {type(err).__name__}: {err}; finished batches are cached, so "
            "rerunning resumes after them"
        ) from err
    out = {}
    for name in outputs:
        if name not in raw:
            raise BackboneError(
                f"backbone {backbone.name!r} returned no {name!r} array (got {sorted(raw)}); "
                "encode_images must return every name in backbone.outputs"
            )
        arr = np.asarray(raw[name], dtype=np.float32)
        if arr.ndim != 2 or arr.shape[0] != n:
            raise BackboneError(
                f"backbone {backbone.name!r} returned {name!r} of shape {arr.shape} for "
                f"{n} images; expected ({n}, d)"
            )
        out[name] = arr
    return out
