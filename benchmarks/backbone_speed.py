"""CPU (or GPU) speed of the short-name backbones, with random weights of the real size.

No weights are downloaded: each model's architecture (``tacluster.testing.
real_size_config``) is built with random weights, which run exactly as fast
as the trained ones. Reports images/s of the bare image forward (224 px,
preprocessed beforehand) and prompts/s of the text forward at the prompt
length the model sees (CLIP: the longest of TAC's 7 templates, ~12 BPE
tokens; SigLIP: always its full 64), and the noun-bank time for the 117,798
WordNet nouns (7 prompts each) that follows from it.

Usage::

    python benchmarks/backbone_speed.py                       # all four, CPU
    python benchmarks/backbone_speed.py --models clip --device cuda --out speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from tacluster.embed.backbones import load_backbone
from tacluster.testing import save_random_real_size_model

N_NOUNS = 117_798
PROMPT_TOKENS = {"clip": 12, "clip-l": 12, "siglip": 64, "siglip2": 64}


def _timed(fn, repeats: int) -> float:
    fn()  # warm-up: kernels and allocator
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeats


def measure(short: str, device: str, image_batch: int, text_batch: int, repeats: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="tacluster-speed-") as tmp:
        b = load_backbone(f"hf:{save_random_real_size_model(short, Path(tmp) / short)}", device=device)
        model = b._model
        params = sum(p.numel() for p in model.parameters())
        images = torch.randn(image_batch, 3, 224, 224)
        img_s = _timed(lambda: b.encode_images(images), repeats)
        vocab = model.config.text_config.vocab_size
        ids = torch.randint(3, min(vocab, 1000), (text_batch, PROMPT_TOKENS[short]), device=b._device)
        with torch.inference_mode():
            txt_s = _timed(lambda: model.get_text_features(input_ids=ids), repeats)
    prompts_per_s = text_batch / txt_s
    return {
        "model": short, "params_m": round(params / 1e6, 1), "device": device,
        "images_per_s": image_batch / img_s, "prompts_per_s": prompts_per_s,
        "noun_bank_minutes": N_NOUNS * 7 / prompts_per_s / 60,
    }


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["clip", "siglip", "siglip2", "clip-l"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--image-batch", type=int, default=32)
    ap.add_argument("--text-batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args(argv)
    rows = [measure(m, args.device, args.image_batch, args.text_batch, args.repeats) for m in args.models]
    print(f"\n{args.device}, {torch.get_num_threads()} torch threads, {os.cpu_count()} cores")
    print(f"{'model':<9}{'params':>9}{'images/s':>10}{'prompts/s':>11}{'noun bank':>11}")
    for r in rows:
        print(f"{r['model']:<9}{r['params_m']:>8.0f}M{r['images_per_s']:>10.1f}{r['prompts_per_s']:>11.0f}"
              f"{r['noun_bank_minutes']:>9.0f} min")
    if args.out:
        meta = {"torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                "machine": platform.processor() or platform.machine(), "load_avg": os.getloadavg()}
        args.out.write_text(json.dumps({"rows": rows, **meta}, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
