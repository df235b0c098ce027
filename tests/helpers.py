"""Test helpers shared by several test modules (importable: tests/ is on sys.path)."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

from tacluster.testing import WIDTH, save_tiny_hf_clip  # noqa: E402,F401
