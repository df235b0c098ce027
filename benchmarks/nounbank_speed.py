"""Noun-bank build time: the exact and fast text paths of a real-size CLIP, and the
tacluster pipeline's first build vs cached.

``--model clip`` (the comparison): a random real-size ViT-B/32 (``transformers``
defaults) with CLIP's real BPE tokenizer (``--bpe``, default
``../shared/models/clip-bpe``), so every prompt has its true 8-12 tokens. Each
variant builds the bank of the same real nouns through ``noun_bank`` (7
templates, averaged), in ``--rounds`` rounds of ``--words`` nouns each, the
variants interleaved (the order turns every round), with the load average
beside every time:

* ``plain``: the model's own forward (today's path, the reference);
* ``prefix``: the exact fast path (:mod:`tacluster.embed.backbones.text_prefix`);
* ``+bf16``: the same under bfloat16 autocast; ``+int8``: its Linear layers
  dynamically quantised (``torch.ao.quantization.quantize_dynamic``);
* ``@1`` / ``@2``: torch intra-op threads.

Agreement is the cosine of every bank vector to the plain float32 one (min and
max distance); the projected time is for 117,798 nouns x 7 templates. With
``--images N`` the image tower is measured the same way (float32, bf16, int8;
images/s and min cosine to float32), on random 224-px pixels.

``--model tiny`` (the default): a tiny random HF CLIP (2 layers, width 32),
whose numbers measure tacluster's pipeline (tokenising, batching, template
averaging, cache I/O) and not a text tower.

    PYTHONPATH=src python benchmarks/nounbank_speed.py --out /tmp/nounbank_speed.json
    PYTHONPATH=src python benchmarks/nounbank_speed.py --model clip --words 200 --rounds 3 \
        --images 16 --out /tmp/nounbank_clip.json
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import environment, write_json  # noqa: E402
from tacluster.testing import save_tiny_hf_clip  # noqa: E402


def _words(n: int | None) -> tuple[list[str], str]:
    try:
        from tacluster.nouns.vocabulary import load_wordnet_nouns

        words, source = load_wordnet_nouns(), "wordnet"
    except ImportError:
        words, source = [f"noun number {i}" for i in range(117_798)], "generated"
    if n is not None:
        words = words[:n]
    return words, source


N_NOUNS = 117_798
BPE = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "clip-bpe"


def _load() -> float:
    return round(os.getloadavg()[0], 1)


def _int8(module):
    """A copy of ``module`` with its Linear layers dynamically quantised to int8 (CPU)."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notices
        return torch.ao.quantization.quantize_dynamic(module, {torch.nn.Linear}, dtype=torch.qint8)


def _variants(backbone, threads: int) -> dict:
    """name -> (backbone to run, context factory, torch threads)."""
    import torch

    quantised = copy.copy(backbone)  # shares tokenizer and processor; its own model and fast path
    quantised._model, quantised._tower = _int8(backbone._model), None
    bf16 = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    plain = copy.copy(backbone)
    plain.prefix_reuse, plain._tower = False, None
    none = contextlib.nullcontext
    return {
        f"plain @{threads}": (plain, none, threads),  # the reference: first
        "plain @1": (plain, none, 1),
        f"prefix @{threads}": (backbone, none, threads),
        "prefix @1": (backbone, none, 1),
        f"prefix+bf16 @{threads}": (backbone, bf16, threads),
        f"prefix+int8 @{threads}": (quantised, none, threads),
    }


def _interleaved(variants: dict, rounds: int, run) -> dict:
    """``run(backbone, round)`` for every variant in every round, the order turning
    each round, after one untimed ``run(backbone, None)`` each; returns name -> list
    of (output, seconds, load average)."""
    import torch

    names = list(variants)
    out: dict = {n: [] for n in names}
    for name in names:  # warm-up (kernels, allocator, the fast path's prefixes), not timed
        bb, ctx, threads = variants[name]
        torch.set_num_threads(threads)
        with ctx():
            run(bb, None)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            bb, ctx, threads = variants[name]
            torch.set_num_threads(threads)
            with ctx():
                t0 = time.perf_counter()
                value = run(bb, r)
                out[name].append((value, time.perf_counter() - t0, _load()))
    return out


def _agreement(ref: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    cos = (np.asarray(ref, np.float64) * np.asarray(other, np.float64)).sum(axis=1)
    return float(cos.min()), float((1 - cos).max())


def _rows(results: dict, ref: str, n_items: int) -> list[dict]:
    rows = []
    base = None
    for name, runs in results.items():
        rate = float(np.median([n_items / t for _, t, _ in runs]))
        base = base or rate
        cos = [_agreement(a, b) for (a, _, _), (b, _, _) in zip(results[ref], runs)]
        rows.append({"variant": name, "per_s": round(rate, 1), "speedup": round(rate / base, 2),
                     "seconds": [round(t, 2) for _, t, _ in runs], "load": [ld for _, _, ld in runs],
                     "min_cosine": round(min(c for c, _ in cos), 6),
                     "max_cosine_distance": float(f"{max(d for _, d in cos):.3g}")})
    return rows


def _print(title: str, unit: str, rows: list[dict], extra=None) -> None:
    print(f"\n{title}")
    head = f"{'variant':<20}{unit:>11}{'speed-up':>9}{'min cos':>10}{'max dist':>10}"
    print(head + ("  full bank" if extra else "") + "  seconds (load avg)")
    for r in rows:
        times = ", ".join(f"{t:.1f} ({ld:.1f})" for t, ld in zip(r["seconds"], r["load"]))
        more = f"  {extra(r):>9}" if extra else ""
        print(f"{r['variant']:<20}{r['per_s']:>11,.1f}{r['speedup']:>8.2f}x{r['min_cosine']:>10.5f}"
              f"{r['max_cosine_distance']:>10.1e}{more}  {times}")


def compare(args) -> dict:
    """The real-size comparison (``--model clip``): text variants, then image tower precision."""
    import torch

    from tacluster.embed.backbones import load_backbone
    from tacluster.nouns.bank import PROMPT_TEMPLATES, embed_with_templates
    from tacluster.testing import save_random_real_size_model

    if not (args.bpe / "vocab.json").is_file():
        raise SystemExit(f"{args.bpe} has no vocab.json: pass --bpe with CLIP's vocab.json and merges.txt")
    words, source = _words(None)
    order = np.random.default_rng(args.seed).permutation(len(words))
    slices = [[words[i] for i in order[r * args.words:(r + 1) * args.words]] for r in range(args.rounds)]
    warm = [words[i] for i in order[-8:]]
    threads = args.threads or torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_random_real_size_model("clip", Path(tmp) / "clip", seed=args.seed, bpe=args.bpe)
        backbone = load_backbone(f"hf:{folder}")
        backbone.text_batch_size = args.batch_size
        variants = every = _variants(backbone, threads)
        if args.variants:
            unknown = set(args.variants) - set(variants)
            if unknown:
                raise SystemExit(f"unknown --variants {sorted(unknown)}; known: {list(variants)}")
            variants = {k: v for k, v in variants.items() if k in args.variants}

        def bank(bb, words):  # CLIPBackbone.noun_bank without its busy-machine thread rule
            return embed_with_templates(bb.encode_text, words, PROMPT_TEMPLATES, args.batch_size, progress=False)

        text = _interleaved(variants, args.rounds,
                            lambda bb, r: bank(bb, slices[r] if r is not None else warm))
        text_rows = _rows(text, next(iter(variants)), args.words * 7)
        for row in text_rows:
            row["full_bank_h"] = round(N_NOUNS * 7 / row["per_s"] / 3600, 2)
        image_rows = []
        if args.images:
            pixels = torch.randn(args.images, 3, 224, 224, generator=torch.Generator().manual_seed(args.seed))
            images = {k: every[k] for k in (f"plain @{threads}", f"prefix+bf16 @{threads}",
                                                f"prefix+int8 @{threads}")}
            images = dict(zip(("float32", "bf16", "int8"), images.values()))
            image = _interleaved(images, args.rounds,
                                 lambda bb, r: bb.encode_images(pixels if r is not None else pixels[:1])["image"])
            image_rows = _rows(image, "float32", args.images)
    prompts = args.words * 7
    _print(f"noun bank, random real-size ViT-B/32 text tower, real BPE: {args.rounds} rounds x "
           f"{args.words} nouns ({prompts:,} prompts) of {len(words):,} {source} nouns",
           "prompts/s", text_rows, extra=lambda r: f"{r['full_bank_h']:.2f} h")
    if image_rows:
        _print(f"image tower, {args.images} images of 224 px", "images/s", image_rows)
    result = {"model": "random real-size ViT-B/32 (transformers CLIPConfig defaults), CLIP BPE tokenizer",
              "words_per_round": args.words, "rounds": args.rounds, "templates": 7, "word_source": source,
              "batch_size_words": args.batch_size, "full_vocabulary_prompts": N_NOUNS * 7,
              "text": text_rows, "images": args.images, "image": image_rows, **environment()}
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("nounbank_speed.json"), help="JSON result file")
    parser.add_argument("--model", choices=("tiny", "clip"), default="tiny",
                        help="tiny: the pipeline on a tiny CLIP; clip: the text paths of a random real-size ViT-B/32")
    parser.add_argument("--words", type=int, default=None,
                        help="tiny: the first N words (default: all); clip: nouns per round (default 200)")
    parser.add_argument("--rounds", type=int, default=3, help="clip: interleaved rounds (new nouns each round)")
    parser.add_argument("--images", type=int, default=0, help="clip: also time the image tower on N images")
    parser.add_argument("--bpe", type=Path, default=BPE, help="clip: folder with CLIP's vocab.json and merges.txt")
    parser.add_argument("--seed", type=int, default=0, help="clip: weights and noun sample")
    parser.add_argument("--variants", nargs="+", default=None,
                        help="clip: only these text variants (the first is the reference), e.g. 'plain @1' 'prefix @1'")
    parser.add_argument("--batch-size", type=int, default=256, help="words per text-encoder call")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.model == "clip":
        args.words = args.words or 200
        return compare(args)

    import torch

    from tacluster.embed.backbones import load_backbone
    from tacluster.nouns.bank import cached_noun_bank

    if args.threads:
        torch.set_num_threads(args.threads)
    words, source = _words(args.words)
    with tempfile.TemporaryDirectory() as tmp:
        backbone = load_backbone(f"hf:{save_tiny_hf_clip(Path(tmp) / 'model')}")
        backbone.text_batch_size = args.batch_size
        cache = Path(tmp) / "cache"
        t0 = time.perf_counter()
        first = cached_noun_bank(backbone, words, cache_dir=cache)
        t_first = time.perf_counter() - t0
        t0 = time.perf_counter()
        second = cached_noun_bank(backbone, words, cache_dir=cache)
        t_cached = time.perf_counter() - t0
        t0 = time.perf_counter()
        checksum = float(np.asarray(second.embeddings, dtype=np.float64).sum())  # touch every page
        t_read = time.perf_counter() - t0
        cache_bytes = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
        assert np.array_equal(np.asarray(first.embeddings), np.asarray(second.embeddings))

    result = {
        "words": len(words),
        "word_source": source,
        "prompts": len(words) * 7,
        "backbone": "tiny random HF CLIP (2 layers, width 32, projection 16)",
        "batch_size_words": args.batch_size,
        "torch_threads": torch.get_num_threads(),
        "first_build_s": round(t_first, 3),
        "prompts_per_s": round(len(words) * 7 / t_first, 1),
        "cached_s": round(t_cached, 4),
        "read_all_rows_s": round(t_read, 4),
        "speedup": round(t_first / max(t_cached, 1e-9), 1),
        "cache_bytes": cache_bytes,
        "checksum": checksum,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": platform.machine(),
    }
    rows = [
        ("words", f"{result['words']:,} ({source})"),
        ("first build", f"{t_first:.2f} s ({result['prompts_per_s']:,.0f} prompts/s)"),
        ("cached (mmap open)", f"{t_cached * 1000:.1f} ms"),
        ("read all rows", f"{t_read * 1000:.1f} ms"),
        ("speed-up", f"{result['speedup']:,.0f}x"),
        ("cache size", f"{cache_bytes / 2**20:.1f} MiB"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
