"""``tacluster selfcheck``: passes with real CLIP weights, fails (exit 1) on a random model."""

from __future__ import annotations

import pytest

from helpers import save_tiny_hf_clip

from tacluster.nouns.vocabulary import load_wordnet_nouns
from tacluster.run.cli import main

CLIP_REPO = "openai/clip-vit-base-patch32"  # what --backbone clip fetches (embed/backbones/catalog.py)


def test_selfcheck_passes_with_the_real_clip_weights(tmp_path, capsys):
    pytest.importorskip("transformers")
    from tacluster.embed.backbones.hub import cached_snapshot

    if cached_snapshot(CLIP_REPO) is None:
        pytest.skip(f"{CLIP_REPO} is not in the local Hugging Face cache (no real weights here; "
                    "`tacluster backbones fetch clip` where the Hub is reachable)")
    # ImageNet-level nouns keep the candidate bank small enough for a test on a CPU
    vocab = tmp_path / "vocab.txt"
    from tacluster.nouns.vocabulary import load_imagenet_hierarchy

    vocab.write_text("\n".join(load_imagenet_hierarchy().class_names))
    rc = main(["selfcheck", "--backbone", "clip", "--offline", "--vocabulary", str(vocab),
               "--cache-dir", str(tmp_path / "cache"), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "PASSED" in out


def test_selfcheck_runs_end_to_end_and_fails_on_a_random_model(tmp_path, capsys):
    model = save_tiny_hf_clip(tmp_path / "model")
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(load_wordnet_nouns()[:4000:20]))
    rc = main(["selfcheck", "--backbone", f"hf:{model}", "--vocabulary", str(vocab), "--device", "cpu",
               "--cache-dir", str(tmp_path / "cache"), "--quiet"])
    out = capsys.readouterr().out
    assert rc == 1, out
    lines = out.splitlines()
    assert "300 images, 10 classes" in lines[0]
    zero_shot = float(lines[1].split("class names: ")[1].split(" %")[0])
    assert zero_shot < 40 and lines[1].endswith("FAIL")  # near chance (10 %) on a random model
    assert "TAC ACC" in lines[2] and "k-means ACC" in lines[2]
    assert lines[-1].startswith("FAILED")


def test_selfcheck_refuses_a_folder_without_classes(tmp_path, capsys):
    (tmp_path / "flat").mkdir()
    rc = main(["selfcheck", "--backbone", "lite", "--images", str(tmp_path / "flat"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "class folder" in err
