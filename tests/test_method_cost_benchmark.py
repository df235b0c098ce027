"""benchmarks/method_cost.py: the whole measurement at a tiny size (a synthetic world, no data needed)."""

from __future__ import annotations

import json

from helpers import load_benchmark


def test_every_row_is_timed_at_every_thread_count_and_written(tmp_path):
    b = load_benchmark("method_cost")
    out = tmp_path / "cost.json"
    payload = b.main(["--synthetic", "120", "--k", "3", "--repeats", "1", "--threads", "1,2", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["k"] == 3 and set(saved["results"]) == {"1", "2"}
    for res in payload["results"].values():
        assert set(res["rows"]) == set(b.ROWS)
        assert all(r["median_s"] > 0 and len(r["seconds"]) == 1 for r in res["rows"].values())
        assert res["load_before"] >= 0 and res["load_after"] >= 0
    assert "| 2 | auto |" in payload["table"] and "x spectral" in payload["table"]
