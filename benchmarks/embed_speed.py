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
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="tacluster-bench-") as tmp:
        tmp = Path(tmp)
        images = args.images or extract_cifar(args.n_images, tmp / "images")
        paths = list_inputs(images).paths
        if not paths:
            sys.exit(f"no images found in {images}")
        name = args.backbone
        if args.random_real_size:
            from tacluster.testing import save_random_real_size_model

            name = f"hf:{save_random_real_size_model(args.random_real_size, tmp / 'model')}"
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


if __name__ == "__main__":
    main()
