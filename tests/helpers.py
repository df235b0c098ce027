"""Test helpers shared by several test modules (importable: tests/ is on sys.path)."""

from __future__ import annotations

import pytest

from tacluster.testing import WIDTH  # noqa: F401


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
