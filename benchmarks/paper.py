"""The TAC paper's protocol on its data sets, from local copies or torchvision's downloads.

    python benchmarks/paper.py --dataset cifar10 --root /data/cifar10 --download \\
        --backbone clip --device cuda

``--download`` fetches CIFAR-10, CIFAR-100 (for CIFAR-20) and STL-10 into
--root with torchvision (``download=True``; needs torchvision); the other data
sets have no public direct download and are read from local copies. The
default backbone ``clip`` (OpenAI CLIP ViT-B/32, the paper's) is fetched into
the Hugging Face cache on first use.

Fits on the train split (embeddings, semantic centres, noun selection,
neighbours and heads: all on train), predicts the test split, and reports ACC /
NMI / ARI (percent) on test, for k-means on the image embeddings, TAC (no
train) and TAC, with the paper's numbers beside them. Settings per data set
follow the paper (``../shared/docs/METHOD.md``).

Expected layouts under --root (a clear error names the missing one):

* ``cifar10``: ``cifar-10-batches-py/`` (torchvision's CIFAR10 python files),
  or ImageFolder ``train/<class>/*`` and ``test/<class>/*``.
* ``cifar20``: ``cifar-100-python/`` (train/test with ``coarse_labels``), or ImageFolder.
* ``stl10``: ``stl10_binary/`` (train_X.bin, train_y.bin, test_X.bin, test_y.bin), or ImageFolder.
* ``imagenet10``, ``imagenet-dogs``, ``dtd``, ``ucf101``, ``imagenet1k``, ``folder``:
  ImageFolder ``train/<class>/*`` and ``test/<class>/*`` (``val/`` is accepted
  for ``test/``); UCF-101 as middle frames, one image per video.

Array data sets (CIFAR pickles, STL binaries) are written once as PNG files
under ``--work`` so they go through the same cached embedding path as folders.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import environment, markdown_table, peak_rss_mb, write_json  # noqa: E402


@dataclass(frozen=True)
class PaperSetting:
    k: int
    n_centres: int | None  # None: tacluster's default rule
    n_epochs: int = 20
    batch_size: int = 512
    temperature: float = 0.5
    paper: tuple[float | None, float | None, float | None] = (None, None, None)  # TAC ACC, NMI, ARI


SETTINGS: dict[str, PaperSetting] = {
    "cifar10": PaperSetting(10, 167, paper=(91.9, 83.3, 83.1)),
    "cifar20": PaperSetting(20, 167, paper=(60.7, 61.1, 44.8)),
    "stl10": PaperSetting(10, 17, paper=(98.2, None, None)),
    "imagenet10": PaperSetting(10, 43, paper=(99.2, 98.5, 98.3)),
    "imagenet-dogs": PaperSetting(15, 65, paper=(83.0, 80.6, None)),
    "dtd": PaperSetting(47, 141, paper=(50.1, 62.1, 34.4)),
    "ucf101": PaperSetting(101, 303, n_epochs=100, batch_size=8192, temperature=5.0, paper=(68.0, 82.3, None)),
    "imagenet1k": PaperSetting(1000, 4271, n_epochs=100, batch_size=8192, temperature=5.0, paper=(58.2, 79.9, 43.5)),
    "folder": PaperSetting(0, None),
}

# CIFAR-100 fine label -> one of the 20 superclasses (the standard coarse labels
# are read from the files when present; this is only a consistency check).


class LayoutError(SystemExit):
    pass


def _image_folder_split(root: Path, split: str) -> tuple[list[str], list[str]] | None:
    names = [split] + (["val"] if split == "test" else [])
    for name in names:
        d = root / name
        if d.is_dir():
            from tacluster.embed import list_inputs

            found = list_inputs(d)
            return found.paths, [Path(p).parent.name for p in found.paths]
    return None


def _write_pngs(images: np.ndarray, labels: np.ndarray, dest: Path) -> tuple[list[str], list[str]]:
    from PIL import Image

    paths = []
    for i, (img, y) in enumerate(zip(images, labels)):
        p = dest / str(int(y)) / f"{i:06d}.png"
        if not p.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(p)
        paths.append(str(p))
    return paths, [str(int(y)) for y in labels]


def _cifar(root: Path, work: Path, split: str, coarse: bool):
    folder = root / ("cifar-100-python" if coarse else "cifar-10-batches-py")
    if not folder.is_dir():
        return None
    files = (["train"] if split == "train" else ["test"]) if coarse else (
        [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"])
    xs, ys = [], []
    for f in files:
        # The CIFAR python files are pickles by design; read them only from the
        # local root the user named.
        with open(folder / f, "rb") as fh:
            d = pickle.load(fh, encoding="latin1")
        xs.append(np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        ys.append(np.asarray(d["coarse_labels" if coarse else "labels"]))
    return _write_pngs(np.concatenate(xs), np.concatenate(ys), work / folder.name / split)


def _stl10(root: Path, work: Path, split: str):
    folder = root / "stl10_binary"
    if not folder.is_dir():
        return None
    x = np.fromfile(folder / f"{split}_X.bin", dtype=np.uint8).reshape(-1, 3, 96, 96).transpose(0, 3, 2, 1)
    y = np.fromfile(folder / f"{split}_y.bin", dtype=np.uint8).astype(np.int64) - 1
    return _write_pngs(x, y, work / "stl10" / split)


#: torchvision classes that download each array data set into --root.
DOWNLOADS = {"cifar10": "CIFAR10", "cifar20": "CIFAR100", "stl10": "STL10"}


def download(dataset: str, root: Path) -> None:
    """Fetch ``dataset`` into ``root`` with torchvision (both splits); one-line LayoutError on failure."""
    if dataset not in DOWNLOADS:
        raise LayoutError(
            f"{dataset}: no public direct download; put train/<class>/ and test/<class>/ under {root}"
        )
    name = DOWNLOADS[dataset]
    prefetch = (f"on a machine with network run `python -c \"import torchvision; "
                f"torchvision.datasets.{name}('{root}', download=True)\"` and copy {root} here")
    try:
        import torchvision.datasets as tvd
    except ImportError as exc:
        raise LayoutError(f"--download needs torchvision ({exc}); or {prefetch}") from exc
    cls = getattr(tvd, name)
    try:
        if dataset == "stl10":
            for split in ("train", "test"):
                cls(str(root), split=split, download=True)
        else:
            for train in (True, False):
                cls(str(root), train=train, download=True)
    except (OSError, RuntimeError, ValueError) as exc:  # URLError is an OSError
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise LayoutError(f"{dataset}: cannot download {name} into {root} ({reason}); {prefetch}") from exc


def load_split(dataset: str, root: Path, work: Path, split: str) -> tuple[list[str], list[str]]:
    """(paths, labels) of one split; raises LayoutError naming the expected layout."""
    got = None
    if dataset in ("cifar10", "cifar20"):
        got = _cifar(root, work, split, coarse=dataset == "cifar20")
    elif dataset == "stl10":
        got = _stl10(root, work, split)
    if got is None:
        got = _image_folder_split(root, split)
    if got is None or not got[0]:
        raise LayoutError(
            f"{dataset}: no {split} split under {root}. Expected "
            + {"cifar10": "cifar-10-batches-py/ or train/<class>/, test/<class>/",
               "cifar20": "cifar-100-python/ or train/<class>/, test/<class>/",
               "stl10": "stl10_binary/ or train/<class>/, test/<class>/"}.get(
                dataset, "train/<class>/*.jpg and test/<class>/*.jpg (or val/)")
        )
    return got


def run(args) -> dict:
    from tacluster import TextAidedClustering
    from tacluster.embed.backbones import load_backbone
    from tacluster.embed import embed_images
    from tacluster.evaluate.metrics import evaluate_clustering
    from tacluster.nouns.bank import cached_noun_bank
    from tacluster.nouns.vocabulary import load_vocabulary

    setting = SETTINGS[args.dataset]
    root, work = Path(args.root), Path(args.work)
    timings = {}
    t = time.perf_counter()
    if args.download:
        download(args.dataset, root)
    train_paths, train_y = load_split(args.dataset, root, work, "train")
    test_paths, test_y = load_split(args.dataset, root, work, "test")
    k = args.k or setting.k or len(set(train_y))
    timings["list"] = time.perf_counter() - t

    bb = load_backbone(args.backbone, device=args.device, offline=args.offline or None)
    t = time.perf_counter()
    tr = embed_images(train_paths, bb, cache_dir=args.cache_dir, batch_size=args.batch_size, progress=not args.quiet)
    te = embed_images(test_paths, bb, cache_dir=args.cache_dir, batch_size=args.batch_size, progress=not args.quiet)
    timings["embed"] = time.perf_counter() - t
    label_of = dict(zip(train_paths, train_y)) | dict(zip(test_paths, test_y))
    y_te = [label_of[p] for p in te.paths]
    t = time.perf_counter()
    bank = cached_noun_bank(bb, load_vocabulary(args.vocabulary), cache_dir=args.cache_dir, progress=not args.quiet)
    timings["noun_bank"] = time.perf_counter() - t

    common = dict(n_centres=args.n_centres or setting.n_centres, n_epochs=args.epochs or setting.n_epochs,
                  batch_size=setting.batch_size, temperature=setting.temperature, device=args.device)
    rows, results = [], {}
    for method in ("kmeans", "no-train", "tac"):
        scores = []
        for seed in range(args.seeds):
            est = TextAidedClustering(k, method, random_state=seed, **common)
            t = time.perf_counter()
            est.fit(tr.arrays["image"], noun_embeddings=bank.embeddings, nouns=bank.words, joint_embeddings=tr.arrays.get("joint"))
            fit_s = time.perf_counter() - t
            pred = est.predict(te.arrays["image"], joint_embeddings=te.arrays.get("joint"))
            scores.append({**evaluate_clustering(y_te, pred), "fit_s": fit_s})
        results[method] = scores
        mean = {m: float(np.mean([s[m] for s in scores])) for m in ("acc", "nmi", "ari", "fit_s")}
        std = {m: float(np.std([s[m] for s in scores])) for m in ("acc", "nmi", "ari")}
        paper = setting.paper if method == "tac" else (None, None, None)
        cell = lambda m, i: f"{mean[m]:.1f} ± {std[m]:.1f}" + (f" (paper {paper[i]})" if paper[i] is not None else "")
        rows.append([method, cell("acc", 0), cell("nmi", 1), cell("ari", 2), round(mean["fit_s"], 1)])
    table = markdown_table(["method", "ACC", "NMI", "ARI", "fit s"], rows)
    print(f"{args.dataset}: train {len(tr.paths)}, test {len(te.paths)}, K={k}, backbone {args.backbone}, "
          f"{args.seeds} seed(s)")
    print(table)
    payload = {"args": vars(args), "k": k, "n_train": len(tr.paths), "n_test": len(te.paths),
               "results": results, "timings_s": timings, "peak_rss_mib": peak_rss_mb(),
               "environment": environment(), "table": table}
    if args.out:
        print(f"wrote {write_json(args.out, payload)}")
    return payload


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True, choices=sorted(SETTINGS))
    ap.add_argument("--root", required=True, help="local data root (see the layouts above)")
    ap.add_argument("--backbone", default="clip",
                    help="backbone name (default clip: OpenAI CLIP ViT-B/32, the paper's; fetched on first use)")
    ap.add_argument("--download", action="store_true",
                    help="fetch CIFAR-10/100 or STL-10 into --root with torchvision first")
    ap.add_argument("--work", default=str(Path.home() / ".cache" / "tacluster" / "paper"),
                    help="where array data sets are written as PNGs")
    ap.add_argument("--cache-dir", default=None, help="embedding / noun-bank cache")
    ap.add_argument("--vocabulary", default=None, help="noun file (default WordNet)")
    ap.add_argument("--k", type=int, default=None, help="override K (default: the paper's)")
    ap.add_argument("--n-centres", type=int, default=None, help="override L")
    ap.add_argument("--epochs", type=int, default=None, help="override the training epochs")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128, help="embedding batch size")
    ap.add_argument("--device", default="auto", choices=["cpu", "cuda", "auto"])
    ap.add_argument("--out", default=None, help="JSON results file")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--offline", action="store_true", help="never download the backbone (caches only)")
    args = ap.parse_args(argv)
    from tacluster.errors import TaclusterError

    try:
        return run(args)
    except TaclusterError as exc:
        raise SystemExit(f"paper.py: error: {exc}") from None


if __name__ == "__main__":
    main()
