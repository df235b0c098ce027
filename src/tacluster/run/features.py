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
    from tacluster.embed.precision import image_cache

    hits = image_cache(cache_root, bb).lookup(digests)
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


def export_embeddings(run_dir: str | Path, out: str | Path, *, device: str = "auto",
                      cache_dir: str | Path | None = None, offline: bool | None = None,
                      progress: bool = False) -> list[Path]:
    """Write a run's own vectors as Parquet that ``tacluster cluster --embeddings`` reads back.

    ``out`` (``.parquet``): one row per image of the run, in its order, with
    ``path``, ``cluster``, ``cluster_name`` and ``embedding`` (the image
    vectors, float32). A backbone with a separate noun space (``lite``) also
    gets ``<stem>.joint.parquet`` beside it (the same rows, its ``embedding``
    column the joint vectors), for ``--joint-embeddings``. The vectors come
    from the run's embedding cache (or its ``--embeddings`` source), as for
    ``split``. Returns the files written. Refuses an existing ``out``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tacluster._atomic import atomic_write
    from tacluster.run.edit import _Run
    from tacluster.run.workflows import load_run_model, model_backbone

    out = Path(out)
    if out.suffix.lower() != ".parquet":
        raise InputError(f"--embeddings {str(out)!r}: give a .parquet file name")
    if not out.parent.is_dir():
        raise InputError(f"{str(out.parent)!r} is not a directory; create it first")
    run = _Run(run_dir)
    est, _, name = load_run_model(run.dir / "model")
    bb = model_backbone(est, name, run.dir / "model", device, offline, progress)
    kinds = ["image"] + (["joint"] if "joint" in bb.outputs else [])
    targets = [out, out.with_name(out.stem + ".joint.parquet")][:len(kinds)]
    for target in targets:  # refused before any vector is read
        if target.exists():
            raise InputError(f"{str(target)!r} exists; give a new file name (nothing was written)")
    feats = run_features(run, bb, cache_dir=cache_dir, verb="export --embeddings", progress=progress)
    written = []
    for kind, target in zip(kinds, targets):
        vectors = np.ascontiguousarray(feats[kind], dtype=np.float32)
        table = pa.table({
            "path": [str(p) for p in run.table["path"]],
            "cluster": pa.array([int(c) for c in run.table["cluster"]], type=pa.int64()),
            "cluster_name": [str(n) for n in run.table["cluster_name"]],
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), type=pa.float32()),
                                                           vectors.shape[1]),
        })
        atomic_write(target, lambda p, t=table: pq.write_table(t, str(p)))
        written.append(target)
    return written
