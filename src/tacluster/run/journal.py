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

from tacluster._atomic import atomic_write_bytes, fsync_dir, move_into
from tacluster._runfiles import EDIT_STAGING, JOURNAL

EDITED_FILES = ("assignments.parquet", "assignments.csv", "clusters.json", "model/config.json", "run.json")


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
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        files, report = list(EDITED_FILES), True
    for name in files:
        src = stage / name
        if src.is_file():
            move_into(src, run / name)
    if report:  # a run made with --no-report gets none
        from tacluster.report.html import build_report

        build_report(run)
    journal.unlink(missing_ok=True)
    fsync_dir(run)
    shutil.rmtree(stage, ignore_errors=True)
    return True


def commit(run: Path, files: dict[str, bytes]) -> None:
    """Stage ``files`` (name -> bytes) in ``run``, write the journal (the commit point), then :func:`recover`."""
    stage = run / EDIT_STAGING
    shutil.rmtree(stage, ignore_errors=True)
    for name, data in files.items():
        atomic_write_bytes(stage / name, data)
    report = (run / "report.html").is_file()
    atomic_write_bytes(run / JOURNAL, json.dumps({"files": list(files), "report": report}).encode())  # the commit point
    recover(run)
