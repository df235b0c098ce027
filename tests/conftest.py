"""Shared fixtures: synthetic worlds with known ground truth, the shared data folder."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from tacluster.synthetic import make_world

from helpers import SHARED, extract_members, shared_tarball  # noqa: F401  (SHARED: for tests that read it here)



def _closed_port_url() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


# Tests never touch the network: the Hub is a local port nothing listens on, so `--backbone auto`
# (the default) finds no CLIP in the cache, is refused at once and runs lite. The download tests
# point HF_ENDPOINT at their stand-in Hub inside their fixtures.
os.environ["HF_ENDPOINT"] = _closed_port_url()


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
