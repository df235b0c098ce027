"""The run's tables: assignments (.parquet and .csv), skipped.csv,
clusters.json, predictions; and the readers of assignments and labels that
``evaluate`` uses. Every path is written by one rule (:mod:`tacluster._paths`)."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from tacluster._atomic import atomic_write_bytes
from tacluster._paths import path_to_text, text_to_path
from tacluster.errors import InputError
from tacluster.run.outliers import OUTLIERS_LISTED
from tacluster._runfiles import DIGEST_COLUMN, read_assignments_table


def text_rows(pairs) -> list[tuple[str, str]]:
    """``(path, reason)`` pairs with the path written by the outputs' rule (tacluster._paths)."""
    return [(path_to_text(p), r) for p, r in pairs]



def csv_bytes(header: Sequence[str], rows) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    # Paths come through path_to_text (valid UTF-8); a reason quoting an odd file
    # name shows its bytes as \xNN: the file itself is named by the path column.
    return buf.getvalue().encode("utf-8", "backslashreplace")



def parquet_bytes(columns: dict) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(pa.table(columns), sink)
    return sink.getvalue()



def write_run_tables(stage: Path, paths, skipped, labels, conf, outlier, names, top_nouns, xy,
                     digests: Sequence[str] | None = None) -> None:
    """assignments.parquet / .csv, skipped.csv and clusters.json of a run, into its staging folder.

    ``digests``: each image's content key (``split`` and ``add`` find its
    embedding in the cache by it; :data:`tacluster.run.rundir.DIGEST_COLUMN`);
    None for vectors read from elsewhere."""
    n_clusters = len(names)
    name_col = [names[c] for c in labels]
    atomic_write_bytes(stage / "assignments.parquet", parquet_bytes({
        "path": [path_to_text(p) for p in paths], "cluster": labels.astype(np.int64),
        "confidence": conf.astype(np.float64), "cluster_name": name_col, "outlier": outlier,
        "x": xy[:, 0].astype(np.float64), "y": xy[:, 1].astype(np.float64),
        DIGEST_COLUMN: list(digests) if digests is not None else [""] * len(paths),
    }))
    atomic_write_bytes(stage / "assignments.csv", csv_bytes(
        ["path", "cluster", "confidence", "cluster_name", "outlier"],
        ((path_to_text(p), int(c), f"{float(s):.4f}", n, "true" if o else "false")
         for p, c, s, n, o in zip(paths, labels, conf, name_col, outlier)),
    ))
    atomic_write_bytes(stage / "skipped.csv", csv_bytes(["path", "reason"], text_rows(skipped)))
    texts = [path_to_text(p) for p in paths]
    clusters = [{"id": c, "name": names[c],
                 "top_nouns": [{"noun": w, "score": round(s, 4)} for w, s in top_nouns[c]],
                 **member_summary(texts, conf, outlier, np.flatnonzero(labels == c))}
                for c in range(n_clusters)]
    atomic_write_bytes(stage / "clusters.json", json.dumps(
        {"n_clusters": n_clusters, "clusters": clusters}, indent=2, ensure_ascii=False
    ).encode("utf-8"))



def member_summary(paths: Sequence[str], conf: np.ndarray, outlier: np.ndarray, idx: np.ndarray,
                   moved: np.ndarray | None = None, new: np.ndarray | None = None) -> dict:
    """The entries of a cluster in clusters.json that follow from its members (rows ``idx``):
    size, mean confidence, representatives (most confident first), outliers (least first);
    with ``moved`` / ``new`` masks also the images moved there by a person and the added ones
    that fit no cluster well."""
    order = idx[np.argsort(-conf[idx], kind="stable")]
    out = {
        "size": int(idx.size), "mean_confidence": float(conf[idx].mean()) if idx.size else 0.0,
        "representatives": [paths[i] for i in order[:8]],
        "n_outliers": int(outlier[idx].sum()),
        "outliers": [paths[i] for i in order[::-1] if outlier[i]][:OUTLIERS_LISTED],
    }
    for key, mask in (("moved", moved), ("new", new)):
        if mask is not None and mask[idx].any():
            out[f"n_{key}"] = int(mask[idx].sum())
            out[key] = [paths[i] for i in order if mask[i]][:OUTLIERS_LISTED]
    return out


def read_assignments(path: str | os.PathLike) -> tuple[list[str], np.ndarray, list[str]]:
    """(paths, clusters, cluster names) from an assignments/predictions .csv or .parquet, or a run dir."""
    p = Path(path)
    if p.is_dir():
        p = p / "assignments.parquet"
    if not p.is_file():
        raise InputError(f"assignments file {str(p)!r} does not exist")
    try:
        if p.suffix == ".parquet":
            t = read_assignments_table(p).to_pydict()
            rows = list(zip(t["path"], t["cluster"], t.get("cluster_name", [""] * len(t["path"]))))
        else:
            with open(p, newline="", encoding="utf-8", errors="surrogateescape") as fh:
                rows = [(r["path"], r["cluster"], r.get("cluster_name", "")) for r in csv.DictReader(fh)]
    except (KeyError, OSError, ValueError) as exc:
        raise InputError(f"{str(p)!r} is not an assignments file with path and cluster columns ({exc})") from None
    rows = [r for r in rows if r[1] is not None and str(r[1]).strip() != ""]  # skipped files have no cluster
    paths = [text_to_path(str(r[0])) for r in rows]
    try:
        clusters = np.array([int(r[1]) for r in rows], dtype=np.int64)
    except ValueError as exc:
        raise InputError(f"{str(p)!r}: cluster column must hold integers ({exc})") from None
    return paths, clusters, [str(r[2]) for r in rows]



def read_labels(labels: str, paths: Sequence[str]) -> list[str]:
    """Ground-truth labels for ``paths``: ``"parent-dir"`` or a CSV with path,label columns."""
    if labels == "parent-dir":
        return [Path(p).parent.name for p in paths]
    lp = Path(labels)
    if not lp.is_file():
        raise InputError(f"--labels {labels!r}: use 'parent-dir' or an existing CSV file with path,label columns")
    with open(lp, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or "label" not in reader.fieldnames or "path" not in reader.fieldnames:
            raise InputError(f"{labels!r} must have a header with 'path' and 'label' columns")
        table = {}
        for r in reader:
            table[r["path"]] = r["label"]
            table[str(Path(r["path"]).resolve())] = r["label"]
    missing = [p for p in paths if p not in table and str(Path(p).resolve()) not in table]
    if missing:
        raise InputError(f"{len(missing)} assigned path(s) have no label in {labels!r} (first: {missing[0]!r})")
    return [table.get(p, table.get(str(Path(p).resolve()))) for p in paths]
