"""What ``method="auto"`` costs beside one spectral fit (issue 30's cost goal).

    python benchmarks/method_cost.py                          # signdigits, 1,000 images, 1 and 2 threads
    python benchmarks/method_cost.py --set clothing --repeats 7 --out /tmp/cost.json
    python benchmarks/method_cost.py --synthetic 300 --k 4 --repeats 1   # no data needed

Times, on one collection (the whole set; embeddings from the offline ``lite``
backbone through the embedding cache, as ``benchmarks/domains.py``):

* ``spectral``: one ``method="spectral"`` fit (the unit of the goal);
* ``kmeans`` and ``spectral-fused``: ``auto``'s two candidates, each fitted
  alone with its settings (:data:`tacluster.choices.choose_method.IMAGE_CANDIDATES`);
* ``scoring``: the criterion on their two partitions
  (:func:`tacluster.choices.choose_method.partition_scores`: the kNN graphs of
  the raw and power-normalised views, and the modularity of each partition);
* ``auto``: one ``method="auto"`` fit (the three above, plus the estimator);

each the median (and min) of ``--repeats`` fits after one warm-up, with the
kernels (faiss / OpenMP, BLAS, torch) limited to each of ``--threads``; the
rows take turns, so a change of load moves them alike. The table has the
1-minute load average before and after each thread count: on a shared machine
the times move with it. Two sums close each thread count: the three parts
(what ``auto`` runs) and the two candidates' fits alone, the least that any
sharing of work could bring ``auto`` to. Writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import environment, markdown_table, write_json  # noqa: E402

from tacluster import TextAidedClustering  # noqa: E402
from tacluster.choices.choose_method import IMAGE_CANDIDATES, REFERENCE, SCORE_VIEWS, partition_scores  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
ROWS = ("spectral", "kmeans", REFERENCE, "scoring", "auto")


def load_features(args) -> tuple[np.ndarray, int, str]:
    """``(image features, K, what they are)``: a shared set (all its images) or a synthetic world."""
    if args.synthetic:
        from tacluster.synthetic import make_world

        w = make_world(args.synthetic, args.k or 10, 64, 20, style_strength=1.2, n_styles=4, seed=0)
        return w.image_embeddings, args.k or 10, f"synthetic world, {args.synthetic} x 64"
    from _data import labelled_embeddings

    data = labelled_embeddings(Path(args.shared) / f"{args.set}.tar.gz", args.limit_per_class)
    k = args.k or int(len(data["class_names"]))
    return data["image"], k, f"{args.set}, {len(data['labels'])} images, lite backbone"


def fitters(u: np.ndarray, k: int, seed: int) -> dict:
    """Row name -> a call that does that row's work once."""
    def fit(**params):
        return lambda: TextAidedClustering(k, random_state=seed, **params).fit(u)

    cands = {name: TextAidedClustering(k, random_state=seed, **params).fit(u).labels_
             for name, params in IMAGE_CANDIDATES.items()}
    return {
        "spectral": fit(method="spectral"),
        **{name: fit(**params) for name, params in IMAGE_CANDIDATES.items()},
        "scoring": lambda: partition_scores(u, cands, powers=SCORE_VIEWS, seed=seed),
        "auto": fit(method="auto"),
    }


def timed(calls: dict, repeats: int) -> dict:
    """Median and min seconds of ``repeats`` calls of each row after one warm-up, the rows taking
    turns (a change of load then moves every row alike)."""
    out = {name: {"seconds": []} for name in calls}
    for call in calls.values():
        call()
    for _ in range(repeats):
        for name, call in calls.items():
            tic = time.perf_counter()
            call()
            out[name]["seconds"].append(time.perf_counter() - tic)
    for r in out.values():
        r["median_s"], r["min_s"] = statistics.median(r["seconds"]), min(r["seconds"])
    return out


def measure(u: np.ndarray, k: int, threads: int, repeats: int, seed: int) -> dict:
    """Every row at ``threads`` kernel threads (faiss / OpenMP, BLAS and torch), with the
    1-minute load average before and after."""
    from threadpoolctl import threadpool_limits

    from tacluster._threads import _torch_threads

    before = os.getloadavg()[0]
    with threadpool_limits(threads), _torch_threads(threads):
        calls = fitters(u, k, seed)
        rows = timed({name: calls[name] for name in ROWS}, repeats)
    return {"rows": rows, "load_before": before, "load_after": os.getloadavg()[0]}


def table(results: dict) -> str:
    rows = []
    for threads, res in results.items():
        r, load = res["rows"], f"{res['load_before']:.2f}-{res['load_after']:.2f}"
        unit = r["spectral"]["median_s"]
        for name in ROWS:
            rows.append([threads, name, f"{r[name]['median_s']:.3f}", f"{r[name]['min_s']:.3f}",
                         f"{r[name]['median_s'] / unit:.2f}x", load])
        # The parts auto runs, and the candidates' fits alone: no sharing of work can take auto below
        # the second (neither candidate's fit repeats the other's or the scoring's; docs/tuning.md §8.4).
        for what, names in (("kmeans + spectral-fused + scoring", ROWS[1:4]), ("kmeans + spectral-fused", ROWS[1:3])):
            parts = sum(r[name]["median_s"] for name in names)
            rows.append([threads, what, f"{parts:.3f}", "", f"{parts / unit:.2f}x", load])
    return markdown_table(["threads", "what", "median s", "min s", "x spectral", "load avg"], rows)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", default="signdigits", help="archive stem in --shared (default signdigits)")
    ap.add_argument("--limit-per-class", type=int, default=None, help="images per class (default all)")
    ap.add_argument("--shared", default=str(SHARED), help="folder of the archives (default ../shared/data)")
    ap.add_argument("--synthetic", type=int, default=0, help="N images of a synthetic world instead of a set")
    ap.add_argument("--k", type=int, default=None, help="clusters (default: the set's classes; synthetic 10)")
    ap.add_argument("--threads", default="1,2", help="comma list of kernel thread counts (default 1,2)")
    ap.add_argument("--repeats", type=int, default=5, help="timed fits per row, after one warm-up (default 5)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/method_cost.json")
    args = ap.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",") if t.strip()]
    if args.repeats < 1 or not threads or min(threads) < 1:
        ap.error("--repeats and every --threads value must be >= 1")

    u, k, what = load_features(args)
    results = {t: measure(u, k, t, args.repeats, args.seed) for t in threads}
    md = table(results)
    print(f"{what}, K = {k}, median of {args.repeats}\n\n{md}")
    payload = {"data": what, "k": k, "repeats": args.repeats, "seed": args.seed, "results": results,
               "environment": environment(), "table": md}
    write_json(args.out, payload)
    return payload


if __name__ == "__main__":
    main()
