"""benchmarks/domains.py: the leave-one-domain-out bookkeeping on made-up results (no data needed)."""

from __future__ import annotations

import pytest

from helpers import load_benchmark


def _load():
    return load_benchmark("domains")


def _run(fit_acc, ho_acc, crit):
    return {"fit": {"acc": fit_acc}, "heldout": {"acc": ho_acc}, "criterion": crit}


def _set(accs_and_crit):
    """{candidate: (fit acc, held-out acc, criterion)} -> one seed of results per candidate; the
    candidates not given are copies of k-means (whatever a rule picks among them, it gains nothing)."""
    given = {name: [_run(*v)] for name, v in accs_and_crit.items()}
    return {name: given.get(name, given["kmeans"]) for name in _load().CANDIDATES}


def test_rules_follow_the_criterion_and_the_margin():
    d = _load()
    runs = _set({"kmeans": (50, 50, 0.50), "spectral": (60, 58, 0.60), "spectral-pow": (70, 69, 0.605)})
    assert d.apply_rule(("always", "kmeans"), runs, "heldout") == [50]
    assert d.apply_rule(("keep", ("spectral", 0.0)), runs, "heldout") == [69]  # higher criterion wins
    assert d.apply_rule(("keep", ("spectral", 0.02)), runs, "heldout") == [58]  # within 2 %: keep spectral
    assert d.rule_gain(("keep", ("kmeans", 0.0)), runs, "fit") == pytest.approx(20)


def test_the_guard_falls_back_to_kmeans_only_when_kmeans_scores_higher():
    d = _load()
    runs = _set({"kmeans": (50, 50, 0.50), "spectral-fused": (60, 58, 0.49)})
    assert d.apply_rule(("guard", ("spectral-fused", 0.0)), runs, "heldout") == [50]  # k-means higher
    assert d.apply_rule(("guard", ("spectral-fused", 0.05)), runs, "heldout") == [58]  # not higher by 5 %
    assert d.apply_rule(("guard", ("spectral-fused", -0.05)), runs, "heldout") == [50]
    runs = _set({"kmeans": (50, 50, 0.50), "spectral-fused": (60, 58, 0.51)})
    assert d.apply_rule(d.package_rule(), runs, "heldout") == [58]


def test_lodo_fixes_the_rule_without_the_held_out_set():
    d = _load()
    # On "a" and "b" a higher criterion means higher ACC; on "c" it misleads.
    results = {
        "a": _set({"kmeans": (50, 50, 0.5), "spectral": (60, 60, 0.6), "spectral-pow": (55, 55, 0.55)}),
        "b": _set({"kmeans": (40, 40, 0.4), "spectral": (45, 45, 0.5), "spectral-pow": (50, 50, 0.6)}),
        "c": _set({"kmeans": (70, 70, 0.3), "spectral": (60, 60, 0.6), "spectral-pow": (65, 65, 0.5)}),
    }
    res = d.lodo(results)
    # Without "c", following the criterion is best; applied to "c" it loses 10 there.
    assert res["per_set"]["c"]["heldout_gain"] == pytest.approx(-10)
    assert res["per_set"]["c"]["rule"].startswith("keep")
    # With "c" among the fitted sets, a rule that loses 10 somewhere is not "safe": always k-means wins.
    assert res["all_sets_rule"] == "always kmeans"


def test_the_zone_answers_a_consensus_only_where_the_criterion_does_not_decide():
    d = _load()
    # k-means 1 % below spectral-fused: inside a 2 % zone, outside a 0.5 % one.
    runs = _set({"kmeans": (50, 50, 0.50), "spectral-fused": (60, 58, 0.505), "consensus-2": (55, 54, 0.40)})
    assert d.apply_rule(("zone", ("spectral-fused", 0.02, "consensus-2")), runs, "heldout") == [54]
    assert d.apply_rule(("zone", ("spectral-fused", 0.005, "consensus-2")), runs, "heldout") == [58]
    # k-means 3 % above: outside the 2 % zone, k-means.
    runs = _set({"kmeans": (50, 50, 0.52), "spectral-fused": (60, 58, 0.505), "consensus-2": (55, 54, 0.40)})
    assert d.apply_rule(("zone", ("spectral-fused", 0.02, "consensus-2")), runs, "heldout") == [50]
    assert d.rule_text(("zone", ("spectral-fused", 0.02, "consensus-2"))).endswith("else consensus-2")
    assert set(d.zone_family()) <= set(d.family())
    assert {a for _, (_, _, a) in d.zone_family()} <= set(d.CANDIDATES)
