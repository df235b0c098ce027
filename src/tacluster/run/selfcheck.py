"""``tacluster selfcheck``: does a real vision-language backbone work here?

Embeds a small labelled image set (by default the 300 bundled CIFAR-10 images,
``examples/cifar10-mini``, class = parent folder) and checks two things a
working model does and a broken one (wrong weights, wrong preprocessing,
wrong tokenizer) does not:

* zero-shot accuracy with the class names (the prompt-template average of
  each name, nearest to each image): CLIP ViT-B/32 gets about 85-89 % on
  CIFAR-10; below ``min_zero_shot`` (70 %) fails;
* TAC (trained, the paper's method) scores a higher ACC than k-means on the
  image embeddings, same seed.

The model comes from the local cache or the Hub, as for ``tacluster cluster``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tacluster.errors import InputError

#: Zero-shot accuracy (percent) below which the check fails.
MIN_ZERO_SHOT = 70.0


def bundled_images() -> Path:
    """``examples/cifar10-mini`` of the source tree."""
    return Path(__file__).resolve().parents[3] / "examples" / "cifar10-mini"


@dataclass
class SelfCheck:
    """Outcome of :func:`selfcheck` (accuracies in percent)."""

    backbone: str
    n_images: int
    classes: list[str]
    zero_shot_acc: float
    tac_acc: float
    kmeans_acc: float
    min_zero_shot: float
    noun_bank: str
    checks: dict[str, bool] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(self.checks.values())

    def lines(self) -> list[str]:
        """What the command prints."""
        word = {True: "pass", False: "FAIL"}
        return [
            f"selfcheck of {self.backbone}: {self.n_images} images, {len(self.classes)} classes",
            f"  zero-shot accuracy with the class names: {self.zero_shot_acc:.1f} % "
            f"(needs >= {self.min_zero_shot:.0f} %)  {word[self.checks['zero_shot']]}",
            f"  TAC ACC {self.tac_acc:.1f} % vs k-means ACC {self.kmeans_acc:.1f} % "
            f"(TAC must be higher; noun bank: {self.noun_bank})  {word[self.checks['tac_beats_kmeans']]}",
            "PASSED: the backbone works here" if self.passed else
            "FAILED: this backbone does not behave like a trained vision-language model here "
            "(wrong or random weights, preprocessing or tokenizer)",
        ]


def _labelled(root: Path) -> tuple[list[str], list[str]]:
    from tacluster.embed.reader import IMAGE_EXTENSIONS

    paths, names = [], []
    for cls in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(f for f in cls.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
        paths += [str(f) for f in files]
        names += [cls.name] * len(files)
    return paths, names


def selfcheck(
    backbone: str = "clip",
    *,
    images: str | os.PathLike | None = None,
    device: str = "auto",
    batch_size: int = 64,
    cache_dir: str | os.PathLike | None = None,
    offline: bool | None = None,
    vocabulary: str | None = None,
    noun_bank: str = "auto",
    min_zero_shot: float = MIN_ZERO_SHOT,
    seed: int = 0,
    progress: bool = True,
) -> SelfCheck:
    """Run the check (see the module docstring) and return its outcome.

    Parameters
    ----------
    images : folder ``<class>/<image>`` (default :func:`bundled_images`)
    vocabulary, noun_bank : TAC's nouns, as for ``tacluster cluster``
    """
    from tacluster.embed import embed_images
    from tacluster.evaluate.metrics import evaluate_clustering
    from tacluster.nouns.bank import default_cache_dir
    from tacluster.run.workflows import _device_used, _load_backbone_quietly, _make_estimator, _noun_side

    root = Path(images) if images is not None else bundled_images()
    if not root.is_dir():
        raise InputError(f"--images {str(root)!r} is not a folder; give a folder of <class>/<image> files")
    paths, names = _labelled(root)
    classes = sorted(set(names))
    if len(classes) < 2:
        raise InputError(f"{str(root)!r} holds {len(classes)} class folder(s) with images; the check needs >= 2")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    bb = _load_backbone_quietly(backbone, device, offline, progress)
    emb = embed_images(paths, bb, cache_dir=cache, batch_size=batch_size, progress=progress)
    label_of = dict(zip(paths, names))
    y = np.array([classes.index(label_of[p]) for p in emb.paths])
    u = emb.arrays["image"]
    joint = emb.arrays.get("joint", u)

    class_bank = bb.noun_bank(classes, progress=False)
    known = [classes.index(w) for w in class_bank.words]  # a backbone may not know every class name
    zero_shot = np.asarray(known)[np.argmax(joint @ np.asarray(class_bank.embeddings).T, axis=1)]
    zs_acc = 100.0 * float((zero_shot == y).mean())

    k = len(classes)
    nouns = _noun_side(bb, backbone, vocabulary, cache, progress, joint, False, joint is not u, noun_bank,
                       _device_used(device))
    tac = _make_estimator(bb, k, "tac", seed, device, False, None)
    tac.fit(u, noun_embeddings=nouns.bank.embeddings, nouns=nouns.bank.words, joint_embeddings=None if joint is u else joint,
            exact_noun_embeddings=nouns.exact)
    km = _make_estimator(bb, k, "kmeans", seed, device, False, None).fit(u)
    tac_acc = evaluate_clustering(y, tac.labels_)["acc"]
    km_acc = evaluate_clustering(y, km.labels_)["acc"]
    return SelfCheck(bb.name or backbone, len(y), classes, zs_acc, tac_acc, km_acc, min_zero_shot, nouns.mode,
                     checks={"zero_shot": zs_acc >= min_zero_shot, "tac_beats_kmeans": tac_acc > km_acc})
