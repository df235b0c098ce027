"""Test helpers shared by several test modules (importable: tests/ is on sys.path)."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from tacluster.testing import WIDTH  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
#: The shared data folder: ../shared next to the repo, or $TACLUSTER_SHARED (a git worktree elsewhere).
SHARED = Path(os.environ.get("TACLUSTER_SHARED") or REPO.parent / "shared")


def shared_tarball(name: str) -> Path:
    """Path of a tarball in ../shared/data, or skip the test with the reason."""
    path = SHARED / "data" / name
    if not path.is_file():
        pytest.skip(f"{path} not found: the shared data folder (../shared next to the repo) is absent")
    return path


def extract_members(tar_path: Path, dest: Path, per_class: int, classes=None) -> list[Path]:
    """Extract the first ``per_class`` files of each class folder (sorted) to ``dest``."""
    out: list[Path] = []
    with tarfile.open(tar_path) as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile()), key=lambda m: m.name)
        taken: dict[str, int] = {}
        for m in members:
            cls = Path(m.name).parent.name
            if classes is not None and cls not in classes:
                continue
            if taken.get(cls, 0) >= per_class:
                continue
            taken[cls] = taken.get(cls, 0) + 1
            tar.extract(m, dest, filter="data")
            out.append(dest / m.name)
    return out


def save_tiny_hf_clip(folder, seed: int = 0):
    """:func:`tacluster.testing.save_tiny_hf_clip`, skipping the test where transformers is absent."""
    pytest.importorskip("transformers")
    from tacluster.testing import save_tiny_hf_clip as build

    return build(folder, seed)


def load_benchmark(name: str):
    """The module ``benchmarks/<name>.py`` (benchmarks/ on sys.path, as when it runs as a script)."""
    import importlib.util
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    if str(bench) not in sys.path:
        sys.path.insert(0, str(bench))
    spec = importlib.util.spec_from_file_location(f"{name}_bench", bench / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
