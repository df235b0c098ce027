"""Looks: a small grey thumbnail of every image, what finds its copies.

A look is the whole frame, upright, in grey, box-averaged to
:data:`LOOK_SIZE` x :data:`LOOK_SIZE` pixels (the aspect ratio is not kept:
a slight crop then only stretches it), stored as ``uint8``. It does not depend
on the backbone: re-encoding, resizing and colour shifts leave it almost
unchanged in any collection, which no image embedding guarantees (``lite``'s
features move more under a half-size copy than between two photos of one
scene, ``docs/duplicates.md``). :mod:`tacluster.run.alignment` compares two
looks after undoing a crop.

Looks are cached by file content, once for every backbone, under
``<cache_dir>/embeddings/<LOOK_FINGERPRINT>/`` (the embedding cache's
crash-safe shards, 4 KB a row). :func:`~tacluster.embed.runner.embed_images`
stores the look of every image it decodes, so a run decodes each file once;
images embedded before that (or elsewhere) are decoded here at reduced scale
(Pillow's draft mode for JPEGs), a fraction of an embedding's cost.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np

from tacluster._progress import Progress
from tacluster.embed.cache import EmbeddingCache
from tacluster.embed.reader import ImageDecodeError, decode_image

#: Side of a look in pixels.
LOOK_SIZE = 64
#: Names the cache folder; bumped whenever :func:`image_look` changes.
LOOK_FINGERPRINT = f"look-grey{LOOK_SIZE}-box-v1"
#: JPEGs are decoded at the smallest scale whose sides stay at least this.
DRAFT_SIZE = 2 * LOOK_SIZE
#: Rows per cache shard.
SHARD_ROWS = 512


def look_store(cache_dir: str | os.PathLike) -> EmbeddingCache:
    """The cache of looks under ``cache_dir`` (one for every backbone)."""
    return EmbeddingCache(cache_dir, LOOK_FINGERPRINT, ("look",), "look", dtype=np.uint8)


def image_look(image) -> np.ndarray:
    """The look of a ``PIL.Image``: ``(LOOK_SIZE * LOOK_SIZE,)`` uint8, rows of the grey thumbnail."""
    from PIL import Image

    grey = image.convert("L").resize((LOOK_SIZE, LOOK_SIZE), Image.BOX)
    return np.asarray(grey, dtype=np.uint8).reshape(-1)


def read_look(path: str | os.PathLike) -> np.ndarray:
    """The look of an image file (:class:`~tacluster.embed.reader.ImageDecodeError` when it cannot be decoded)."""
    return image_look(decode_image(path, draft_size=DRAFT_SIZE))


def collection_looks(
    paths: Sequence[str],
    keys: Sequence[str],
    cache_dir: str | os.PathLike | None = None,
    *,
    num_workers: int = 2,
    progress: bool = True,
) -> "Looks":
    """The look of every image, reading and filling the cache.

    Parameters
    ----------
    paths : sequence of str, length n
        Image files.
    keys : sequence of str, length n
        Their content keys (:func:`~tacluster.embed.cache.content_key`, what
        :class:`~tacluster.embed.runner.EmbeddingResult` holds).
    cache_dir : path-like, optional
        Root of the cache (None: nothing is cached).
    num_workers : int
        Decoding threads.
    progress : bool
        Show a progress line while decoding the misses.

    Returns
    -------
    Looks
        One row per decodable image; the others in ``skipped`` with the reason.
    """
    if len(paths) != len(keys):
        raise ValueError(f"{len(paths)} paths for {len(keys)} keys")
    cache = look_store(cache_dir) if cache_dir is not None else None
    first: dict[str, str] = {}
    for p, k in zip(paths, keys):
        first.setdefault(k, p)
    unique = list(first)
    found: dict[str, np.ndarray] = {}
    if cache is not None and unique:
        hits = cache.lookup(unique)
        for pos, row in zip(hits.positions, hits.arrays.get("look", ())):
            found[unique[int(pos)]] = row
    misses = [k for k in unique if k not in found]
    failed: dict[str, str] = {}
    with Progress(len(misses), "looks (for duplicates)", "image", enabled=progress) as bar, \
            ThreadPoolExecutor(max(1, num_workers), thread_name_prefix="tacluster-look") as pool:
        for start in range(0, len(misses), SHARD_ROWS):
            chunk = misses[start:start + SHARD_ROWS]
            done = [(k, row) for k, row in zip(chunk, pool.map(lambda k: _try_look(first[k]), chunk))]
            failed.update((k, row) for k, row in done if isinstance(row, str))
            good = [(k, row) for k, row in done if not isinstance(row, str)]
            if cache is not None and good:
                cache.write_shard([k for k, _ in good], {"look": np.stack([row for _, row in good])})
            found.update(good)
            bar.update(len(chunk))
    keep = [i for i, k in enumerate(keys) if k in found]
    rows = np.stack([found[keys[i]] for i in keep]) if keep else np.zeros((0, LOOK_SIZE ** 2), dtype=np.uint8)
    return Looks([paths[i] for i in keep], [keys[i] for i in keep], rows,
                 [(p, failed[k]) for p, k in zip(paths, keys) if k in failed])


@dataclass
class Looks:
    """The looks of a collection: ``array[i]`` is the look of ``paths[i]`` (content key ``keys[i]``)."""

    paths: list[str]
    keys: list[str]
    array: np.ndarray
    #: ``(path, reason)`` of each image that could not be decoded.
    skipped: list[tuple[str, str]]


def _try_look(path: str) -> np.ndarray | str:
    """The look of ``path``, or the reason it cannot be decoded."""
    try:
        return read_look(path)
    except ImageDecodeError as err:
        return err.reason
