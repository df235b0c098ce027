"""``tacluster add``: new photos into a finished run, without re-clustering.

The new images are embedded (through the cache) or read from ``--embeddings``;
those already in the run (same content digest, or same path) are skipped.
The rest are assigned by the saved model exactly as ``predict`` assigns them
(:func:`tacluster.run.workflows.assign_with_outliers`: merges and splits
included) and appended to the run's assignments, clusters.json and report.
An added image fits no cluster well, and is marked ``new``, when its cosine to
its cluster's centre lies far below those of the cluster's members from the
fit (the robust rule of :mod:`tacluster.run.outliers`, against each
cluster's distribution from the fit), or when its nearest images are mostly
other added ones, more than chance allows (a kind of photo the fit had no
cluster for: :func:`~tacluster.run.outliers.novelty_mask`);
its ``outlier`` mark is ``predict``'s (confidence below the cluster's saved
threshold). When many are new, the run is worth re-fitting:
:attr:`AddResult.refit_command` is the command that does it. Added images
have no place on the fit's 2-D map (``x``, ``y`` are NaN; the map shows the
fitted images). Everything goes through the edit journal of
:mod:`tacluster.run.edit`.
"""

from __future__ import annotations

import csv
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tacluster._paths import path_to_text
from tacluster.run.edit import locked

#: "Many are new": at least this share of the added images (and :data:`REFIT_MIN_NEW` images).
REFIT_NEW_SHARE = 0.10
REFIT_MIN_NEW = 5


@dataclass
class AddResult:
    """What :func:`add_images` did."""

    paths: list[str]
    labels: np.ndarray
    names: list[str]
    new: np.ndarray
    already_in_run: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: The one command line that re-fits the run with the added images, when many are new; else None.
    refit_command: str | None = None


@locked
def add_images(run_dir: str | os.PathLike, source: str | os.PathLike | None = None, *,
               embeddings: str | os.PathLike | None = None, joint_embeddings: str | os.PathLike | None = None,
               embedding_column: str | None = None, device: str = "auto", batch_size: int = 64,
               cache_dir: str | os.PathLike | None = None, offline: bool | None = None,
               progress: bool = False) -> AddResult:
    """Add the images of ``source`` (a folder or list; or ``embeddings``, read as
    ``cluster --embeddings`` reads them) to a finished run; see the module docstring.

    ``cache_dir``: the embedding cache (default: the run's). Returns the added
    images with their clusters and ``new`` marks.
    """
    from tacluster.embed import EmbeddingResult, embed_images
    from tacluster.run.edit import _Run
    from tacluster.run.features import run_cache_dir
    from tacluster.run.rundir import DIGEST_COLUMN, MOVED_COLUMN, NEW_COLUMN
    from tacluster.run.workflows import (
        _check_sources, _open_input, _read_external, assign_with_outliers, load_run_model, model_backbone,
    )

    run = _Run(run_dir)
    _check_sources(source, embeddings, joint_embeddings, embedding_column, "add")
    from_images = not (run.run.get("settings") or {}).get("embeddings")
    digests = set(run.require_digests("add")) - {""} if from_images else set(run.table.get(DIGEST_COLUMN) or [])
    est, cmap, name = load_run_model(run.dir / "model")
    external, _ = _open_input(source, embeddings, joint_embeddings, embedding_column)
    bb = model_backbone(est, name, run.dir / "model", device, offline, progress)
    if external is None:
        emb = embed_images(source, bb, cache_dir=run_cache_dir(run, cache_dir) if from_images else cache_dir,
                           batch_size=batch_size, progress=progress)
    else:
        emb = _read_external(external, bb, name, needs_joint=est.method == "no-train")
    in_run = set(run.table["path"])
    keys = emb.keys or [""] * len(emb.paths)
    fresh = [i for i, (p, key) in enumerate(zip(emb.paths, keys))
             if path_to_text(p) not in in_run and not (key and key in digests)]
    rows = np.asarray(fresh, dtype=np.int64)
    part = EmbeddingResult([emb.paths[i] for i in fresh], {n: np.asarray(a[rows]) for n, a in emb.arrays.items()})
    labels, conf, outlier = assign_with_outliers(est, cmap, part)
    new = _fits_no_cluster(run, est, bb, part, labels, cache_dir, progress)

    t = run.table
    added = {"path": [path_to_text(p) for p in part.paths], "cluster": labels.tolist(),
             "confidence": conf.astype(np.float64).tolist(), "cluster_name": [cmap.names[c] for c in labels],
             "outlier": outlier.tolist(), "x": [float("nan")] * len(fresh), "y": [float("nan")] * len(fresh),
             DIGEST_COLUMN: [keys[i] for i in fresh], MOVED_COLUMN: [False] * len(fresh),
             NEW_COLUMN: new.tolist()}
    for column in t:
        t[column] = list(t[column]) + added.get(column, [None] * len(fresh))
    run.summarise({cid: dict(c) for cid, c in run.by_id.items()})

    counts = run.run.setdefault("counts", {})
    for key, n in (("inputs", len(emb.paths) + len(emb.skipped)), ("assigned", len(fresh)),
                   ("skipped", len(emb.skipped)), ("added", len(fresh))):
        counts[key] = int(counts.get(key, 0)) + n
    where = source if source is not None else embeddings
    n_new = int(new.sum())
    refit = None
    if n_new >= max(REFIT_MIN_NEW, REFIT_NEW_SHARE * max(len(fresh), 1)):
        refit = (f"tacluster cluster {shlex.quote(str(run.dir / 'assignments.csv'))} --k auto "
                 f"--backbone {shlex.quote(name)} --out {shlex.quote(str(run.dir) + '-refit')}")
    run.write({"action": "add", "source": path_to_text(str(Path(where).resolve())), "added": len(fresh),
               "new": n_new, "already_in_run": len(emb.paths) - len(fresh), "skipped": len(emb.skipped)},
              extra={"skipped.csv": _skipped_bytes(run.dir, emb.skipped)})
    return AddResult(part.paths, labels, [cmap.names[c] for c in labels], new, len(emb.paths) - len(fresh),
                     emb.skipped, refit)


def _fits_no_cluster(run, est, bb, part, labels: np.ndarray, cache_dir, progress: bool) -> np.ndarray:
    """The ``new`` mark of each added image (:func:`tacluster.run.outliers.novelty_mask`): its cluster's
    members from the fit (rows on the fit's map, i.e. not added; moved ones count) are the reference."""
    from tacluster._blocks import joint_rows
    from tacluster.run.features import run_features
    from tacluster.run.outliers import novelty_mask

    if not part.paths:
        return np.zeros(0, dtype=bool)

    def rows(image, joint):
        parts, weights = est.features(image, joint_embeddings=joint)
        x = joint_rows(parts, slice(None), weights)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    feats = run_features(run, bb, cache_dir=cache_dir, verb="add", progress=progress)
    fitted = np.isfinite(np.asarray(run.table["x"], dtype=np.float64))
    fit_rows = rows(feats["image"][fitted], None if "joint" not in feats else feats["joint"][fitted])
    return novelty_mask(fit_rows, np.asarray(run.table["cluster"], dtype=np.int64)[fitted],
                        rows(part.arrays["image"], part.arrays.get("joint")), labels, len(run.by_id))


def _skipped_bytes(run_dir: Path, skipped) -> bytes:
    """The run's skipped.csv with ``skipped`` (path, reason) appended."""
    from tacluster.run.tables import csv_bytes, text_rows

    rows = []
    try:
        with open(run_dir / "skipped.csv", newline="", encoding="utf-8") as fh:
            rows = [(r["path"], r["reason"]) for r in csv.DictReader(fh)]
    except (OSError, KeyError, ValueError):
        pass
    return csv_bytes(["path", "reason"], rows + text_rows(skipped))
