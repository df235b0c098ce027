"""The two CLIP backbones on tiny, randomly initialised models built in tmp_path.

HF tests need ``transformers``; OpenCLIP tests need ``open_clip`` (which
needs torchvision) and skip with a message where it is not importable.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from PIL import Image  # noqa: E402

from tacluster.embed.backbones import load_backbone  # noqa: E402
from tacluster.embed.backbones.base import PROMPT_TEMPLATES  # noqa: E402
from tacluster.errors import BackboneError  # noqa: E402
from tacluster.nouns.bank import cached_noun_bank  # noqa: E402

from helpers import WIDTH, save_tiny_hf_clip  # noqa: E402



def _images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    sizes = [(48, 40), (40, 64), (33, 33)]
    return [
        Image.fromarray(rng.integers(0, 256, size=(*sizes[i % 3], 3), dtype=np.uint8))
        for i in range(n)
    ]


# ----------------------------------------------------------------- HF CLIP ---
@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> Path:
    return save_tiny_hf_clip(tmp_path_factory.mktemp("hfclip") / "model", seed=0)


@pytest.fixture(scope="module")
def hf_backbone(hf_dir):
    return load_backbone(f"hf:{hf_dir}")


def test_hf_encode_shapes_unit_norm_and_shared_space(hf_backbone):
    x = torch.stack([hf_backbone.preprocess(im) for im in _images(3)])
    assert x.shape == (3, 3, 32, 32)  # shorter side resized, centre-cropped to 32
    out = hf_backbone.encode_images(x)
    assert hf_backbone.outputs == ("image",) and set(out) == {"image"}
    img = out["image"]
    assert img.dtype == np.float32 and img.shape == (3, WIDTH)
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1.0, atol=1e-5)
    bank = hf_backbone.noun_bank(["cat", "dog"], progress=False)
    assert bank.words == ["cat", "dog"]
    assert bank.embeddings.dtype == np.float32 and bank.embeddings.shape == (2, WIDTH)
    np.testing.assert_allclose(np.linalg.norm(bank.embeddings, axis=1), 1.0, atol=1e-5)
    sims = img @ bank.embeddings.T  # same space: a dot product is defined
    assert sims.shape == (3, 2) and np.all(np.abs(sims) <= 1 + 1e-5)


def test_hf_preprocess_uses_clip_mean_std(hf_backbone):
    # A uniform grey image of value v maps to (v/255 - mean) / std per channel.
    v = 128
    x = hf_backbone.preprocess(Image.new("RGB", (50, 40), (v, v, v)))
    mean = np.array([0.48145466, 0.4578275, 0.40821073])
    std = np.array([0.26862954, 0.26130258, 0.27577711])
    np.testing.assert_allclose(x.mean(dim=(1, 2)).numpy(), (v / 255 - mean) / std, atol=1e-4)


def test_hf_noun_bank_is_normalised_mean_of_templates(hf_backbone):
    word = "zebra"
    manual = hf_backbone.encode_text([t.format(word) for t in PROMPT_TEMPLATES])
    manual = manual / np.linalg.norm(manual, axis=1, keepdims=True)
    manual = manual.mean(axis=0)
    manual /= np.linalg.norm(manual)
    # Batch of 3 words, batch size 2: exercises the batch boundary too.
    hf_backbone.text_batch_size = 2
    bank = hf_backbone.noun_bank(["cat", word, "dog"], progress=False)
    np.testing.assert_allclose(bank.embeddings[1], manual, atol=1e-5)
    assert not np.allclose(bank.embeddings[0], bank.embeddings[1])


def test_hf_fingerprint_stable_and_weight_sensitive(hf_dir, hf_backbone, tmp_path):
    again = load_backbone(f"hf:{hf_dir}")
    assert again.fingerprint == hf_backbone.fingerprint
    assert len(hf_backbone.fingerprint) == 64
    other = load_backbone(f"hf:{save_tiny_hf_clip(tmp_path / 'other', seed=1)}")
    assert other.fingerprint != hf_backbone.fingerprint


def test_hf_loads_offline_in_fresh_process(hf_dir):
    import subprocess
    import sys

    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(src)}
    code = (
        "from tacluster.embed.backbones import load_backbone;"
        f"b = load_backbone({('hf:' + str(hf_dir))!r});"
        "print(b.noun_bank(['cat'], progress=False).embeddings.shape)"
    )
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"(1, {WIDTH})" in res.stdout


def test_hf_missing_dir_and_uncached_id(tmp_path):
    with pytest.raises(BackboneError, match="does not exist"):
        load_backbone(f"hf:{tmp_path / 'nope'}")
    with pytest.raises(BackboneError, match="not in the Hugging Face cache.*offline"):
        load_backbone("hf:tacluster-test/not-a-cached-model", offline=True)
    with pytest.raises(BackboneError, match="config.json"):
        load_backbone(f"hf:{tmp_path}")  # exists, but holds no model
    with pytest.raises(BackboneError, match="needs a model"):
        load_backbone("hf:")


def test_hf_noun_bank_cache_counts_encoder_calls(hf_backbone, tmp_path):
    calls = []
    original = hf_backbone.encode_text
    hf_backbone.encode_text = lambda texts: calls.append(len(texts)) or original(texts)
    try:
        hf_backbone.text_batch_size = 64
        words = [f"word{i}" for i in range(200)]
        first = cached_noun_bank(hf_backbone, words, cache_dir=tmp_path, progress=False)
        n_first = len(calls)
        second = cached_noun_bank(hf_backbone, words, cache_dir=tmp_path, progress=False)
    finally:
        del hf_backbone.encode_text
    assert n_first == 4 and sum(calls) == 200 * 7  # ceil(200/64) batches, 7 prompts per word
    assert len(calls) == n_first  # the cached call encodes nothing
    assert isinstance(second.embeddings, np.memmap)
    np.testing.assert_array_equal(np.asarray(first.embeddings), np.asarray(second.embeddings))


# ---------------------------------------------------------------- OpenCLIP ---
def _open_clip():
    try:
        import open_clip
    except ImportError as exc:
        pytest.skip(
            f"open_clip is not importable here ({exc}); it needs torchvision, which PyPI only "
            "pairs with torch 2.14.1 on this machine: .ci/run runs these tests in its second venv, .venv-clip"
        )
    return open_clip


TINY_OPENCLIP_CFG = {
    "embed_dim": WIDTH,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def _save_tiny_openclip(folder: Path, seed: int) -> Path:
    """open_clip's local-dir layout: open_clip_config.json + a state dict."""
    open_clip = _open_clip()
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = open_clip.CLIP(**TINY_OPENCLIP_CFG)
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_OPENCLIP_CFG}))
    return folder


@pytest.fixture(scope="module")
def oc_dir(tmp_path_factory) -> Path:
    return _save_tiny_openclip(tmp_path_factory.mktemp("openclip") / "model", seed=0)


def test_openclip_local_dir_shapes_norms_and_templates(oc_dir):
    b = load_backbone(f"openclip:local-dir:{oc_dir}")
    x = torch.stack([b.preprocess(im) for im in _images(3)])
    assert x.shape == (3, 3, 32, 32)
    img = b.encode_images(x)["image"]
    assert b.outputs == ("image",)
    assert img.dtype == np.float32 and img.shape == (3, WIDTH)
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1.0, atol=1e-5)
    b.text_batch_size = 2
    bank = b.noun_bank(["cat", "zebra", "dog"], progress=False)
    assert bank.embeddings.shape == (3, WIDTH) and bank.embeddings.dtype == np.float32
    manual = b.encode_text([t.format("zebra") for t in PROMPT_TEMPLATES]).mean(axis=0)
    np.testing.assert_allclose(bank.embeddings[1], manual / np.linalg.norm(manual), atol=1e-5)


def test_openclip_prefix_reuse_reproduces_plain_forward(oc_dir, monkeypatch):
    b = load_backbone(f"openclip:local-dir:{oc_dir}")
    words = ["x", "cat", "ice cream", "a very long noun phrase indeed"]
    prompts = [t.format(w) for w in words for t in PROMPT_TEMPLATES] + ["plain text", ""]
    b.prefix_reuse = False
    plain = b.encode_text(prompts)
    b.prefix_reuse = True
    monkeypatch.setattr(b, "_text_features", lambda texts: pytest.fail("plain forward called"))
    fast = b.encode_text(prompts)
    assert (1 - (plain * fast).sum(axis=1)).max() < 1e-5  # unit rows: 1 - dot is the cosine distance
    assert len({key[0] for key in b._tower._kv}) == len(PROMPT_TEMPLATES)


def test_openclip_checkpoint_path_syntax_and_fingerprint(oc_dir, tmp_path):
    open_clip = _open_clip()
    # Register the tiny architecture under a name, as a user would for a custom model.
    cfg_file = tmp_path / "tacluster-tiny-test.json"
    cfg_file.write_text(json.dumps(TINY_OPENCLIP_CFG))
    open_clip.add_model_config(cfg_file)
    ckpt = oc_dir / "open_clip_pytorch_model.bin"
    a = load_backbone(f"openclip:tacluster-tiny-test/{ckpt}")  # absolute path -> "//"
    assert a.name == f"openclip:tacluster-tiny-test/{ckpt}"
    b = load_backbone(f"openclip:local-dir:{oc_dir}")
    x = torch.stack([a.preprocess(im) for im in _images(2)])
    np.testing.assert_allclose(a.encode_images(x)["image"], b.encode_images(x)["image"], atol=1e-5)
    assert a.fingerprint == load_backbone(f"openclip:tacluster-tiny-test/{ckpt}").fingerprint
    other = _save_tiny_openclip(tmp_path / "other", seed=1) / "open_clip_pytorch_model.bin"
    assert load_backbone(f"openclip:tacluster-tiny-test/{other}").fingerprint != a.fingerprint
    with pytest.raises(BackboneError, match="does not exist"):
        load_backbone(f"openclip:tacluster-tiny-test/{tmp_path / 'missing.pt'}")


def test_openclip_uncached_tag_and_bad_names(tmp_path):
    _open_clip()
    from tacluster.embed.backbones.openclip import OpenCLIPBackbone

    with pytest.raises(BackboneError, match="not available locally.*offline.*openclip:ViT-B-32//path"):
        OpenCLIPBackbone("ViT-B-32/openai", cache_dir=str(tmp_path), offline=True)
    with pytest.raises(BackboneError, match="neither a pretrained tag"):
        load_backbone("openclip:ViT-B-32/no-such-tag")
    with pytest.raises(BackboneError, match="unknown architecture"):
        load_backbone("openclip:No-Such-Arch/openai")
    with pytest.raises(BackboneError, match="names no weights"):
        load_backbone("openclip:ViT-B-32")
    with pytest.raises(BackboneError, match="open_clip_config.json"):
        load_backbone(f"openclip:local-dir:{tmp_path}")


# ------------------------------------------------- OpenCLIP downloads ---
@pytest.fixture()
def oc_hub(oc_dir, tmp_path, monkeypatch):
    """The tiny open_clip model on a stand-in Hub (tests/localhub.py), an empty cache."""
    from localhub import LocalHub

    with LocalHub() as server:
        server.add_repo("tacluster-test/tiny-openclip", oc_dir)
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        monkeypatch.setenv("TACLUSTER_CACHE", str(tmp_path / "tacluster-cache"))
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN"):
            monkeypatch.delenv(var, raising=False)
        yield server


def test_openclip_hf_hub_model_downloads_once_then_loads_offline(oc_hub, oc_dir):
    _open_clip()
    name = "openclip:hf-hub:tacluster-test/tiny-openclip"
    first = load_backbone(name)
    assert any("/resolve/" in r for r in oc_hub.requests)
    oc_hub.requests.clear()
    again = load_backbone(name, offline=True)
    assert oc_hub.requests == []
    local = load_backbone(f"openclip:local-dir:{oc_dir}")
    assert first.fingerprint == again.fingerprint == local.fingerprint
    x = torch.stack([local.preprocess(im) for im in _images(2)])
    np.testing.assert_array_equal(again.encode_images(x)["image"], local.encode_images(x)["image"])


def test_openclip_pretrained_tag_is_fetched_by_open_clip_on_first_use(oc_hub, oc_dir, tmp_path, monkeypatch):
    open_clip = _open_clip()
    from open_clip import pretrained as oc_pretrained

    cfg_file = tmp_path / "tacluster-tiny-tag.json"
    cfg_file.write_text(json.dumps(TINY_OPENCLIP_CFG))
    open_clip.add_model_config(cfg_file)
    # A pretrained tag of the tiny architecture, hosted on the stand-in Hub the way
    # open_clip's own tags are (hf_hub "org/repo/" + open_clip_pytorch_model.bin).
    monkeypatch.setitem(oc_pretrained._PRETRAINED, "tacluster-tiny-tag",
                        {"tiny": {"hf_hub": "tacluster-test/tiny-openclip/"}})
    with pytest.raises(BackboneError) as err:
        load_backbone("openclip:tacluster-tiny-tag/tiny", offline=True)
    assert "\n" not in str(err.value) and "tacluster backbones fetch openclip:tacluster-tiny-tag/tiny" in str(err.value)
    assert oc_hub.requests == []
    b = load_backbone("openclip:tacluster-tiny-tag/tiny")
    assert any("open_clip_pytorch_model.bin" in r for r in oc_hub.requests)
    local = load_backbone(f"openclip:local-dir:{oc_dir}")
    x = torch.stack([local.preprocess(im) for im in _images(2)])
    np.testing.assert_allclose(b.encode_images(x)["image"], local.encode_images(x)["image"], atol=1e-6)
    oc_hub.requests.clear()
    load_backbone("openclip:tacluster-tiny-tag/tiny", offline=True)  # now cached
    assert oc_hub.requests == []


def test_hf_retrieval_tau_is_half_the_models_own_temperature(hf_backbone):
    import math

    scale = hf_backbone._model.logit_scale
    before = scale.data.clone()
    try:
        scale.data.fill_(math.log(100.0))  # CLIP ViT-B/32's learned scale
        assert hf_backbone.retrieval_tau == pytest.approx(0.005)
        scale.data.fill_(math.log(117.0))  # a SigLIP-like scale
        assert hf_backbone.retrieval_tau == pytest.approx(0.5 / 117.0)
        scale.data.fill_(math.log(1 / 0.07))  # an untrained model's initial scale: the paper's value
        assert hf_backbone.retrieval_tau == 0.005
    finally:
        scale.data.copy_(before)


def test_openclip_int8_text_copy_runs_the_prefix_path_and_leaves_the_original_alone(oc_dir):
    from tacluster.nouns.precision import int8_text_backbone

    b = load_backbone(f"openclip:local-dir:{oc_dir}")
    prompts = [t.format(w) for w in ("cat", "ice cream", "zebra") for t in PROMPT_TEMPLATES]
    before = b.encode_text(prompts)
    q = int8_text_backbone(b)
    assert q is not None and q.text_precision == "int8"
    assert q._model.visual is b._model.visual  # the image tower is shared
    assert any(type(m) is torch.nn.Linear for m in b._model.transformer.modules())  # the original stays float32
    approx = q.encode_text(prompts)
    assert q._tower  # the quantised copy still reuses the prompts' prefixes
    cos = (before * approx).sum(axis=1)
    assert cos.min() > 0.9 and not np.allclose(cos, 1.0, atol=1e-7)
    np.testing.assert_array_equal(b.encode_text(prompts), before)
