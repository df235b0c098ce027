"""One prepared GPU check (issue 27): the three numbers a GPU user waits on, in one command.

    python benchmarks/gpu_check.py --out gpu_check.json            # on the GPU machine: < 8 min
    python benchmarks/gpu_check.py --tiny --device cpu --out x.json # the suite's check of this script

No network, no real weights: a random real-size CLIP ViT-B/32 (``transformers``
defaults; CLIP's real tokenizer from ``--bpe`` where it is, else a generated
word-level one, which only changes the prompt lengths) built in a temporary
folder. Measured on ``--device`` (default: ``cuda`` where there is one):

1. **Image embedding**: the whole path (``tacluster.embed.embed_images`` on
   ``--images`` JPEG files of 256 px written to a temporary folder: decode,
   preprocess, batch, forward, cache) against the bare forward on
   preprocessed tensors of the same batch size; images/s each.
2. **Noun bank**: ``--words`` nouns x 7 templates through ``noun_bank``
   (the exact fast text path); prompts/s and the projected time for the
   117,798 WordNet nouns.
3. **TAC at ImageNet size**: ``TextAidedClustering(K, "tac")`` on ``--n``
   random unit rows of 512 dims (default 1,281,167 x 512, K = 1,000) with a
   117,798-noun random bank, the large-N path; seconds per fit stage
   (``timings_``) and the peak GPU memory.

Prints a table and writes JSON. The tiny mode (``--tiny``: a 2-layer CLIP, 32
images, 64 words, 3,000 x 512 with K = 10) runs on a CPU in seconds; its
numbers measure nothing but that the script works.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import environment, markdown_table, write_json  # noqa: E402

BPE = Path(__file__).resolve().parents[2] / "shared" / "models" / "clip-bpe"
N_NOUNS = 117_798


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _model(tmp: Path, tiny: bool, bpe: Path) -> Path:
    from tacluster.testing import save_random_real_size_model, save_tiny_hf_clip

    if tiny:
        return save_tiny_hf_clip(tmp / "clip")
    return save_random_real_size_model("clip", tmp / "clip", seed=0, bpe=bpe if (bpe / "vocab.json").is_file() else None)


def image_embedding(bb, device: str, n_images: int, batch: int, tmp: Path) -> dict:
    """Whole-path images/s (files -> cache) against the bare forward on preprocessed tensors."""
    import torch
    from PIL import Image

    from tacluster.embed import embed_images

    rng = np.random.default_rng(0)
    folder = tmp / "images"
    folder.mkdir()
    for i in range(n_images):
        Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(folder / f"{i:05d}.jpg")
    warm = min(batch, n_images)
    pixels = torch.stack([bb.preprocess(Image.open(folder / f"{i:05d}.jpg").convert("RGB")) for i in range(warm)])
    bb.encode_images(pixels)  # warm-up (kernels, allocator)
    _sync(device)
    tic = time.perf_counter()
    reps = max(1, n_images // warm)
    for _ in range(reps):
        bb.encode_images(pixels)
    _sync(device)
    bare = reps * warm / (time.perf_counter() - tic)
    tic = time.perf_counter()
    emb = embed_images(str(folder), bb, cache_dir=tmp / "cache", batch_size=batch, progress=False)
    _sync(device)
    whole = len(emb.paths) / (time.perf_counter() - tic)
    return {"images": n_images, "batch_size": batch, "bare_forward_images_per_s": round(bare, 1),
            "whole_path_images_per_s": round(whole, 1), "whole_over_bare": round(whole / bare, 3)}


def noun_bank(bb, device: str, n_words: int) -> dict:
    """Prompts/s of the noun bank (7 templates per noun) and the projected full-vocabulary time."""
    words = [f"thing number {i}" for i in range(n_words)]
    try:
        from tacluster.nouns.vocabulary import load_wordnet_nouns

        words = load_wordnet_nouns()[:n_words]
    except ImportError:
        pass
    bb.noun_bank(words[:8], progress=False)  # warm-up
    _sync(device)
    tic = time.perf_counter()
    bank = bb.noun_bank(words, progress=False)
    _sync(device)
    secs = time.perf_counter() - tic
    prompts = len(bank.words) * 7
    rate = prompts / secs
    return {"nouns": len(bank.words), "prompts": prompts, "prompts_per_s": round(rate, 1),
            "full_vocabulary_projected_s": round(N_NOUNS * 7 / rate, 1)}


def tac_large(device: str, n: int, k: int, n_nouns: int, seed: int = 0) -> dict:
    """TAC on ``n`` random 512-d rows with K = ``k`` and a random ``n_nouns`` bank: seconds per stage."""
    import torch

    from tacluster.estimator import TextAidedClustering

    rng = np.random.default_rng(seed)
    dim = 512
    centres = rng.standard_normal((k, dim)).astype(np.float32)
    u = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 65_536):  # blocks: no second (n, 512) float64 array
        rows = slice(start, min(n, start + 65_536))
        block = centres[rng.integers(0, k, rows.stop - rows.start)]
        block += 0.8 * rng.standard_normal(block.shape, dtype=np.float32)
        u[rows] = block / np.linalg.norm(block, axis=1, keepdims=True)
    bank = rng.standard_normal((n_nouns, dim)).astype(np.float32)
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    words = [f"noun {i}" for i in range(n_nouns)]
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    tic = time.perf_counter()
    est = TextAidedClustering(k, "tac", device=device, random_state=seed).fit(u, noun_embeddings=bank, nouns=words)
    _sync(device)
    total = time.perf_counter() - tic
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    return {"n": n, "dim": dim, "k": k, "nouns": n_nouns, "large_scale": bool(est.large_scale_),
            "clusters_found": int(len(np.unique(est.labels_))), "fit_s": round(total, 1),
            "stages_s": {name: round(float(v), 2) for name, v in est.timings_.items()},
            "peak_gpu_memory_gib": None if peak is None else round(peak, 2)}


def main(argv=None) -> dict:
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes on any device: checks the script only")
    ap.add_argument("--images", type=int, default=None, help="images to embed (default 2,048; tiny 32)")
    ap.add_argument("--words", type=int, default=None, help="nouns of the bank timing (default 4,096; tiny 64)")
    ap.add_argument("--n", type=int, default=None, help="rows of the TAC timing (default 1,281,167; tiny 3,000)")
    ap.add_argument("--k", type=int, default=None, help="clusters of the TAC timing (default 1,000; tiny 10)")
    ap.add_argument("--batch-size", type=int, default=None, help="images per forward (default 256; tiny 8)")
    ap.add_argument("--bpe", type=Path, default=BPE, help="folder with CLIP's vocab.json and merges.txt")
    ap.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    args = ap.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA GPU here; pass --device cpu (with --tiny)")
    tiny = args.tiny
    n_images = args.images or (32 if tiny else 2048)
    n_words = args.words or (64 if tiny else 4096)
    n = args.n or (3000 if tiny else 1_281_167)
    k = args.k or (10 if tiny else 1000)
    batch = args.batch_size or (8 if tiny else 256)

    from tacluster.embed.backbones import load_backbone

    result: dict = {"device": args.device, "tiny": tiny, **environment()}
    if args.device.startswith("cuda"):
        result["gpu"] = torch.cuda.get_device_name(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bb = load_backbone(f"hf:{_model(tmp, tiny, args.bpe)}", device=args.device)
        result["image_embedding"] = image_embedding(bb, args.device, n_images, batch, tmp)
        print(f"image embedding: {result['image_embedding']}", file=sys.stderr, flush=True)
        result["noun_bank"] = noun_bank(bb, args.device, n_words)
        print(f"noun bank: {result['noun_bank']}", file=sys.stderr, flush=True)
        del bb
    result["tac"] = tac_large(args.device, n, k, 500 if tiny else N_NOUNS)
    print(f"tac: {result['tac']}", file=sys.stderr, flush=True)
    ie, nb, tac = result["image_embedding"], result["noun_bank"], result["tac"]
    table = markdown_table(["measure", "value"], [
        ["image embedding, bare forward", f"{ie['bare_forward_images_per_s']} images/s (batch {ie['batch_size']})"],
        ["image embedding, whole path (files -> cache)", f"{ie['whole_path_images_per_s']} images/s "
                                                         f"({ie['whole_over_bare']:.0%} of the bare forward)"],
        ["noun bank", f"{nb['prompts_per_s']} prompts/s; {N_NOUNS:,} nouns x 7 in "
                      f"{nb['full_vocabulary_projected_s'] / 60:.1f} min (projected)"],
        [f"TAC {tac['n']:,} x {tac['dim']}, K = {tac['k']}", f"{tac['fit_s']} s; peak GPU memory "
                                                           f"{tac['peak_gpu_memory_gib']} GiB"],
        *[[f"  stage {name}", f"{secs} s"] for name, secs in tac["stages_s"].items()],
    ])
    print(table)
    result["table"] = table
    write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
