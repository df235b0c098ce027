"""Shared fixtures: synthetic worlds with known ground truth, the shared data folder."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from tacluster.synthetic import make_world

REPO = Path(__file__).resolve().parents[1]
#: The shared data folder: ../shared next to the repo, or $TACLUSTER_SHARED (a git worktree elsewhere).
SHARED = Path(os.environ.get("TACLUSTER_SHARED") or REPO.parent / "shared")


@pytest.fixture(scope="session")
def easy_world():
    """Classes are noun directions plus noise: both views carry the class."""
    return make_world(n_samples=600, n_classes=5, dim=64, n_nouns=400, noise=0.8, seed=1)


@pytest.fixture(scope="session")
def style_world():
    """Image side dominated by a nuisance 'style' independent of the class."""
    return make_world(
        n_samples=1000, n_classes=5, dim=64, n_nouns=400, noise=0.8,
        style_strength=1.6, n_styles=5, seed=2,
    )


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


@pytest.fixture(scope="session")
def shared_data():
    """:func:`shared_tarball` and :func:`extract_members` for tests in sub-folders, which
    cannot import them: their own conftest module takes the name ``conftest``."""
    return SimpleNamespace(tarball=shared_tarball, extract=extract_members)
