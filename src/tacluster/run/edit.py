"""After clustering: export a run as folders, rename clusters, merge clusters,
mark images as outliers, undo the last edit.

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

Each edit also stages what it replaces into ``DIR/.tacluster-undo/<step>/``,
moved in with the edit itself, so an edit can be undone exactly when it
happened (:func:`undo_last_edit`); the last :data:`UNDO_KEPT` are kept.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from tacluster._atomic import atomic_write_bytes
from tacluster._paths import path_to_text, text_to_path
from tacluster._runfiles import (  # noqa: F401 (journal names re-exported)
    ASSIGNMENTS_FILE, DIGEST_COLUMN, EDIT_STAGING, EXPORT_MARKER, JOURNAL, MOVED_COLUMN, NEW_COLUMN, RUN_FILE,
    UNDO_DIR, read_assignments_table,
)
from tacluster.errors import InputError
from tacluster.run.journal import EDITED_FILES, commit as _commit, recover  # noqa: F401 (recover: public here too)

#: Edits that can be undone, newest first (older snapshots are removed with the next edit).
UNDO_KEPT = 20


def locked(edit):
    """Run ``edit(run_dir, ...)`` holding the run directory's lock (:func:`tacluster.run.rundir.run_lock`),
    from reading the run to its commit: two edits at once (or an edit during a `tacluster cluster`
    into the same directory) would each read the old state and one would be lost. The second
    fails at once with one line."""
    import functools

    @functools.wraps(edit)
    def wrapper(run_dir, *args, **kwargs):
        from tacluster.run.rundir import run_lock

        if not Path(run_dir).is_dir():  # the edit itself says what is wrong
            return edit(run_dir, *args, **kwargs)
        with run_lock(Path(run_dir), "wait for it to finish, then edit again"):
            return edit(run_dir, *args, **kwargs)

    return wrapper


def _undo_steps(run: Path) -> list[str]:
    """The undo snapshots of a run, oldest first."""
    folder = run / UNDO_DIR
    steps = [p.name for p in folder.iterdir() if p.is_dir() and p.name.isdigit()] if folder.is_dir() else []
    return sorted(steps, key=int)


def _with_snapshot(run: Path, files: dict[str, bytes], step: int, action: dict) -> tuple[dict[str, bytes], list[str]]:
    """``files`` plus, under ``UNDO_DIR/<step>/``, the current bytes of each file they replace
    (and which do not exist yet); and the snapshots beyond :data:`UNDO_KEPT` to remove."""
    snap = f"{UNDO_DIR}/{step:06d}"
    out = dict(files)
    absent = []
    for name in files:
        if (run / name).is_file():
            out[f"{snap}/{name}"] = (run / name).read_bytes()
        else:
            absent.append(name)
    out[f"{snap}/undo.json"] = json.dumps({"edit": action, "files": list(files), "absent": absent}).encode()
    older = _undo_steps(run)
    return out, [f"{UNDO_DIR}/{s}" for s in older[:max(0, len(older) + 1 - UNDO_KEPT)]]


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
        n = len(self.table["path"])
        for column in (MOVED_COLUMN, NEW_COLUMN):  # runs before move/add: nothing moved, nothing new
            self.table.setdefault(column, [False] * n)
        self.table.setdefault("outlier", [False] * n)

    def require_digests(self, verb: str) -> list[str]:
        """The content key of every image (``assignments.parquet``'s digest column);
        a run from an older tacluster has none: one line naming its version."""
        digests = self.table.get(DIGEST_COLUMN)
        if digests is None:
            version = self.run.get("tacluster_version", "an older version")
            raise InputError(
                f"run {str(self.dir)!r} was made by tacluster {version}, which did not record the images' "
                f"content digests that {verb} needs; re-run `tacluster cluster` with this tacluster")
        return [str(d or "") for d in digests]

    def summarise(self, entries: dict[int, dict]) -> None:
        """clusters.json rebuilt from the assignments: ``entries[id]`` (name, top nouns, ...)
        for ids 0..K-1, each given its members' sizes, representatives, outliers, moved and new images."""
        from tacluster.run.tables import member_summary

        t = self.table
        labels = np.asarray(t["cluster"], dtype=np.int64)
        conf = np.asarray(t["confidence"], dtype=np.float64)
        masks = [np.asarray(t[c], dtype=bool) for c in ("outlier", MOVED_COLUMN, NEW_COLUMN)]
        names = {cid: e["name"] for cid, e in entries.items()}
        t["cluster_name"] = [names[int(c)] for c in labels]
        kept = ("n_moved", "moved", "n_new", "new", "id", "size")
        self.clusters = {**self.clusters, "n_clusters": len(entries), "clusters": [
            {**{k: v for k, v in entries[cid].items() if k not in kept}, "id": cid,
             **member_summary(t["path"], conf, masks[0], np.flatnonzero(labels == cid), masks[1], masks[2])}
            for cid in sorted(entries)]}
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

    def version(self) -> int:
        """How many edits (undos included) run.json's history holds: it only grows."""
        return len(self.run.get("history") or [])

    def write(self, action: dict, extra: dict[str, bytes] | None = None) -> None:
        """Write every changed file through the journal, with ``action`` in run.json's history
        (and an undo snapshot of what it replaces); ``extra``: other files of the run to
        replace in the same edit (``model/arrays.safetensors``)."""
        from tacluster.run.tables import csv_bytes, parquet_bytes

        t = self.table
        flag = lambda v: "true" if v else "false"  # noqa: E731
        csv_rows = ((p, int(c), f"{float(s):.4f}", n, flag(o), flag(m), flag(w))
                    for p, c, s, n, o, m, w in zip(t["path"], t["cluster"], t["confidence"], t["cluster_name"],
                                                   t["outlier"], t[MOVED_COLUMN], t[NEW_COLUMN]))
        step = self.version()
        action = {**action, "at": _now()}
        self.run.setdefault("history", []).append(action)
        files = {
            "assignments.parquet": parquet_bytes(t),
            "assignments.csv": csv_bytes(["path", "cluster", "confidence", "cluster_name", "outlier",
                                          MOVED_COLUMN, NEW_COLUMN], csv_rows),
            "clusters.json": json.dumps(self.clusters, indent=2, ensure_ascii=False).encode("utf-8"),
            **(extra or {}),
            "model/config.json": json.dumps(self.config, indent=2).encode(),
            "run.json": json.dumps(self.run, indent=2).encode(),
        }
        _commit(self.dir, *_with_snapshot(self.dir, files, step, action))


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def model_arrays_bytes(run: _Run, replace: dict[str, np.ndarray], prefix: str = "refine.") -> bytes:
    """``model/arrays.safetensors`` of the run with every array under ``prefix`` replaced by ``replace``
    (other keys, e.g. ``cluster_centers``, may be replaced too), as bytes for the journal."""
    from safetensors.numpy import load_file, save

    arrays = {k: v for k, v in load_file(str(run.dir / "model" / "arrays.safetensors")).items()
              if not k.startswith(prefix)}
    arrays.update(replace)
    return save({k: np.ascontiguousarray(v) for k, v in arrays.items()})


def _check_name(run: _Run, name: str, except_id: int | None = None) -> str:
    name = " ".join(str(name).split())
    if not name:
        raise InputError("a cluster name cannot be empty")
    for cid, c in run.by_id.items():
        if cid != except_id and c["name"] == name:
            raise InputError(f"cluster {cid} is already called {name!r}; two clusters cannot share a name")
    return name


# --------------------------------------------------------------------------- rename / merge


@locked
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


@locked
def merge_clusters(run_dir: str | os.PathLike, clusters: Sequence[str | int], name: str | None = None) -> tuple[int, list[int]]:
    """Merge clusters into the first one given; the others' ids disappear and
    the clusters after them are renumbered so ids stay 0..K-1. Assignments,
    clusters.json, the model (``predict`` maps its clusters to the merged
    ones as the assignments do; confidences stay those of the original
    clusters), run.json's history and the report are updated together.
    Returns ``(new id of the merged cluster, old ids merged)``."""
    from tacluster.run.outliers import outlier_mask, outlier_thresholds

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
    t["outlier"] = outlier_mask(labels, conf, k_new).tolist()

    entries = {}
    for new_id, old_id in enumerate(keep):
        members = [run.by_id[old_id]] + ([run.by_id[c] for c in sorted(gone)] if old_id == into else [])
        nouns = sorted((n for m in members for n in m.get("top_nouns", [])), key=lambda n: -float(n.get("score", 0)))
        seen, top = set(), []
        for n in nouns:
            if n["noun"] not in seen:
                seen.add(n["noun"])
                top.append(n)
        entries[new_id] = {**run.by_id[old_id], "name": names[new_id], "top_nouns": top[:5]}
    run.summarise(entries)

    meta = run.config.setdefault("metadata", {})
    k_model = int(run.config["n_clusters"])
    previous = meta.get("label_map") or list(range(k_model))
    meta["label_map"] = [new_of[int(c)] for c in previous]
    meta["cluster_names"] = names
    meta["outlier_below"] = outlier_thresholds(labels, conf, k_new)
    run.write({"action": "merge", "into": into, "merged": sorted(gone),
               "ids": {str(o): n for o, n in sorted(new_of.items())}})
    return new_of[into], ids


# --------------------------------------------------------------------------- outliers / undo


@locked
def mark_outliers(run_dir: str | os.PathLike, paths: Sequence[str], outlier: bool = True) -> int:
    """Flag (or, with ``outlier=False``, unflag) images of a run as outliers of their
    cluster: the assignments' ``outlier`` column, clusters.json's counts and lists,
    run.json's history and the report. The model's rule for new images stays.
    Returns how many images changed."""
    run = _Run(run_dir)
    t = run.table
    index = {text_to_path(str(p)): i for i, p in enumerate(t["path"])}
    rows = sorted({index.get(text_to_path(str(p)), -1) for p in paths})
    if not rows:
        raise InputError("select at least one image to mark")
    if rows[0] < 0:
        missing = next(p for p in paths if text_to_path(str(p)) not in index)
        raise InputError(f"{missing!r} is not an image of run {str(run.dir)!r}")
    flags = [bool(f) for f in t["outlier"]]
    changed = [i for i in rows if flags[i] != outlier]
    for i in changed:
        flags[i] = outlier
    t["outlier"] = flags
    run.summarise(dict(run.by_id))  # counts and lists of outliers from the assignments
    run.write({"action": "outliers" if outlier else "not outliers", "paths": [t["path"][i] for i in rows]})
    return len(changed)


@locked
def undo_last_edit(run_dir: str | os.PathLike) -> dict:
    """Put back the files the last edit replaced (rename, merge, outliers, ...; an undo
    is not itself undone), keeping run.json's history, to which ``undo`` is added.
    Returns the history entry of the edit undone."""
    run = _Run(run_dir)
    steps = _undo_steps(run.dir)
    if not steps:
        raise InputError(f"nothing to undo in {str(run.dir)!r}: no edit made since the run was clustered")
    snap = run.dir / UNDO_DIR / steps[-1]
    try:
        manifest = json.loads((snap / "undo.json").read_text())
        files = {name: (snap / name).read_bytes() for name in manifest["files"] if name not in manifest["absent"]}
        old_run = json.loads(files.get(RUN_FILE, b"null")) or dict(run.run)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"the undo record {str(snap)!r} is damaged ({exc}); the run itself is unchanged") from None
    history = run.run.get("history") or []
    undone, step = manifest.get("edit"), int(steps[-1])
    later = [h.get("action") == "undo" for h in history[step + 1:] if isinstance(h, dict)]
    # the snapshot is of the edit at its place in the history, and every edit after it was undone
    if not (isinstance(undone, dict) and step < len(history) and history[step] == undone
            and later.count(True) == later.count(False)):
        raise InputError(f"the last edit of {str(run.dir)!r} cannot be undone: its undo record {str(snap)!r} "
                         "does not match run.json's history; the run is unchanged")
    old_run["history"] = [*history, {"action": "undo", "undid": undone.get("action"), "at": _now()}]
    files[RUN_FILE] = json.dumps(old_run, indent=2).encode()
    # the snapshot goes, and so do files the edit created
    _commit(run.dir, files, [f"{UNDO_DIR}/{steps[-1]}", *manifest.get("absent", [])])
    return undone


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


@dataclass
class Export:
    """What :func:`export_run` wrote: images per folder, and the run's images
    that are not files here (not exported)."""

    counts: dict[str, int]
    missing: list[str]


@locked
def export_run(run_dir: str | os.PathLike, to: str | os.PathLike, *, mode: str = "link",
               skip_duplicates: bool = False) -> Export:
    """One folder per cluster under ``to``, named by the cluster's name (made
    safe; clashes get the cluster id), holding a link to (``mode="link"``) or a
    copy of (``"copy"``) each of its images; with ``skip_duplicates`` only the
    largest file of each group of the run's ``duplicates.csv``.

    Images that are not files here (a run of ``--embeddings``, photos moved
    since) are not exported but returned in :attr:`Export.missing`; when none
    is a file, nothing is written. ``to`` is built beside itself and renamed
    into place at the end, so a failure midway leaves no partial ``to`` that
    blocks a retry. It holds a marker file, so a later run over a folder that
    contains it does not cluster the exported images again.
    """
    if mode not in ("link", "copy"):
        raise InputError(f"mode={mode!r} must be 'link' or 'copy'")
    run = _Run(run_dir)
    skip = _duplicates_to_skip(run.dir) if skip_duplicates else set()
    dst = Path(to)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise InputError(f"--to {str(dst)!r} exists and is not an empty folder; choose a new one")
    if dst.resolve().is_relative_to(run.dir.resolve()):
        raise InputError(f"--to {str(dst)!r} lies inside the run directory; choose a folder outside it")
    rows = [(text_to_path(str(t)), int(c)) for t, c in zip(run.table["path"], run.table["cluster"])]
    missing = [p for p, _ in rows if not os.path.isfile(p)]
    if rows and len(missing) == len(rows):
        raise InputError(f"none of the run's {len(rows)} images is a file here (e.g. {missing[0]!r}: a run of "
                         "--embeddings, or the photos moved); nothing exported")
    folders: dict[int, str] = {}
    used: set[str] = set()
    for cid in sorted(run.by_id, key=lambda c: (-run.by_id[c]["size"], c)):
        folder = safe_folder_name(run.by_id[cid]["name"], f"cluster {cid}")
        if folder.lower() in used:
            folder = f"{folder} ({cid})"
        used.add(folder.lower())
        folders[cid] = folder
    counts = {f: 0 for f in folders.values()}
    partial = dst.with_name(f".{dst.name}.tacluster-partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        _export_into(partial, rows, set(missing), skip, folders, counts, mode)
        atomic_write_bytes(partial / EXPORT_MARKER, json.dumps(
            {"run": path_to_text(str(run.dir.resolve())), "mode": mode, "missing": len(missing)}).encode())
        if dst.is_dir():
            dst.rmdir()  # the empty folder the check above allowed
        partial.rename(dst)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return Export(counts, missing)


def _export_into(dst: Path, rows, missing: set[str], skip: set[str], folders: dict[int, str],
                 counts: dict[str, int], mode: str) -> None:
    taken: set[str] = set()
    for src, cid in rows:
        if src in missing or src in skip:
            continue
        folder = folders[cid]
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


def _duplicates_to_skip(run_dir: Path) -> set[str]:
    """The paths ``export --skip-duplicates`` leaves out (:func:`tacluster.run.duplicates.paths_to_skip`)."""
    from tacluster.run.duplicates import paths_to_skip, read_duplicates
    from tacluster.run.rundir import DUPLICATES_FILE

    path = run_dir / DUPLICATES_FILE
    if not path.is_file():
        raise InputError(f"run {str(run_dir)!r} has no {DUPLICATES_FILE} (made by an older tacluster); "
                         "re-run `tacluster cluster`, or export without --skip-duplicates")
    return paths_to_skip(read_duplicates(path))
