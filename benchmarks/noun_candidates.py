"""Candidate-pool noun bank vs the paper's full bank: kept nouns and TAC no-train ACC, per domain.

    PYTHONPATH=src python benchmarks/noun_candidates.py --out results/noun_candidates
    PYTHONPATH=src python benchmarks/noun_candidates.py --pools 10,25,50 --vocab-size 2000 --sets flowers17,weather

Backbone: ``lite:lite0/conse``, whose text side is a real trained sentence
encoder (MiniLM-L6), read with TAC's 7 prompt templates here (the product's
``conse`` bank uses one template; this benchmark embeds the paper's 7, so the
full bank is the exact reference the candidate path must reproduce). No CLIP
weights are reachable from this machine, so this is the real trained text
tower available.

Per domain (the twelve archives of ``../shared/data``, at most ``--images``
images each: the first ``ceil(images / classes)`` files of every class), the
split of ``benchmarks/quality.py`` (:func:`quality.fit_heldout_split`: 70 %
fit, the rest held out). On the fit part, for each seed:

* ``full``: TAC no-train with the exact 7-template bank of every noun;
* ``candidates P``: the same estimator given the one-template bank for ranking
  and the exact vectors only for each centre's ``P`` best candidates
  (:func:`tacluster.counterparts.candidates.select_from_candidates`, the
  product's path).

Columns: the share of ``full``'s kept nouns that the candidate path keeps
(the two selections are the same function over exact vectors, so a kept noun
differs only when it was missing from the pool), the fit-part ACC difference
(candidates - full), the held-out ACC difference (``predict``), and the
exact prompts embedded (pool x 7) against the full bank's (vocabulary x 7).
The pool size is chosen on the fit part only: the smallest ``P`` whose worst
domain keeps >= 95 % and whose fit ACC is within 0.5 everywhere.

Vocabulary: ``--vocab-size`` WordNet nouns drawn with ``default_rng(0)``
(the full 117,798 x 7 = 824,586 MiniLM prompts take ~5 h on 2 loaded cores;
say which size was used). Banks and embeddings are cached under
``--cache-dir`` (tacluster's cache), so a rerun only fits.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import environment, markdown_table, peak_rss_mb, write_json  # noqa: E402
from quality import dataset_root, fit_heldout_split, list_labelled  # noqa: E402

from tacluster.embed.backbones.base import CLIPBackbone  # noqa: E402
from tacluster.nouns.exact import RANKING_TEMPLATES  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SETS = ("butterflies", "cifar10-train", "clothing", "flowers17", "gtsrb-signs", "pacs-sketch", "pbc-bloodcells",
        "rsscn7-aerial", "scene15-train", "signdigits", "uiuc-texture", "weather")
BACKBONE = "lite:lite0/conse"


class ConseTemplates(CLIPBackbone):
    """The ``conse`` backbone's MiniLM read through TAC's prompt templates (text side only).

    Its ``text_modules`` let :func:`tacluster.nouns.precision.int8_text_backbone`
    make the int8 copy the product's ``--ranking-precision int8`` makes of a CLIP.
    """

    text_modules = ("encoder", "pooler")

    def __init__(self, lite) -> None:
        import torch

        self._lite = lite
        self.name = f"{lite.name}+tac-templates"
        self._model = lite._load_text_encoder()[1]
        self._device = torch.device("cpu")

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(f"{self._lite.fingerprint}\nminilm-text-tower".encode()).hexdigest()

    def preprocess(self, image):
        raise NotImplementedError("text side only")

    def _text_features(self, texts: list[str]):
        tokenizer, own = self._lite._load_text_encoder()
        self._lite._text_encoder = (tokenizer, self._model)  # this object's tower (int8 on the int8 copy)
        try:
            return self._lite._embed_texts(texts)
        finally:
            self._lite._text_encoder = (tokenizer, own)


def vocabulary(size: int | None) -> list[str]:
    """``size`` WordNet nouns drawn with ``default_rng(0)``, in WordNet order (all when None)."""
    from tacluster.nouns.vocabulary import load_wordnet_nouns

    words = load_wordnet_nouns()
    if size is None or size >= len(words):
        return words
    keep = np.sort(np.random.default_rng(0).choice(len(words), size, replace=False))
    return [words[i] for i in keep]


def load_domain(name: str, images: int, lite, cache: Path, work: Path, shared: Path = SHARED) -> dict:
    """Embeddings, labels and the fit / held-out split of one domain."""
    from tacluster.embed import embed_images

    root = dataset_root(shared / f"{name}.tar.gz", work)
    n_classes = sum(1 for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    paths, names = list_labelled(root, math.ceil(images / n_classes))
    emb = embed_images(paths, lite, cache_dir=cache, progress=False)
    label_of = dict(zip(paths, names))
    classes = sorted(set(names))
    y = np.array([classes.index(label_of[p]) for p in emb.paths])
    u, j = emb.arrays["image"], emb.arrays["joint"]
    fit, ho = fit_heldout_split(len(y))
    return {"u_fit": u[fit], "u_ho": u[ho], "j_fit": j[fit], "j_ho": j[ho], "y_fit": y[fit], "y_ho": y[ho],
            "k": len(classes), "n": len(y)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/noun_candidates"))
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--images", type=int, default=300, help="images per domain (about)")
    parser.add_argument("--vocab-size", type=int, default=5000, help="WordNet nouns (0: all 117,798)")
    parser.add_argument("--pools", default="5,10,20,40,80", help="candidates per centre to compare")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--data-dir", type=Path, default=SHARED, help="folder of the domain archives")
    parser.add_argument("--work", type=Path, default=Path("/tmp/tacluster-datasets"))
    parser.add_argument("--ranking-precision", choices=["float32", "int8"], default="float32",
                        help="the ranking bank's text tower (int8: the product's --ranking-precision int8)")
    parser.add_argument("--prepare-only", action="store_true", help="embed images and banks, fit nothing")
    args = parser.parse_args(argv)

    from tacluster.embed.backbones.lite import LiteBackbone
    from tacluster.nouns.bank import cached_noun_bank, default_cache_dir

    cache = args.cache_dir or default_cache_dir()
    sets = [s for s in args.sets.split(",") if s]
    lite = LiteBackbone.from_spec("lite0/conse")
    text = ConseTemplates(lite)
    words = vocabulary(args.vocab_size or None)
    tic = time.perf_counter()
    data = {s: load_domain(s, args.images, lite, cache, args.work, args.data_dir) for s in sets}
    t_images = time.perf_counter() - tic
    tic = time.perf_counter()
    full = cached_noun_bank(text, words, cache_dir=cache)
    t_full = time.perf_counter() - tic
    print(f"{len(sets)} domains embedded in {t_images:.0f} s; full bank {full.embeddings.shape} in {t_full:.0f} s",
          file=sys.stderr)
    ranking = cached_noun_bank(text, words, cache_dir=cache, templates=RANKING_TEMPLATES)
    agreement = None
    if args.ranking_precision == "int8":
        from tacluster.nouns.precision import int8_text_backbone, measure_int8

        quantised = int8_text_backbone(text)
        probe = [RANKING_TEMPLATES[0].format(w) for w in words[:: max(1, len(words) // 256)]]
        speedup, _ = measure_int8(text, quantised, probe)
        f32 = np.asarray(ranking.embeddings)
        ranking = cached_noun_bank(quantised, words, cache_dir=cache, templates=RANKING_TEMPLATES)
        cos = np.sum(np.asarray(ranking.embeddings) * f32, axis=1)
        agreement = {"min_cosine": float(cos.min()), "median_cosine": float(np.median(cos)),
                     "speedup_on_probe": speedup, "probe_prompts": len(probe)}
        print(f"int8 ranking bank: cosine to float32 min {cos.min():.4f}, median {np.median(cos):.4f}; "
              f"{speedup:.2f}x float32 on {len(probe)} prompts", file=sys.stderr)
    if args.prepare_only:
        return {}
    assert list(ranking.words) == list(full.words) == words
    pools = [int(p) for p in args.pools.split(",") if p]
    bank_full, bank_rank = np.asarray(full.embeddings), np.asarray(ranking.embeddings)
    per_set = {s: compare(data[s], words, bank_full, bank_rank, pools, args.seeds) for s in sets}
    chosen = choose_pool(per_set, pools)
    n_t = len(text.prompt_templates)
    header = ["set", "n fit", "K", "full ACC fit / held-out"] + [f"P={p}: kept % / dACC fit / dACC ho / pool"
                                                                  for p in pools]
    rows = []
    for s in sets:
        r = per_set[s]
        cells = [s, r["n_fit"], r["k"], f"{r['full']['fit_acc']:.1f} / {r['full']['heldout_acc']:.1f}"]
        for p in pools:
            c = r["pools"][str(p)]
            cells.append(f"{c['kept_pct_min']:.1f} / {c['dacc_fit_worst']:+.2f} / {c['dacc_heldout_worst']:+.2f} / "
                         f"{c['pool_nouns_mean']:.0f}")
        rows.append(cells)
    summary = ["worst", "", "", ""]
    for p in pools:
        summary.append(f"{min(per_set[s]['pools'][str(p)]['kept_pct_min'] for s in sets):.1f} / "
                       f"{_worst(per_set[s]['pools'][str(p)]['dacc_fit_worst'] for s in sets):+.2f} / "
                       f"{_worst(per_set[s]['pools'][str(p)]['dacc_heldout_worst'] for s in sets):+.2f} / "
                       f"{max(per_set[s]['pools'][str(p)]['pool_nouns_mean'] for s in sets):.0f}")
    rows.append(summary)
    table = markdown_table(header, rows)
    prompts = {str(p): {"pool_prompts_max": int(max(per_set[s]["pools"][str(p)]["pool_nouns_max"] for s in sets)) * n_t,
                        "ranking_prompts": len(words)} for p in pools}
    note = (f"vocabulary {len(words):,} WordNet nouns; full bank {len(words) * n_t:,} prompts; ranking bank "
            f"{len(words):,} prompts ({args.ranking_precision}); chosen pool (fit part): {chosen}; seeds {args.seeds}; "
            f"load average {os.getloadavg()[0]:.1f} (timings under load)")
    print(table)
    print(note)
    payload = {"backbone": BACKBONE, "text": "MiniLM-L6 with TAC's 7 templates", "vocab_size": len(words),
               "templates": n_t, "ranking_precision": args.ranking_precision, "int8_agreement": agreement,
               "pools": pools, "chosen_pool": chosen, "seeds": args.seeds,
               "images_per_domain": args.images, "per_set": per_set, "prompts": prompts,
               "seconds": {"images": t_images, "full_bank": t_full}, "environment": environment(),
               "peak_rss_mb": peak_rss_mb(), "load_average": os.getloadavg()}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "noun_candidates.json", payload)
    (args.out / "noun_candidates.md").write_text(table + "\n\n" + note + "\n")
    return payload


def _worst(values) -> float:
    """The difference furthest from 0."""
    return max(values, key=abs)


def compare(data: dict, words: list[str], full: np.ndarray, ranking: np.ndarray, pools: list[int],
            seeds: int) -> dict:
    """TAC no-train with the full bank and with each candidate pool, on the fit part, per seed."""
    from tacluster.estimator import TextAidedClustering
    from tacluster.evaluate.metrics import evaluate_clustering

    def scores(est) -> tuple[float, float]:
        ho = est.predict(data["u_ho"], joint_embeddings=data["j_ho"])
        return (evaluate_clustering(data["y_fit"], est.labels_)["acc"], evaluate_clustering(data["y_ho"], ho)["acc"])

    k = data["k"]
    res = {"n_fit": len(data["y_fit"]), "k": k, "full": {"fit_acc": [], "heldout_acc": []},
           "pools": {str(p): {"kept_pct": [], "dacc_fit": [], "dacc_heldout": [], "pool_nouns": []} for p in pools}}
    for seed in range(seeds):
        ref = TextAidedClustering(k, "no-train", random_state=seed).fit(
            data["u_fit"], noun_embeddings=full, nouns=words, joint_embeddings=data["j_fit"])
        ref_fit, ref_ho = scores(ref)
        res["full"]["fit_acc"].append(ref_fit)
        res["full"]["heldout_acc"].append(ref_ho)
        kept = set(ref.kept_noun_indices_.tolist())
        for p in pools:
            est = TextAidedClustering(k, "no-train", random_state=seed, noun_pool=p).fit(
                data["u_fit"], noun_embeddings=ranking, nouns=words, joint_embeddings=data["j_fit"],
                exact_noun_embeddings=lambda rows: full[rows])
            fit_acc, ho_acc = scores(est)
            c = res["pools"][str(p)]
            c["kept_pct"].append(100 * len(kept & set(est.kept_noun_indices_.tolist())) / len(kept))
            c["dacc_fit"].append(fit_acc - ref_fit)
            c["dacc_heldout"].append(ho_acc - ref_ho)
            c["pool_nouns"].append(len(est.noun_pool_.pool))
    for key in ("fit_acc", "heldout_acc"):
        res["full"][key] = statistics.fmean(res["full"][key])
    for c in res["pools"].values():
        c.update(kept_pct_min=min(c["kept_pct"]), dacc_fit_worst=_worst(c["dacc_fit"]),
                 dacc_heldout_worst=_worst(c["dacc_heldout"]), pool_nouns_mean=statistics.fmean(c["pool_nouns"]),
                 pool_nouns_max=max(c["pool_nouns"]))
    return res


def choose_pool(per_set: dict, pools: list[int], kept_goal: float = 95.0, acc_goal: float = 0.5) -> int | None:
    """The smallest pool whose worst set keeps >= ``kept_goal`` % of the nouns and moves fit ACC by <= ``acc_goal``."""
    for p in sorted(pools):
        cells = [r["pools"][str(p)] for r in per_set.values()]
        if all(c["kept_pct_min"] >= kept_goal and abs(c["dacc_fit_worst"]) <= acc_goal for c in cells):
            return p
    return None


if __name__ == "__main__":
    main()
