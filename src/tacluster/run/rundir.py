"""The run directory: what ``tacluster cluster`` writes, by name; how a run is
staged and committed so a failure never loses the previous outputs; and the
one reader of its assignments table.

Writers (:mod:`tacluster.run.workflows`), the report (:mod:`tacluster.report.html`),
the editing commands (:mod:`tacluster.run.edit`) and ``evaluate`` all name the
files through these constants and read ``assignments.parquet`` through
:func:`read_assignments_table`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from pathlib import Path
from typing import Sequence

from tacluster._atomic import atomic_write_bytes, commit_staged
from tacluster._runfiles import (  # noqa: F401 (the run directory's names, re-exported for the run package)
    ASSIGNMENTS_CSV, ASSIGNMENTS_FILE, AUTO_K_FILE, CLUSTER_PAGES_DIR, CLUSTERS_FILE, DIGEST_COLUMN, DUPLICATES_FILE,
    EDIT_STAGING, EXPORT_MARKER, JOURNAL, LOCK_FILE, MAP_FILE, MODEL_DIR, MOVED_COLUMN, NEW_COLUMN, REPORT_FILE,
    RUN_FILE, SKIPPED_FILE, STAGING, THUMBS_DIR, UNDO_DIR, read_assignments_table,
)
from tacluster.errors import InputError
from tacluster.run.journal import recover



#: What a run writes, relative to ``--out``, in the order they are moved in
#: (``run.json`` goes last, see :func:`commit_outputs`).
STAGED_FILES = ["model/arrays.safetensors", "model/config.json", "assignments.parquet",
                "assignments.csv", "skipped.csv", "clusters.json", DUPLICATES_FILE]



OUR_FILES = (
    "assignments.parquet", "assignments.csv", "clusters.json", "skipped.csv", DUPLICATES_FILE, RUN_FILE,
    "report.html", "map.png", "auto_k.png", "model", "thumbs", "clusters", UNDO_DIR,
)



def begin_writing(out: Path) -> Path:
    """Prepare ``out`` for a run's outputs and return the empty staging folder.

    Every output is first written whole into ``out/.tacluster-staging`` (each
    through a temp file and a rename); only when all are there does
    :func:`commit_outputs` move them in. So an error while the bytes are
    written (disk full, a bad path, a kill) leaves the previous outputs in
    ``out`` untouched, ``run.json`` included. Leftovers of a killed writer
    (temp files, an old staging folder) are removed first: one run writes a
    directory at a time.
    """
    out.mkdir(parents=True, exist_ok=True)
    for folder in (out, out / "model", out / "thumbs"):
        if folder.is_dir():
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)
    stage = out / STAGING
    shutil.rmtree(stage, ignore_errors=True)
    (stage / "model").mkdir(parents=True)
    return stage



def commit_outputs(out: Path, stage: Path, run_key: str) -> None:
    """Move the staged outputs into ``out``, marking it as being written meanwhile.

    The mark (``run.json`` with ``"status": "incomplete"``) is the only byte
    written in ``out`` before the renames; it tells readers the directory is
    not a finished run while files are swapped, and lets the same command
    resume there after a kill (:func:`check_out_dir`). The staged ``run.json``
    (``"status": "complete"``) moves in last.
    """
    atomic_write_bytes(out / RUN_FILE, json.dumps({"run_key": run_key, "status": "incomplete"}).encode())
    _clear_previous_outputs(out)
    commit_staged(stage, out, STAGED_FILES, RUN_FILE)



#: Files other commands write into a run directory (``tacluster evaluate``).
_DERIVED_FILES = ("evaluation.json", "confusion.png")



def _holds_run(out: Path) -> bool:
    try:
        info = json.loads((out / RUN_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and "run_key" in info



def _clear_previous_outputs(out: Path) -> None:
    """Remove what a previous run (and commands run on it) left in ``out``,
    once the new outputs are staged: evaluations, figures, thumbnails and
    cluster pages of the old labels must not survive next to the new ones.
    Only names tacluster writes are removed (whole folders: ``thumbs``,
    ``model``, ``clusters``), so a user's own files in ``out`` (even INPUT
    itself) are never touched."""
    for name in OUR_FILES + _DERIVED_FILES:
        entry = out / name
        if name == RUN_FILE or not (entry.exists() or entry.is_symlink()):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    for tmp in out.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)



def record_failed_run(out: Path, run_key: str, skipped, why: str) -> Path | None:
    """Write ``skipped.csv`` and a ``run.json`` saying ``"status": "failed"`` into
    ``out`` when a run cannot start (no usable image), so the reasons are kept.
    A directory that holds a finished run is left alone. Returns the CSV's path."""
    if _holds_run(out) and not _failed_run(out):
        return None
    if out.exists() and any(not p.name.startswith(".") and p.name not in (RUN_FILE, "skipped.csv")
                            for p in out.iterdir()):
        return None  # someone's files (written into with --overwrite): add nothing
    from tacluster.run.tables import csv_bytes, text_rows  # tables reads run files: a lower module, loaded late

    atomic_write_bytes(out / "skipped.csv", csv_bytes(["path", "reason"], text_rows(skipped)))
    atomic_write_bytes(out / RUN_FILE, json.dumps({"run_key": run_key, "status": "failed", "reason": why}).encode())
    return out / "skipped.csv"



def recover_pending(run_dir: Path) -> None:
    """Finish (or drop) an interrupted rename/merge before the run is read or replaced."""
    if (run_dir / JOURNAL).exists() or (run_dir / EDIT_STAGING).exists():
        recover(run_dir)



def _failed_run(out: Path) -> bool:
    try:
        return json.loads((out / RUN_FILE).read_text()).get("status") == "failed"
    except (OSError, ValueError, AttributeError):
        return False



def check_out_dir(out_dir: Path, run_key: str, overwrite: bool) -> None:
    """Refuse to write into a directory that holds something else, unless ``overwrite``."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise InputError(f"--out {str(out_dir)!r} exists and is not a directory; choose another path")
    recover_pending(out_dir)
    entries = [p for p in out_dir.iterdir() if not p.name.startswith(".")]
    if not entries or overwrite or _failed_run(out_dir):
        return  # a failed run holds only its skipped.csv: any run may replace it
    run_file = out_dir / RUN_FILE
    if run_file.is_file():
        try:
            info = json.loads(run_file.read_text())
            previous, history = info.get("run_key"), info.get("history") or []
        except (OSError, ValueError, AttributeError):
            previous, history = None, []
        _refuse_losing_edits(out_dir, history)
        if previous == run_key:
            return  # the same run again (e.g. after an interruption): safe to redo
        raise InputError(
            f"{str(out_dir)!r} already holds a different tacluster run; "
            "pass --overwrite to replace it, or choose another --out"
        )
    raise InputError(
        f"{str(out_dir)!r} is not empty and holds no tacluster run; "
        "choose an empty or new --out directory (or pass --overwrite)"
    )


def _refuse_losing_edits(out_dir: Path, history: list) -> None:
    """A rerun into a run that was edited (``history`` of its run.json) would silently drop the edits: refuse it."""
    if history:
        kinds = ", ".join(dict.fromkeys(str(h.get("action", "edit")) if isinstance(h, dict) else "edit"
                                        for h in history))
        raise InputError(
            f"{str(out_dir)!r} holds {len(history)} edit(s) ({kinds}) that a rerun would lose; "
            "pass --overwrite to replace them, or choose another --out"
        )


def check_same_input(out_dir: Path, run_key: str, paths: Sequence[str], overwrite: bool) -> None:
    """Refuse to rerun into ``out_dir`` when its finished run (same settings) clustered another
    set of files: the new run would renumber its clusters without a word. ``paths`` are
    written by the outputs' rule (``tacluster._paths.path_to_text``)."""
    if overwrite or not (out_dir / ASSIGNMENTS_FILE).is_file() or _failed_run(out_dir):
        return
    try:
        if json.loads((out_dir / RUN_FILE).read_text()).get("run_key") != run_key:
            return
    except (OSError, ValueError, AttributeError):
        return
    old = set(read_assignments_table(out_dir / ASSIGNMENTS_FILE, ("path",)).column("path").to_pylist())
    new = set(paths)
    if old != new:
        raise InputError(
            f"{str(out_dir)!r} holds a run of other files ({len(new - old)} new, {len(old - new)} gone): "
            "a rerun would renumber its clusters; pass --overwrite to replace it, choose another --out, "
            "or assign the new files with `tacluster predict`"
        )


@contextlib.contextmanager
def run_lock(out: Path, busy_hint: str = "wait for it to finish, or choose another --out"):
    """Hold ``out/.tacluster-lock`` locked while the block writes the run
    directory; a second command on it meanwhile fails at once with one line
    (two runs into one ``--out`` both reported success and one result was
    lost). The kernel drops the lock when the process dies, kill -9 included.
    An ``out`` this call created is removed again when the block fails
    before writing anything else there."""
    if out.exists() and not out.is_dir():  # check_out_dir says what is wrong
        yield
        return
    made = [p for p in (out, *out.parents) if not p.exists()]  # the folders this call creates, deepest first
    out.mkdir(parents=True, exist_ok=True)
    lock_path = out / LOCK_FILE
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "?"
        os.close(fd)
        raise InputError(f"another tacluster command (pid {holder}) is writing {str(out)!r} now; {busy_hint}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    try:
        yield
    except BaseException:
        if made and [p.name for p in out.iterdir()] == [LOCK_FILE]:
            lock_path.unlink(missing_ok=True)
            for folder in made:
                folder.rmdir()
        raise
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
