"""Noun-bank build time for the full WordNet vocabulary: first build vs cached.

Uses a tiny randomly initialised Hugging Face CLIP (2 layers, width 32, built
in a temporary folder, nothing downloaded), so the numbers measure tacluster's
pipeline (tokenising, batching, template averaging, cache I/O), not a real
CLIP's text tower, which costs far more per prompt.

    PYTHONPATH=src python benchmarks/nounbank_speed.py --out /tmp/nounbank_speed.json
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from tacluster.testing import save_tiny_hf_clip


def _words(n: int | None) -> tuple[list[str], str]:
    try:
        from tacluster.nouns.vocabulary import load_wordnet_nouns

        words, source = load_wordnet_nouns(), "wordnet"
    except ImportError:
        words, source = [f"noun number {i}" for i in range(117_798)], "generated"
    if n is not None:
        words = words[:n]
    return words, source


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("nounbank_speed.json"), help="JSON result file")
    parser.add_argument("--words", type=int, default=None, help="use only the first N words (default: all)")
    parser.add_argument("--batch-size", type=int, default=256, help="words per text-encoder call")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args(argv)

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
