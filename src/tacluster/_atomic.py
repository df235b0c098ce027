"""Atomic file writes: a temp file in the same folder, then ``os.replace``.

Readers never see a half-written file, a killed writer leaves only a
``.<name>.*.tmp`` file (which the writers that own a folder clean up), and an
error while writing (e.g. disk full) leaves the previous file in place.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Callable


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # os.umask can only be read by setting it
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """Mode of a new file as ``open`` would create it: 0666 less the umask."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """Mode of a new folder as ``mkdir`` would create it: 0777 less the umask."""
    return 0o777 & ~current_umask()


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the rename itself is atomic
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp_path)``, then rename the temp file over ``path``.

    The file gets the mode ``open`` would give it (0666 less the umask, not
    mkstemp's 0600), and the folder is flushed after the rename. OS errors that
    carry no file name (``fsync``/``write`` on a full disk) are re-raised
    naming ``path``, so the user learns which output failed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        # After the writer: some (safetensors) replace the file with their own 0600 one.
        os.chmod(tmp_path, file_mode())
        os.replace(tmp_path, path)
        fsync_dir(path.parent)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        if exc.filename is None or exc.filename in (tmp, str(tmp_path)):
            # the temp file's name means nothing to the user: name the output
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, flushed to disk before the rename."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    atomic_write(path, write)


def commit_staged(staging: Path, target: Path, names: list[str], last: str) -> None:
    """Move the files ``names`` (relative paths) from ``staging`` into ``target``
    by renames, ``last`` after all the others, then remove ``staging``.

    Renames need no free space, so once every byte is written to ``staging``
    a full disk can no longer stop the swap; each rename is atomic, and the
    caller marks the target as being written before calling (a kill between two
    renames leaves whole files and that mark).
    """
    for name in [*names, last]:
        dst = target / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / name, dst)
        fsync_dir(dst.parent)
    shutil.rmtree(staging, ignore_errors=True)


def move_into(src: Path, dst: Path) -> None:
    """Rename ``src`` over ``dst`` (atomic) and flush the folder."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dst)
    fsync_dir(dst.parent)
