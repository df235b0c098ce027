"""The first ``--backbone clip`` run on a CPU, end to end: 1,000 photos from an empty tacluster cache,
then the same photos again with the noun bank (and the embeddings) cached.

No CLIP weights reach this machine, so the model is a random real-size ViT-B/32
(``transformers`` defaults) with CLIP's real BPE tokenizer (``--bpe``, default
``../shared/models/clip-bpe``): every prompt has its true 8-12 tokens, every
layer its real width, so the times are the real model's (the clusters are not).
It is saved to a temporary folder and passed as ``--backbone hf:<folder>``,
i.e. "already in the Hugging Face cache"; the tacluster cache (``--cache-dir``)
starts empty. Photos: the first ``--per-class`` of every class of a shared set
(default 15-Scene, 67 x 15 = 1,005 photos of 200 px).

Runs (each ``python -m tacluster cluster PHOTOS --backbone hf:<clip> --k 10``,
one process, timed from outside; stage times from run.json):

* ``cold``: empty cache; the default ``--noun-bank auto`` (on a CPU: the
  one-prompt ranking bank plus exact vectors for the candidates);
* ``warm``: the same cache, a new ``--out``: bank and embeddings from the cache;
* ``--full``: also a cold run with ``--noun-bank full`` (the paper's bank;
  hours on 2 cores: only with ``--full``).

``--model siglip``: the same with a random real-size SigLIP base (its text
tower pads every prompt to 64 tokens, so the tiny tokenizer's token counts do
not change its cost; no prefix reuse). Its cold run is hours, so with
``--words N`` (the first N WordNet nouns as ``--vocabulary``) the table adds
the projection to the whole vocabulary: the run's wall time plus the ranking
bank's measured seconds per noun (from the run's log line "N nouns embedded
in S s", the ranking bank being the one bank built through the cache) times
the 117,798 - N nouns left out. The candidate pool does not grow with the
vocabulary (200 per semantic centre), so it is counted once.

The load average is recorded beside every time. Prints a table and writes JSON::

    python benchmarks/cold_clip.py --out benchmarks/results/cold_clip.json
    python benchmarks/cold_clip.py --model siglip --words 3000 --out docs/cold_siglip.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import environment, markdown_table, write_json  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def _photos(archive: Path, per_class: int, work: Path) -> Path:
    """``work/photos/<class>/...``: links to the first ``per_class`` photos of each class of ``archive``."""
    from quality import IMAGE_EXTS, dataset_root

    root = dataset_root(archive, Path.home() / ".cache" / "tacluster" / "datasets")
    out = work / "photos"
    for cls in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(f for f in cls.rglob("*") if f.suffix.lower() in IMAGE_EXTS)[:per_class]
        (out / cls.name).mkdir(parents=True, exist_ok=True)
        for f in files:
            (out / cls.name / f.name).symlink_to(f)
    return out


def _run(name: str, photos: Path, model: Path, cache: Path, out: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "tacluster", "cluster", str(photos), "--backbone", f"hf:{model}", "--k", "10",
           "--out", str(out), "--cache-dir", str(cache), "--device", "cpu", "--no-report", "--offline", *extra]
    load = os.getloadavg()[0]
    tic = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - tic
    if proc.returncode != 0:
        raise SystemExit(f"{name}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    info = json.loads((out / "run.json").read_text())
    built = [(int(n.replace(",", "")), float(t)) for n, t in
             re.findall(r"^([\d,]+) nouns embedded in ([\d.]+) s", proc.stderr, flags=re.M)]
    timings = info.get("timings_s", {})
    row = {"run": name, "wall_s": round(wall, 1), "load_before": round(load, 2),
           "load_after": round(os.getloadavg()[0], 2), "noun_bank_mode": info["settings"].get("noun_bank"),
           "images": info["counts"]["assigned"], "embedded_now": info["counts"]["embedded_now"],
           "stages_s": {k: round(float(v), 1) for k, v in timings.items() if "." not in k},
           "noun_bank_counts": info["counts"].get("noun_bank"),
           "image_precision": info["counts"].get("image_precision"),
           "ranking_bank": {"nouns": built[0][0], "seconds": built[0][1]} if built else None}
    print(f"{name}: {wall:.0f} s ({row['stages_s']})", file=sys.stderr, flush=True)
    return row


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=SHARED / "data" / "scene15-train.tar.gz")
    ap.add_argument("--per-class", type=int, default=67, help="photos per class (default 67: 1,005 of 15-Scene)")
    ap.add_argument("--model", choices=["clip", "siglip"], default="clip",
                    help="random real-size ViT-B/32 CLIP (default) or SigLIP base")
    ap.add_argument("--bpe", type=Path, default=SHARED / "models" / "clip-bpe")
    ap.add_argument("--full", action="store_true", help="also a cold run with --noun-bank full (hours on a CPU)")
    ap.add_argument("--words", type=int, default=None,
                    help="only the first N WordNet nouns (a quick check of the script; default: all 117,798)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/cold_clip.json"))
    args = ap.parse_args(argv)
    if args.model == "clip" and not (args.bpe / "vocab.json").is_file():
        raise SystemExit(f"{args.bpe} has no vocab.json: pass --bpe with CLIP's vocab.json and merges.txt")
    from tacluster.testing import save_random_real_size_model

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        photos = _photos(args.data, args.per_class, work)
        model = save_random_real_size_model(args.model, work / args.model, seed=0,
                                            bpe=args.bpe if args.model == "clip" else None)
        cache = work / "cache"
        vocab: list[str] = []
        if args.words:
            from tacluster.nouns.vocabulary import load_wordnet_nouns

            (work / "nouns.txt").write_text("\n".join(load_wordnet_nouns()[:args.words]) + "\n")
            vocab = ["--vocabulary", str(work / "nouns.txt")]
        rows.append(_run("cold (empty cache, --noun-bank auto)", photos, model, cache, work / "cold", vocab))
        rows.append(_run("warm (bank and embeddings cached)", photos, model, cache, work / "warm", vocab))
        if args.full:
            rows.append(_run("cold, --noun-bank full", photos, model, work / "cache-full", work / "full",
                             ["--noun-bank", "full", *vocab]))
    for r in rows:
        r["projected_all_nouns_s"] = _projected(r, args.words)
        r["projected_all_nouns_float32_s"] = _projected_float32(r, args.words)
    table = markdown_table(["run", "images", "wall s", "embed s", "noun bank s", "fit s", "load before / after",
                            "projected, all 117,798 nouns", "the same, ranking in float32"],
                           [[r["run"], r["images"], r["wall_s"], r["stages_s"].get("embed", ""),
                             r["stages_s"].get("noun_bank", ""), r["stages_s"].get("fit", ""),
                             f"{r['load_before']} / {r['load_after']}",
                             _hours(r["projected_all_nouns_s"]), _hours(r["projected_all_nouns_float32_s"])]
                            for r in rows])
    print(table)
    model_text = ("random real-size ViT-B/32 (transformers CLIPConfig defaults), CLIP BPE tokenizer"
                  if args.model == "clip" else "random real-size SigLIP base (transformers SiglipConfig defaults, "
                                               "224 px, text padded to 64 tokens)")
    payload = {"model": model_text,
               "photos": f"first {args.per_class} per class of {args.data.name}",
               "vocabulary": f"first {args.words} WordNet nouns" if args.words else "WordNet nouns (117,798)", "rows": rows, "table": table,
               **environment()}
    write_json(args.out, payload)
    return payload


def _projected(row: dict, words: int | None, total: int = 117_798) -> float | None:
    """The run's wall time with the ranking bank scaled from ``words`` to every WordNet noun (None: nothing to scale)."""
    bank = row.get("ranking_bank")
    if not words or words >= total or not bank or bank["nouns"] != words:
        return None
    return row["wall_s"] + bank["seconds"] / words * (total - words)


def _projected_float32(row: dict, words: int | None, total: int = 117_798) -> float | None:
    """:func:`_projected` for a run whose ranking bank ran in int8, had it run in float32: its
    ranking seconds times the probe's measured speed-up (run.json ``ranking_precision``)."""
    base = _projected(row, words, total)
    precision = ((row.get("noun_bank_counts") or {}).get("ranking_precision") or {})
    if base is None or precision.get("precision") != "int8" or not precision.get("speedup"):
        return None
    return base + row["ranking_bank"]["seconds"] / words * total * (precision["speedup"] - 1)


def _hours(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds / 3600:.2f} h"


if __name__ == "__main__":
    main()
