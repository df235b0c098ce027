"""benchmarks/cold_clip.py: the projection of a run over N nouns to the whole vocabulary (no model needed)."""

from __future__ import annotations

import pytest

from helpers import load_benchmark


def test_the_ranking_bank_is_scaled_to_every_noun_and_nothing_else_is():
    b = load_benchmark("cold_clip")
    row = {"wall_s": 1000.0, "ranking_bank": {"nouns": 2000, "seconds": 200.0}}
    assert b._projected(row, 2000, total=10_000) == pytest.approx(1000.0 + 0.1 * 8000)
    assert b._projected(row, None) is None  # the whole vocabulary ran: nothing to project
    assert b._projected({"wall_s": 5.0, "ranking_bank": None}, 2000) is None  # warm run: no bank was built
    assert b._projected(row, 3000) is None  # the bank in the log is not the one of --words


def test_an_int8_ranking_is_also_projected_at_float32_speed():
    b = load_benchmark("cold_clip")
    row = {"wall_s": 1000.0, "ranking_bank": {"nouns": 2000, "seconds": 200.0},
           "noun_bank_counts": {"ranking_precision": {"precision": "int8", "speedup": 1.5}}}
    assert b._projected_float32(row, 2000, total=10_000) == pytest.approx(1800.0 + 0.1 * 10_000 * 0.5)
    row["noun_bank_counts"]["ranking_precision"]["precision"] = "float32"
    assert b._projected_float32(row, 2000, total=10_000) is None  # it ran in float32: the first projection is it
