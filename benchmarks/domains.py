"""Clustering quality on every domain in ``../shared/data``: one table, paired against k-means.

    python benchmarks/domains.py --seeds 10
    python benchmarks/domains.py --seeds 3 --sets signdigits,clothing --methods kmeans,spectral,default

The protocol is ``benchmarks/quality.py``'s, reused through its helpers
(:func:`quality.dataset_root`, :func:`quality.list_labelled`,
:func:`quality.fit_heldout_split`, :func:`quality.default_estimator`): each
set is shuffled with ``numpy.random.default_rng(0)``, the first 70 % is the
*fit* part, the rest the *held-out* part; every method is fitted on the fit
part and scored by ``predict`` on the held-out part; K = the number of
classes; seeds 0..N-1, each paired with k-means on the image features of the
same seed. Backbone: the offline ``lite`` (EfficientNet-Lite0), embeddings
cached under ``~/.cache/tacluster`` (the first run embeds ~12,600 images:
about 12 minutes on 2 cores).

Sets (``SETS``): the twelve archives of ``../shared/data``, all images, except
CIFAR-10 whose first 100 files per class are used (1,000 images: the archive
holds 50,000 at 32 px, and the table is about domains, not size).

Rows of the table are the sets; cells are held-out ``ACC / NMI`` (mean over
seeds) and, for every method but k-means, the paired ACC difference to
k-means with the number of seeds that went up. The summary row gives the
mean and the worst per-set difference. Methods (``METHODS``):

* ``kmeans``: spherical k-means on the image features (10 restarts).
* ``spectral``: spectral clustering of the 20-neighbour image graph.
* ``spectral-pow``: the same on power-normalised features (signed square
  root, then L2; ``feature_power=0.5``).
* ``spectral-refined``: spectral, then k-means from its clusters (``spectral_refine``).
* ``spectral-views``: spectral on both views side by side (``spectral_views=[1, 0.5]``).
* ``spectral-fused``: both (the graph candidate of :mod:`tacluster.choices.choose_method`).
* ``consensus``: k-means, ``consensus=20`` (co-association of 20 restarts).
* ``kmeans-consensus-pow``: the same on power-normalised features.
* ``coassoc-fused``: spectral-fused's graph with every edge re-weighted by the
  co-association of 10 single-restart k-means runs, then k-means from it
  (:func:`coassoc_fused`).
* ``consensus-2`` / ``consensus-3``: the co-association consensus of k-means and
  spectral-fused (and kmeans-consensus-pow), the answers of the no-decision zone.
  These twelve (:data:`FAMILY`; the last three built here, :data:`DERIVED`) are
  fitted once per seed, each with the label-free criterion (modularity of its
  partition on the fit part's kNN graphs).
* ``spectral-nk``: spectral with ``n_neighbors = round(n / (2K))`` (at least 10).
* ``kmeans-pow``: k-means on power-normalised features.
* ``default``: what ``tacluster cluster --method auto`` does with ``lite``
  (:func:`quality.default_estimator`); the candidates it chose in brackets.

The last column (``--auto-k-seeds``, default 1 seed) is ``--k auto`` with the
default method: the K estimated on the fit part and the held-out ACC at it;
the summary cell counts the sets where it was exact / within 2.

**Does the criterion predict?** For candidate pairs (:data:`PAIRS`): per set
the criterion difference against the held-out ACC difference, and over the
sets the sign agreement and Spearman's rho.

**Leave-one-domain-out**, three times. The whole rule family (:func:`family`:
always one candidate; any candidate unless k-means scores higher by a
relative margin in :data:`MARGINS`; the rule before issue 30, keep spectral
or k-means unless the best of k-means / spectral / spectral-pow beats it by a
margin; a no-decision zone, below), the package's design with only its margin
open (:func:`package_family`), and the no-decision zone alone
(:func:`zone_family`: spectral-fused or k-means where one scores higher by
more than a relative half-width in :data:`ZONE_MARGINS`, inside it a
consensus from :data:`ZONE_ANSWERS`). For each set the member with the best mean
fit-part gain over the other sets (among members whose worst set loses at
most 0.5 ACC, else the best worst set) is applied to it (criterion on its
fit part, no labels) and scored on its held-out part.

Writes ``domains.json`` and ``domains.md`` to ``--out``; prints the markdown.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import environment, markdown_table, peak_rss_mb, write_json  # noqa: E402
from quality import dataset_root, default_estimator, fit_heldout_split, list_labelled  # noqa: E402

from tacluster.choices.choose_method import IMAGE_CANDIDATES, MARGIN, REFERENCE, SCORE_VIEWS, partition_scores  # noqa: E402
from tacluster.errors import InputError  # noqa: E402
from tacluster.estimator import TextAidedClustering  # noqa: E402
from tacluster.evaluate.metrics import evaluate_clustering  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
#: (archive stem, images per class or None for all)
SETS: tuple[tuple[str, int | None], ...] = (
    ("cifar10-train", 100), ("scene15-train", None), ("uiuc-texture", None), ("flowers17", None),
    ("rsscn7-aerial", None), ("pacs-sketch", None), ("pbc-bloodcells", None), ("signdigits", None),
    ("clothing", None), ("butterflies", None), ("gtsrb-signs", None), ("weather", None),
)


def neighbours_for(n: int, k: int) -> int:
    """The ``spectral-nk`` neighbour count: half a class's expected size, at least 10."""
    return max(10, int(round(n / (2 * k))))


def _est(k: int, seed: int, method: str, **params) -> TextAidedClustering:
    return TextAidedClustering(k, method, random_state=seed, **params)


def _fit_predict(est: TextAidedClustering, data: dict) -> tuple[TextAidedClustering, np.ndarray]:
    est.fit(data["u_fit"])
    return est, est.predict(data["u_ho"])


def _method_spectral_nk(data, k, seed):
    nb = neighbours_for(len(data["u_fit"]), k)
    return _fit_predict(_est(k, seed, "spectral", spectral_neighbors=nb), data)


def _method_kmeans_pow(data, k, seed):
    return _fit_predict(_est(k, seed, "kmeans", feature_power=0.5), data)


def _method_default(data, k, seed):
    est = default_estimator("lite", k, seed, "cpu")
    if est.method in ("kmeans", "spectral", "auto"):
        est.fit(data["u_fit"])
    else:
        est.fit(data["u_fit"], noun_embeddings=data["bank"], nouns=data["words"], joint_embeddings=data["j_fit"])
    return est, est.predict(data["u_ho"], joint_embeddings=data["j_ho"])


def coassoc_fused(data: dict, k: int, seed: int, labels: dict) -> np.ndarray:
    """``coassoc-fused``: spectral of the fused-view 20-NN graph (``spectral_views=[1, 0.5]``) with each
    edge weighted by 0.1 + the share of :data:`COASSOC_RUNS` single-restart k-means runs that put its ends
    together, then k-means from its clusters (``spectral_refine``'s step); fit-part labels."""
    from scipy import sparse
    from sklearn.cluster import SpectralClustering

    from tacluster._blocks import concatenated_views
    from tacluster.cluster import neighbours
    from tacluster.cluster.kmeans import kmeans_cluster, refined_kmeans
    from tacluster.cluster.spectral import _bridge_components

    u = data["u_fit"]
    x = concatenated_views(u, [1.0, 0.5])
    n, nb = len(x), 19
    nn = neighbours.knn(x, nb, seed=seed)
    rows, cols = np.repeat(np.arange(n), nb + 1), np.hstack([np.arange(n)[:, None], nn]).ravel()
    runs = [kmeans_cluster(u, k, seed=seed * 1000 + 17 + r, n_init=1).labels for r in range(COASSOC_RUNS)]
    co = np.mean([p[rows] == p[cols] for p in runs], axis=0)
    conn = sparse.csr_matrix((0.1 + co, (rows, cols)), shape=(n, n))
    aff = _bridge_components(0.5 * (conn + conn.T), x)
    lab = SpectralClustering(k, affinity="precomputed", random_state=seed + 1, n_init=10,
                             assign_labels="kmeans").fit_predict(aff).astype(np.int64)
    return refined_kmeans(u, lab, k, seed=seed + 1)


def _consensus_of(*names):
    """A DERIVED partition: the co-association consensus of the partitions ``names``
    (:func:`tacluster.cluster.kmeans.consensus_labels`)."""
    def derive(data: dict, k: int, seed: int, labels: dict) -> np.ndarray:
        from tacluster.cluster.kmeans import consensus_labels

        return consensus_labels(np.stack([labels[n] for n in names]), k, seed=seed)

    derive.__doc__ = f"The co-association consensus of {', '.join(names)}; fit-part labels."
    return derive


#: Single-restart k-means runs whose co-association re-weights ``coassoc-fused``'s graph.
COASSOC_RUNS = 10
#: Partitions built by the benchmark from the fit part (and the partitions before them), not by an
#: estimator setting; each becomes a centroid model (normalised means) that labels both parts.
#: ``consensus-2`` / ``consensus-3`` are the answers of the "no-decision zone" rules.
DERIVED = {"coassoc-fused": coassoc_fused, "consensus-2": _consensus_of("kmeans", "spectral-fused"),
           "consensus-3": _consensus_of("kmeans", "spectral-fused", "kmeans-consensus-pow")}

#: Partitions fitted once per seed on every set, each with its label-free criterion: the candidates
#: of tacluster.choices.choose_method (k-means, spectral-fused) and the members of the rule family
#: the leave-one-domain-out check chooses from (what each rule could pick).
FAMILY: dict[str, dict] = {
    "kmeans": {"method": "kmeans"},
    "spectral": {"method": "spectral"},
    "spectral-pow": {"method": "spectral", "feature_power": 0.5},
    "spectral-refined": {"method": "spectral", "spectral_refine": True},
    "spectral-views": {"method": "spectral", "spectral_views": [1.0, 0.5]},
    **{name: dict(params) for name, params in IMAGE_CANDIDATES.items() if name != "kmeans"},
    "consensus": {"method": "kmeans", "consensus": 20},
    "kmeans-consensus-pow": {"method": "kmeans", "consensus": 20, "feature_power": 0.5},
    **{name: None for name in DERIVED},
}
CANDIDATES = tuple(FAMILY)
#: The candidates a k-means guard can protect (every one but k-means).
GRAPH = tuple(c for c in CANDIDATES if c != "kmeans")
METHODS = {
    **{name: None for name in CANDIDATES},
    "spectral-nk": _method_spectral_nk,
    "kmeans-pow": _method_kmeans_pow,
    "default": _method_default,
}
#: Relative margins of the leave-one-domain-out rule family.
MARGINS = (-0.01, -0.005, 0.0, 0.005, 0.01, 0.02)
#: Half-widths of the "no-decision zone" (relative modularity difference between k-means and
#: spectral-fused within which neither is trusted) and the partitions answered there.
ZONE_MARGINS = (0.005, 0.01, 0.02, 0.03, 0.05)
ZONE_ANSWERS = ("consensus-2", "consensus-3", "consensus", "kmeans-consensus-pow")
#: Candidate pairs whose criterion difference is set against their ACC difference.
PAIRS = (("spectral", "kmeans"), ("spectral-pow", "kmeans"), ("spectral-pow", "spectral"),
         ("spectral-fused", "kmeans"), ("spectral-fused", "spectral"), ("coassoc-fused", "kmeans"),
         ("consensus", "kmeans"), ("kmeans-consensus-pow", "kmeans"), ("consensus-3", "kmeans"),
         ("consensus-3", "spectral-fused"))


def load_domain(name: str, limit: int | None, bb, cache: Path, work: Path, shared: Path) -> dict:
    """Embeddings, labels and the fit / held-out split of one set (quality.py's helpers)."""
    from tacluster.embed import embed_images

    root = dataset_root(shared / f"{name}.tar.gz", work)
    paths, classes = list_labelled(root, limit)
    emb = embed_images(paths, bb, cache_dir=cache, progress=False)
    label_of = dict(zip(paths, classes))
    y = np.unique([label_of[p] for p in emb.paths], return_inverse=True)[1].reshape(-1)
    u = emb.arrays["image"]
    j = emb.arrays.get("joint", u)
    fit, ho = fit_heldout_split(len(y))
    probs = emb.arrays.get("probs")
    return {"u_fit": u[fit], "u_ho": u[ho], "j_fit": j[fit], "j_ho": j[ho], "y_fit": y[fit], "y_ho": y[ho],
            "p_fit": None if probs is None else probs[fit],
            "k": int(len(np.unique(y))), "n": int(len(y)), "n_skipped": len(emb.skipped)}


def _scored(est, pred, data, tic) -> dict:
    return {
        "heldout": evaluate_clustering(data["y_ho"], pred),
        "fit": evaluate_clustering(data["y_fit"], est.labels_),
        "seconds": time.perf_counter() - tic,
    }


def run_candidates(data: dict, seed: int) -> dict[str, dict]:
    """Every partition of :data:`FAMILY` fitted on the fit part, scored, with its label-free criterion
    (choose_method's: modularity on the fit part's kNN graphs of both views)."""
    from tacluster.cluster.kmeans import assign, normalised_means

    out, labels = {}, {}
    for name, params in FAMILY.items():
        tic = time.perf_counter()
        if params is None:  # a DERIVED partition: its normalised means label both parts
            centres = normalised_means(data["u_fit"], DERIVED[name](data, data["k"], seed, labels), data["k"])
            est = SimpleNamespace(labels_=assign([data["u_fit"]], centres)[0])
            pred = assign([data["u_ho"]], centres)[0]
        else:
            est, pred = _fit_predict(_est(data["k"], seed, **params), data)
        out[name] = _scored(est, pred, data, tic)
        labels[name] = est.labels_
    for name, score in partition_scores(data["u_fit"], labels, powers=SCORE_VIEWS, seed=seed).items():
        out[name]["criterion"] = score
    return out


def run_one(method: str, data: dict, seed: int) -> dict:
    tic = time.perf_counter()
    est, pred = METHODS[method](data, data["k"], seed)
    out = _scored(est, pred, data, tic)
    choice = getattr(est, "choice_", None)
    if choice is not None:
        out["chosen"] = choice.method
        out["scores"] = {m: round(float(s), 4) for m, s in choice.scores.items()}
    if method == "default":
        out["method"] = est.method
    return out


def _pick(rule, crit: dict[str, float]) -> str:
    """The candidate a rule picks given every candidate's criterion on one seed."""
    kind, value = rule
    if kind == "always":
        return value
    if kind == "guard":  # graph candidate X unless k-means scores higher by more than the margin
        x, margin = value
        return "kmeans" if crit["kmeans"] > crit[x] + margin * abs(crit[x]) else x
    if kind == "zone":  # X or k-means where one scores higher by more than the margin, else the answer
        x, margin, answer = value
        diff = (crit["kmeans"] - crit[x]) / abs(crit[x])
        return "kmeans" if diff > margin else (x if diff < -margin else answer)
    ref, margin = value  # "keep": the reference unless the best of OLD_CANDIDATES beats it by the margin
    pick = max(OLD_CANDIDATES, key=lambda c: (crit[c], c == ref))
    return ref if pick != ref and crit[pick] <= crit[ref] + margin * abs(crit[ref]) else pick


#: The candidates of the rule before issue 30 ("keep": keep the reference unless beaten).
OLD_CANDIDATES = ("kmeans", "spectral", "spectral-pow")


def apply_rule(rule, runs: dict[str, list[dict]], part: str) -> list[float]:
    """ACC per seed of a rule on ``part`` ("fit" or "heldout"); the criterion is always the fit part's."""
    return [runs[_pick(rule, {c: runs[c][i]["criterion"] for c in CANDIDATES})][i][part]["acc"]
            for i in range(len(runs["kmeans"]))]


def rule_text(rule) -> str:
    kind, value = rule
    if kind == "always":
        return f"always {value}"
    if kind == "guard":
        return f"{value[0]} unless k-means scores higher by > {value[1]:+.1%}"
    if kind == "zone":
        return (f"{value[0]} or k-means where one scores higher by > {value[1]:.1%}, else {value[2]}")
    return f"keep {value[0]} unless beaten by > {value[1]:.1%} (k-means, spectral, spectral-pow)"


def rule_gain(rule, runs, part: str) -> float:
    return statistics.fmean(a - r[part]["acc"] for a, r in zip(apply_rule(rule, runs, part), runs["kmeans"]))


def family() -> list:
    """Every rule the leave-one-domain-out check may fix: always one candidate; any other candidate
    guarded by k-means at a margin; the rule before issue 30 (keep a reference unless beaten); the
    package's candidates with a no-decision zone (:data:`ZONE_MARGINS`) answered by a consensus
    (:data:`ZONE_ANSWERS`)."""
    rules = [("always", c) for c in CANDIDATES]
    rules += [("guard", (x, m)) for x in GRAPH for m in MARGINS]
    rules += [("keep", (ref, m)) for ref in ("spectral", "kmeans") for m in (0.0, 0.01, 0.02, 0.03, 0.05)]
    rules += [("zone", (REFERENCE, m, a)) for a in ZONE_ANSWERS for m in ZONE_MARGINS]
    return rules


def zone_family() -> list:
    """The package's candidates with a no-decision zone: margin and answer open."""
    return [("zone", (REFERENCE, m, a)) for a in ZONE_ANSWERS for m in ZONE_MARGINS]


def package_family() -> list:
    """The package's design with only its margin left open: spectral-fused unless k-means scores
    higher by a margin in :data:`MARGINS`."""
    return [("guard", (REFERENCE, m)) for m in MARGINS]


def pick_rule(results: dict, sets: list[str], rules: list | None = None):
    """The member of ``rules`` (default :func:`family`) with the best mean fit-part gain over ``sets``
    whose worst set loses at most 0.5 ACC (else the best worst set), and its (mean, worst) gains."""
    rules = family() if rules is None else rules
    stats = {}
    for rule in rules:
        g = [rule_gain(rule, results[s], "fit") for s in sets]
        stats[rule] = (statistics.fmean(g), min(g))
    safe = [r for r in rules if stats[r][1] >= -0.5]
    best = max(safe, key=lambda r: stats[r][0]) if safe else max(rules, key=lambda r: stats[r][1])
    return best, stats[best]


def package_rule():
    """The package's rule (choose_method) as a family member."""
    return ("guard", (REFERENCE, MARGIN))


def lodo(results: dict, rules: list | None = None) -> dict:
    """Leave-one-domain-out: for each set, the rule :func:`pick_rule` fixes on the others' fit parts,
    scored on its held-out part."""
    sets = list(results)
    rows = {}
    for held in sets:
        rule, (mean_fit, worst_fit) = pick_rule(results, [s for s in sets if s != held], rules)
        runs = results[held]
        rows[held] = {
            "rule": rule_text(rule),
            "fit_gain_other_sets": [round(mean_fit, 2), round(worst_fit, 2)],
            "heldout_acc": statistics.fmean(apply_rule(rule, runs, "heldout")),
            "kmeans_heldout_acc": statistics.fmean(r["heldout"]["acc"] for r in runs["kmeans"]),
            "heldout_gain": rule_gain(rule, runs, "heldout"),
        }
    all_rule, all_stats = pick_rule(results, sets, rules)
    return {"per_set": rows, "all_sets_rule": rule_text(all_rule),
            "all_sets_fit_gain": [round(all_stats[0], 2), round(all_stats[1], 2)]}


def criterion_table(results: dict) -> tuple[str, dict]:
    """Per set and candidate pair: the criterion difference (fit part) against the held-out ACC
    difference, means over seeds; per pair the sign agreement and Spearman's rho over the sets."""
    from scipy.stats import spearmanr

    header = ["set"] + [f"{a} - {b}: Δ criterion / Δ ACC" for a, b in PAIRS]
    rows, stats = [], {}
    cols = {pair: ([], []) for pair in PAIRS}
    for name, runs in results.items():
        cells = [name]
        for a, b in PAIRS:
            dc = statistics.fmean(x["criterion"] - y["criterion"] for x, y in zip(runs[a], runs[b]))
            da = statistics.fmean(x["heldout"]["acc"] - y["heldout"]["acc"] for x, y in zip(runs[a], runs[b]))
            cols[(a, b)][0].append(dc)
            cols[(a, b)][1].append(da)
            cells.append(f"{dc:+.4f} / {da:+.1f}")
        rows.append(cells)
    summary = ["**sign agrees / Spearman ρ**"]
    for pair, (dc, da) in cols.items():
        agree = sum((c > 0) == (a > 0) for c, a in zip(dc, da))
        rho = float(spearmanr(dc, da).statistic) if len(dc) >= 3 else float("nan")
        stats[f"{pair[0]} - {pair[1]}"] = {"sign_agrees": agree, "n_sets": len(dc), "spearman": rho}
        summary.append(f"{agree}/{len(dc)}, ρ = {rho:+.2f}")
    rows.append(summary)
    return markdown_table(header, rows), stats


def lodo_table(res: dict) -> str:
    header = ["held-out set", "rule fixed on the other sets' fit parts", "their fit gain mean / worst",
              "held-out ACC: rule / k-means", "Δ"]
    rows = [[s, r["rule"], f"{r['fit_gain_other_sets'][0]:+.1f} / {r['fit_gain_other_sets'][1]:+.1f}",
             f"{r['heldout_acc']:.1f} / {r['kmeans_heldout_acc']:.1f}", f"{r['heldout_gain']:+.1f}"]
            for s, r in res["per_set"].items()]
    g = [r["heldout_gain"] for r in res["per_set"].values()]
    rows.append(["**mean / worst**", "", "", "", f"{statistics.fmean(g):+.1f} / {min(g):+.1f}"])
    return markdown_table(header, rows)


def run_auto_k(data: dict, seed: int) -> dict:
    """``--k auto`` with the default method: the K chosen on the fit part and held-out ACC / NMI at it."""
    tic = time.perf_counter()
    est, pred = _method_default(data, "auto", seed)
    return {"k": int(est.n_clusters_), "heldout": evaluate_clustering(data["y_ho"], pred),
            "seconds": time.perf_counter() - tic}


def paired(runs: list[dict], base: list[dict]) -> tuple[float, int]:
    d = [r["heldout"]["acc"] - b["heldout"]["acc"] for r, b in zip(runs, base)]
    return statistics.fmean(d), sum(x > 0 for x in d)


def table(results: dict, methods: list[str], seeds: int, meta: dict, auto_k: dict | None = None) -> str:
    header = ["set", "n (fit / held-out)", "K"] + methods + (["auto K: K chosen, ACC at it"] if auto_k else [])
    rows = []
    deltas: dict[str, list[float]] = {m: [] for m in methods}
    for name, per in results.items():
        cells = [name, f"{meta[name]['n_fit']} / {meta[name]['n_ho']}", meta[name]["k"]]
        for m in methods:
            runs = per[m]
            acc = statistics.fmean(r["heldout"]["acc"] for r in runs)
            nmi = statistics.fmean(r["heldout"]["nmi"] for r in runs)
            cell = f"{acc:.1f} / {nmi:.1f}"
            if m != "kmeans" and "kmeans" in per:
                d, up = paired(runs, per["kmeans"])
                deltas[m].append(d)
                cell += f" ({d:+.1f}, {up}/{len(runs)})"
            chosen = sorted({r["chosen"] for r in runs if "chosen" in r})
            if chosen:
                cell += f" [{', '.join(chosen)}]"
            cells.append(cell)
        if auto_k:
            ks = [r["k"] for r in auto_k[name]]
            acc = statistics.fmean(r["heldout"]["acc"] for r in auto_k[name])
            cells.append(f"{', '.join(map(str, ks))}; {acc:.1f}")
        rows.append(cells)
    summary = ["**mean Δ / worst Δ**", "", ""]
    for m in methods:
        summary.append(f"{statistics.fmean(deltas[m]):+.1f} / {min(deltas[m]):+.1f}" if deltas[m] else "")
    if auto_k:
        ks = {name: [r["k"] for r in runs] for name, runs in auto_k.items()}
        exact = sum(all(k == meta[n]["k"] for k in v) for n, v in ks.items())
        near = sum(all(abs(k - meta[n]["k"]) <= 2 for k in v) for n, v in ks.items())
        summary.append(f"exact {exact}/{len(ks)}, within ±2 {near}/{len(ks)}")
    rows.append(summary)
    return markdown_table(header, rows)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10, help="seeds per method (default 10)")
    ap.add_argument("--sets", default=",".join(s for s, _ in SETS), help="comma list of set names")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma list from {','.join(METHODS)}")
    ap.add_argument("--auto-k-seeds", type=int, default=1,
                    help="seeds of the --k auto column (default 1; 0 leaves the column out)")
    ap.add_argument("--shared", default=str(SHARED), help="folder of the archives (default ../shared/data)")
    ap.add_argument("--work", default=str(Path.home() / ".cache" / "tacluster" / "datasets"),
                    help="where archives are extracted")
    ap.add_argument("--cache-dir", default=None, help="embedding cache (default ~/.cache/tacluster)")
    ap.add_argument("--out", default="benchmarks/results/domains", help="output directory")
    args = ap.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    limits = dict(SETS)
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    bad = [m for m in methods if m not in METHODS] + [s for s in sets if s not in limits]
    if bad or args.seeds < 1:
        ap.error(f"unknown --methods / --sets {bad}, or --seeds < 1")
    # the candidates (k-means, the pairing baseline, first) are always run: the LODO check needs them
    methods = list(CANDIDATES) + [m for m in methods if m not in CANDIDATES]

    from tacluster.embed.backbones import load_backbone
    from tacluster.nouns.bank import default_cache_dir

    shared = Path(args.shared)
    if not shared.is_dir():
        raise InputError(f"--shared {str(shared)!r} does not exist; it should hold the nine .tar.gz sets")
    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    bb = load_backbone("lite", device="cpu")
    results: dict[str, dict[str, list[dict]]] = {}
    auto_k: dict[str, list[dict]] = {}
    meta: dict[str, dict] = {}
    for name in sets:
        tic = time.perf_counter()
        data = load_domain(name, limits[name], bb, cache, Path(args.work).expanduser(), shared)
        meta[name] = {"k": data["k"], "n": data["n"], "n_fit": len(data["y_fit"]), "n_ho": len(data["y_ho"]),
                      "limit_per_class": limits[name], "n_skipped": data["n_skipped"],
                      "embed_s": round(time.perf_counter() - tic, 1)}
        results[name] = {}
        tic = time.perf_counter()
        cand = [run_candidates(data, seed) for seed in range(args.seeds)]
        for c in CANDIDATES:
            results[name][c] = [runs[c] for runs in cand]
        print(f"{name:15s} candidates {', '.join(CANDIDATES)} ({time.perf_counter() - tic:.0f} s)", flush=True)
        for m in methods:
            tic = time.perf_counter()
            if m not in CANDIDATES:
                results[name][m] = [run_one(m, data, seed) for seed in range(args.seeds)]
            acc = statistics.fmean(r["heldout"]["acc"] for r in results[name][m])
            print(f"{name:15s} {m:13s} held-out ACC {acc:5.1f}  ({time.perf_counter() - tic:.0f} s)", flush=True)
        if args.auto_k_seeds > 0:
            tic = time.perf_counter()
            auto_k[name] = [run_auto_k(data, seed) for seed in range(args.auto_k_seeds)]
            print(f"{name:15s} auto K {[r['k'] for r in auto_k[name]]} (true {data['k']}, "
                  f"{time.perf_counter() - tic:.0f} s)", flush=True)
    md_table = table(results, methods, args.seeds, meta, auto_k or None)
    title = (f"Held-out ACC / NMI (%), backbone lite, K = classes, fit 70 % / held-out 30 % (split seed 0), "
             f"{args.seeds} seeds; (Δ ACC vs k-means, seeds up)")
    md = f"### {title}\n\n{md_table}\n"
    crit_md, crit_stats = criterion_table(results)
    md += ("\n### Does the criterion predict? Modularity difference (fit part) against held-out ACC difference, "
           f"per candidate pair (means over {args.seeds} seeds)\n\n{crit_md}\n")
    pkg = package_rule()
    pkg_gain = {name: rule_gain(pkg, runs, "heldout") for name, runs in results.items()}
    md += (f"\nThe package's rule ({rule_text(pkg)}), held-out Δ ACC vs k-means: mean "
           f"{statistics.fmean(pkg_gain.values()):+.1f}, worst {min(pkg_gain.values()):+.1f} "
           f"({min(pkg_gain, key=pkg_gain.get)}).\n")
    lodo_res = lodo(results) if len(results) >= 3 else None
    if lodo_res:
        md += (f"\n### Leave-one-domain-out: the rule fixed on the other sets' fit parts, scored on the held-out "
               f"part of the one left out (family: always one of {', '.join(CANDIDATES)}; any of them "
               f"unless k-means scores higher by a relative margin in {list(MARGINS)}; the rule before issue 30, "
               f"keep spectral or k-means unless beaten; {REFERENCE} or k-means with a no-decision zone of "
               f"{list(ZONE_MARGINS)} answered by one of {', '.join(ZONE_ANSWERS)})\n\n{lodo_table(lodo_res)}\n\nRule fixed on all "
               f"{len(results)} fit parts: {lodo_res['all_sets_rule']} (fit gain mean / worst "
               f"{lodo_res['all_sets_fit_gain'][0]:+.1f} / {lodo_res['all_sets_fit_gain'][1]:+.1f}); the package's: "
               f"{rule_text(pkg)}.\n")
    lodo_pkg = lodo(results, package_family()) if len(results) >= 3 else None
    md += _lodo_section(lodo_pkg, "the package's design (spectral-fused unless k-means scores higher; only the "
                        f"margin, in {list(MARGINS)}, fixed on the other sets' fit parts)", "Margin fixed", len(results))
    lodo_zone = lodo(results, zone_family()) if len(results) >= 3 else None
    md += _lodo_section(lodo_zone, f"the no-decision zone ({REFERENCE} or k-means where one scores higher by more "
                        f"than the zone's half-width, in {list(ZONE_MARGINS)}; inside it one of "
                        f"{', '.join(ZONE_ANSWERS)}; both fixed on the other sets' fit parts)", "Fixed", len(results))
    md += f"\nPeak RSS {peak_rss_mb():.0f} MiB.\n"
    print("\n" + md)
    payload = {"settings": {**vars(args), "sets": sets, "methods": methods}, "meta": meta, "results": results,
               "lodo": lodo_res, "lodo_package_design": lodo_pkg, "lodo_zone": lodo_zone, "auto_k": auto_k, "criterion": crit_stats,
               "package_rule": {"rule": rule_text(pkg), "heldout_gain": pkg_gain},
               "environment": environment(), "markdown": md}
    out = Path(args.out)
    write_json(out / "domains.json", payload)
    (out / "domains.md").write_text(md)
    return payload



def _lodo_section(res: dict | None, what: str, fixed: str, n_sets: int) -> str:
    """The markdown of one leave-one-domain-out check ("" when it did not run)."""
    if not res:
        return ""
    return (f"\n### Leave-one-domain-out of {what}\n\n{lodo_table(res)}\n\n"
            f"{fixed} on all {n_sets} fit parts: {res['all_sets_rule']}.\n")

if __name__ == "__main__":
    main()
