"""The report's reading of a run directory (the files and columns it needs are
listed in :mod:`tacluster.report.html`); every malformed file is one
:class:`~tacluster.errors.InputError` naming it."""

from __future__ import annotations

import csv
import os
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tacluster._paths import text_to_path
from tacluster._runfiles import ASSIGNMENTS_FILE, CLUSTERS_FILE, RUN_FILE, SKIPPED_FILE, read_assignments_table
from tacluster.errors import InputError


_ASSIGNMENT_COLUMNS = ("path", "cluster", "confidence", "cluster_name", "x", "y")



@dataclass
class Assignments:
    """Columns of ``assignments.parquet`` as arrays, each of shape (n_images,)."""

    path: list[str]
    cluster: np.ndarray
    confidence: np.ndarray
    x: np.ndarray
    y: np.ndarray
    outlier: np.ndarray | None = None  # optional column (runs before it have none)
    moved: np.ndarray | None = None  # put there by a person (`tacluster move`)
    new: np.ndarray | None = None  # added by `tacluster add`, fitting no cluster well



@dataclass
class RunDir:
    assignments: Assignments
    clusters: list[dict[str, Any]]
    run: dict[str, Any]
    skipped: list[dict[str, str]] = field(default_factory=list)
    run_found: bool = True



def _read_assignments(path: Path) -> Assignments:
    import pyarrow as pa

    table = read_assignments_table(path, _ASSIGNMENT_COLUMNS)
    for name in ("path", "cluster", "confidence", "x", "y"):
        if table.column(name).null_count:
            raise InputError(f"{path}: column {name!r} has missing values")
    try:
        paths = [text_to_path(str(p)) for p in table.column("path").to_pylist()]
        cluster = np.asarray(table.column("cluster").to_numpy(), dtype=np.int64)
        confidence = np.asarray(table.column("confidence").to_numpy(), dtype=np.float64)
        x = np.asarray(table.column("x").to_numpy(), dtype=np.float64)
        y = np.asarray(table.column("y").to_numpy(), dtype=np.float64)
    except (TypeError, ValueError, pa.ArrowException) as exc:
        raise InputError(f"{path}: a column has the wrong type ({exc})") from exc
    flags = {}
    for name in ("outlier", "moved", "new"):  # moved / new: written by `tacluster move` / `add`
        if name in table.column_names and not table.column(name).null_count:
            flags[name] = np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=bool)
    return Assignments(paths, cluster, confidence, x, y, flags.get("outlier"), flags.get("moved"), flags.get("new"))



def _load_json(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON ({exc}); re-run tacluster") from exc



def _read_clusters(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise InputError(f"{path} not found: the run directory is incomplete; re-run tacluster")
    data = _load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("clusters"), list):
        raise InputError(f'{path} must hold an object with a "clusters" list')
    clusters = []
    for i, entry in enumerate(data["clusters"]):
        if not isinstance(entry, dict):
            raise InputError(f"{path}: clusters[{i}] is not an object")
        try:
            cid, size = int(entry["id"]), int(entry["size"])
            name = str(entry.get("name", f"cluster {cid}"))
            nouns = [
                {"noun": str(n["noun"]), "score": float(n.get("score", math.nan))}
                for n in entry.get("top_nouns") or []
            ]
            mean_conf = entry.get("mean_confidence")
            mean_conf = None if mean_conf is None else float(mean_conf)
            reps = [text_to_path(str(p)) for p in entry.get("representatives") or []]
            outliers = [text_to_path(str(p)) for p in entry.get("outliers") or []]
            marked = {key: [text_to_path(str(p)) for p in entry.get(key) or []] for key in ("moved", "new")}
            counts = {f"n_{key}": int(entry.get(f"n_{key}", len(v))) for key, v in marked.items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(
                f"{path}: clusters[{i}] is malformed ({type(exc).__name__}: {exc}); "
                'each needs "id" and "size", "top_nouns" entries need "noun"'
            ) from exc
        clusters.append(
            {"id": cid, "size": size, "name": name, "top_nouns": nouns,
             "mean_confidence": mean_conf, "representatives": reps, "outliers": outliers,
             **marked, **counts}  # moved / new: `tacluster move` / `add`
        )
    ids = [c["id"] for c in clusters]
    if len(set(ids)) != len(ids):
        raise InputError(f"{path}: cluster ids are not unique: {sorted(ids)}")
    return clusters



def _read_run(path: Path) -> dict[str, Any]:
    data = _load_json(path)
    if not isinstance(data, dict):
        raise InputError(f"{path} must hold a JSON object")
    for key in ("settings", "timings_s", "counts"):
        if key in data and not isinstance(data[key], dict):
            raise InputError(f"{path}: {key!r} must be an object, got {type(data[key]).__name__}")
    return data



def _read_skipped(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    try:
        # skipped.csv holds file names byte for byte; one that is not UTF-8 is
        # shown with its odd bytes escaped, not refused.
        with path.open(encoding="utf-8", errors="surrogateescape", newline="") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None:  # empty file: nothing was skipped
                return []
            if "path" not in reader.fieldnames:
                raise InputError(
                    f"{path} has columns {reader.fieldnames}; expected 'path' and 'reason'"
                )
            return [{"path": text_to_path(r.get("path") or ""), "reason": r.get("reason") or ""} for r in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path} is not a readable CSV file ({exc})") from exc



def read_run_dir(out_dir: Path) -> RunDir:
    if not out_dir.is_dir():
        raise InputError(f"{out_dir} is not a directory; pass the output directory of a tacluster run")
    assignments = _read_assignments(out_dir / ASSIGNMENTS_FILE)
    clusters = _read_clusters(out_dir / CLUSTERS_FILE)
    unknown = sorted(set(np.unique(assignments.cluster).tolist()) - {c["id"] for c in clusters})
    if unknown:
        raise InputError(
            f"{out_dir / ASSIGNMENTS_FILE} uses cluster id(s) {unknown[:10]} that "
            f"{out_dir / CLUSTERS_FILE} does not describe; the two files come from different runs"
        )
    run_path = out_dir / RUN_FILE
    run_found = run_path.is_file()
    run = _read_run(run_path) if run_found else {}
    return RunDir(assignments, clusters, run, _read_skipped(out_dir / SKIPPED_FILE), run_found)



def members_by_cluster(a: Assignments) -> tuple[np.ndarray, np.ndarray]:
    """Row order by cluster, then highest confidence, then path (so ties, and
    hence the pages, are reproducible), and the cluster id of each row in that
    order: cluster ``c``'s members are ``order[searchsorted(ids, c):searchsorted(ids, c + 1)]``."""
    # The paths enter as their rank, not as a fixed-width string array (N x longest path x 4 bytes).
    path_rank = np.empty(len(a.path), dtype=np.int64)
    path_rank[sorted(range(len(a.path)), key=a.path.__getitem__)] = np.arange(len(a.path))
    order = np.lexsort((path_rank, -a.confidence, a.cluster))
    return order, a.cluster[order]


#: The columns of ``duplicates.csv`` (:mod:`tacluster.run.duplicates` writes it).
DUPLICATE_COLUMNS = ("group", "path", "digest", "size_bytes", "kind", "similarity")


def read_duplicates(path: str | os.PathLike) -> dict[int, list[dict]]:
    """``duplicates.csv`` as ``{group: [row, ...]}`` in file order; each row has the CSV's
    columns (``path`` as a file system path, ``size_bytes`` an int or None)."""
    path = Path(path)
    groups: dict[int, list[dict]] = {}
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or not {"group", "path"} <= set(reader.fieldnames):
                raise InputError(f"{path} has columns {reader.fieldnames}; expected {', '.join(DUPLICATE_COLUMNS)}")
            for r in reader:
                size = r.get("size_bytes") or ""
                row = {**r, "group": int(r["group"]), "path": text_to_path(r["path"]),
                       "size_bytes": int(size) if size.strip() else None}
                groups.setdefault(row["group"], []).append(row)
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"{path} is not a readable duplicates CSV ({exc})") from None
    return groups
