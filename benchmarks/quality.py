"""Clustering quality of tacluster's methods on a labelled image set (ImageFolder layout).

    python benchmarks/quality.py --data ../shared/data/scene15-train.tar.gz --k 15 --seeds 10
    python benchmarks/quality.py --data ../shared/data/cifar10-train.tar.gz --k 10 --limit-per-class 300
    python benchmarks/quality.py --data /path/to/imagefolder --k 7 --out results/mine

Data: a folder ``<root>/<class>/<image>`` or a ``.tar.gz`` of one (extracted
once under ``--work``, default ``~/.cache/tacluster/datasets``). Labels are
the class folder names and are used only for scoring.
``--limit-per-class N`` keeps the first N files of every class in sorted
order (a balanced subset; CIFAR-10's 5,000 per class take ~2.5 h to embed on
2 CPU cores, so use e.g. 300 there and say so). Embeddings are cached under
``--cache-dir`` (default ``~/.cache/tacluster``), so a rerun takes minutes.

Split (fixed, documented): the usable images are shuffled with
``numpy.random.default_rng(--split-seed)`` (default 0) and the first
``round(--fit-frac * n)`` (default 70 %) are the *fit* part, the rest the
*held-out* part. Not stratified. Every method is fitted on the fit part; the
table reports ACC / NMI / ARI of ``predict`` on the held-out part (and, for
reference, of the fit labels on the fit part). Tune on the fit part only.

Rows (K = --k, one fit per seed, mean ± std over --seeds seeds):

* ``kmeans-image``: k-means on the image features u.
* ``kmeans-joint``: k-means on the joint (noun-space) vectors.
* ``tac-no-train``: TAC without training, k-means on ``[u, s]`` (paper settings).
* ``tac-trained``: TAC with the heads trained (paper settings).
* ``trust``: :func:`tacluster.choices.text_weight.choose_text_weight` on the fit part, then
  k-means on ``[u, w s]`` (image-only k-means when w = 0).
* ``default``: what ``tacluster cluster --method auto`` does for this backbone,
  built by :func:`default_estimator` (one place, so this row follows changes
  to :mod:`tacluster.run.workflows`).

Prints a markdown table and writes ``quality.json`` + ``quality.md`` to --out.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import environment, markdown_table, peak_rss_mb, write_json  # noqa: E402

from tacluster.errors import InputError  # noqa: E402
from tacluster.estimator import TextAidedClustering  # noqa: E402
from tacluster.evaluate.metrics import evaluate_clustering  # noqa: E402

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
METHOD_ROWS = ("kmeans-image", "kmeans-joint", "tac-no-train", "tac-trained", "trust", "default")


# ----------------------------------------------------------------- data
def dataset_root(data: Path, work: Path) -> Path:
    """The ImageFolder root of ``data``: the folder itself, or a .tar.gz extracted once under ``work``."""
    if data.is_dir():
        return data
    if not data.is_file() or not data.name.endswith((".tar.gz", ".tgz", ".tar")):
        raise InputError(f"--data {str(data)!r}: give an ImageFolder directory or a .tar.gz of one")
    stem = data.name.removesuffix(".gz").removesuffix(".tgz").removesuffix(".tar")
    dest = work / stem
    done = dest / ".extracted"
    if not done.is_file():
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(data) as tar:
            tar.extractall(dest, filter="data")  # "data" refuses absolute paths and links outside dest
        done.write_text(str(data.resolve()))
    # A tarball usually wraps one top folder (scene15-train/<class>/...); descend into it.
    entries = [p for p in dest.iterdir() if not p.name.startswith(".")]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else dest


def list_labelled(root: Path, limit_per_class: int | None) -> tuple[list[str], list[str]]:
    """(paths, class names) of ``root/<class>/<image>``, sorted, at most ``limit_per_class`` per class."""
    paths, labels = [], []
    for cls in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(f for f in cls.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTS)
        files = files[:limit_per_class] if limit_per_class else files
        paths += [str(f) for f in files]
        labels += [cls.name] * len(files)
    if not paths:
        raise InputError(f"{str(root)!r} holds no <class>/<image> files; expected an ImageFolder layout")
    return paths, labels


def fit_heldout_split(n: int, seed: int = 0, fit_frac: float = 0.7) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the fit and held-out parts (see the module docstring), both sorted."""
    perm = np.random.default_rng(seed).permutation(n)
    n_fit = int(round(fit_frac * n))
    return np.sort(perm[:n_fit]), np.sort(perm[n_fit:])


# ----------------------------------------------------------------- methods
def default_estimator(backbone_name: str, k: int, seed: int, device: str) -> TextAidedClustering:
    """The estimator ``tacluster cluster --method auto`` builds for ``backbone_name``
    (``workflows.recommended_method``)."""
    from tacluster.run.workflows import recommended_method

    return TextAidedClustering(k, recommended_method(backbone_name), random_state=seed, device=device)


def run_method(name: str, data: dict, k: int, seed: int, device: str, backbone_name: str) -> dict:
    """Fit one method on the fit part, predict the held-out part; metrics and seconds."""
    from tacluster.choices.text_weight import choose_text_weight

    u, j, bank, words = data["u_fit"], data["j_fit"], data["bank"], data["words"]
    uh, jh = data["u_ho"], data["j_ho"]
    extra: dict = {}
    tic = time.perf_counter()
    if name == "kmeans-image":
        est = TextAidedClustering(k, "kmeans", random_state=seed).fit(u)
        pred = est.predict(uh)
    elif name == "kmeans-joint":
        est = TextAidedClustering(k, "kmeans", random_state=seed).fit(j)
        pred = est.predict(jh)
    elif name in ("tac-no-train", "tac-trained"):
        method = "no-train" if name == "tac-no-train" else "tac"
        est = TextAidedClustering(k, method, random_state=seed, device=device)
        est.fit(u, noun_embeddings=bank, nouns=words, joint_embeddings=j)
        pred = est.predict(uh, joint_embeddings=jh)
    elif name == "trust":
        probe = TextAidedClustering(k, "no-train", random_state=seed).fit(u, noun_embeddings=bank, nouns=words, joint_embeddings=j)
        decision = choose_text_weight(u, probe.counterparts_, k, seed=seed)
        extra = {"text_weight": decision.text_weight, "relatedness": round(decision.relatedness, 4)}
        if decision.text_weight == 0:
            est = TextAidedClustering(k, "kmeans", random_state=seed).fit(u)
        else:
            est = TextAidedClustering(k, "no-train", random_state=seed, text_weight=decision.text_weight)
            est.fit(u, noun_embeddings=bank, nouns=words, joint_embeddings=j)
        pred = est.predict(uh, joint_embeddings=jh)
    elif name == "default":
        est = default_estimator(backbone_name, k, seed, device)
        if est.method == "kmeans":
            est.fit(u)
        else:
            est.fit(u, noun_embeddings=bank, nouns=words, joint_embeddings=j)
        pred = est.predict(uh, joint_embeddings=jh)
        extra = {"method": est.method}
        if getattr(est, "choice_", None) is not None:  # method="auto": the candidate it chose
            extra["chosen"] = est.choice_.method
        if est.method == "no-train":  # the weight only means something there
            extra["text_weight"] = getattr(est, "text_weight_", est.text_weight)
    else:
        raise InputError(f"unknown method row {name!r}; choose from {METHOD_ROWS}")
    seconds = time.perf_counter() - tic
    return {
        "heldout": evaluate_clustering(data["y_ho"], pred),
        "fit": evaluate_clustering(data["y_fit"], est.labels_),
        "seconds": seconds,
        **extra,
    }


def summarise(runs: list[dict], part: str, metric: str) -> tuple[float, float]:
    vals = [r[part][metric] for r in runs]
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="ImageFolder directory or .tar.gz of one")
    ap.add_argument("--k", type=int, required=True, help="number of clusters (usually the number of classes)")
    ap.add_argument("--seeds", type=int, default=10, help="seeds per method (default 10)")
    ap.add_argument("--backbone", default="lite", help="backbone name (default lite)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    ap.add_argument("--limit-per-class", type=int, default=None,
                    help="first N images of each class (balanced subset); default all")
    ap.add_argument("--split-seed", type=int, default=0, help="seed of the fit / held-out split (default 0)")
    ap.add_argument("--fit-frac", type=float, default=0.7, help="share of images in the fit part (default 0.7)")
    ap.add_argument("--methods", default=",".join(METHOD_ROWS), help=f"comma list from {','.join(METHOD_ROWS)}")
    ap.add_argument("--work", default=str(Path.home() / ".cache" / "tacluster" / "datasets"),
                    help="where archives are extracted")
    ap.add_argument("--cache-dir", default=None, help="embedding / noun-bank cache (default ~/.cache/tacluster)")
    ap.add_argument("--out", default="benchmarks/results/quality", help="output directory")
    args = ap.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHOD_ROWS]
    if bad or args.seeds < 1 or not 0 < args.fit_frac < 1:
        ap.error(f"bad --methods {bad} / --seeds / --fit-frac")

    from tacluster.embed.backbones import load_backbone
    from tacluster.embed import embed_images
    from tacluster.nouns.bank import cached_noun_bank, default_cache_dir
    from tacluster.nouns.vocabulary import load_vocabulary

    stages: dict[str, float] = {}
    tic = time.perf_counter()
    root = dataset_root(Path(args.data), Path(args.work).expanduser())
    paths, classes = list_labelled(root, args.limit_per_class)
    stages["extract_and_list"] = time.perf_counter() - tic

    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    tic = time.perf_counter()
    bb = load_backbone(args.backbone, device=args.device)
    emb = embed_images(paths, bb, cache_dir=cache, progress=True)
    stages["embed"] = time.perf_counter() - tic
    tic = time.perf_counter()
    nb = cached_noun_bank(bb, load_vocabulary(None), cache_dir=cache, progress=True)
    stages["noun_bank"] = time.perf_counter() - tic

    label_of = dict(zip(paths, classes))
    y = np.unique([label_of[p] for p in emb.paths], return_inverse=True)[1].reshape(-1)
    u = emb.arrays["image"]
    j = emb.arrays.get("joint", u)
    fit, ho = fit_heldout_split(len(y), args.split_seed, args.fit_frac)
    data = {
        "u_fit": u[fit], "u_ho": u[ho], "j_fit": j[fit], "j_ho": j[ho], "y_fit": y[fit], "y_ho": y[ho],
        "bank": nb.embeddings, "words": nb.words,
    }
    print(f"{len(y)} images ({len(emb.skipped)} skipped), {len(np.unique(y))} classes; "
          f"fit {len(fit)} / held-out {len(ho)}; backbone {bb.name}", flush=True)

    results: dict[str, list[dict]] = {}
    for m in methods:
        tic = time.perf_counter()
        results[m] = [run_method(m, data, args.k, seed, args.device, args.backbone) for seed in range(args.seeds)]
        stages[f"method.{m}"] = time.perf_counter() - tic
        h = summarise(results[m], "heldout", "acc")
        print(f"  {m:13s} held-out ACC {h[0]:.1f} ± {h[1]:.1f}  ({stages[f'method.{m}']:.0f} s)", flush=True)

    header = ["method", "held-out ACC", "held-out NMI", "held-out ARI", "fit ACC", "Δ ACC vs kmeans-image",
              "s / seed", "note"]
    rows = []
    base = [r["heldout"]["acc"] for r in results.get("kmeans-image", [])]
    for m, runs in results.items():
        cells = [m]
        for part, metric in (("heldout", "acc"), ("heldout", "nmi"), ("heldout", "ari"), ("fit", "acc")):
            mu, sd = summarise(runs, part, metric)
            cells.append(f"{mu:.1f} ± {sd:.1f}")
        if base and m != "kmeans-image":
            d = [r["heldout"]["acc"] - b for r, b in zip(runs, base)]
            cells.append(f"{statistics.fmean(d):+.1f} ({sum(x > 0 for x in d)}/{len(d)} seeds up)")
        else:
            cells.append("")
        cells.append(f"{statistics.fmean(r['seconds'] for r in runs):.1f}")
        ws = [r["text_weight"] for r in runs if "text_weight" in r]
        note = f"w = {sorted(set(ws))}" if ws else ""
        if "method" in runs[0]:
            note = f"method {runs[0]['method']}; {note}"
        chosen = sorted({r["chosen"] for r in runs if "chosen" in r})
        if chosen:
            note = f"{note}chose {', '.join(chosen)}"
        cells.append(note)
        rows.append(cells)
    table = markdown_table(header, rows)
    title = (f"{Path(args.data).name}, backbone {bb.name}, K={args.k}, {len(y)} images"
             f"{f' ({args.limit_per_class} per class)' if args.limit_per_class else ''}, "
             f"fit {len(fit)} / held-out {len(ho)} (split seed {args.split_seed}), {args.seeds} seeds")
    stage_line = ", ".join(f"{k} {v:.1f} s" for k, v in stages.items())
    md = f"### {title}\n\n{table}\n\nWall time: {stage_line}. Peak RSS {peak_rss_mb():.0f} MiB.\n"
    print("\n" + md)
    payload = {
        "settings": {**vars(args), "backbone_name": bb.name, "n_images": int(len(y)), "n_fit": int(len(fit)),
                     "n_heldout": int(len(ho)), "n_skipped": len(emb.skipped)},
        "results": results, "stages_s": stages, "peak_rss_mb": peak_rss_mb(), "environment": environment(),
        "markdown": md,
    }
    out = Path(args.out)
    write_json(out / "quality.json", payload)
    (out / "quality.md").write_text(md)
    return payload


if __name__ == "__main__":
    main()
