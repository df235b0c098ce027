"""How well ``estimate_n_clusters`` (``n_clusters="auto"``) picks K on real images.

Inputs: Lite0 embeddings of real photos (``image`` = 1280-d visual features,
``joint_hierarchy`` = sqrt(ImageNet probabilities), the noun-space view used
as the text side). Cases, fixed before any result was seen:

* CIFAR-10, 300 images per class, all 10 classes, and the first 3, 5 and 7
  classes in CIFAR order (airplane, automobile, bird | cat, deer | dog, frog);
* 15-Scene, 100 photos per class, 15 classes.

For every case and auto-K seed: the estimated K from the image view alone
and with the text side, and the ACC reached at the estimated K next to the
ACC at the true K, for k-means and for the offline default (``--method
auto`` with ``lite`` = spectral), both ``TextAidedClustering(..., seed 0)``.

    python benchmarks/autok.py                         # embeds ../shared/data (cached)
    python benchmarks/autok.py --seeds 0 1 2 --out benchmarks/results/autok.json

Prints a markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _common import environment, markdown_table, write_json  # noqa: E402

from tacluster import TextAidedClustering  # noqa: E402
from tacluster.cluster.choose_k import estimate_n_clusters  # noqa: E402
from tacluster.evaluate.metrics import evaluate_clustering  # noqa: E402


def _load(emb_dir: str | None, name: str, data: Path, limit: int | None) -> dict:
    """Embeddings from an .npz folder (``--emb``) or, by default, the shared data through the cache."""
    if emb_dir:
        d = dict(np.load(Path(emb_dir) / f"{name}_lite0.npz"))
        return {**d, "joint": d["joint_hierarchy"]}
    from _data import labelled_embeddings

    return labelled_embeddings(data, limit)


def cases(emb_dir: str | None):
    from _data import CIFAR, SCENE

    c = _load(emb_dir, "cifar3k", CIFAR, 300)
    for n_cls in (3, 5, 7, 10):
        keep = c["labels"] < n_cls  # the first n_cls classes in CIFAR order
        names = ",".join(str(v) for v in c["class_names"][:n_cls])
        yield f"CIFAR-10 {n_cls} cls ({names})" if n_cls < 10 else "CIFAR-10 (10 cls)", c["image"][keep], c[
            "joint"
        ][keep], c["labels"][keep]
    s = _load(emb_dir, "scene15", SCENE, None)
    yield "15-Scene (15 cls)", s["image"], s["joint"], s["labels"]


def method_acc(x: np.ndarray, y: np.ndarray, k: int, method: str) -> float:
    est = TextAidedClustering(k, method, random_state=0).fit(x)
    return evaluate_clustering(y, est.labels_)["acc"]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--emb", default=None,
                    help="folder with cifar3k_lite0.npz and scene15_lite0.npz (default: embed the shared "
                         "data, CIFAR-10 300 per class and 15-Scene, through the cache)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="auto-K seeds (default 0)")
    ap.add_argument("--k-max", type=int, default=30)
    ap.add_argument("--out", default="benchmarks/results/autok.json")
    args = ap.parse_args(argv)

    rows, records = [], []
    for name, u, j, y in cases(args.emb):
        true_k = len(np.unique(y))
        accs: dict[tuple[int, str], float] = {}

        def acc(k: int, method: str) -> float:
            if (k, method) not in accs:
                accs[(k, method)] = method_acc(u, y, k, method)
            return accs[(k, method)]

        for seed in args.seeds:
            for side, joint in (("image", None), ("image+text", j)):
                t = time.perf_counter()
                res = estimate_n_clusters(u, joint_embeddings=joint, k_range=(2, args.k_max), seed=seed)
                secs = time.perf_counter() - t
                rows.append([name, len(y), seed, side, true_k, res.k, acc(res.k, "kmeans"), acc(true_k, "kmeans"),
                             acc(res.k, "spectral"), acc(true_k, "spectral"), secs])
                records.append({
                    "case": name, "n": int(len(y)), "seed": seed, "side": side, "true_k": true_k,
                    "k": res.k, "kmeans_acc_at_k": acc(res.k, "kmeans"), "kmeans_acc_at_true_k": acc(true_k, "kmeans"),
                    "spectral_acc_at_k": acc(res.k, "spectral"), "spectral_acc_at_true_k": acc(true_k, "spectral"),
                    "seconds": secs, "candidates": res.candidates.tolist(), "scores": res.scores.tolist(),
                    "details": res.details,
                })
                print(f"{name} seed={seed} {side}: K={res.k} (true {true_k}) {secs:.1f}s", file=sys.stderr, flush=True)
    header = ["case", "N", "seed", "side", "true K", "auto K", "k-means ACC@auto", "k-means ACC@true",
              "spectral ACC@auto", "spectral ACC@true", "search s"]
    table = markdown_table(header, rows)
    print(table)
    payload = {"environment": environment(), "k_range": [2, args.k_max], "rows": records, "table": table}
    write_json(args.out, payload)
    return payload


if __name__ == "__main__":
    main()
