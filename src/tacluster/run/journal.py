"""The journal that makes ``rename`` and ``merge`` atomic (:mod:`tacluster.run.edit`).

Every new file of an edit is first written whole into ``DIR/.tacluster-edit-staging``;
writing ``DIR/.tacluster-edit.json`` (one atomic rename) is the commit point; then
the files are moved in, the report is rebuilt, and the journal is removed last.
:func:`recover` finishes a committed edit or drops an uncommitted one. Its own
module, so that the run directory's writer (:mod:`tacluster.run.rundir`) can
recover a run without importing the editing commands, which import it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Sequence

from tacluster._atomic import atomic_write_bytes, fsync_dir, move_into
from tacluster._runfiles import EDIT_STAGING, JOURNAL, UNDO_DIR

EDITED_FILES = ("assignments.parquet", "assignments.csv", "clusters.json", "skipped.csv", "model/arrays.safetensors",
                "model/config.json", "run.json")


def recover(run_dir: str | os.PathLike) -> bool:
    """Finish an edit that was interrupted after its commit point; drop one
    interrupted before it. Returns True when an edit was finished."""
    run = Path(run_dir)
    journal = run / JOURNAL
    stage = run / EDIT_STAGING
    if not journal.is_file():
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)  # never committed: the old state stands
        return False
    try:
        entry = json.loads(journal.read_text())
        files, report = entry["files"], bool(entry.get("report", True))
        remove = [str(r) for r in entry.get("remove", [])]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        files, report, remove = list(EDITED_FILES), True, []
    for name in files:
        src = stage / name
        if src.is_file():
            move_into(src, run / name)
    for name in remove:  # undo snapshots used up or too old, files an undo takes back
        parts = Path(name).parts
        if ".." in parts or not (parts[:1] == (UNDO_DIR,) or name in EDITED_FILES):
            continue  # a journal names nothing else; never follow one out of the run
        target = run / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)
    if report:  # a run made with --no-report gets none
        from tacluster.report.html import build_report

        build_report(run)
    journal.unlink(missing_ok=True)
    fsync_dir(run)
    shutil.rmtree(stage, ignore_errors=True)
    return True


def commit(run: Path, files: dict[str, bytes], remove: Sequence[str] = ()) -> None:
    """Stage ``files`` (name -> bytes) in ``run``, write the journal (the commit point) naming
    them and what to ``remove``, then :func:`recover`."""
    stage = run / EDIT_STAGING
    shutil.rmtree(stage, ignore_errors=True)
    for name, data in files.items():
        atomic_write_bytes(stage / name, data)
    report = (run / "report.html").is_file()
    entry = {"files": list(files), "report": report, "remove": list(remove)}
    atomic_write_bytes(run / JOURNAL, json.dumps(entry).encode())  # the commit point
    recover(run)
