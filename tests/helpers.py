"""Test helpers shared by several test modules (importable: tests/ is on sys.path)."""

from __future__ import annotations

import pytest

from tacluster.testing import WIDTH  # noqa: F401


def save_tiny_hf_clip(folder, seed: int = 0):
    """:func:`tacluster.testing.save_tiny_hf_clip`, skipping the test where transformers is absent."""
    pytest.importorskip("transformers")
    from tacluster.testing import save_tiny_hf_clip as build

    return build(folder, seed)
