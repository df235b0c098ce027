"""How close does the full embedding path come to the bare model forward?

Measures images/s of :func:`tacluster.embed.embed_images` (listing,
hashing, decoding, preprocessing, forward, cache writes; fresh cache folder)
against the backbone's ``encode_images`` alone on the same batch size over
tensors decoded beforehand. The ratio is the pipeline's efficiency; the
target is >= 0.9. Both decode engines (threads, DataLoader processes) are
timed unless ``--decode-in`` picks one.

Usage::

    python benchmarks/embed_speed.py                       # 512 CIFAR-10 images
    python benchmarks/embed_speed.py --images DIR --batch-size 32 --out speed.json
    python benchmarks/embed_speed.py --random-real-size clip --device cuda   # ViT-B/32, random weights

``--image-precision`` instead compares the image tower's precisions through the
whole path (``embed_images``, fresh cache folders, rounds interleaved in
alternating order): images/s in float32 and int8 (``--image-precision int8``:
the image tower's Linear layers dynamically quantised, tacluster.embed.precision),
the speed-up, min and mean cosine of the int8 vectors to the float32 ones, the
one-time quantisation seconds, what ``auto``'s 8-image probe measures, and the
load average beside every time::

    python benchmarks/embed_speed.py --random-real-size clip --bpe ../shared/models/clip-bpe \
        --image-precision --n-images 128 --batch-size 32 --rounds 2 --out docs/image_precision.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from tacluster.embed import decode_image, embed_images, list_inputs

SHARED = Path(__file__).resolve().parents[2] / "shared"


def extract_cifar(n: int, dest: Path) -> Path:
    """Extract the first ``n`` JPEGs of the shared CIFAR-10 archive to ``dest``."""
    archive = SHARED / "data" / "cifar10-train.tar.gz"
    if not archive.exists():
        sys.exit(f"{archive} not found; pass --images DIR")
    members = []
    with tarfile.open(archive) as tar:
        for m in tar:
            if m.isfile() and m.name.lower().endswith(".jpg"):
                members.append(m)
                if len(members) == n:
                    break
        tar.extractall(dest, members=members, filter="data")
    return dest


def load(name: str, device: str):
    try:
        from tacluster.embed.backbones import load_backbone
    except ImportError:  # registry not written yet: use the lite class directly
        print("note: tacluster.embed.backbones.load_backbone missing; using LiteBackbone directly")
        from tacluster.embed.backbones.lite import LiteBackbone

        return LiteBackbone().to(device)
    return load_backbone(name, device=device)


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (DataLoader workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def prepare_batches(backbone, paths: list[str], batch_size: int) -> list[torch.Tensor]:
    """Decode and preprocess every image up front (not timed)."""
    # Preprocess on pool threads, as embed_images does, so both paths see the
    # same torch threading state (on a loaded 2-core machine the main-thread
    # forward was seen to run faster once torch ops had run on other threads).
    with ThreadPoolExecutor(2) as pool:
        tensors = list(pool.map(lambda p: backbone.preprocess(decode_image(p)), paths))
    batches = [torch.stack(tensors[i : i + batch_size]) for i in range(0, len(tensors), batch_size)]
    # Warm up on a full batch: the first call at a new batch shape builds
    # oneDNN kernels and grows the allocator, which is not forward time.
    backbone.encode_images(batches[0])
    return batches


def bare_forward(backbone, batches: list[torch.Tensor]) -> dict:
    """Images/s of ``encode_images`` alone over already-preprocessed batches."""
    n = sum(len(b) for b in batches)
    t0, c0 = time.perf_counter(), _cpu_seconds()
    for b in batches:
        backbone.encode_images(b)
    wall, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    return {"images_per_s": n / wall, "cpu_s_per_image": cpu / n}


def full_path(backbone, images: Path, cache_dir: Path, args, mode: str) -> dict:
    """Images/s of embed_images with a fresh cache folder."""
    c0 = _cpu_seconds()
    res = embed_images(
        images, backbone, cache_dir=cache_dir, batch_size=args.batch_size,
        num_workers=args.num_workers, progress=False, decode_in=mode,
    )
    cpu = _cpu_seconds() - c0
    if res.stats.n_computed != len(res.paths):
        raise RuntimeError("the cache was not fresh: the benchmark would time cache reads")
    n = len(res.paths)
    return {"images_per_s": n / res.stats.seconds, "cpu_s_per_image": cpu / n}


def _load_avg() -> float:
    return round(os.getloadavg()[0], 2)


def precision_rows(backbone, images: Path, tmp: Path, args) -> dict:
    """float32 vs int8 image embedding through ``embed_images`` (see the module docstring)."""
    from tacluster.embed.precision import PROBE_IMAGES, int8_image_backbone, measure_int8_images
    from tacluster.embed.runner import _probe_pixels

    tic, load = time.perf_counter(), _load_avg()
    quantised = int8_image_backbone(backbone)
    quantise = {"seconds": time.perf_counter() - tic, "load_avg": load}
    pixels = _probe_pixels(list_inputs(images).paths, backbone.preprocess, PROBE_IMAGES)
    load = _load_avg()
    speedup, cosine = measure_int8_images(backbone, quantised, pixels)
    probe = {"images": len(pixels), "speedup": speedup, "min_cosine": cosine, "load_avg": load}
    runs: dict[str, list[dict]] = {"float32": [], "int8": []}
    vectors = {}
    for r in range(args.rounds):
        for name in ("float32", "int8") if r % 2 == 0 else ("int8", "float32"):
            load = _load_avg()
            res = embed_images(images, backbone if name == "float32" else quantised, cache_dir=tmp / f"c-{name}-{r}",
                               batch_size=args.batch_size, num_workers=args.num_workers, progress=False)
            assert res.stats.n_computed == len(res.paths) and res.precision.precision == name
            runs[name].append({"images_per_s": len(res.paths) / res.stats.seconds, "load_avg": load,
                               "load_avg_after": _load_avg()})
            vectors[name] = res.arrays["image"]
    cos = np.sum(vectors["float32"] * vectors["int8"], axis=1)
    ratios = [b["images_per_s"] / a["images_per_s"] for a, b in zip(runs["float32"], runs["int8"])]
    return {"runs": runs, "speedup_per_round": ratios, "speedup_median": statistics.median(ratios),
            "min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()), "quantise": quantise, "probe": probe,
            "n_images": len(vectors["int8"])}


def print_precision(result: dict) -> None:
    """The precision comparison as a table, the load average beside every time."""
    p = result["precision"]
    print(f"\nbackbone {result['backbone']}, {p['n_images']} images, batch {result['batch_size']}, "
          f"{result['num_workers']} decode workers, {result['torch_threads']} torch threads")
    print(f"{'round':<7}{'float32 img/s':>15}{'load':>7}{'int8 img/s':>13}{'load':>7}{'speed-up':>10}")
    for r, (a, b) in enumerate(zip(p["runs"]["float32"], p["runs"]["int8"])):
        print(f"{r:<7}{a['images_per_s']:>15.2f}{a['load_avg']:>7.2f}{b['images_per_s']:>13.2f}"
              f"{b['load_avg']:>7.2f}{b['images_per_s'] / a['images_per_s']:>9.2f}x")
    print(f"median speed-up {p['speedup_median']:.2f}x; int8 vs float32 cosine min {p['min_cosine']:.5f}, "
          f"mean {p['mean_cosine']:.6f}; quantising {p['quantise']['seconds']:.1f} s "
          f"(load {p['quantise']['load_avg']}); auto's probe ({p['probe']['images']} images): "
          f"{p['probe']['speedup']:.2f}x, min cosine {p['probe']['min_cosine']:.5f} (load {p['probe']['load_avg']})")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=Path, help="folder of images (default: CIFAR-10 sample)")
    ap.add_argument("--n-images", type=int, default=512, help="CIFAR-10 images to extract")
    ap.add_argument("--backbone", default="lite")
    ap.add_argument("--random-real-size", choices=["clip", "clip-l", "siglip", "siglip2"], default=None,
                    help="time this short name's full-size architecture with random weights (no download)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--num-workers", type=int, default=2)
    ap.add_argument("--decode-in", choices=["threads", "processes", "both"], default="both")
    ap.add_argument("--rounds", type=int, default=4, help="interleaved measurement rounds")
    ap.add_argument("--image-precision", action="store_true",
                    help="compare float32 and int8 image embedding instead (see the module docstring)")
    ap.add_argument("--bpe", type=Path, default=None,
                    help="with --random-real-size clip: CLIP's real vocab.json + merges.txt (../shared/models/clip-bpe)")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args(argv)
    if args.image_precision:
        return _main_precision(args)

    with tempfile.TemporaryDirectory(prefix="tacluster-bench-") as tmp:
        tmp = Path(tmp)
        images = args.images or extract_cifar(args.n_images, tmp / "images")
        paths = list_inputs(images).paths
        if not paths:
            sys.exit(f"no images found in {images}")
        name = args.backbone
        if args.random_real_size:
            from tacluster.testing import save_random_real_size_model

            name = f"hf:{save_random_real_size_model(args.random_real_size, tmp / 'model', bpe=args.bpe)}"
        backbone = load(name, args.device)
        batches = prepare_batches(backbone, paths, args.batch_size)
        modes = ["threads", "processes"] if args.decode_in == "both" else [args.decode_in]
        # Rounds interleave the measurements, in alternating order, so that
        # load from other processes on a shared machine hits every path alike;
        # the ratio reported is the median of per-round (paired) ratios.
        runs: dict[str, list[dict]] = {"bare": [], **{m: [] for m in modes}}
        for r in range(args.rounds):
            order = ["bare", *modes]
            for what in order if r % 2 == 0 else order[::-1]:
                if what == "bare":
                    runs["bare"].append(bare_forward(backbone, batches))
                else:
                    runs[what].append(full_path(backbone, images, tmp / f"cache-{what}-{r}", args, what))
        del batches

    def med(mode: str, key: str) -> float:
        return statistics.median(x[key] for x in runs[mode])

    bare = med("bare", "images_per_s")
    bare_cpu = med("bare", "cpu_s_per_image")
    rows = [
        {
            "decode_in": mode,
            "images_per_s": med(mode, "images_per_s"),
            "ratio": statistics.median(
                x["images_per_s"] / b["images_per_s"] for x, b in zip(runs[mode], runs["bare"])
            ),
            # CPU seconds per image are far less sensitive to other load on
            # the machine than wall time: bare / full is the share of the
            # full path's CPU that is model forward.
            "cpu_ratio": statistics.median(
                b["cpu_s_per_image"] / x["cpu_s_per_image"] for x, b in zip(runs[mode], runs["bare"])
            ),
            "per_round_images_per_s": [x["images_per_s"] for x in runs[mode]],
        }
        for mode in modes
    ]
    result = {
        "backbone": f"{args.random_real_size} (random weights)" if args.random_real_size else backbone.name,
        "load_avg": os.getloadavg(),
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "n_images": len(paths),
        "images": str(args.images) if args.images else f"cifar10-train sample of {args.n_images}",
        "rounds": args.rounds,
        "bare_forward_images_per_s": bare,
        "bare_forward_per_round": [x["images_per_s"] for x in runs["bare"]],
        "bare_forward_cpu_s_per_image": bare_cpu,
        "full_path": rows,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
    }
    print(f"\nbackbone {backbone.name}, {len(paths)} images, batch {args.batch_size}, "
          f"{args.num_workers} decode workers, {torch.get_num_threads()} torch threads")
    print(f"{'path':<28}{'images/s':>10}{'ratio':>8}{'cpu ratio':>11}")
    print(f"{'bare forward':<28}{bare:>10.2f}{1.0:>8.2f}{1.0:>11.2f}")
    for r in rows:
        flag = "" if r["ratio"] >= 0.9 else "  (below 0.9 target)"
        print(f"{'embed_images, ' + r['decode_in']:<28}{r['images_per_s']:>10.2f}"
              f"{r['ratio']:>8.2f}{r['cpu_ratio']:>11.2f}{flag}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def _main_precision(args) -> dict:
    from tacluster.testing import save_random_real_size_model

    with tempfile.TemporaryDirectory(prefix="tacluster-bench-") as tmp:
        tmp = Path(tmp)
        images = args.images or extract_cifar(args.n_images, tmp / "images")
        name = args.backbone
        if args.random_real_size:
            name = f"hf:{save_random_real_size_model(args.random_real_size, tmp / 'model', bpe=args.bpe)}"
        backbone = load(name, args.device)
        result = {
            "backbone": f"{args.random_real_size} (random weights)" if args.random_real_size else backbone.name,
            "images": str(args.images) if args.images else f"cifar10-train sample of {args.n_images}",
            "batch_size": args.batch_size, "num_workers": args.num_workers, "rounds": args.rounds,
            "precision": precision_rows(backbone, images, tmp, args),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "machine": platform.processor() or platform.machine(),
        }
    print_precision(result)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
