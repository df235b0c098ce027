"""Fixtures of the reliability suite (see relihelpers.py and docs/reliability.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

import relihelpers

NOUNS = ["apple", "river", "engine", "violin", "cloud", "tiger", "lamp", "bridge"]


@pytest.fixture(scope="session", autouse=True)
def _register_test_backbones():
    relihelpers.register()


@pytest.fixture(scope="module", autouse=True)
def _one_faiss_thread():
    # faiss's OpenMP k-means on a handful of points takes ~2 s with 2 threads
    # on a busy 2-core machine and <1 ms with one (measured); these tests
    # cluster tens of images, so one thread keeps the suite fast. Module scope:
    # a session-scoped fixture here kept faiss (and, with torch imported
    # first, torch's shared OpenMP runtime) at 1 thread for every later test
    # file of the session too.
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture(scope="session")
def reli_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("reli")


@pytest.fixture(scope="session")
def vocab(reli_root) -> Path:
    p = reli_root / "nouns.txt"
    p.write_text("\n".join(NOUNS) + "\n")
    return p


@pytest.fixture(scope="session")
def shared_cache(reli_root) -> Path:
    return reli_root / "cache"


@pytest.fixture
def cli(capsys):
    """Run ``tacluster.run.cli.main`` in-process; returns (exit code, stdout, stderr)."""
    from tacluster.run.cli import main

    def run(argv: list[str]) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main([str(a) for a in argv])
        got = capsys.readouterr()
        return code, got.out, got.err

    return run


@pytest.fixture
def cluster_args(vocab, shared_cache):
    """Common ``tacluster cluster`` options: tiny backbone, small vocabulary, quiet."""

    def make(out: Path, *, backbone: str = "relitiny", cache: Path | None = None, report: bool = False,
             method: str = "kmeans") -> list[str]:
        args = ["--out", str(out), "--cache-dir", str(cache or shared_cache), "--vocabulary", str(vocab),
                "--backbone", backbone, "--method", method, "--device", "cpu", "--quiet"]
        return args if report else args + ["--no-report"]

    return make
