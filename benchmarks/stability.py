"""Seed and thread-count stability of ``TextAidedClustering`` on real embeddings.

Data: CIFAR-10 Lite0 embeddings (3,000 images, 10 classes; ``image`` =
visual features, ``joint_hierarchy`` = noun-space view) and the Lite0 WordNet
noun bank. For each configuration, 10 seeds (``random_state`` 0..9) are run
with 1 and with 2 threads (``faiss.omp_set_num_threads`` and
``torch.set_num_threads`` in this process); the table gives mean, std, min and
max ACC per thread count, and how many seeds gave *identical* labels at 1 and
2 threads.

Configurations:

* ``kmeans`` / ``spectral`` (the offline default) / ``no-train`` / ``tac``
  with defaults (``kmeans_n_init=10``);
* ``no-train centres_n_init=10``: the semantic centres (stage 1) fitted with
  10 restarts instead of 3;
* ``kmeans n_init=30``: more restarts, best objective kept;
* ``kmeans consensus=20`` / ``no-train consensus=20``: the estimator's
  ``consensus=20`` option: 20 single-restart k-means partitions combined by
  their co-association (:func:`tacluster.cluster.kmeans.consensus_kmeans`) instead
  of the best of 10 restarts.

    python benchmarks/stability.py                      # kmeans, spectral, no-train + fixes
    python benchmarks/stability.py --methods kmeans no-train tac --seeds 5

Prints a markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import faiss  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import environment, markdown_table, write_json  # noqa: E402

from tacluster import TextAidedClustering  # noqa: E402
from tacluster.evaluate.metrics import evaluate_clustering  # noqa: E402


def set_threads(n: int) -> None:
    faiss.omp_set_num_threads(n)
    torch.set_num_threads(n)


def fit_labels(config: str, seed: int, data, bank) -> np.ndarray:
    k = len(np.unique(data["labels"]))
    u, joint = data["image"], data.get("joint", data.get("joint_hierarchy"))
    if config == "kmeans consensus=20":
        return TextAidedClustering(k, "kmeans", consensus=20, random_state=seed).fit(u).labels_
    if config == "no-train consensus=20":
        est = TextAidedClustering(k, "no-train", consensus=20, random_state=seed)
        return est.fit(u, noun_embeddings=bank.embeddings, nouns=bank.words, joint_embeddings=joint).labels_
    if config == "no-train centres_n_init=10":
        est = TextAidedClustering(k, "no-train", centres_n_init=10, random_state=seed)
        return est.fit(u, noun_embeddings=bank.embeddings, nouns=bank.words, joint_embeddings=joint).labels_
    if config == "kmeans n_init=30":
        return TextAidedClustering(k, "kmeans", kmeans_n_init=30, random_state=seed).fit(u).labels_
    est = TextAidedClustering(k, config, random_state=seed)
    if config in ("kmeans", "spectral"):
        return est.fit(u).labels_
    return est.fit(u, noun_embeddings=bank.embeddings, nouns=bank.words, joint_embeddings=joint).labels_


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--emb", default=None,
                    help="an .npz with image, labels (default: CIFAR-10, 300 per class, embedded through the cache)")
    ap.add_argument("--methods", nargs="+", default=["kmeans", "spectral", "no-train"],
                    choices=["kmeans", "spectral", "no-train", "tac"])
    ap.add_argument("--fixes", nargs="*", default=["no-train centres_n_init=10", "no-train consensus=20",
                                                  "kmeans consensus=20"],
                    choices=["no-train centres_n_init=10", "no-train consensus=20", "kmeans n_init=30",
                             "kmeans consensus=20"])
    ap.add_argument("--data", choices=["cifar10", "scene15"], default="cifar10",
                    help="CIFAR-10 (300 per class, the default) or 15-Scene (1,500 photos)")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", default="benchmarks/results/stability.json")
    ap.add_argument("--save-labels", default=None, metavar="NPZ",
                    help="also save every fit's labels at the first thread count (for benchmarks/faiss_versions.py)")
    args = ap.parse_args(argv)

    if args.emb:
        data = dict(np.load(args.emb))
    else:
        from _data import CIFAR, SCENE, labelled_embeddings

        data = labelled_embeddings(CIFAR, 300) if args.data == "cifar10" else labelled_embeddings(SCENE)
    bank = None
    if any(m in ("no-train", "tac") for m in args.methods) or any("no-train" in f for f in args.fixes):
        from tacluster.embed.backbones import load_backbone
        from tacluster.nouns.vocabulary import load_wordnet_nouns

        bank = load_backbone("lite").noun_bank(load_wordnet_nouns())
    y = data["labels"]
    rows, records = [], []
    saved: dict[str, np.ndarray] = {}
    for config in list(args.methods) + list(args.fixes):
        labels: dict[int, list[np.ndarray]] = {}
        accs: dict[int, list[float]] = {}
        secs: dict[int, float] = {}
        for n_threads in args.threads:
            set_threads(n_threads)
            t = time.perf_counter()
            labels[n_threads] = [fit_labels(config, s, data, bank) for s in range(args.seeds)]
            secs[n_threads] = (time.perf_counter() - t) / args.seeds
            accs[n_threads] = [evaluate_clustering(y, lab)["acc"] for lab in labels[n_threads]]
            print(f"{config} threads={n_threads}: {np.round(accs[n_threads], 1)}", file=sys.stderr, flush=True)
        ref = args.threads[0]
        saved.update({f"{config}|{s}": lab for s, lab in enumerate(labels[ref])})
        same = {
            t: sum(np.array_equal(a, b) for a, b in zip(labels[ref], labels[t])) for t in args.threads[1:]
        }
        for t in args.threads:
            a = accs[t]
            rows.append([config, t, statistics.mean(a), statistics.stdev(a) if len(a) > 1 else 0.0, min(a), max(a),
                         f"{same[t]}/{args.seeds}" if t in same else "-", secs[t]])
            records.append({"config": config, "threads": t, "acc": a, "mean": statistics.mean(a),
                            "std": rows[-1][3], "identical_to_%d_threads" % ref: same.get(t),
                            "seconds_per_fit": secs[t]})
    if args.save_labels:
        np.savez_compressed(args.save_labels, **saved)
    header = ["config", "threads", "ACC mean", "ACC std", "min", "max", "labels = 1-thread run", "s / fit"]
    table = markdown_table(header, rows)
    print(table)
    import faiss as _f

    payload = {"faiss_version": _f.__version__, "environment": environment(), "data": args.emb or args.data, "n_seeds": args.seeds, "rows": records, "table": table}
    write_json(args.out, payload)
    return payload


if __name__ == "__main__":
    main()
