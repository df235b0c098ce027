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

Curve mode (``--curve``): time and peak RSS of what a user runs, one fresh
process per point (so each peak is that point's own), from 10k to 1.28 M:

* ``estimator-no-train``: ``TextAidedClustering(K, method="no-train").fit_predict(u, noun_embeddings=bank, nouns=nouns)``
  on the world above (d = ``--dim``); the peak includes the input.
* ``estimator-auto``: ``TextAidedClustering(K, method="auto").fit_predict(u)``, the
  offline backbone's default (image side only; use ``--dim 1280``, lite's visual width).
* ``cli-embeddings``: ``tacluster cluster --embeddings visual.npy --joint-embeddings
  joint.npy --backbone lite --k K`` (default method, report included) on a world
  written as float16 ``.npy`` files by a separate process first (1280-d visual
  features; 1000-d joint vectors sqrt(p) of a class-probability vector, as lite makes).

    python benchmarks/scale.py --curve estimator-no-train --n 10000 50000 100000 200000 --out benchmarks/results/curve-no-train.json
    python benchmarks/scale.py --curve estimator-auto --dim 1280 --n 10000 100000 200000 --out benchmarks/results/curve-auto.json
    python benchmarks/scale.py --curve cli-embeddings --n 10000 100000 200000 --out benchmarks/results/curve-cli.json

Every stage appends to the JSON as soon as it finishes (a long run that is
stopped still leaves its numbers), with the load average at that moment:
timings on a shared machine are only comparable at similar load.
"""

from __future__ import annotations

import argparse
import json
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

    train_throughput(u, s, k, rec, args)


def train_throughput(u, s, k, rec: Recorder, args):
    """Head training at the paper's ImageNet-1K settings (batch 8,192, T = 5): samples per second
    over ``--train-steps`` steps, and the 100-epoch time at 1.28 M it implies on this machine."""
    from tacluster.train.loop import TrainSettings, train_heads

    n = len(u)
    m = min(n, args.train_steps * 8192)
    rng = np.random.default_rng(0)
    fake_nn = rng.integers(0, m, (m, 50))  # throughput does not depend on which neighbours
    uu = np.ascontiguousarray(u[:m], dtype=np.float32)
    ss = np.ascontiguousarray(s[:m], dtype=np.float32)
    t = time.perf_counter()
    out = rec("train_1_epoch", train_heads, uu, ss, fake_nn, fake_nn, k,
              TrainSettings(n_epochs=1, min_steps=0, batch_size=8192, temperature=5.0), seed=0)
    rate = out.n_steps * 8192 / (time.perf_counter() - t)
    rec.note(train_samples_per_s=round(rate), train_steps=out.n_steps,
             train_100_epochs_1_28M_hours=round(100 * 1_281_167 / rate / 3600, 2))


CURVES = ("estimator-no-train", "estimator-auto", "cli-embeddings")


def lite_world(n: int, k: int, folder: Path, *, noise: float, seed: int = 0, block: int = 65536) -> None:
    """visual.npy (n, 1280) and joint.npy (n, 1000) float16, labels.npy: what lite makes, in miniature.

    Class y has a random visual direction and one ImageNet class c_y; an image's
    joint vector is sqrt(softmax(4 e_{c_y} + g)) (g Gaussian), lite's sqrt(p)."""
    from numpy.lib.format import open_memmap

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    centre = rng.standard_normal((k, 1280)).astype(np.float32)
    centre /= np.linalg.norm(centre, axis=1, keepdims=True)
    imagenet_class = rng.permutation(1000)[np.arange(k) % 1000]
    labels = rng.integers(0, k, n)
    vis = open_memmap(folder / "visual.npy", mode="w+", dtype=np.float16, shape=(n, 1280))
    joint = open_memmap(folder / "joint.npy", mode="w+", dtype=np.float16, shape=(n, 1000))
    for sl in iter_blocks(n, block):
        y = labels[sl]
        x = centre[y] + np.float32(noise / np.sqrt(1280)) * rng.standard_normal((len(y), 1280), dtype=np.float32)
        vis[sl] = x / np.linalg.norm(x, axis=1, keepdims=True)
        logits = rng.standard_normal((len(y), 1000), dtype=np.float32)
        logits[np.arange(len(y)), imagenet_class[y]] += 4.0
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        joint[sl] = np.sqrt(p / p.sum(axis=1, keepdims=True))
    vis.flush(), joint.flush()
    np.save(folder / "labels.npy", labels)


def curve_point(mode: str, n: int, args) -> dict:
    """One point of the curve, in this (fresh) process: seconds, peak RSS, ACC."""
    import tempfile

    load_before = os.getloadavg()[0]
    rec: dict = {"mode": mode, "n": n, "k": args.k}
    if mode.startswith("estimator"):
        from tacluster.estimator import TextAidedClustering

        t = time.perf_counter()
        n_nouns = args.nouns if mode == "estimator-no-train" else 4 * args.k
        u, labels, bank = frugal_world(n, args.k, args.dim, n_nouns, noise=args.noise, seed=0)
        rec.update(dim=args.dim, world_s=round(time.perf_counter() - t, 1), world_rss_mb=round(peak_rss_mb()))
        method = mode.split("-", 1)[1]
        est = TextAidedClustering(args.k, method, random_state=0)
        t = time.perf_counter()
        if method == "no-train":
            pred = est.fit_predict(u, noun_embeddings=bank, nouns=[f"noun{i}" for i in range(len(bank))])
        else:
            pred = est.fit_predict(u)
        rec["seconds"] = round(time.perf_counter() - t, 1)
        rec["stages_s"] = {k: round(v, 1) for k, v in est.timings_.items()}
        if est.choice_ is not None:
            rec["choice"] = {"method": est.choice_.method, "scores": est.choice_.scores}
    else:
        from tacluster.run.cli import main as cli_main
        from tacluster.run.tables import read_assignments

        folder = Path(args.workdir) / f"world-{n}"
        if not (folder / "labels.npy").exists():
            raise SystemExit(f"no world in {folder}; the parent writes it first")
        labels = np.load(folder / "labels.npy")
        out = Path(tempfile.mkdtemp(dir=args.workdir, prefix=f"run-{n}-"))
        t = time.perf_counter()
        rc = cli_main(["cluster", "--embeddings", str(folder / "visual.npy"), "--joint-embeddings",
                       str(folder / "joint.npy"), "--backbone", "lite", "--k", str(args.k), "--out", str(out),
                       "--overwrite", "--quiet", "--device", "cpu"])
        rec["seconds"] = round(time.perf_counter() - t, 1)
        run = json.loads((out / "run.json").read_text())
        rec["stages_s"] = {k: round(v, 1) for k, v in run.get("timings_s", {}).items()}
        if "method_choice" in run:
            rec["choice"] = {k: run["method_choice"].get(k) for k in ("chosen", "scores")}
        rec["rc"] = rc
        rec["run_dir_mb"] = round(sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20, 1)
        rows, pred, _ = read_assignments(out)
        pred = np.asarray(pred)
        order = np.argsort([int(r.split("-")[-1]) for r in rows])
        pred = pred[order]
        import shutil

        shutil.rmtree(out, ignore_errors=True)
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    rec["cpu_s"] = round(ru.ru_utime + ru.ru_stime, 1)  # this process, world generation included
    rec["peak_rss_mb"] = round(peak_rss_mb())
    rec["load_avg_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    rec["metrics"] = evaluate_clustering(labels, pred)
    return rec


def spectral_compare(args) -> dict:
    """Exact-graph spectral vs landmark spectral (LSC-K) at one N, as the estimator uses them.

    Landmark: ``TextAidedClustering(K, "spectral", large_scale=True)``. Exact:
    the same symmetrised 20-NN graph as ``cluster.spectral.spectral_cluster``,
    its embedding by scikit-learn with the LOBPCG eigensolver (the default
    ARPACK shift-invert did not finish at 100k in 20 min, docs/scaling.md),
    then the estimator's reassignment to normalised cluster means. World:
    ``tacluster.synthetic.make_world(n, K, dim, noise)``, seed 0."""
    from scipy import sparse
    from sklearn.cluster import SpectralClustering

    from tacluster.cluster.kmeans import assign, normalised_means
    from tacluster.estimator import TextAidedClustering
    from tacluster.synthetic import make_world

    n, k = args.n[0], args.k
    w = make_world(n, k, args.dim, 4 * k, noise=args.noise, seed=0)
    u = w.image_embeddings
    res = {"n": n, "k": k, "dim": args.dim, "noise": args.noise, "load_avg_1min_start": round(os.getloadavg()[0], 2)}
    t = time.perf_counter()
    est = TextAidedClustering(k, "spectral", random_state=0, large_scale=True).fit(u)
    res["landmark"] = {"seconds": round(time.perf_counter() - t, 1), "metrics": evaluate_clustering(w.labels, est.labels_),
                       "load_avg_1min": round(os.getloadavg()[0], 2)}
    print(json.dumps(res), flush=True)
    t = time.perf_counter()
    nn = neighbours.knn(u, 19, seed=1)
    rows = np.repeat(np.arange(n), 20)
    cols = np.hstack([np.arange(n)[:, None], nn]).ravel()
    conn = sparse.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n))
    model = SpectralClustering(k, affinity="precomputed", random_state=1, n_init=10, assign_labels="kmeans",
                               eigen_solver="lobpcg")
    labels = model.fit_predict(0.5 * (conn + conn.T)).astype(np.int64)
    labels = assign([u], normalised_means(u, labels, k))[0]
    res["exact_lobpcg"] = {"seconds": round(time.perf_counter() - t, 1), "metrics": evaluate_clustering(w.labels, labels),
                           "load_avg_1min": round(os.getloadavg()[0], 2)}
    from sklearn.metrics import adjusted_rand_score

    res["ari_landmark_vs_exact"] = round(float(adjusted_rand_score(labels, est.labels_)), 4)
    res["peak_rss_mb"] = round(peak_rss_mb())
    write_json(args.out, {"command": "python benchmarks/scale.py " + " ".join(sys.argv[1:]),
                          "environment": environment(), **res})
    print(json.dumps(res), flush=True)
    return res


def run_curve(args) -> dict:
    import subprocess

    out = Path(args.out)
    payload = {"command": "python benchmarks/scale.py " + " ".join(sys.argv[1:]),
               "environment": environment(), "settings": vars(args), "points": []}
    for n in args.n:
        if args.curve == "cli-embeddings":
            t = time.perf_counter()
            folder = Path(args.workdir) / f"world-{n}"
            if not (folder / "labels.npy").exists():
                subprocess.run([sys.executable, __file__, "--write-lite-world", "--n", str(n), "--k", str(args.k),
                                "--noise", str(args.noise), "--workdir", args.workdir], check=True)
            print(f"n={n}: world files {time.perf_counter() - t:.1f}s", flush=True)
        cmd = [sys.executable, __file__, "--curve-point", args.curve, "--n", str(n), "--k", str(args.k),
               "--dim", str(args.dim), "--nouns", str(args.nouns), "--noise", str(args.noise), "--workdir", args.workdir]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            payload["points"].append({"mode": args.curve, "n": n, "error": res.stderr[-2000:]})
        else:
            payload["points"].append(json.loads(res.stdout.strip().splitlines()[-1]))
        write_json(out, payload)
        print(json.dumps(payload["points"][-1]), flush=True)
    rows = [[p["n"], p.get("seconds", "error"), p.get("cpu_s", ""), p.get("peak_rss_mb", ""),
             p.get("metrics", {}).get("acc", ""), p.get("load_avg_1min", "")] for p in payload["points"]]
    print(markdown_table(["N", "seconds", "CPU s", "peak RSS MB", "ACC", "load before/after"], rows))
    return payload


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
    ap.add_argument("--curve", choices=CURVES, default=None, help="time and peak RSS per N, one process each")
    ap.add_argument("--curve-point", choices=CURVES, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--write-lite-world", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--spectral-compare", action="store_true",
                    help="exact-graph (LOBPCG) vs landmark spectral at --n, --k, --dim, --noise")
    ap.add_argument("--train-only", action="store_true",
                    help="only head-training throughput at batch 8,192 (--train-steps steps) for each --n")
    ap.add_argument("--workdir", default="/tmp/tacluster-scale", help="where cli-embeddings writes its worlds and runs")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.write_lite_world:
        lite_world(args.n[0], args.k, Path(args.workdir) / f"world-{args.n[0]}", noise=args.noise)
        return {}
    if args.curve_point:
        print(json.dumps(curve_point(args.curve_point, args.n[0], args), default=float))
        return {}
    if args.curve:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
        return run_curve(args)
    if args.spectral_compare:
        return spectral_compare(args)
    if args.train_only:
        payload = {"command": "python benchmarks/scale.py " + " ".join(sys.argv[1:] if argv is None else argv),
                   "environment": environment(), "settings": vars(args), "runs": {}}
        for n in args.n:
            u, labels, bank = frugal_world(n, args.k, args.dim, 4 * args.k, noise=args.noise, seed=0)
            rec = Recorder(out, payload, f"{n}/train")
            rec.note(n=n, k=args.k)
            # s: a second unit-norm view of the same size (throughput does not depend on its content)
            train_throughput(u, np.roll(u, 1, axis=0), args.k, rec, args)
        return payload
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
