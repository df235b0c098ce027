"""--image-precision: the image tower in int8 where it is faster here (tacluster.embed.precision).

Tiny random CLIP (tests/helpers.py) and a few dozen generated images, so each
test takes seconds; the speed-up on a real-size ViT-B/32 is measured by
``benchmarks/embed_speed.py --image-precision`` (docs/backbones.md).
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers import save_tiny_hf_clip

from tacluster.embed import embed_images
from tacluster.embed import precision as P
from tacluster.errors import InputError

torch = pytest.importorskip("torch")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cifar10-mini"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_hf_clip(tmp_path_factory.mktemp("clip") / "model")


@pytest.fixture(scope="module")
def clip(model_dir):
    from tacluster.embed.backbones import load_backbone

    return load_backbone(f"hf:{model_dir}")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """90 CIFAR-10 images of three classes."""
    data = tmp_path_factory.mktemp("photos")
    for cls in ("airplane", "frog", "ship"):
        shutil.copytree(EXAMPLE / cls, data / cls)
    return data


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1)


def _no_probe(monkeypatch):
    def measured(*a):
        raise AssertionError("measured")

    monkeypatch.setattr(P, "measure_int8_images", measured)


def test_int8_quantises_only_the_image_tower_and_is_cached_apart(clip, photos, tmp_path):
    q = P.int8_image_backbone(clip)
    assert q.image_precision == "int8" and clip.image_precision == "float32"
    assert q._model.text_model is clip._model.text_model  # the text tower is shared, not copied
    assert all(type(m) is not torch.nn.Linear for m in q._model.vision_model.modules())
    assert any(type(m) is torch.nn.Linear for m in clip._model.vision_model.modules())  # the original untouched
    f32 = embed_images(photos, clip, cache_dir=tmp_path, progress=False)
    i8 = embed_images(photos, clip, cache_dir=tmp_path, progress=False, image_precision="int8")
    assert f32.precision.precision == "float32" and i8.precision.precision == "int8"
    assert i8.stats.n_computed == len(i8.paths) == 90  # not served from the float32 entry
    cos = _cos(f32.arrays["image"], i8.arrays["image"])
    assert cos.min() > 0.99 and not np.allclose(cos, 1.0, atol=1e-7)  # close, and really another computation
    folders = sorted(p.name for p in (tmp_path / "embeddings").iterdir())
    assert P.image_cache_key(clip) in folders and P.image_cache_key(q) == f"{clip.fingerprint}-image-int8" in folders
    again = embed_images(photos, q, cache_dir=tmp_path, progress=False)  # the int8 copy as given: its own cache
    assert again.stats.n_cached == 90 and again.precision.precision == "int8"
    np.testing.assert_array_equal(again.arrays["image"], i8.arrays["image"])
    speedup, min_cos = P.measure_int8_images(clip, q, torch.stack([clip.preprocess(_image(i)) for i in range(4)]))
    assert speedup > 0 and 0.9 < min_cos < 1.0


def _image(seed: int):
    from PIL import Image

    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 40, 3), dtype=np.uint8))


@pytest.mark.parametrize("speedup, cosine, expected", [(1.8, 0.9995, "int8"), (1.1, 0.9995, "float32"),
                                                       (1.8, 0.998, "float32")])
def test_auto_measures_keeps_int8_only_when_faster_and_close_and_remembers(clip, photos, tmp_path, monkeypatch,
                                                                           capsys, speedup, cosine, expected):
    monkeypatch.setattr(P, "MIN_IMAGES_TO_PROBE", 10)  # 90 images are enough to measure here
    calls = []
    monkeypatch.setattr(P, "measure_int8_images", lambda a, b, pixels: calls.append(len(pixels)) or (speedup, cosine))
    res = embed_images(photos, clip, cache_dir=tmp_path, progress=True, image_precision="auto")
    assert calls == [P.PROBE_IMAGES]
    assert res.precision.precision == expected and res.precision.probe_images == P.PROBE_IMAGES
    assert (res.precision.speedup, res.precision.min_cosine) == (speedup, cosine)
    assert f"images embedded in {expected}: measured on this machine" in capsys.readouterr().err
    assert json.loads((tmp_path / P.IMAGE_DECISIONS_FILE).read_text())
    entry = P.image_cache_key(P.int8_image_backbone(clip) if expected == "int8" else clip)
    assert (tmp_path / "embeddings" / entry).is_dir()
    other = tmp_path / "other"
    shutil.copytree(EXAMPLE / "dog", other / "dog")
    if (speedup, expected) == (1.1, "float32"):  # float32 on speed alone: the next collection measures again
        later = embed_images(other, clip, cache_dir=tmp_path, progress=False, image_precision="auto")
        assert calls == [P.PROBE_IMAGES] * 2 and later.precision.probes == 2
        assert later.precision.precision == "float32" and "best of 2 probe(s)" in later.precision.reason
        return
    # new images on this machine: the remembered decision, nothing measured
    _no_probe(monkeypatch)
    later = embed_images(other, clip, cache_dir=tmp_path, progress=False, image_precision="auto")
    assert later.precision.precision == expected and later.stats.n_computed == 30
    assert later.precision.reason.startswith("remembered: measured on this machine")


def test_a_float32_decision_on_speed_alone_is_measured_again_until_three_probes_agree(clip, tmp_path, monkeypatch):
    monkeypatch.setattr(P, "MIN_IMAGES_TO_PROBE", 10)
    measured = iter([1.1, 1.15, 1.05])
    monkeypatch.setattr(P, "measure_int8_images", lambda a, b, pixels: (next(measured), 0.9995))
    for i, cls in enumerate(("frog", "ship", "dog")):  # a new collection each time: nothing cached yet
        shutil.copytree(EXAMPLE / cls, tmp_path / "photos" / str(i) / cls)
        res = embed_images(tmp_path / "photos" / str(i), clip, cache_dir=tmp_path, progress=False,
                           image_precision="auto")
        assert res.precision.precision == "float32" and res.precision.probes == i + 1
    assert res.precision.speedup == 1.15  # the best of the three counts
    _no_probe(monkeypatch)  # three probes agree: remembered for good
    shutil.copytree(EXAMPLE / "cat", tmp_path / "photos" / "3" / "cat")
    res = embed_images(tmp_path / "photos" / "3", clip, cache_dir=tmp_path, progress=False, image_precision="auto")
    assert res.precision.precision == "float32" and res.precision.reason.startswith("remembered:")


def test_a_faster_second_probe_turns_int8_on(clip, tmp_path, monkeypatch):
    monkeypatch.setattr(P, "MIN_IMAGES_TO_PROBE", 10)
    measured = iter([1.1, 1.7])  # a busy moment first, then the machine's real speed-up
    monkeypatch.setattr(P, "measure_int8_images", lambda a, b, pixels: (next(measured), 0.9995))
    choices = []
    for i, cls in enumerate(("frog", "ship")):
        shutil.copytree(EXAMPLE / cls, tmp_path / "photos" / str(i) / cls)
        choices.append(embed_images(tmp_path / "photos" / str(i), clip, cache_dir=tmp_path, progress=False,
                                    image_precision="auto").precision)
    assert [c.precision for c in choices] == ["float32", "int8"] and choices[1].speedup == 1.7
    assert json.loads((tmp_path / P.IMAGE_DECISIONS_FILE).read_text())[P.machine_key(clip)]["precision"] == "int8"


def test_auto_below_the_size_threshold_stays_float32_and_remembers_nothing(clip, photos, tmp_path, monkeypatch):
    _no_probe(monkeypatch)
    monkeypatch.setattr(P, "int8_image_backbone", lambda bb: pytest.fail("quantised for nothing"))
    res = embed_images(photos, clip, cache_dir=tmp_path, progress=False, image_precision="auto")
    assert res.precision.precision == "float32" and "fewer than 256" in res.precision.reason
    assert not (tmp_path / P.IMAGE_DECISIONS_FILE).exists()


def test_auto_prefers_the_precision_the_cache_holds(clip, photos, tmp_path, monkeypatch):
    embed_images(photos, clip, cache_dir=tmp_path, progress=False, image_precision="int8")
    P.remember(tmp_path, P.IMAGE_DECISIONS_FILE, P.machine_key(clip),
               P.ImagePrecision("float32", "measured on this machine: slower").record())
    _no_probe(monkeypatch)
    res = embed_images(photos, clip, cache_dir=tmp_path, progress=False, image_precision="auto")
    assert res.precision.precision == "int8" and res.stats.n_computed == 0 and res.stats.n_cached == 90
    assert "90 of these 90 images are cached in int8" in res.precision.reason  # the cache wins over the memory
    # with the collection cached in float32 too but more of it in float32, float32 is served
    more = tmp_path / "more"
    shutil.copytree(photos, more / "a")
    shutil.copytree(EXAMPLE / "dog", more / "dog")
    embed_images(more, clip, cache_dir=tmp_path, progress=False, image_precision="float32")
    res = embed_images(more, clip, cache_dir=tmp_path, progress=False, image_precision="auto")
    assert res.precision.precision == "float32" and res.stats.n_computed == 0


def test_refusals_say_why_in_one_line(clip, photos, tmp_path, capsys, monkeypatch):
    from tacluster.run.cli import main
    from tacluster.testing import TinyBackbone

    with pytest.raises(InputError, match="is not one of auto, float32, int8"):
        embed_images(photos, clip, cache_dir=tmp_path, image_precision="fp16")
    with pytest.raises(InputError, match="CPU with the local engine only"):
        embed_images(photos, clip, cache_dir=tmp_path, image_precision="int8", engine="ray")
    with pytest.raises(InputError, match="no image tower to quantise"):
        embed_images(photos, TinyBackbone(), cache_dir=tmp_path, image_precision="int8")
    assert embed_images(photos, TinyBackbone(), image_precision="auto", progress=False).precision.precision == "float32"
    on_gpu = copy.copy(clip)
    on_gpu._device = torch.device("cuda")  # as moved there (nothing runs: refused first)
    with pytest.raises(InputError, match="CPU with the local engine only"):
        embed_images(photos, on_gpu, cache_dir=tmp_path, image_precision="int8")
    assert P.choose_image_precision(on_gpu, "auto")[0].reason.startswith("not on a CPU")
    with pytest.raises(InputError, match="needs the float32 backbone"):
        embed_images(photos, P.int8_image_backbone(clip), image_precision="float32")
    assert not (tmp_path / "embeddings").exists()  # refused before anything was embedded
    cases = [(["--backbone", "lite", "--image-precision", "int8", "--device", "cpu"], "no image tower to quantise"),
             (["--backbone", "lite", "--image-precision", "int8", "--device", "auto"], "CPU with the local engine"),
             (["--backbone", "lite", "--image-precision", "int8", "--device", "cpu", "--engine", "ray"],
              "CPU with the local engine")]
    for extra, message in cases:
        capsys.readouterr()
        # "--device auto" on a machine with a GPU (none here: the resolved device is faked)
        monkeypatch.setattr("tacluster.run.workflows._device_used", lambda d: "cuda" if d == "auto" else "cpu")
        rc = main(["cluster", str(photos), "--k", "2", "--out", str(tmp_path / "run"), "--quiet",
                   "--cache-dir", str(tmp_path / "c"), *extra])
        err = capsys.readouterr().err
        assert rc != 0 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    vectors = tmp_path / "v.npy"
    np.save(vectors, np.eye(4, dtype=np.float32))
    rc = main(["cluster", "--embeddings", str(vectors), "--backbone", "lite", "--k", "2", "--out",
               str(tmp_path / "run2"), "--image-precision", "float32", "--quiet"])
    err = capsys.readouterr().err
    assert rc != 0 and "--image-precision set how images are embedded" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists() and not (tmp_path / "run2").exists()


def test_a_run_and_its_model_record_int8_and_predict_add_and_split_use_it(model_dir, clip, photos, tmp_path,
                                                                         monkeypatch):
    from tacluster.run.workflows import cluster_images, predict_images

    vocab = tmp_path / "nouns.txt"
    vocab.write_text("\n".join(["airplane", "frog", "ship", "car", "dog", "tree", "sky", "water", "grass"]))
    out, cache = tmp_path / "run", tmp_path / "cache"
    cluster_images(photos, out, 3, backbone=f"hf:{model_dir}", method="kmeans", cache_dir=cache, device="cpu",
                   vocabulary=str(vocab), progress=False, report=False, image_precision="int8")
    info = json.loads((out / "run.json").read_text())
    assert info["counts"]["image_precision"]["precision"] == "int8"
    assert info["settings"]["image_precision"] == "int8"  # the explicit request is part of the run's key
    from tacluster.estimator import TextAidedClustering

    meta = TextAidedClustering.load(out / "model").metadata_
    assert meta["image_precision"] == "int8" and meta["backbone_fingerprint"] == clip.fingerprint
    # predict embeds new images in int8 too: the same vectors as the int8 path gives them
    seen = []
    inner = embed_images

    def spy(source, bb, **kw):
        seen.append(bb.image_precision)
        return inner(source, bb, **kw)

    monkeypatch.setattr("tacluster.embed.embed_images", spy)
    new = tmp_path / "new"
    shutil.copytree(EXAMPLE / "dog", new / "dog")
    pred = predict_images(out, new, cache_dir=cache, device="cpu", progress=False)
    assert seen == ["int8"] and len(pred.paths) == 30
    assert (cache / "embeddings" / f"{clip.fingerprint}-image-int8").is_dir()
    f32 = inner(new, clip, cache_dir=tmp_path / "f32", progress=False)
    i8 = inner(new, clip, cache_dir=cache, progress=False, image_precision="int8")
    assert i8.stats.n_cached == 30  # predict wrote these int8 vectors
    assert _cos(f32.arrays["image"], i8.arrays["image"]).min() > 0.99
    # split re-reads the run's int8 vectors from the cache: nothing embedded again
    from tacluster.run.edit import _Run
    from tacluster.run.features import run_features
    from tacluster.run.workflows import load_run_model, model_backbone

    est, _, name = load_run_model(out / "model")
    bb = model_backbone(est, name, out / "model", "cpu", None, False)
    assert bb.image_precision == "int8"
    seen.clear()
    feats = run_features(_Run(out), bb)
    assert seen == [] and feats["image"].shape == (90, clip._model.config.projection_dim)


def test_auto_is_the_default_of_the_cli_and_float32_of_the_library(monkeypatch):
    import inspect

    from tacluster.run.cli import _parser
    from tacluster.run.workflows import cluster_images

    assert inspect.signature(embed_images).parameters["image_precision"].default is None
    assert inspect.signature(cluster_images).parameters["image_precision"].default == "auto"
    args = _parser().parse_args(["cluster", "x", "--k", "2", "--out", "o"])
    assert args.image_precision == "auto"


def test_the_benchmark_compares_both_precisions_through_the_real_path(model_dir, photos, tmp_path, capsys):
    from helpers import load_benchmark

    bench = load_benchmark("embed_speed")
    out = tmp_path / "speed.json"
    result = bench.main(["--backbone", f"hf:{model_dir}", "--images", str(photos / "frog"), "--image-precision",
                         "--rounds", "2", "--batch-size", "8", "--out", str(out)])
    p = result["precision"]
    assert p["n_images"] == 30 and len(p["runs"]["float32"]) == len(p["runs"]["int8"]) == 2
    assert all("load_avg" in r for r in p["runs"]["float32"] + p["runs"]["int8"])
    assert 0.99 < p["min_cosine"] <= p["mean_cosine"] < 1.0 and p["probe"]["images"] == 8
    assert json.loads(out.read_text())["precision"]["speedup_median"] == p["speedup_median"]
    assert "median speed-up" in capsys.readouterr().out


def test_auto_reads_each_precisions_cache_index_once(clip, photos, tmp_path, monkeypatch):
    import tacluster.embed.cache as C

    embed_images(photos, clip, cache_dir=tmp_path, progress=False, image_precision="int8")
    embed_images(photos, clip, cache_dir=tmp_path, progress=False, image_precision="float32")
    reads: list[str] = []
    real = C._read_manifest
    monkeypatch.setattr(C, "_read_manifest", lambda part: reads.append(str(part)) or real(part))
    res = embed_images(photos, clip, cache_dir=tmp_path, progress=False, image_precision="auto")
    assert res.stats.n_cached == 90 and reads  # counted in both, served from one
    assert len(reads) == len(set(reads))  # no manifest read twice (the chosen cache's index is reused)
