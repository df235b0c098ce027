"""``tacluster move``: a person's correction, images put into the cluster they belong to.

Moved images are marked (the ``moved`` column of the assignments, and per
cluster in clusters.json and the report) and keep their cluster through later
edits: ``rename`` and ``merge`` carry them along with their cluster, ``add``
never touches existing rows, and ``split`` of their cluster puts them in the
part their features fall in (still marked moved). They are no outliers (a
person placed them). ``refit_centres`` (a centroid model: ``kmeans``,
``spectral``, ``no-train``, ``auto``; not after a split) recomputes each model
cluster's centre as the normalised mean of its corrected members, on the
features the model's clusters are defined on; the images nobody moved are
then assigned again with the new centres, so the run and ``predict`` still
agree. ``predict`` with the run's model puts a moved image (matched by its
content digest) where the person put it (``workflows._apply_corrections``).
Everything goes through the edit journal of :mod:`tacluster.run.edit`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from tacluster._paths import path_to_text
from tacluster.errors import InputError
from tacluster.run.edit import locked


@dataclass
class MoveResult:
    """What :func:`move_images` did: the target cluster, the images moved, and (with
    ``refit_centres``) how many unmoved images the new centres reassigned."""

    cluster: int
    moved: int
    already_there: int
    reassigned: int = 0


def read_file_list(path: str | os.PathLike) -> list[str]:
    """The files named in a list: one per line (``#`` comments, blanks ignored), or a .csv with a path column."""
    from tacluster.embed.reader import _csv_paths

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the list {str(p)!r}: {exc}") from None
    if p.suffix.lower() == ".csv":
        return _csv_paths(text)
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def _rows_of(run, files: Sequence[str]) -> list[int]:
    """Row of each file in the run (as written, or the same file by its absolute path); one line when one is not."""
    paths = [str(p) for p in run.table["path"]]
    row_of = {p: i for i, p in enumerate(paths)}
    absolute = {os.path.abspath(p): i for i, p in enumerate(paths)}
    rows, missing = [], []
    for f in files:
        text = path_to_text(os.fspath(f))
        i = row_of.get(text, absolute.get(os.path.abspath(text)))
        if i is None:
            missing.append(text)
        else:
            rows.append(i)
    if missing:
        raise InputError(f"{len(missing)} file(s) are not in run {str(run.dir)!r} (first: {missing[0]!r}); "
                         "add new photos with `tacluster add`")
    return list(dict.fromkeys(rows))


@locked
def move_images(run_dir: str | os.PathLike, files: Sequence[str | os.PathLike], to: str | int, *,
                refit_centres: bool = False, device: str = "auto", cache_dir: str | os.PathLike | None = None,
                offline: bool | None = None, progress: bool = False) -> MoveResult:
    """Move images of a run (paths as in its assignments) into cluster ``to`` (id or name);
    see the module docstring. Returns what was moved."""
    from tacluster.run.edit import _Run
    from tacluster.run.rundir import MOVED_COLUMN, NEW_COLUMN

    run = _Run(run_dir)
    if not files:
        raise InputError("name the images to move: `tacluster move RUN FILE... --to CLUSTER` or --from-list FILE")
    target = run.cluster_id(to)
    rows = _rows_of(run, files)
    t = run.table
    already = sum(int(t["cluster"][i]) == target for i in rows)
    refit = _refit_check(run) if refit_centres else None
    for i in rows:
        t["cluster"][i] = target
        t[MOVED_COLUMN][i] = True
        t["outlier"][i] = False
        t[NEW_COLUMN][i] = False
    reassigned = 0
    extra = None
    if refit is not None:
        reassigned, extra = _refit(run, *refit, device=device, cache_dir=cache_dir, offline=offline,
                                   progress=progress)
    run.summarise({cid: dict(c) for cid, c in run.by_id.items()})
    run.write({"action": "move", "to": target, "moved": len(rows), "already_there": already,
               "files": [str(t["path"][i]) for i in rows][:100],
               **({"refit_centres": True, "reassigned": reassigned} if refit is not None else {})}, extra=extra)
    return MoveResult(target, len(rows), already, reassigned)


def _refit_check(run):
    """The run's model and map, refused (one line) when it has no centres to refit."""
    from tacluster.run.workflows import load_run_model

    est, cmap, name = load_run_model(run.dir / "model")
    if est.cluster_centers_ is None or est.method == "tac":
        raise InputError(f"--refit-centres needs a centroid model; this run's model is method {est.method!r} "
                         "(its clusters are a trained head, not centres)")
    if cmap.refinements:
        raise InputError("--refit-centres works on a model without splits; this run's model has "
                         f"{len(cmap.refinements)} split(s)")
    return est, cmap, name


def _refit(run, est, cmap, name, *, device, cache_dir, offline, progress) -> tuple[int, dict[str, bytes]]:
    """New centres from the corrected members; unmoved rows reassigned. Returns (rows reassigned, model arrays)."""
    from tacluster._blocks import joint_rows
    from tacluster.cluster.kmeans import normalised_means
    from tacluster.run.cluster_map import assign_run_clusters
    from tacluster.run.edit import model_arrays_bytes
    from tacluster.run.features import run_features
    from tacluster.run.rundir import MOVED_COLUMN
    from tacluster.run.workflows import model_backbone

    bb = model_backbone(est, name, run.dir / "model", device, offline, progress)
    feats = run_features(run, bb, cache_dir=cache_dir, verb="--refit-centres", progress=progress)
    image, joint = feats["image"], feats.get("joint")
    leaves, _ = est.predict_with_confidence(image, joint_embeddings=joint)
    t = run.table
    label_map = np.asarray(cmap.label_map, dtype=np.int64)
    first_leaf = {int(c): leaf for leaf, c in reversed(list(enumerate(cmap.label_map)))}
    moved = np.asarray(t[MOVED_COLUMN], dtype=bool)
    run_labels = np.asarray(t["cluster"], dtype=np.int64)
    # a row's corrected model cluster: its own, unless a person moved it to another run cluster
    member = np.where(moved & (label_map[leaves] != run_labels),
                      [first_leaf[int(c)] for c in run_labels], leaves)
    parts, weights = est.features(image, joint_embeddings=joint)
    x = joint_rows(parts, slice(None), weights)
    centres = normalised_means(x, member, est.n_clusters_)
    keep = np.bincount(member, minlength=est.n_clusters_) == 0  # a centre left without members stays
    centres[keep] = est.cluster_centers_[keep]
    est.cluster_centers_ = centres
    labels, conf = assign_run_clusters(est, cmap, image, joint)
    change = ~moved & (labels != run_labels)
    for i in np.flatnonzero(~moved):
        t["cluster"][i] = int(labels[i])
        t["confidence"][i] = float(conf[i])
    return int(change.sum()), {"model/arrays.safetensors": model_arrays_bytes(run, {"cluster_centers": centres})}
