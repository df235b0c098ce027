"""benchmarks/noun_candidates.py: the pool choice and the comparison on made-up banks (no data needed)."""

from __future__ import annotations

import numpy as np

from helpers import load_benchmark


def _load():
    return load_benchmark("noun_candidates")


def _cell(kept, dacc):
    return {"kept_pct_min": kept, "dacc_fit_worst": dacc}


def test_the_smallest_pool_that_meets_both_goals_on_every_set_is_chosen():
    b = _load()
    per_set = {"a": {"pools": {"5": _cell(80, 0.0), "10": _cell(96, 0.2), "20": _cell(100, 0.0)}},
               "b": {"pools": {"5": _cell(99, 0.0), "10": _cell(97, -0.6), "20": _cell(99, 0.1)}}}
    assert b.choose_pool(per_set, [5, 10, 20]) == 20  # 10 moves ACC by 0.6 on "b"
    assert b.choose_pool(per_set, [5, 10]) is None


def test_compare_finds_every_kept_noun_when_the_ranking_bank_is_exact():
    b = _load()
    rng = np.random.default_rng(0)
    bank = rng.standard_normal((200, 8)).astype(np.float32)
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    u = bank[rng.integers(0, 200, 90)] + 0.1 * rng.standard_normal((90, 8)).astype(np.float32)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    y = rng.integers(0, 3, 90)
    data = {"u_fit": u[:60], "j_fit": u[:60], "y_fit": y[:60], "u_ho": u[60:], "j_ho": u[60:], "y_ho": y[60:], "k": 3}
    words = [f"w{i}" for i in range(200)]
    noisy = bank + 0.5 * rng.standard_normal(bank.shape).astype(np.float32)
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    same = b.compare(data, words, bank, bank, [5], seeds=1)["pools"]["5"]
    assert same["kept_pct_min"] == 100 and same["dacc_fit_worst"] == 0 and same["dacc_heldout_worst"] == 0
    rough = b.compare(data, words, bank, noisy, [5], seeds=1)["pools"]["5"]
    assert rough["kept_pct_min"] < 100  # a noisy ranking with a tight pool misses nouns: the measure can fail
