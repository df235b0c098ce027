"""The goals of ``tacluster split`` and ``tacluster add`` (issue 31) on the shared domains.

Each domain: the first ``--per-class`` photos of every class (sorted), one
class held out (the middle one in sorted order). 70 % of every other class
(random, seed 0) is clustered with the defaults (``--backbone lite``,
``--method auto``, K = the number of those classes) through the real
workflow functions, with report; then, on copies of that run:

* **split**: the two largest clusters are merged, and the merged cluster is
  split with ``--k 2``. ``split_acc``: ACC of the two parts against the two
  original clusters, on their members (goal >= 95 %). ``split_predict``:
  share of those members that ``predict`` sends to the part the split put
  them in (goal 100 %).
* **add**: the other 30 % of the seen classes and every photo of the held-out
  class are added. ``add_predict``: share of the added photos whose cluster is
  what ``predict`` gives them (goal 100 %). ``new_held``: share of the
  held-out class marked new (goal >= 80 %); ``new_seen``: share of the added
  photos of seen classes marked new (goal <= 10 %).

    python benchmarks/lifecycle.py                 # six domains, 40 per class
    python benchmarks/lifecycle.py --domains scene15-train weather --per-class 60 --out /tmp/lifecycle.json

Prints a markdown table and writes JSON (default
``benchmarks/results/lifecycle.json``). Embeddings are cached
(``--cache-dir``), so a rerun embeds nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, markdown_table, write_json  # noqa: E402
from quality import dataset_root, list_labelled  # noqa: E402

#: ../shared/data next to the repo, or $TACLUSTER_SHARED/data (a git worktree elsewhere).
SHARED = Path(os.environ.get("TACLUSTER_SHARED") or Path(__file__).resolve().parents[2] / "shared") / "data"
DOMAINS = ("scene15-train", "rsscn7-aerial", "weather", "flowers17", "pbc-bloodcells", "clothing")


def _write_list(path: Path, paths: list[str]) -> Path:
    path.write_text("\n".join(paths) + "\n")
    return path


def run_domain(name: str, shared: Path, per_class: int, work: Path, cache: Path, seed: int = 0) -> dict:
    """One domain's split and add measurements (see the module docstring)."""
    from tacluster.evaluate.metrics import evaluate_clustering
    from tacluster.run import add_images, cluster_images, merge_clusters, predict_images, split_cluster
    from tacluster.run.tables import read_assignments

    root = dataset_root(shared / f"{name}.tar.gz", work / "datasets")
    paths, labels = list_labelled(root, per_class)
    classes = sorted(set(labels))
    held = classes[len(classes) // 2]
    rng = np.random.default_rng(seed)
    fit, added = [], []
    for c in classes:
        members = [p for p, lab in zip(paths, labels) if lab == c]
        if c == held:
            added += members
            continue
        order = rng.permutation(len(members))
        n_fit = int(round(0.7 * len(members)))
        fit += [members[i] for i in sorted(order[:n_fit])]
        added += [members[i] for i in sorted(order[n_fit:])]
    label_of = dict(zip(paths, labels))
    out = work / "runs" / name
    shutil.rmtree(out.parent / f"{name}.split", ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    tic = time.perf_counter()
    run = cluster_images(_write_list(work / f"{name}.fit.txt", fit), out, len(classes) - 1, backbone="lite", cache_dir=cache,
                         progress=False, report=True)
    t_fit = time.perf_counter() - tic
    fit_acc = evaluate_clustering([label_of[p] for p in run.paths], run.labels)["acc"]

    # split: merge the two largest clusters, then split the result in two
    split_dir = out.parent / f"{name}.split"
    shutil.copytree(out, split_dir)
    before_paths, before, _ = read_assignments(split_dir)
    sizes = np.bincount(before, minlength=len(run.names))
    a, b = (int(c) for c in np.argsort(-sizes, kind="stable")[:2])
    into, _ = merge_clusters(split_dir, [a, b])
    tic = time.perf_counter()
    res = split_cluster(split_dir, into, 2, cache_dir=cache)
    t_split = time.perf_counter() - tic
    after_paths, after, _ = read_assignments(split_dir)
    assert after_paths == before_paths
    members = np.flatnonzero(np.isin(before, [a, b]))
    split_acc = evaluate_clustering(before[members], after[members])["acc"]
    pred = predict_images(split_dir, _write_list(work / f"{name}.members.txt", [after_paths[i] for i in members]),
                          cache_dir=cache, progress=False)
    got = dict(zip(pred.paths, pred.labels.tolist()))
    split_predict = 100.0 * np.mean([got[after_paths[i]] == after[i] for i in members])

    # add: the 30 % left out of the seen classes and the held-out class
    add_list = _write_list(work / f"{name}.add.txt", added)
    tic = time.perf_counter()
    res_add = add_images(out, add_list, cache_dir=cache)
    t_add = time.perf_counter() - tic
    pred = predict_images(out, add_list, cache_dir=cache, progress=False)
    got = dict(zip(pred.paths, pred.labels.tolist()))
    add_predict = 100.0 * np.mean([got[p] == c for p, c in zip(res_add.paths, res_add.labels.tolist())])
    is_held = np.array([label_of[p] == held for p in res_add.paths])
    return {
        "domain": name, "classes": len(classes), "held_out": held, "fit_images": len(fit),
        "added_images": len(res_add.paths), "fit_acc": round(float(fit_acc), 2),
        "merged": [a, b], "split_sizes": res.sizes, "split_acc": round(float(split_acc), 2),
        "split_predict": round(float(split_predict), 2), "add_predict": round(float(add_predict), 2),
        "new_held": round(100.0 * float(res_add.new[is_held].mean()), 2),
        "new_seen": round(100.0 * float(res_add.new[~is_held].mean()), 2),
        "refit_suggested": res_add.refit_command is not None,
        "seconds": {"cluster": round(t_fit, 1), "split": round(t_split, 1), "add": round(t_add, 1)},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--domains", nargs="+", default=list(DOMAINS), help="tarball names in ../shared/data")
    ap.add_argument("--per-class", type=int, default=40, help="photos per class (first ones, sorted)")
    ap.add_argument("--shared", default=str(SHARED), help="the shared data folder")
    ap.add_argument("--work", default="/tmp/tacluster-lifecycle", help="extracted data and runs")
    ap.add_argument("--cache-dir", default=None, help="embedding cache (default: tacluster's)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "lifecycle.json"))
    a = ap.parse_args(argv)
    from tacluster.nouns.bank import default_cache_dir

    cache = Path(a.cache_dir) if a.cache_dir else default_cache_dir()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in a.domains:
        if not (Path(a.shared) / f"{name}.tar.gz").is_file():
            print(f"{name}: not in {a.shared}, skipped", file=sys.stderr)
            continue
        rows.append(run_domain(name, Path(a.shared), a.per_class, work, cache))
        print(f"{name}: {rows[-1]}", file=sys.stderr)
        _write(a, rows, argv)  # after each domain: a long run keeps what it measured
    header = ["domain", "K fit", "fit ACC", "split ACC", "split = predict %", "add = predict %",
              "held-out new %", "seen new %", "added"]
    table = [[r["domain"], r["classes"] - 1, r["fit_acc"], r["split_acc"], r["split_predict"], r["add_predict"],
              r["new_held"], r["new_seen"], r["added_images"]] for r in rows]
    print(markdown_table(header, table))
    print("goals: split ACC >= 95, split = predict 100, add = predict 100, held-out new >= 80, seen new <= 10")
    print(f"wrote {_write(a, rows, argv)}")
    return 0


def _write(a, rows: list[dict], argv) -> Path:
    return write_json(a.out, {"per_class": a.per_class, "backbone": "lite", "method": "auto", "rows": rows,
                              "environment": environment(),
                              "command": "python benchmarks/lifecycle.py " + " ".join(argv or sys.argv[1:])})


if __name__ == "__main__":
    sys.exit(main())
