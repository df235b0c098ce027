"""benchmarks/paper.py end to end on a tiny fake data set with a tiny random CLIP."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("transformers")
from helpers import save_tiny_hf_clip  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _load_paper():
    spec = importlib.util.spec_from_file_location("paper_bench", REPO / "benchmarks" / "paper.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["paper_bench"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def _fake_folder_dataset(root: Path, classes=("red", "green", "blue"), per_split=(8, 4)) -> None:
    rng = np.random.default_rng(0)
    colours = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
    for split, n in zip(("train", "test"), per_split):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                img = np.clip(np.array(colours[c]) + rng.normal(0, 20, (40, 40, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(root / split / c / f"{i}.png")


def test_paper_protocol_runs_on_a_tiny_folder(tmp_path):
    paper = _load_paper()
    root = tmp_path / "data"
    _fake_folder_dataset(root)
    model = save_tiny_hf_clip(tmp_path / "clip", seed=0)
    vocab = tmp_path / "nouns.txt"
    vocab.write_text("\n".join(["red", "green", "blue", "car", "dog", "tree", "sky", "house"]))
    out = tmp_path / "res.json"
    payload = paper.main([
        "--dataset", "folder", "--root", str(root), "--backbone", f"hf:{model}", "--k", "3",
        "--n-centres", "4", "--epochs", "2", "--seeds", "1", "--cache-dir", str(tmp_path / "cache"),
        "--vocabulary", str(vocab), "--device", "cpu", "--out", str(out), "--quiet",
    ])
    assert payload["n_train"] == 24 and payload["n_test"] == 12 and payload["k"] == 3
    saved = json.loads(out.read_text())
    for method in ("kmeans", "no-train", "tac"):
        r = saved["results"][method][0]
        assert 0 <= r["acc"] <= 100 and r["n"] == 12
    # colour classes are trivially separable even for a random CLIP: k-means finds them
    assert saved["results"]["kmeans"][0]["acc"] > 60


def test_paper_names_the_missing_layout(tmp_path):
    paper = _load_paper()
    with pytest.raises(SystemExit, match="cifar-10-batches-py"):
        paper.main(["--dataset", "cifar10", "--root", str(tmp_path), "--backbone", "lite", "--quiet"])


def test_cifar_python_layout_is_read(tmp_path):
    """torchvision's CIFAR-10 python files are turned into labelled PNGs."""
    import pickle

    paper = _load_paper()
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, n in [*((f"data_batch_{i}", 2) for i in range(1, 6)), ("test_batch", 3)]:
        with open(folder / name, "wb") as fh:
            pickle.dump({"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         "labels": list(rng.integers(0, 10, n))}, fh)
    paths, labels = paper.load_split("cifar10", tmp_path, tmp_path / "work", "train")
    assert len(paths) == 10 and all(Path(p).is_file() for p in paths)
    assert [Path(p).parent.name for p in paths] == labels
    assert Image.open(paths[0]).size == (32, 32)
