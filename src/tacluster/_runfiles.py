"""The run directory's file names and the one reader of its assignments table.

A leaf module (it imports only :mod:`tacluster.errors`): the writers
(:mod:`tacluster.run.rundir`, :mod:`tacluster.run.workflows`), the editing
commands (:mod:`tacluster.run.edit`, :mod:`tacluster.run.journal`), the report
(:mod:`tacluster.report`) and the image lister (:mod:`tacluster.embed.reader`,
which skips a run's own folders) all name the files through these constants,
so none of them imports another's package for a name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from tacluster.errors import InputError

RUN_FILE = "run.json"
ASSIGNMENTS_FILE = "assignments.parquet"
ASSIGNMENTS_CSV = "assignments.csv"
CLUSTERS_FILE = "clusters.json"
SKIPPED_FILE = "skipped.csv"
DUPLICATES_FILE = "duplicates.csv"
MODEL_DIR = "model"
REPORT_FILE = "report.html"
MAP_FILE = "map.png"
AUTO_K_FILE = "auto_k.png"
THUMBS_DIR = "thumbs"
CLUSTER_PAGES_DIR = "clusters"
#: Column of ``assignments.parquet`` with each image's content key (SHA-256 of
#: its bytes; empty for ``--embeddings`` rows): how ``split`` finds a member's
#: embedding in the cache and ``add`` skips images already in the run.
DIGEST_COLUMN = "digest"
#: Boolean columns of the assignments written by ``move`` (a person put the
#: image there) and ``add`` (an added image that fits no cluster well).
MOVED_COLUMN = "moved"
NEW_COLUMN = "new"
#: Hidden folder inside ``--out`` where a run writes every output before
#: moving them in (:func:`commit_outputs`).
STAGING = ".tacluster-staging"
#: An edit's journal (its commit point) and staging folder (:mod:`tacluster.run.journal`).
JOURNAL = ".tacluster-edit.json"
EDIT_STAGING = ".tacluster-edit-staging"
#: The file a command holds locked (flock) while it writes a run directory.
LOCK_FILE = ".tacluster-lock"
#: The file that marks a folder `tacluster export` wrote (its images are never inputs).
EXPORT_MARKER = ".tacluster-export.json"
#: Hidden folder of an edited run: what each edit replaced, so it can be undone
#: (:func:`tacluster.run.edit.undo_last_edit`).
UNDO_DIR = ".tacluster-undo"


def read_assignments_table(path: str | Path, required: Sequence[str] = ("path", "cluster")):
    """``assignments.parquet`` (or a predictions .parquet) as a ``pyarrow.Table``.

    Raises
    ------
    InputError
        One line naming the file: missing, not readable Parquet, or without a
        ``required`` column.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"{path} not found: give the output directory of a finished `tacluster` run "
            f"(it writes {ASSIGNMENTS_FILE}) or an assignments file"
        )
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{path} is not a readable Parquet file ({exc}); re-run tacluster") from exc
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise InputError(f"{path} lacks column(s) {missing}; expected {list(required)}")
    return table
