"""ImageNet-1K size on one machine: time and peak memory of every stage after embedding.

World (generated in blocks, the generator of ``tacluster.synthetic.make_world``
without its (n, d) float64 temporaries): K class-noun directions in R^512,
3 synonyms per class, random distractor nouns up to a 117,000-noun bank;
image i = normalise(t_{y_i} + noise * g_i), g_i Gaussian of norm ~1.

Paths:

* ``large`` -- each stage's large-collection setting: centres fitted on 32 points per centre,
  retrieval over each image's top-64 kept nouns, final k-means fitted on 256
  points per cluster and assigned in blocks (``[u, s]`` never materialised).
* ``exact`` -- ``tacluster.counterparts.retrieval`` + ``tacluster.cluster.kmeans`` on all points
  (run where it fits: ``--exact-max``, default 200k).

Both use the same iteration caps and one k-means restart (``--centre-iters``,
``--kmeans-iters``): the paper's 300 iterations x 10-20 restarts are hours at
this size on 2 cores, and the comparison is about the approximations, not the
iteration budget. Also measured: neighbour search, IVF and HNSW (time,
recall@50 and neighbour class purity on 1,000 queries against exact search) and head-training throughput at the paper's
ImageNet-1K batch of 8,192.

    python benchmarks/scale.py --n 50000 200000 --out benchmarks/results/scale.json
    python benchmarks/scale.py --n 1281167 --paths large --no-knn --out benchmarks/results/scale-1.28M.json

Every stage appends to the JSON as soon as it finishes (a long run that is
stopped still leaves its numbers), with the load average at that moment:
timings on a shared machine are only comparable at similar load.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import environment, markdown_table, peak_rss_mb, write_json  # noqa: E402

from tacluster.cluster import _faiss, neighbours  # noqa: E402

from tacluster._blocks import iter_blocks  # noqa: E402
from tacluster.cluster.kmeans import sampled_kmeans  # noqa: E402
from tacluster.counterparts import CENTRE_POINTS_PER_CENTRE, RETRIEVAL_TOP  # noqa: E402
from tacluster.cluster.kmeans import joint_features, kmeans_cluster, soft_assign  # noqa: E402
from tacluster.counterparts import (  # noqa: E402
    default_n_centres,
    retrieve_counterparts,
    select_nouns,
    semantic_centres,
)
from tacluster.evaluate.metrics import evaluate_clustering  # noqa: E402


def frugal_world(n: int, k: int, dim: int, n_nouns: int, *, noise: float, seed: int, block: int = 65536):
    """Images (n, dim) float32 unit rows, labels (n,), noun bank (n_nouns, dim) float32."""
    rng = np.random.default_rng(seed)
    t_class = rng.standard_normal((k, dim)).astype(np.float32)
    t_class /= np.linalg.norm(t_class, axis=1, keepdims=True)
    syn = np.repeat(t_class, 3, axis=0) + 0.5 * rng.standard_normal((3 * k, dim), dtype=np.float32) / np.sqrt(dim)
    bank = np.empty((n_nouns, dim), dtype=np.float32)
    bank[:k], bank[k : 4 * k] = t_class, syn
    for sl in iter_blocks(n_nouns - 4 * k, block):
        bank[4 * k + sl.start : 4 * k + sl.stop] = rng.standard_normal((sl.stop - sl.start, dim), dtype=np.float32)
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    labels = rng.integers(0, k, n)
    u = np.empty((n, dim), dtype=np.float32)
    for sl in iter_blocks(n, block):
        x = t_class[labels[sl]] + np.float32(noise / np.sqrt(dim)) * rng.standard_normal((sl.stop - sl.start, dim), dtype=np.float32)
        u[sl] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return u, labels, bank


class Recorder:
    """Times stages and rewrites the JSON after each one."""

    def __init__(self, out: Path, payload: dict, key: str):
        self.out, self.payload, self.key = out, payload, key
        payload["runs"].setdefault(key, {"stages": {}})

    def __call__(self, stage: str, fn, *args, **kwargs):
        t = time.perf_counter()
        result = fn(*args, **kwargs)
        self.payload["runs"][self.key]["stages"][stage] = {
            "seconds": round(time.perf_counter() - t, 2),
            "peak_rss_mb": round(peak_rss_mb()),
            "load_avg_1min": round(os.getloadavg()[0], 2),
        }
        write_json(self.out, self.payload)
        print(f"  {self.key:>16} {stage:<16} {self.payload['runs'][self.key]['stages'][stage]}", flush=True)
        return result

    def note(self, **kv):
        self.payload["runs"][self.key].update(kv)
        write_json(self.out, self.payload)


def run_large(u, bank, labels, k, L, args, rec: Recorder):
    centres = rec("centres", semantic_centres, u, L, points_per_centre=CENTRE_POINTS_PER_CENTRE,
                  n_iter=args.centre_iters, n_init=1, seed=0)
    sel = rec("noun_selection", select_nouns, centres, bank)
    kept = bank[sel.indices]
    s = rec("retrieval", retrieve_counterparts, u, kept, top=RETRIEVAL_TOP,
            out=np.empty(u.shape, dtype=np.float16))
    res, conf = rec("kmeans", sampled_kmeans, [u, s], k, n_iter=args.kmeans_iters, seed=1)
    rec.note(n_kept=int(len(kept)), metrics=evaluate_clustering(labels, res.labels))
    return s, res.labels


def run_exact(u, bank, labels, k, L, args, rec: Recorder):
    centres = rec("centres", semantic_centres, u, L, n_iter=args.centre_iters, n_init=1, seed=0)
    sel = rec("noun_selection", select_nouns, centres, bank)
    kept = bank[sel.indices]
    s = rec("retrieval", retrieve_counterparts, u, kept)

    def final():
        x = joint_features(u, s)
        res = kmeans_cluster(x, k, seed=1, n_iter=args.kmeans_iters, n_init=1)
        return res, soft_assign(x, res.centroids)

    res, _ = rec("kmeans", final)
    rec.note(n_kept=int(len(kept)), metrics=evaluate_clustering(labels, res.labels))
    return s, res.labels


def knn_and_training(u, s, labels, k, rec: Recorder, args):
    """Neighbour search (IVF vs HNSW: time, recall@50 against exact search and
    class purity of the neighbours, on 1,000 queries) and training throughput."""
    n = len(u)
    q = np.random.default_rng(0).choice(n, size=min(1000, n), replace=False)
    index = _faiss.faiss.IndexFlatIP(u.shape[1])
    index.add(u)
    _, exact = index.search(u[q], 51)
    exact = np.array([row[row != j][:50] for row, j in zip(exact, q)])
    rec.note(knn_exact_purity=round(float((labels[exact] == labels[q][:, None]).mean()), 4))
    for name, fn in (("knn_hnsw", lambda: neighbours.knn_hnsw(u, 50)), ("knn_ivf", lambda: neighbours.knn(u, 50, method="ivf"))):
        nn = rec(name, fn)[q]
        recall = np.mean([len(set(a) & set(b)) / 50 for a, b in zip(nn, exact)])
        rec.note(**{f"{name}_recall_at_50": round(float(recall), 4),
                    f"{name}_purity": round(float((labels[nn] == labels[q][:, None]).mean()), 4)})

    from tacluster.train.loop import train_heads

    m = min(n, args.train_steps * 8192)
    rng = np.random.default_rng(0)
    fake_nn = rng.integers(0, m, (m, 50))  # throughput does not depend on which neighbours
    t = time.perf_counter()
    # s stays float16 (train_heads casts each batch): the large-N memory layout.
    out = rec("train_1_epoch", train_heads, u[:m], s[:m], fake_nn, fake_nn, k, n_epochs=1, min_steps=0,
              batch_size=8192, temperature=5.0, seed=0)
    rate = out.n_steps * 8192 / (time.perf_counter() - t)
    rec.note(train_samples_per_s=round(rate), train_100_epochs_1_28M_hours=round(100 * 1_281_167 / rate / 3600, 2))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[50_000, 200_000])
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--nouns", type=int, default=117_000)
    ap.add_argument("--noise", type=float, default=2.0)
    ap.add_argument("--paths", nargs="+", default=["large", "exact"], choices=["large", "exact"])
    ap.add_argument("--exact-max", type=int, default=200_000)
    ap.add_argument("--centre-iters", type=int, default=10)
    ap.add_argument("--kmeans-iters", type=int, default=20)
    ap.add_argument("--no-knn", action="store_true", help="skip neighbour search and training throughput")
    ap.add_argument("--train-steps", type=int, default=8)
    ap.add_argument("--out", default="benchmarks/results/scale.json")
    args = ap.parse_args(argv)
    out = Path(args.out)
    payload = {"command": "python benchmarks/scale.py " + " ".join(sys.argv[1:] if argv is None else argv),
               "environment": environment(), "settings": vars(args), "runs": {}}
    for n in args.n:
        t = time.perf_counter()
        u, labels, bank = frugal_world(n, args.k, args.dim, args.nouns, noise=args.noise, seed=0)
        L = default_n_centres(n, args.k)
        print(f"n={n}: world {time.perf_counter() - t:.1f}s, L={L}, peak {peak_rss_mb():.0f} MB", flush=True)
        labelings = {}
        for path in args.paths:
            if path == "exact" and n > args.exact_max:
                continue
            rec = Recorder(out, payload, f"{n}/{path}")
            rec.note(n=n, k=args.k, n_centres=L, path=path)
            t = time.perf_counter()
            s, labelings[path] = (run_large if path == "large" else run_exact)(u, bank, labels, args.k, L, args, rec)
            rec.note(total_s=round(time.perf_counter() - t, 2))
            if path == "large" and not args.no_knn:
                knn_and_training(u, s, labels, args.k, rec, args)
            del s
        if len(labelings) == 2:
            from sklearn.metrics import adjusted_rand_score

            payload["runs"][f"{n}/large"]["ari_vs_exact"] = round(
                float(adjusted_rand_score(labelings["exact"], labelings["large"])), 4)
            write_json(out, payload)
        del u, bank
    rows = []
    for key, r in payload["runs"].items():
        st = r["stages"]
        rows.append([key, r.get("n_kept", ""), *(st.get(x, {}).get("seconds", "") for x in
                     ("centres", "noun_selection", "retrieval", "kmeans")), r.get("total_s", ""),
                     max((v["peak_rss_mb"] for v in st.values()), default=""),
                     r.get("metrics", {}).get("acc", ""), r.get("ari_vs_exact", "")])
    print(markdown_table(["n/path", "kept nouns", "centres s", "nouns s", "retrieval s", "k-means s",
                          "total s", "peak MB", "ACC", "ARI vs exact"], rows))
    return payload


if __name__ == "__main__":
    main()
