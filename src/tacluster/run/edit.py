"""After clustering: export a run as folders, rename clusters, merge clusters.

``rename`` and ``merge`` change several files of a run directory together
(``assignments.parquet``/``.csv``, ``clusters.json``, ``model/config.json``,
``run.json``'s history) and then the report. They are atomic through a
journal: every new file is first written whole into
``DIR/.tacluster-edit-staging``; writing ``DIR/.tacluster-edit.json`` (one
atomic rename) is the commit point; then the files are moved in and the report
is rebuilt, and the journal is removed last. A process killed before the
journal exists leaves the old run untouched; killed after, the next tacluster
command on the run (:func:`recover`) finishes the move, so a run is seen in its
old or its new state, never a mix.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from tacluster._paths import text_to_path
from tacluster._runfiles import ASSIGNMENTS_FILE, EDIT_STAGING, JOURNAL, RUN_FILE, read_assignments_table  # noqa: F401 (journal names re-exported)
from tacluster.errors import InputError
from tacluster.run.journal import commit as _commit, recover  # noqa: F401 (recover: public here too)

# --------------------------------------------------------------------------- reading


class _Run:
    """The parts of a finished run directory an edit rewrites."""

    def __init__(self, run_dir: str | os.PathLike):
        self.dir = Path(run_dir)
        if not self.dir.is_dir():
            raise InputError(f"{str(self.dir)!r} is not a directory; pass the output directory of a tacluster run")
        recover(self.dir)
        try:
            self.run = json.loads((self.dir / RUN_FILE).read_text())
        except (OSError, ValueError):
            raise InputError(f"{str(self.dir)!r} holds no finished tacluster run (run.json missing or unreadable)") from None
        if not isinstance(self.run, dict) or self.run.get("status") != "complete":
            raise InputError(f"{str(self.dir)!r} holds no finished tacluster run; run `tacluster cluster` first")
        try:
            self.table = read_assignments_table(self.dir / ASSIGNMENTS_FILE).to_pydict()
            self.clusters = json.loads((self.dir / "clusters.json").read_text(encoding="utf-8"))
            self.config = json.loads((self.dir / "model" / "config.json").read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"run {str(self.dir)!r} is incomplete or damaged ({exc}); re-run `tacluster cluster`") from None
        self.by_id = {int(c["id"]): c for c in self.clusters["clusters"]}

    def cluster_id(self, ref: str | int) -> int:
        """A cluster by id or by its current name."""
        text = str(ref).strip()
        if re.fullmatch(r"-?\d+", text) and int(text) in self.by_id:
            return int(text)
        named = [cid for cid, c in self.by_id.items() if c["name"] == text]
        if len(named) == 1:
            return named[0]
        known = ", ".join(f"{cid} ({c['name']})" for cid, c in sorted(self.by_id.items())[:12])
        raise InputError(f"no cluster {text!r} in {str(self.dir)!r}; give an id or a name: {known}")

    def write(self, action: dict) -> None:
        """Write every changed file through the journal, with ``action`` in run.json's history."""
        from tacluster.run.tables import csv_bytes, parquet_bytes

        t = self.table
        outlier = t.get("outlier") or [False] * len(t["path"])
        csv_rows = ((p, int(c), f"{float(s):.4f}", n, "true" if o else "false")
                    for p, c, s, n, o in zip(t["path"], t["cluster"], t["confidence"], t["cluster_name"], outlier))
        action = {**action, "at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        self.run.setdefault("history", []).append(action)
        files = {
            "assignments.parquet": parquet_bytes(t),
            "assignments.csv": csv_bytes(["path", "cluster", "confidence", "cluster_name", "outlier"], csv_rows),
            "clusters.json": json.dumps(self.clusters, indent=2, ensure_ascii=False).encode("utf-8"),
            "model/config.json": json.dumps(self.config, indent=2).encode(),
            "run.json": json.dumps(self.run, indent=2).encode(),
        }
        _commit(self.dir, files)


def _check_name(run: _Run, name: str, except_id: int | None = None) -> str:
    name = " ".join(str(name).split())
    if not name:
        raise InputError("a cluster name cannot be empty")
    for cid, c in run.by_id.items():
        if cid != except_id and c["name"] == name:
            raise InputError(f"cluster {cid} is already called {name!r}; two clusters cannot share a name")
    return name


# --------------------------------------------------------------------------- rename / merge


def rename_cluster(run_dir: str | os.PathLike, cluster: str | int, name: str) -> tuple[int, str, str]:
    """Rename one cluster (by id or name) everywhere: assignments, clusters.json,
    the model (so ``predict`` uses the new name), run.json's history, the report.
    Returns ``(id, old name, new name)``."""
    run = _Run(run_dir)
    cid = run.cluster_id(cluster)
    new = _check_name(run, name, except_id=cid)
    old = run.by_id[cid]["name"]
    run.by_id[cid]["name"] = new
    run.table["cluster_name"] = [new if int(c) == cid else n
                                 for c, n in zip(run.table["cluster"], run.table["cluster_name"])]
    meta = run.config.setdefault("metadata", {})
    names = list(meta.get("cluster_names") or [c["name"] for c in run.clusters["clusters"]])
    names[cid] = new
    meta["cluster_names"] = names
    run.write({"action": "rename", "cluster": cid, "from": old, "to": new})
    return cid, old, new


def merge_clusters(run_dir: str | os.PathLike, clusters: Sequence[str | int], name: str | None = None) -> tuple[int, list[int]]:
    """Merge clusters into the first one given; the others' ids disappear and
    the clusters after them are renumbered so ids stay 0..K-1. Assignments,
    clusters.json, the model (``predict`` maps its clusters to the merged
    ones as the assignments do; confidences stay those of the original
    clusters), run.json's history and the report are updated together.
    Returns ``(new id of the merged cluster, old ids merged)``."""
    from tacluster.run.outliers import OUTLIERS_LISTED, outlier_mask, outlier_thresholds

    run = _Run(run_dir)
    ids = list(dict.fromkeys(run.cluster_id(c) for c in clusters))
    if len(ids) < 2:
        raise InputError("merge needs at least two different clusters, e.g. `tacluster merge RUN 3 7`")
    into, gone = ids[0], set(ids[1:])
    if name is not None:
        run.by_id[into]["name"] = _check_name(run, name, except_id=into)
    old_ids = sorted(run.by_id)
    keep = [c for c in old_ids if c not in gone]
    new_of = {c: keep.index(c) for c in keep}
    for c in gone:
        new_of[c] = new_of[into]
    k_new = len(keep)

    t = run.table
    labels = np.array([new_of[int(c)] for c in t["cluster"]], dtype=np.int64)
    conf = np.asarray(t["confidence"], dtype=np.float64)
    names = [run.by_id[c]["name"] for c in keep]
    t["cluster"] = labels.tolist()
    t["cluster_name"] = [names[c] for c in labels]
    outlier = outlier_mask(labels, conf, k_new)
    t["outlier"] = outlier.tolist()

    entries = []
    for new_id, old_id in enumerate(keep):
        members = [run.by_id[old_id]] + ([run.by_id[c] for c in sorted(gone)] if old_id == into else [])
        idx = np.flatnonzero(labels == new_id)
        order = idx[np.argsort(-conf[idx], kind="stable")]
        nouns = sorted((n for m in members for n in m.get("top_nouns", [])), key=lambda n: -float(n.get("score", 0)))
        seen, top = set(), []
        for n in nouns:
            if n["noun"] not in seen:
                seen.add(n["noun"])
                top.append(n)
        entries.append({
            **{k: v for k, v in run.by_id[old_id].items() if k not in ("id", "size")},
            "id": new_id, "size": int(idx.size), "name": names[new_id], "top_nouns": top[:5],
            "mean_confidence": float(conf[idx].mean()) if idx.size else 0.0,
            "representatives": [t["path"][i] for i in order[:8]],
            "n_outliers": int(outlier[idx].sum()),
            "outliers": [t["path"][i] for i in order[::-1] if outlier[i]][:OUTLIERS_LISTED],
        })
    run.clusters = {**run.clusters, "n_clusters": k_new, "clusters": entries}

    meta = run.config.setdefault("metadata", {})
    k_model = int(run.config["n_clusters"])
    previous = meta.get("label_map") or list(range(k_model))
    meta["label_map"] = [new_of[int(c)] for c in previous]
    meta["cluster_names"] = names
    meta["outlier_below"] = outlier_thresholds(labels, conf, k_new)
    run.write({"action": "merge", "into": into, "merged": sorted(gone),
               "ids": {str(o): n for o, n in sorted(new_of.items())}})
    return new_of[into], ids


# --------------------------------------------------------------------------- export

_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')
_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}


def safe_folder_name(name: str, fallback: str) -> str:
    """``name`` as a folder name any file system and photo manager accepts."""
    text = _UNSAFE.sub("_", name).strip().strip(".").strip()
    text = text[:100].rstrip(". ")
    if not text or text.upper() in _RESERVED:
        return fallback
    return text


def export_run(run_dir: str | os.PathLike, to: str | os.PathLike, *, mode: str = "link") -> dict[str, int]:
    """One folder per cluster under ``to``, named by the cluster's name (made
    safe; clashes get the cluster id), holding a link to (``mode="link"``) or a
    copy of (``"copy"``) each of its images. Returns images per folder."""
    if mode not in ("link", "copy"):
        raise InputError(f"mode={mode!r} must be 'link' or 'copy'")
    run = _Run(run_dir)
    dst = Path(to)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise InputError(f"--to {str(dst)!r} exists and is not an empty folder; choose a new one")
    if dst.resolve().is_relative_to(run.dir.resolve()):
        raise InputError(f"--to {str(dst)!r} lies inside the run directory; choose a folder outside it")
    folders: dict[int, str] = {}
    used: set[str] = set()
    for cid in sorted(run.by_id, key=lambda c: (-run.by_id[c]["size"], c)):
        folder = safe_folder_name(run.by_id[cid]["name"], f"cluster {cid}")
        if folder.lower() in used:
            folder = f"{folder} ({cid})"
        used.add(folder.lower())
        folders[cid] = folder
    counts = {f: 0 for f in folders.values()}
    taken: set[str] = set()
    for text, cid in zip(run.table["path"], run.table["cluster"]):
        src = text_to_path(str(text))
        folder = folders[int(cid)]
        target = dst / folder / os.path.basename(src)
        stem, suffix = os.path.splitext(os.path.basename(src))
        i = 2
        while str(target).lower() in taken:
            target = dst / folder / f"{stem}_{i}{suffix}"
            i += 1
        taken.add(str(target).lower())
        target.parent.mkdir(parents=True, exist_ok=True)
        if mode == "link":
            os.symlink(os.path.abspath(src), target)
        else:
            shutil.copy2(src, target)
        counts[folder] += 1
    return counts
