"""Speed and memory of every TAC stage after embedding, on a synthetic world.

World (``tacluster.synthetic.make_world``): 50,000 x 512 image embeddings,
K = 10 classes, a 117,000-noun bank (class nouns, 3 synonyms per class,
random distractors), nuisance "styles" (10 styles, strength 1.2) so k-means on
the images alone does not already solve it, noise 1.0.

    python benchmarks/core_speed.py                # one timed run + 5 seeds of ACC
    python benchmarks/core_speed.py --seeds 1 --n 20000 --out results/core.json

Prints a table (seconds per stage, peak memory, ratio to one plain faiss
k-means on the same features) and writes JSON.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import environment, markdown_table, peak_rss_mb, write_json  # noqa: E402

from tacluster import TextAidedClustering  # noqa: E402

from tacluster.cluster import _faiss
from tacluster.evaluate.metrics import evaluate_clustering  # noqa: E402
from tacluster.synthetic import make_world  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50_000, help="images (default 50000)")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--nouns", type=int, default=117_000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=5, help="seeds for the ACC mean/std (default 5)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    ap.add_argument("--out", default="benchmarks/results/core_speed.json")
    args = ap.parse_args(argv)

    t = time.perf_counter()
    w = make_world(args.n, args.k, args.dim, args.nouns, style_strength=1.2, n_styles=10, noise=1.0, seed=0)
    gen_s = time.perf_counter() - t
    rss_world = peak_rss_mb()

    t = time.perf_counter()
    _faiss.kmeans(w.image_embeddings, args.k, n_init=1, seed=0, spherical=True)
    plain_kmeans_s = time.perf_counter() - t

    runs = {}
    for method in ("no-train", "tac"):
        accs = []
        for seed in range(args.seeds):
            est = TextAidedClustering(args.k, method, random_state=seed, device=args.device)
            t = time.perf_counter()
            est.fit(w.image_embeddings, noun_embeddings=w.noun_embeddings, nouns=w.nouns)
            total = time.perf_counter() - t
            accs.append(evaluate_clustering(w.labels, est.labels_))
            if seed == 0:
                runs[method] = {"timings_s": dict(est.timings_), "total_s": total, "n_kept_nouns": len(est.kept_nouns_)}
        runs[method]["acc"] = [a["acc"] for a in accs]
        runs[method]["nmi"] = [a["nmi"] for a in accs]
    km_accs = [
        evaluate_clustering(w.labels, TextAidedClustering(args.k, "kmeans", random_state=s).fit(w.image_embeddings).labels_)["acc"]
        for s in range(args.seeds)
    ]

    tac = runs["tac"]
    stages = [
        ("semantic centres", tac["timings_s"]["centres"]),
        ("noun selection", tac["timings_s"]["noun_selection"]),
        ("retrieval", tac["timings_s"]["retrieval"]),
        ("no-train k-means on [u, s]", runs["no-train"]["timings_s"]["kmeans"]),
        ("kNN (u and s, 50 each)", tac["timings_s"]["knn"]),
        ("head training", tac["timings_s"]["train"]),
    ]
    total_all = sum(s for _, s in stages)
    rows = [[name, round(s, 2)] for name, s in stages]
    rows.append(["**all stages**", round(total_all, 2)])
    rows.append(["TAC fit end to end (method='tac')", round(tac["total_s"], 2)])
    rows.append(["one plain faiss k-means (K, 1 init)", round(plain_kmeans_s, 2)])

    def ms(x):
        return f"{statistics.mean(x):.1f} ± {statistics.pstdev(x):.1f}"

    quality = [
        ["k-means on u", ms(km_accs)],
        ["TAC (no train)", ms(runs["no-train"]["acc"])],
        ["TAC", ms(runs["tac"]["acc"])],
    ]
    print(f"world: {args.n} x {args.dim}, {args.nouns} nouns, K={args.k} (generated in {gen_s:.1f} s)")
    print(markdown_table(["stage", "seconds"], rows))
    print(f"\nratio all stages / one plain k-means: {total_all / plain_kmeans_s:.1f}x")
    print(f"peak RSS: {peak_rss_mb():.0f} MiB (world alone: {rss_world:.0f} MiB)\n")
    print(markdown_table([f"ACC over {args.seeds} seeds", "mean ± std"], quality))
    payload = {
        "args": vars(args),
        "environment": environment(),
        "stages_s": dict(stages),
        "all_stages_s": total_all,
        "tac_fit_s": tac["total_s"],
        "plain_kmeans_s": plain_kmeans_s,
        "ratio_to_plain_kmeans": total_all / plain_kmeans_s,
        "peak_rss_mib": peak_rss_mb(),
        "acc": {"kmeans": km_accs, "no-train": runs["no-train"]["acc"], "tac": runs["tac"]["acc"]},
        "nmi": {"no-train": runs["no-train"]["nmi"], "tac": runs["tac"]["nmi"]},
        "n_kept_nouns": tac["n_kept_nouns"],
    }
    print(f"wrote {write_json(args.out, payload)}")
    return payload


if __name__ == "__main__":
    main()
