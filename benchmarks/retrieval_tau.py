"""TAC's retrieval temperature across models with different logit scales (synthetic worlds).

The retrieval softmax of METHOD.md stage 2, ``softmax_j(cos(u_i, t_j) / tau)``,
runs over the nouns of one image, so it sees only the *differences* between
an image's noun similarities. A contrastive model trained at logit scale
``lambda`` (CLIP: 100; SigLIP's sigmoid loss: a scale near 110-120 plus a bias,
which cancels in a softmax over nouns) spreads those similarities in
proportion to ``1 / lambda``. tacluster therefore sets ``tau = 0.5 / lambda``
(``HFTwoTowerBackbone.retrieval_tau``): the paper's 0.005 for CLIP.

This benchmark checks that choice by measurement. Each synthetic world
(``tacluster.synthetic.make_world``) gets a modality gap, ``u' = [a u,
sqrt(1 - a^2)]`` against nouns ``[t, 0]``, which scales every image-noun
cosine by ``a`` while keeping the image-image geometry: ``a`` is set so that
an image's cosine to its class noun averages 0.30 (CLIP-like) and then
shrunk by 100 / lambda for a model of logit scale ``lambda``. For each world
and temperature it reports the k-means ACC of the counterparts ``s`` alone
(the text side TAC adds), the best temperature on a grid, and the ACC at the
paper's fixed 0.005 and at the rule's ``0.5 / lambda``.

Usage::

    python benchmarks/retrieval_tau.py --out tau.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.cluster import KMeans

from tacluster.counterparts import retrieve_counterparts
from tacluster.evaluate.metrics import cluster_accuracy
from tacluster.synthetic import make_world

TAUS = [0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.008, 0.01, 0.015, 0.02, 0.03, 0.05, 0.08, 0.12]


def gapped(u: np.ndarray, t: np.ndarray, a: float) -> tuple[np.ndarray, np.ndarray]:
    """Images and nouns with every image-noun cosine multiplied by ``a``."""
    up = np.hstack([a * u, np.full((len(u), 1), np.sqrt(1 - a * a))]).astype(np.float32)
    tp = np.hstack([t, np.zeros((len(t), 1))]).astype(np.float32)
    return up, tp


def counterpart_acc(world, up, tp, tau: float, k: int) -> float:
    s = retrieve_counterparts(up, tp, tau=tau)
    labels = KMeans(k, n_init=4, random_state=0).fit_predict(s)
    return 100 * cluster_accuracy(world.labels, labels)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scales", type=float, nargs="+", default=[100.0, 117.0, 200.0],
                    help="logit scales to simulate (CLIP 100; SigLIP-like ~117)")
    ap.add_argument("--noise", type=float, nargs="+", default=[1.5, 2.5, 3.0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    rows = []
    for noise in args.noise:
        for scale in args.scales:
            grid = np.zeros((args.seeds, len(TAUS)))
            rule = 0.5 / scale
            at_rule = []
            for seed in range(args.seeds):
                w = make_world(n_samples=1500, n_classes=10, dim=128, n_nouns=2000, noise=noise, seed=seed)
                u, t = w.image_embeddings.astype(np.float64), w.noun_embeddings.astype(np.float64)
                base = float(np.mean(np.sum(u * t[w.labels], axis=1)))
                a = (0.30 / base) * (100.0 / scale)
                if a >= 1:
                    raise SystemExit(f"noise {noise}: images are already below cos 0.30 to their noun; use less noise")
                up, tp = gapped(u, t, a)
                grid[seed] = [counterpart_acc(w, up, tp, tau, 10) for tau in TAUS]
                at_rule.append(counterpart_acc(w, up, tp, rule, 10))
            mean = grid.mean(0)
            best = int(np.argmax(mean))
            rows.append({
                "noise": noise, "logit_scale": scale, "best_tau": TAUS[best], "acc_best": mean[best],
                "acc_at_0.005": mean[TAUS.index(0.005)], "rule_tau": rule, "acc_at_rule": float(np.mean(at_rule)),
                "acc_by_tau": dict(zip(map(str, TAUS), mean.round(2).tolist())),
            })
    print(f"{'noise':>6}{'scale':>7}{'best tau':>10}{'x scale':>9}{'ACC best':>10}{'@0.005':>8}{'rule tau':>10}{'@rule':>8}")
    for r in rows:
        print(f"{r['noise']:>6}{r['logit_scale']:>7.0f}{r['best_tau']:>10.4f}{r['best_tau'] * r['logit_scale']:>9.2f}"
              f"{r['acc_best']:>10.1f}{r['acc_at_0.005']:>8.1f}{r['rule_tau']:>10.5f}{r['acc_at_rule']:>8.1f}")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
