"""The run as ``tacluster serve`` shows it: read once per version of the run
(the report's reading code, the report's member order), then served a page at
a time, so a cluster of 50k images opens as fast as one of 50."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tacluster.errors import InputError
from tacluster.report.figures import cluster_colors, hex_color
from tacluster.report.reading import RunDir, members_by_cluster, read_run_dir
from tacluster.report.thumbnails import ensure_thumb, placeholder, short_file, short_name, thumb_name
from tacluster.run.rundir import RUN_FILE, THUMBS_DIR

#: Images per page of a cluster, and thumbnails per cluster on the overview.
PAGE_SIZE = 120
STRIP = 12
THUMB_SIZE = 128  # the report's size: its cached thumbnails are reused


def run_version(run_dir: Path) -> str:
    """A digest of run.json: every edit (and undo) appends to its history, so it
    changes with each; a page carries it and an action on an older one is refused."""
    try:
        return hashlib.sha256((run_dir / RUN_FILE).read_bytes()).hexdigest()[:16]
    except OSError:
        return "none"


@dataclass
class RunView:
    """One version of a run, read: the report's reading plus each cluster's rows, most confident first."""

    version: str
    rd: RunDir
    order: np.ndarray
    bounds: dict[int, tuple[int, int]]
    colors: dict[int, str]
    outlier: np.ndarray
    moved: np.ndarray  # put there by a person (`tacluster move`)
    new: np.ndarray  # added by `tacluster add`, fitting no cluster well

    def clusters(self) -> list[dict[str, Any]]:
        """The clusters by size (largest first), as the overview lists them."""
        a = self.rd.assignments
        out = []
        for cl in sorted(self.rd.clusters, key=lambda c: (-c["size"], c["id"])):
            lo, hi = self.bounds.get(cl["id"], (0, 0))
            rows = self.order[lo:hi]
            out.append({**cl, "color": self.colors[cl["id"]], "n": int(hi - lo),
                        "n_outliers": int(self.outlier[rows].sum()),
                        "n_moved": int(self.moved[rows].sum()), "n_new": int(self.new[rows].sum()),
                        "mean_confidence": float(a.confidence[rows].mean()) if hi > lo else None,
                        "tiles": [self.tile(int(i)) for i in rows[:STRIP]]})
        return out

    def cluster(self, cid: int) -> dict[str, Any]:
        """One cluster's entry; InputError when the run has no such cluster (any more)."""
        for cl in self.rd.clusters:
            if cl["id"] == cid:
                return cl
        raise InputError(f"the run has no cluster {cid} (any more): it was merged or renumbered")

    def page(self, cid: int, page: int) -> tuple[list[dict[str, Any]], int, int]:
        """Page ``page`` (from 0, clamped) of cluster ``cid``'s images: (tiles, page, number of pages)."""
        lo, hi = self.bounds.get(cid, (0, 0))
        pages = max(1, -(-(hi - lo) // PAGE_SIZE))
        page = min(max(page, 0), pages - 1)
        start = lo + page * PAGE_SIZE
        return [self.tile(int(i)) for i in self.order[start:min(hi, start + PAGE_SIZE)]], page, pages

    def tile(self, row: int) -> dict[str, Any]:
        """What the page shows of one image (row ``row`` of the assignments)."""
        a = self.rd.assignments
        p = a.path[row]
        return {"row": row, "path": p, "name": short_name(p), "file": short_file(p),
                "key": thumb_name(p, THUMB_SIZE)[:16],  # in the thumbnail's URL: cached until the path changes
                "folder": os.path.basename(os.path.dirname(p)),
                "confidence": float(a.confidence[row]), "outlier": bool(self.outlier[row]),
                "moved": bool(self.moved[row]), "new": bool(self.new[row])}


class RunBusy(InputError):
    """An edit of the run is being moved in (its journal exists) for longer than a page waits."""


class Views:
    """The current :class:`RunView` of a run directory, re-read when its version changes
    (an edit from this server, another tab or the command line)."""

    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir)
        self._lock = threading.Lock()
        self._view: RunView | None = None

    def current(self) -> RunView:
        """The run as it is now; never a mix of an edit's old and new files (an edit being
        moved in, by this server or a command, holds its journal: reading waits for it)."""
        from tacluster.run.edit import JOURNAL

        with self._lock:
            for _ in range(100):
                version = run_version(self.dir)
                if self._view is not None and self._view.version == version and not (self.dir / JOURNAL).exists():
                    return self._view
                if not (self.dir / JOURNAL).exists():
                    view = _read(self.dir, version)
                    if run_version(self.dir) == version and not (self.dir / JOURNAL).exists():
                        self._view = view
                        return view
                time.sleep(0.1)
        raise RunBusy(f"{str(self.dir)!r} is being edited; reload in a moment")

    def thumbnail(self, view: RunView, row: int) -> Path | None:
        """The cached thumbnail of row ``row`` (made on first request; a placeholder
        for what cannot be decoded); None for a row the run does not have."""
        if not 0 <= row < len(view.rd.assignments.path):
            return None
        thumbs = self.dir / THUMBS_DIR
        thumbs.mkdir(exist_ok=True)
        name = ensure_thumb(thumbs, view.rd.assignments.path[row], THUMB_SIZE)
        return self.dir / (f"{THUMBS_DIR}/{name}" if name else placeholder(thumbs, THUMB_SIZE))


def _read(run_dir: Path, version: str) -> RunView:
    rd = read_run_dir(run_dir)
    a = rd.assignments
    order, ids = members_by_cluster(a)
    ends = np.searchsorted(ids, [[c["id"], c["id"] + 1] for c in rd.clusters])
    bounds = {c["id"]: (int(lo), int(hi)) for c, (lo, hi) in zip(rd.clusters, ends)}
    rgb = cluster_colors([c["id"] for c in rd.clusters])
    colors = {cid: hex_color(rgb[cid]) for cid in rgb}
    none = np.zeros(len(a.path), dtype=bool)
    flags = [none if f is None else np.asarray(f, dtype=bool) for f in (a.outlier, a.moved, a.new)]
    return RunView(version, rd, order, bounds, colors, *flags)
