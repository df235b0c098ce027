"""Is the text candidate of ``method="auto"`` ever chosen with the offline backbone?

    python benchmarks/text_candidate.py --limit-per-class 30
    python benchmarks/text_candidate.py --sets scene15-train,flowers17 --seeds 3

``tacluster.choices.choose_method`` once offered, given a noun bank, TAC
without training with the trust mechanism (``text_weight="auto"``) and chose
it when the trust mechanism trusted the text side fully (weight 1). The
estimator never passed it the nouns (issue 28). This script measures whether
passing them would ever change the choice: on every domain of
``../shared/data`` (lite backbone, WordNet nouns, the first
``--limit-per-class`` images of each class, K = the number of classes, the
fit part of ``quality.py``'s split), for each seed it fits
``TextAidedClustering(K, "no-train", text_weight="auto")`` and records the
weight the trust mechanism chose, its relatedness, and the fit-part ACC of
that partition and of ``method="auto"`` (image candidates only).

Prints a markdown table; writes ``text_candidate.json`` and ``.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import environment, markdown_table, peak_rss_mb, write_json  # noqa: E402
from quality import dataset_root, fit_heldout_split, list_labelled  # noqa: E402

from tacluster.estimator import TextAidedClustering  # noqa: E402
from tacluster.evaluate.metrics import evaluate_clustering  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def run_set(root: Path, limit: int, bb, bank, cache: Path, seeds: int) -> dict:
    """The trust decision and fit-part ACCs of one set, per seed."""
    from tacluster.embed import embed_images

    paths, classes = list_labelled(root, limit)
    emb = embed_images(paths, bb, cache_dir=cache, progress=False)
    label_of = dict(zip(paths, classes))
    y = np.unique([label_of[p] for p in emb.paths], return_inverse=True)[1].reshape(-1)
    fit, _ = fit_heldout_split(len(y))
    u, j = emb.arrays["image"][fit], emb.arrays.get("joint", emb.arrays["image"])[fit]
    k = int(len(np.unique(y)))
    runs = []
    for seed in range(seeds):
        text = TextAidedClustering(k, "no-train", text_weight="auto", random_state=seed)
        text.fit(u, noun_embeddings=bank.embeddings, nouns=bank.words, joint_embeddings=j)
        auto = TextAidedClustering(k, "auto", random_state=seed).fit(u)
        runs.append({"seed": seed, "text_weight": float(text.text_weight_),
                     "relatedness": float(text.trust_.relatedness),
                     "acc_text": evaluate_clustering(y[fit], text.labels_)["acc"],
                     "acc_auto": evaluate_clustering(y[fit], auto.labels_)["acc"],
                     "auto_chose": auto.choice_.method})
    return {"k": k, "n_fit": int(len(fit)), "runs": runs}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default=None, help="comma list of archive stems (default: every .tar.gz in --shared)")
    ap.add_argument("--limit-per-class", type=int, default=30, help="first N images per class (default 30)")
    ap.add_argument("--seeds", type=int, default=2, help="seeds per set (default 2)")
    ap.add_argument("--shared", default=str(SHARED), help="folder of the archives (default ../shared/data)")
    ap.add_argument("--work", default="/tmp/tacluster-datasets", help="where archives are extracted")
    ap.add_argument("--cache-dir", default=None, help="embedding / noun-bank cache (default ~/.cache/tacluster)")
    ap.add_argument("--out", default="benchmarks/results/text_candidate", help="output directory")
    args = ap.parse_args(argv)

    from tacluster.embed.backbones import load_backbone
    from tacluster.nouns.bank import cached_noun_bank, default_cache_dir
    from tacluster.nouns.vocabulary import load_vocabulary

    shared = Path(args.shared)
    if not shared.is_dir():
        ap.error(f"--shared {str(shared)!r} does not exist")
    names = ([s.strip() for s in args.sets.split(",") if s.strip()] if args.sets
             else sorted(p.name.removesuffix(".tar.gz") for p in shared.glob("*.tar.gz")))
    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    bb = load_backbone("lite", device="cpu")
    bank = cached_noun_bank(bb, load_vocabulary(None), cache_dir=cache, progress=False)
    results = {}
    for name in names:
        tic = time.perf_counter()
        root = dataset_root(shared / f"{name}.tar.gz", Path(args.work))
        results[name] = run_set(root, args.limit_per_class, bb, bank, cache, args.seeds)
        ws = [r["text_weight"] for r in results[name]["runs"]]
        print(f"{name:15s} text weights {ws} ({time.perf_counter() - tic:.0f} s)", flush=True)
    rows = []
    for name, res in results.items():
        runs = res["runs"]
        rows.append([name, res["k"], res["n_fit"], ", ".join(f"{r['text_weight']:g}" for r in runs),
                     f"{statistics.fmean(r['relatedness'] for r in runs):.2f}",
                     f"{statistics.fmean(r['acc_text'] for r in runs):.1f}",
                     f"{statistics.fmean(r['acc_auto'] for r in runs):.1f}",
                     sum(r["text_weight"] >= 1.0 for r in runs)])
    header = ["set", "K", "fit images", "trust weight per seed", "relatedness", "fit ACC no-train (trust)",
              "fit ACC auto (image)", "seeds weight 1"]
    md = (f"### Text candidate of method='auto' (lite, WordNet, {args.limit_per_class}/class, {args.seeds} seeds)"
          f"\n\n{markdown_table(header, rows)}\n\nPeak RSS {peak_rss_mb():.0f} MiB.\n")
    print("\n" + md)
    out = Path(args.out)
    write_json(out / "text_candidate.json", {"args": vars(args), "environment": environment(), "results": results})
    (out / "text_candidate.md").write_text(md)
    return results


if __name__ == "__main__":
    main()
