"""Peak memory of embedding + clustering as the collection grows (2k to 20k images).

Generates a folder of small images (32x32 JPEGs) in a temp dir, then for each
size runs, in a fresh process with a fresh cache, the whole ``cluster_images``
pipeline (list, hash, decode, embed, cache, noun bank, k-means, outputs; no
report) and records the peak resident memory. The question is whether memory
grows only with the arrays (n x d floats, the path list), not with the number of
files decoded: decoding is streamed batch by batch, so it should.

The backbone is NOT the real ``lite`` model (about 10 images/s on 2 CPU cores,
too slow for 20k): a small deterministic test backbone registered with
``register_backbone`` (a fixed random projection of a 16x16 downsample to 64 +
32 dimensions) stands in. Memory of a real backbone adds its weights, a constant.

    python benchmarks/load_memory.py                       # 2k, 5k, 10k, 20k
    python benchmarks/load_memory.py --sizes 1000 2000 --out mem.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, markdown_table, peak_rss_mb, write_json  # noqa: E402

D_IMAGE, D_JOINT, SIDE = 64, 32, 16


def make_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` distinct 32x32 JPEGs (10 colour families plus noise), in 100 sub-folders."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = rng.integers(30, 226, (10, 3))
    paths = []
    for i in range(n):
        arr = np.clip(base[i % 10] + rng.normal(0, 25, (32, 32, 3)), 0, 255).astype(np.uint8)
        p = folder / f"d{i % 100:02d}" / f"{i:05d}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(p, quality=85)
        paths.append(p)
    return paths


def _register_projection_backbone() -> None:
    import torch
    from PIL import Image

    from tacluster.embed.backbones import register_backbone
    from tacluster.embed.backbones.base import Backbone, NounBank

    class Projection(Backbone):
        name = "memproj"
        outputs = ("image", "joint")

        def __init__(self):
            rng = np.random.default_rng(0)
            self.w = {"image": rng.standard_normal((3 * SIDE * SIDE, D_IMAGE)).astype(np.float32),
                      "joint": rng.standard_normal((3 * SIDE * SIDE, D_JOINT)).astype(np.float32)}

        @property
        def fingerprint(self):
            return "memproj0001"

        def preprocess(self, image):
            small = image.resize((SIDE, SIDE), Image.BILINEAR)
            return torch.from_numpy(np.asarray(small, dtype=np.float32) / 255.0 - 0.5).permute(2, 0, 1)

        def encode_images(self, batch):
            x = batch.reshape(batch.shape[0], -1).numpy()
            out = {}
            for k, w in self.w.items():
                y = x @ w
                out[k] = y / (np.linalg.norm(y, axis=1, keepdims=True) + 1e-12)
            return out

        def noun_bank(self, words, progress=True):
            emb = np.stack([np.random.default_rng(int(hashlib.sha256(w.encode()).hexdigest()[:8], 16))
                            .standard_normal(D_JOINT) for w in words]).astype(np.float32)
            return NounBank(list(words), emb / np.linalg.norm(emb, axis=1, keepdims=True))

    register_backbone("memproj", lambda arg, device="cpu": Projection())


# Pipeline stages whose resident-memory growth is reported separately: the
# function wrapped, and the name it is reported under (in call order).
STAGES = [("tacluster.embed.runner", "_resolve_inputs", "list inputs"),
          ("tacluster.embed.runner", "_map_threads", "hash files"),
          ("tacluster.embed.runner", "run_tasks", "decode + embed + cache"),
          ("tacluster.embed.runner", "_assemble", "assemble arrays"),
          ("tacluster.estimator", "TextAidedClustering.fit", "fit (k-means)"),
          ("tacluster.report.layout", "map_coordinates", "2-D map")]


def _current_rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _instrument(marks: list) -> None:
    """Wrap the stage functions so each records the resident memory on return."""
    import importlib

    for module, attr, label in STAGES:
        owner = importlib.import_module(module)
        *parents, name = attr.split(".")
        for p in parents:
            owner = getattr(owner, p)
        fn = getattr(owner, name)

        def wrapped(*a, _fn=fn, _label=label, **k):
            out = _fn(*a, **k)
            marks.append((_label, _current_rss_mb()))
            return out

        setattr(owner, name, wrapped)


def child(list_file: Path, work: Path, vocab: Path, k: int) -> dict:
    """One measurement, in its own process: peak RSS before and after the pipeline,
    and the resident memory after each stage."""
    _register_projection_backbone()
    from tacluster.run.workflows import cluster_images

    import faiss  # noqa: F401  (imported before the baseline, like torch)

    marks: list = []
    _instrument(marks)
    base = peak_rss_mb()
    t0 = time.perf_counter()
    run = cluster_images(list_file, work / "out", k, backbone="memproj", method="kmeans", device="cpu",
                         batch_size=64, cache_dir=work / "cache", vocabulary=str(vocab), progress=False,
                         report=False)
    marks.append(("write outputs", _current_rss_mb()))
    n = len(run.paths)
    arrays_mb = n * (D_IMAGE + D_JOINT) * 4 / 2**20
    stages, prev = {}, base
    for label, rss in marks:  # growth of the resident set during each stage (first call of each)
        stages.setdefault(label, rss - prev)
        prev = rss
    return {"n_images": n, "skipped": len(run.skipped), "seconds": time.perf_counter() - t0,
            "rss_baseline_mb": base, "rss_peak_mb": peak_rss_mb(), "arrays_mb": arrays_mb,
            "stage_growth_mb": stages}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 5000, 10000, 20000])
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--out", type=Path, default=Path("load_memory.json"), help="JSON results")
    ap.add_argument("--child", nargs=4, metavar=("LIST", "WORK", "VOCAB", "K"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        lst, work, vocab, k = args.child
        print(json.dumps(child(Path(lst), Path(work), Path(vocab), int(k))))
        return {}

    from tacluster.nouns.vocabulary import load_wordnet_nouns

    rows, results = [], []
    with tempfile.TemporaryDirectory(prefix="tacluster-mem-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        paths = make_images(tmp / "images", max(args.sizes))
        print(f"made {len(paths)} images in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        vocab = tmp / "nouns.txt"
        vocab.write_text("\n".join(load_wordnet_nouns()[::100]) + "\n")  # 1,178 nouns: a constant
        for n in args.sizes:
            lst = tmp / f"list_{n}.txt"
            lst.write_text("\n".join(str(p) for p in paths[:n]) + "\n")
            work = tmp / f"work_{n}"
            src = str(Path(__file__).resolve().parents[1] / "src")
            res = subprocess.run([sys.executable, __file__, "--child", str(lst), str(work), str(vocab), str(args.k)],
                                 capture_output=True, text=True, check=True,
                                 env={**__import__("os").environ, "PYTHONPATH": src})
            r = json.loads(res.stdout.strip().splitlines()[-1])
            r["growth_mb"] = r["rss_peak_mb"] - r["rss_baseline_mb"]
            results.append(r)
            print(f"{n}: peak {r['rss_peak_mb']:.0f} MiB ({r['seconds']:.0f} s)", file=sys.stderr)
    ns = np.array([r["n_images"] for r in results], dtype=np.float64)
    growth = np.array([r["growth_mb"] for r in results])
    slope_kib = float(np.polyfit(ns, growth, 1)[0] * 1024) if len(ns) > 1 else float("nan")
    for r in results:
        rows.append([r["n_images"], round(r["seconds"], 1), round(r["rss_baseline_mb"], 1),
                     round(r["rss_peak_mb"], 1), round(r["growth_mb"], 1), round(r["arrays_mb"], 2)])
    print(markdown_table(["images", "seconds", "RSS after imports (MiB)", "peak RSS (MiB)",
                          "growth (MiB)", "embedding arrays (MiB)"], rows))
    labels = list(results[0]["stage_growth_mb"])
    per_image = {}
    if len(ns) > 1:  # slope of each stage's growth against the number of images
        for lab in labels:
            g = np.array([r["stage_growth_mb"].get(lab, 0.0) for r in results])
            per_image[lab] = float(np.polyfit(ns, g, 1)[0] * 1024 * 1024)
    print("\nresident growth by stage (MiB), and its slope per image (bytes):\n")
    print(markdown_table(["stage"] + [str(r["n_images"]) for r in results] + ["bytes / image"],
                         [[lab] + [round(r["stage_growth_mb"].get(lab, 0.0), 1) for r in results]
                          + [round(per_image.get(lab, float("nan")))] for lab in labels]))
    print(f"\npeak growth per image: {slope_kib:.2f} KiB (the embedding rows are "
          f"{(D_IMAGE + D_JOINT) * 4 / 1024:.2f} KiB; the rest is paths, cache index, outputs, k-means)")
    payload = {"backbone": "memproj: fixed random projection of a 16x16 downsample (test backbone, not lite)",
               "results": results, "growth_kib_per_image": slope_kib,
               "stage_bytes_per_image": per_image, "environment": environment()}
    write_json(args.out, payload)
    print(f"results: {args.out}")
    return payload


if __name__ == "__main__":
    main()
