"""Labelled embeddings of the shared data sets for the benchmarks (cached).

``labelled_embeddings("../shared/data/cifar10-train.tar.gz", 300)`` extracts the
tarball once (``~/.cache/tacluster/datasets``), takes the first N files of each
class in sorted order, and embeds them with the backbone through tacluster's
embedding cache, so only the first call pays for the embedding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from quality import dataset_root, list_labelled

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CIFAR = SHARED / "cifar10-train.tar.gz"
SCENE = SHARED / "scene15-train.tar.gz"


def labelled_embeddings(data: str | Path, limit_per_class: int | None = None, *, backbone: str = "lite",
                        cache_dir: str | None = None, work: str | Path | None = None) -> dict:
    """``{"image", "joint", "labels", "class_names"}`` for an ImageFolder dir or tarball."""
    from tacluster.embed.backbones import load_backbone
    from tacluster.embed import embed_images
    from tacluster.nouns.bank import default_cache_dir

    work = Path(work) if work else Path.home() / ".cache" / "tacluster" / "datasets"
    root = dataset_root(Path(data), work)
    paths, names = list_labelled(root, limit_per_class)
    emb = embed_images(paths, load_backbone(backbone), cache_dir=cache_dir or default_cache_dir(), progress=True)
    label_of = dict(zip(paths, names))
    classes = sorted(set(names))
    labels = np.array([classes.index(label_of[p]) for p in emb.paths])
    return {"image": emb.arrays["image"], "joint": emb.arrays.get("joint", emb.arrays["image"]),
            "labels": labels, "class_names": np.array(classes)}
