"""Near-duplicate detection: the threshold measured on planted copies, and its time at 100k.

    python benchmarks/duplicates.py --out docs/duplicates
    python benchmarks/duplicates.py --compare embeddings --backbone lite --out /tmp/dups-lite

Protocol. For each shared domain (``--sets``), ``--limit``
images drawn with ``numpy.random.default_rng(0)`` form the collection; the
first ``--planted`` of them get one copy per transform
(:func:`tacluster.testing.plant_copy`), written under ``--work``:

* ``jpeg40``: re-encoded as JPEG quality 40;
* ``half``: resized to half width and height (Lanczos);
* ``crop5``: 5 % of the width and of the height cut off (left and top);
* ``colour``: a small colour shift (saturation x1.15, brightness x1.05, red
  x1.04, blue x0.96);
* ``all``: the four together (colour, half, crop, then JPEG 40);
* ``identical``: a byte-for-byte copy.

The non-JPEG-40 copies are saved as JPEG quality 95. With ``--compare looks``
(the package's rule) the images' thumbnails (:mod:`tacluster.embed.look`) are
compared; with ``--compare embeddings`` the ``--backbone`` embeddings (what
``--embeddings`` sources get). :func:`tacluster.run.duplicates.find_duplicates`
groups each collection at every threshold of the grid. A *true pair* is two images made
from one original (the original and a copy, or two copies); a *found pair* is
two images in one group. Recall (per transform: the original with that copy;
overall: all true pairs) and precision (found pairs that are true) are
counted on pairs. The planted originals of every domain are split into a fit
part (70 %, ``quality.fit_heldout_split``) and a held-out part; only the fit
parts choose the threshold: the highest mean recall over the domains with
precision >= 95 % on every one, ties to the higher threshold. The held-out
parts check it. Pairs of two original
photos the detector groups (unplanted: the data sets' own near-duplicates)
count against precision and are listed in the JSON for inspection.

Time (``--n-large``, default 100,000): synthetic thumbnails (smooth random
grey images, a sum of upsampled noise at four scales) with 2 % planted copies
(up to 5 % cut from the left and top, contrast x0.9-1.1, brightness +-10,
pixel noise), through ``find_duplicates`` with its default search (IVF above
``EXACT_MAX``); recall of the planted pairs and seconds. With ``--compare
embeddings``: synthetic embeddings shaped like lite's (1280-d, 1,000 classes)
with 2 % planted copies (cosine ~0.95).

Rows "best at p>=95" give, per transform, the highest recall of any threshold
of the grid whose precision is at least 95 %: where it is below 95 % no
threshold meets the goal for that transform.

Writes ``duplicates.json`` and ``duplicates.md`` to ``--out``; prints the tables.
Timings on a shared machine depend on its load (recorded in the JSON).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import environment, markdown_table, write_json  # noqa: E402
from quality import dataset_root, fit_heldout_split, list_labelled  # noqa: E402

from tacluster.testing import COPY_TRANSFORMS as TRANSFORMS, plant_copy  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
GRID = [round(t, 3) for t in np.arange(0.80, 0.991, 0.01)]
TARGET = 0.95


# ----------------------------------------------------------------- copies
def build_collection(root: Path, limit: int, planted: int, work: Path) -> dict:
    """Originals (first ``limit``) plus copies of ``planted`` of them: paths, source of each, transform."""
    paths, _ = list_labelled(root, None)
    # A prefix of one permutation: a smaller --limit / --planted takes a subset (cached embeddings).
    originals = [paths[i] for i in np.random.default_rng(0).permutation(len(paths))[:limit]]
    chosen = np.arange(min(planted, len(originals)))
    out_paths, source, kind = list(originals), list(range(len(originals))), ["original"] * len(originals)
    for o in chosen:
        src = Path(originals[o])
        for t in TRANSFORMS:
            dst = work / root.name / t / src.parent.name / (src.stem + ".jpg")
            if not dst.is_file():
                plant_copy(src, dst, t)
            out_paths.append(str(dst))
            source.append(int(o))
            kind.append(t)
    return {"paths": out_paths, "source": np.array(source), "kind": np.array(kind), "planted": chosen}


# ----------------------------------------------------------------- scoring
def pair_scores(groups, source: np.ndarray, kind: np.ndarray, originals: set[int], planted) -> dict:
    """Pair recall (overall and per transform) and precision of ``groups`` on the planted
    ``originals`` with their copies and every unplanted original (copies of the other
    planted originals, and those originals, are left out)."""
    planted = {int(o) for o in planted}
    out_of_scope = np.array([int(s) in planted and int(s) not in originals for s in source])
    group_of = np.full(len(source), -1)
    for g, grp in enumerate(groups):
        group_of[grp.members] = g
    found = found_true = 0
    unplanted = []
    for grp in groups:
        m = [i for i in grp.members if not out_of_scope[i]]
        for a in range(len(m)):
            for b in range(a + 1, len(m)):
                i, j = m[a], m[b]
                found += 1
                if source[i] == source[j]:
                    found_true += 1
                elif kind[i] == kind[j] == "original":
                    unplanted.append((int(i), int(j)))
    per = {}
    for t in TRANSFORMS:
        copies = np.flatnonzero((kind == t) & ~out_of_scope)
        per[t] = float(np.mean([group_of[c] >= 0 and group_of[c] == group_of[source[c]] for c in copies]))
    n_true = len(originals) * (len(TRANSFORMS) + 1) * len(TRANSFORMS) // 2
    return {"recall": found_true / max(1, n_true), "precision": found_true / found if found else 1.0,
            "per_transform": per, "unplanted_pairs": len(unplanted), "unplanted": unplanted[:20]}


def sweep(data: tuple, col: dict, parts: dict[str, set[int]], grid=GRID) -> dict[str, list[dict]]:
    """Scores of every part at every threshold (one grouping per threshold)."""
    from tacluster.run.duplicates import find_duplicates

    x, looks, digests = data
    out: dict[str, list[dict]] = {p: [] for p in parts}
    for t in grid:
        groups = find_duplicates(digests, x, t, looks=looks)
        for p, originals in parts.items():
            out[p].append({"threshold": t, **pair_scores(groups, col["source"], col["kind"], originals, col["planted"])})
    return out


def choose(curves: list[list[dict]]) -> float:
    """The threshold with the highest mean recall over ``curves`` (one per domain, same grid) whose
    precision is >= TARGET on every one (none: the highest worst precision); ties to the higher."""
    rows = list(zip(*curves))
    ok = [r for r in rows if min(c["precision"] for c in r) >= TARGET]
    if not ok:
        return max(rows, key=lambda r: (min(c["precision"] for c in r), r[0]["threshold"]))[0]["threshold"]
    return max(ok, key=lambda r: (round(float(np.mean([c["recall"] for c in r])), 6), r[0]["threshold"]))[0]["threshold"]


def cosine_summary(x: np.ndarray, source, kind) -> dict:
    """Cosine of each copy to its original (per transform: min, 5th percentile, median) and
    every original's nearest other original (max, 99th percentile, median)."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    out = {}
    for t in TRANSFORMS:
        c = np.flatnonzero(kind == t)
        s = np.einsum("id,id->i", x[c], x[source[c]])
        out[t] = {"min": float(s.min()), "p5": float(np.percentile(s, 5)), "median": float(np.median(s))}
    o = np.flatnonzero(kind == "original")
    sims = x[o] @ x[o].T
    np.fill_diagonal(sims, -1)
    nn = sims.max(axis=1)
    out["nearest_other_photo"] = {"max": float(nn.max()), "p99": float(np.percentile(nn, 99)),
                                  "median": float(np.median(nn))}
    return out


# ----------------------------------------------------------------- large
def large_world(n: int, dim: int = 1280, classes: int = 1000, copies: float = 0.02, seed: int = 0):
    """Unit rows in ``classes`` groups (nearest-neighbour cosine ~0.8, as real photos) with
    ``copies * n`` planted near copies (cosine ~0.95); returns (x, pairs)."""
    rng = np.random.default_rng(seed)
    n_copy = int(copies * n)
    n_base = n - n_copy
    scale = np.linspace(1.0, 0.1, dim, dtype=np.float32)  # a decaying spectrum, as in real features
    centres = rng.standard_normal((classes, dim), dtype=np.float32) * scale
    x = np.empty((n, dim), dtype=np.float32)
    labels = rng.integers(0, classes, n_base)
    for s in range(0, n_base, 8192):
        e = min(s + 8192, n_base)
        x[s:e] = centres[labels[s:e]] + 0.9 * rng.standard_normal((e - s, dim), dtype=np.float32) * scale
    x[:n_base] /= np.linalg.norm(x[:n_base], axis=1, keepdims=True)
    src = rng.choice(n_base, n_copy, replace=False)
    noise = rng.standard_normal((n_copy, dim), dtype=np.float32) * scale
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    x[n_base:] = x[src] + 0.32 * noise
    x[n_base:] /= np.linalg.norm(x[n_base:], axis=1, keepdims=True)
    return x, np.stack([src, np.arange(n_base, n)], axis=1)


def synthetic_looks(n: int, copies: float = 0.02, seed: int = 0):
    """``n`` smooth random grey thumbnails (uint8) with ``copies * n`` planted copies; returns (looks, pairs)."""
    import torch
    import torch.nn.functional as F

    from tacluster.embed.look import LOOK_SIZE

    g = torch.Generator().manual_seed(seed)
    n_copy = int(copies * n)
    n_base = n - n_copy
    out = np.empty((n, LOOK_SIZE * LOOK_SIZE), dtype=np.uint8)
    for s in range(0, n_base, 8192):
        m = min(8192, n_base - s)
        img = sum(F.interpolate(torch.randn(m, 1, r, r, generator=g), size=(LOOK_SIZE, LOOK_SIZE), mode="bilinear",
                                align_corners=False) * w for r, w in ((4, 1.0), (8, 0.7), (16, 0.5), (32, 0.35)))
        out[s:s + m] = (128 + 40 * img).clamp(0, 255).to(torch.uint8).reshape(m, -1).numpy()
    rng = np.random.default_rng(seed)
    src = rng.choice(n_base, n_copy, replace=False)
    for c, o in enumerate(src):
        im = torch.from_numpy(out[o].astype(np.float32)).view(1, 1, LOOK_SIZE, LOOK_SIZE)
        cut = rng.integers(0, int(0.05 * LOOK_SIZE) + 1, 2)
        part = F.interpolate(im[:, :, cut[1]:, cut[0]:], size=(LOOK_SIZE, LOOK_SIZE), mode="bilinear",
                             align_corners=False)
        part = part * rng.uniform(0.9, 1.1) + rng.uniform(-10, 10) + torch.from_numpy(
            rng.normal(0, 3, part.shape).astype(np.float32))
        out[n_base + c] = part.clamp(0, 255).to(torch.uint8).reshape(-1).numpy()
    return out, np.stack([src, np.arange(n_base, n)], axis=1)


def time_large(n: int, threshold: float, compare: str) -> dict:
    from tacluster.run.alignment import aligned_similarity
    from tacluster.run.duplicates import find_duplicates

    if compare == "looks":
        looks, pairs = synthetic_looks(n)
        x, cos = None, aligned_similarity(looks, pairs[:, 0], pairs[:, 1])
    else:
        (x, pairs), looks = large_world(n), None
        cos = np.einsum("id,id->i", x[pairs[:, 0]], x[pairs[:, 1]])
    t0, c0 = time.perf_counter(), time.process_time()
    groups = find_duplicates(None, x, threshold, looks=looks)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    group_of = np.full(n, -1)
    for g, grp in enumerate(groups):
        group_of[grp.members] = g
    hit = (group_of[pairs[:, 0]] >= 0) & (group_of[pairs[:, 0]] == group_of[pairs[:, 1]])
    above = cos >= threshold
    return {"compare": compare, "n": n, "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
            "groups": len(groups), "planted_pairs": len(pairs), "planted_above_threshold": int(above.sum()),
            "recall_of_those": float(hit[above].mean()) if above.any() else None,
            "planted_similarity_median": float(np.median(cos)), "load_avg": os.getloadavg()[0]}


# ----------------------------------------------------------------- main
def embed(paths: list[str], backbone: str, cache_dir: str | None, compare: str):
    """(embeddings or None, looks or None, digests) of the collection, through the cache."""
    from tacluster.embed import embed_images
    from tacluster.embed.backbones import load_backbone
    from tacluster.embed.cache import content_key
    from tacluster.embed.look import collection_looks
    from tacluster.nouns.bank import default_cache_dir

    cache = cache_dir or default_cache_dir()
    if compare == "looks":
        keys = [content_key(p) for p in paths]
        found = collection_looks(paths, keys, cache, progress=True)
        if found.skipped:
            raise SystemExit(f"{len(found.skipped)} images could not be decoded: {found.skipped[:3]}")
        return None, found.array, keys
    emb = embed_images(paths, load_backbone(backbone), cache_dir=cache, progress=True)
    if len(emb.paths) != len(paths):
        raise SystemExit(f"{len(paths) - len(emb.paths)} images could not be embedded: {emb.skipped[:3]}")
    return emb.arrays["image"], None, emb.keys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", default=str(SHARED), help="folder of the archives (default ../shared/data)")
    ap.add_argument("--sets", default="flowers17,scene15-train,rsscn7-aerial,uiuc-texture",
                    help="domains (their fit parts choose the threshold, their held-out parts check it)")
    ap.add_argument("--limit", type=int, default=300, help="images per domain (the collection)")
    ap.add_argument("--planted", type=int, default=60, help="originals per domain that get copies")
    ap.add_argument("--compare", choices=["looks", "embeddings"], default="looks",
                    help="thumbnails (the package's rule for image files) or --backbone embeddings")
    ap.add_argument("--backbone", default="lite", help="with --compare embeddings")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--work", default=str(Path.home() / ".cache" / "tacluster" / "duplicates-bench"))
    ap.add_argument("--n-large", type=int, default=100_000, help="0 skips the timing")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    from tacluster.run.duplicates import LOOK_THRESHOLD, duplicate_threshold

    work = Path(a.work)
    sets = [s for s in a.sets.split(",") if s]
    curves, data = {}, {}
    for name in sets:
        root = dataset_root(Path(a.shared) / f"{name}.tar.gz", work / "data")
        col = build_collection(root, a.limit, a.planted, work / "copies")
        fit, held = fit_heldout_split(len(col["planted"]))
        parts = {"fit": {int(o) for o in col["planted"][fit]}, "held-out": {int(o) for o in col["planted"][held]}}
        data[name] = (col, embed(col["paths"], a.backbone, a.cache_dir, a.compare), parts)
        curves[name] = sweep(data[name][1], col, parts)
    t = choose([curves[name]["fit"] for name in sets])
    package_t = LOOK_THRESHOLD if a.compare == "looks" else duplicate_threshold(a.backbone)
    results = {"compare": a.compare, "tuned_threshold": t, "package_threshold": package_t, "sets": {},
               "transforms": list(TRANSFORMS), "environment": environment(), "args": vars(a) | {"out": str(a.out)}}
    header = ["set", "part", "threshold", "recall", "precision", *TRANSFORMS, "unplanted pairs"]
    rows = []
    for name in sets:
        col, (x, looks, digests), parts = data[name]
        entry = {"n_images": len(col["paths"]), "planted": len(col["planted"]), "parts": {}}
        if x is not None:
            entry["cosines"] = cosine_summary(x, col["source"], col["kind"])
        for part, curve in curves[name].items():
            slim = [{k: v for k, v in r.items() if k != "unplanted"} for r in curve]  # pairs listed only in "at"
            at = {r["threshold"]: r for r in curve if r["threshold"] in (t, package_t)}
            entry["parts"][part] = {"curve": slim, "at": {str(k): v for k, v in at.items()}}
            for th, r in at.items():
                rows.append([name, part, th, 100 * r["recall"], 100 * r["precision"],
                             *(100 * r["per_transform"][k] for k in TRANSFORMS), r["unplanted_pairs"]])
            # What any threshold could do: each transform's best recall where precision >= TARGET.
            ok = [r for r in curve if r["precision"] >= TARGET]
            best = {k: max((r["per_transform"][k] for r in ok), default=0.0) for k in TRANSFORMS}
            entry["parts"][part]["best_at_target_precision"] = best
            rows.append([name, part, f"best at p>={100 * TARGET:.0f}", "", "", *(100 * best[k] for k in TRANSFORMS), ""])
        results["sets"][name] = entry
    table = markdown_table(header, rows)
    head = (f"compared: {a.compare}; threshold tuned on the fit parts of {', '.join(sets)}: {t}; "
            f"package default: {package_t}")
    print(head + "\n")
    print(table)
    large_table = ""
    if a.n_large:
        large = time_large(a.n_large, package_t, a.compare)
        results["large"] = large
        large_table = markdown_table(list(large), [list(large.values())])
        print("\n" + large_table)
    if a.out:
        write_json(a.out / "duplicates.json", results)
        (a.out / "duplicates.md").write_text(f"{head}.\n\n{table}\n\n{large_table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
