"""Which 2-D projection for the report's map: trustworthiness and time at 1k and 100k points.

    python benchmarks/map_projection.py [--dim 128] [--sizes 1000 100000]

Data: a synthetic world (tacluster.synthetic, 10 classes, noise 1.0). Each
projection is scored with scikit-learn's ``trustworthiness`` (10 neighbours)
on a fixed random subsample of 2,000 points (the score needs the n x n
distances). Candidates: PCA (the old map), and tacluster's map
(``tacluster.report.layout.map_coordinates``: t-SNE on at most 1,000 points, the others
placed at the mean of their 5 nearest fitted points). umap-learn is not a
dependency and was not measured. Results in docs/map.md.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import trustworthiness

from tacluster.report.layout import map_coordinates
from tacluster.synthetic import make_world


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 100_000])
    a = ap.parse_args()
    print(f"{'n':>8} {'method':<18} {'seconds':>8} {'trustworthiness':>16}")
    for n in a.sizes:
        x = make_world(n_samples=n, n_classes=10, dim=a.dim, n_nouns=100, noise=1.0, seed=0).image_embeddings
        sub = np.sort(np.random.default_rng(1).choice(n, min(n, 2000), replace=False))
        for name, fn in (("pca", lambda v: PCA(2, random_state=0).fit_transform(v)),
                         ("t-SNE (tacluster)", lambda v: map_coordinates(v, 0))):
            t = time.perf_counter()
            xy = fn(x)
            sec = time.perf_counter() - t
            tw = trustworthiness(x[sub], xy[sub], n_neighbors=10)
            print(f"{n:>8} {name:<18} {sec:>8.2f} {tw:>16.3f}", flush=True)


if __name__ == "__main__":
    main()
