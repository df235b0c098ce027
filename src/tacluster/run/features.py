"""A finished run's embeddings, again: what ``split`` and ``move --refit-centres`` re-cluster on.

A run does not copy its embeddings (N x d floats beside the cache that holds
them); it records each image's content digest (``assignments.parquet``,
:data:`tacluster.run.rundir.DIGEST_COLUMN`) and the cache it used (run.json
``settings.cache_dir``). The rows come back from that cache by digest; a row
the cache lost is embedded again from its file, refused when the file's bytes
changed since the run. A run made from ``--embeddings`` reads its recorded
source again.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tacluster._paths import text_to_path
from tacluster.errors import InputError


def run_features(run, bb, *, cache_dir: str | Path | None = None, verb: str = "split",
                 progress: bool = False) -> dict[str, np.ndarray]:
    """Every output of ``bb`` (``image``, ``joint``, ...) for each row of the run's assignments.

    ``run``: a :class:`tacluster.run.edit._Run`; ``cache_dir``: the embedding
    cache (default: the one the run recorded). Raises :class:`InputError` (one
    line) when a row can be neither found nor embedded as it was.
    """
    settings = run.run.get("settings") or {}
    paths = [str(p) for p in run.table["path"]]
    if settings.get("embeddings"):
        return _external_rows(settings, bb, paths)
    digests = run.require_digests(verb)
    cache_root = run_cache_dir(run, cache_dir)
    from tacluster.embed import embed_images
    from tacluster.embed.cache import EmbeddingCache

    hits = EmbeddingCache(cache_root, bb.fingerprint, bb.outputs, bb.name).lookup(digests)
    out: dict[str, np.ndarray] = {}
    missing = np.setdiff1d(np.arange(len(paths)), hits.positions)
    again = embed_images([text_to_path(paths[i]) for i in missing], bb, cache_dir=cache_root,
                         progress=progress) if missing.size else None
    if again is not None:
        got = dict(zip((str(p) for p in again.paths), again.keys or []))
        lost = [paths[i] for i in missing if got.get(str(text_to_path(paths[i]))) != digests[i]]
        if lost:
            raise InputError(
                f"{len(lost)} image(s) of run {str(run.dir)!r} are neither in the embedding cache {str(cache_root)!r} "
                f"nor readable with the bytes they had (first: {lost[0]!r}); re-run `tacluster cluster`")
        row_of = {str(p): j for j, p in enumerate(again.paths)}
    for name in bb.outputs:
        source = hits.arrays.get(name)
        width = source.shape[1] if source is not None else again.arrays[name].shape[1]
        arr = np.empty((len(paths), width), dtype=np.float32)
        if source is not None:
            arr[hits.positions] = source
        if again is not None:
            arr[missing] = again.arrays[name][[row_of[str(text_to_path(paths[i]))] for i in missing]]
        out[name] = arr
    return out


def run_cache_dir(run, cache_dir: str | Path | None = None) -> Path:
    """``cache_dir``, or the embedding / noun-bank cache the run recorded (run.json ``settings.cache_dir``)."""
    if cache_dir is not None:
        return Path(cache_dir)
    recorded = (run.run.get("settings") or {}).get("cache_dir")
    if not recorded:
        raise InputError(f"run {str(run.dir)!r} does not record its embedding cache; pass --cache-dir")
    return Path(text_to_path(recorded))


def _external_rows(settings: dict, bb, paths: list[str]) -> dict[str, np.ndarray]:
    """The rows of a run made from ``--embeddings``, read again from its recorded source, in the run's order."""
    from tacluster._paths import path_to_text
    from tacluster.embed.external import open_embeddings
    from tacluster.run.workflows import _read_external

    column = settings.get("embedding_column")
    joint = settings.get("joint_embeddings")
    external = (open_embeddings(text_to_path(settings["embeddings"]), column=column),
                None if joint is None else open_embeddings(text_to_path(joint), column=column,
                                                           what="--joint-embeddings"))
    emb = _read_external(external, bb, settings.get("backbone", bb.name))
    row_of = {path_to_text(p): i for i, p in enumerate(emb.paths)}
    lost = [p for p in paths if p not in row_of]
    if lost:
        raise InputError(f"the run's --embeddings source {settings['embeddings']!r} no longer holds "
                         f"{len(lost)} of its rows (first: {lost[0]!r}); re-run `tacluster cluster`")
    rows = np.array([row_of[p] for p in paths], dtype=np.int64)
    return {name: np.asarray(arr[rows], dtype=np.float32) for name, arr in emb.arrays.items()}
