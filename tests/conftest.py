"""Shared fixtures: synthetic worlds with known ground truth, the shared data folder."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tacluster.synthetic import make_world

from helpers import SHARED, extract_members, shared_tarball  # noqa: F401  (SHARED: for tests that read it here)


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


@pytest.fixture(scope="session")
def shared_data():
    """:func:`shared_tarball` and :func:`extract_members` for tests in sub-folders, which
    cannot import them: their own conftest module takes the name ``conftest``."""
    return SimpleNamespace(tarball=shared_tarball, extract=extract_members)
