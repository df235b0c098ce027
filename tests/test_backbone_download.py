"""Named models are fetched on first use, against a stand-in Hub on 127.0.0.1.

The stand-in (tests/localhub.py) serves tiny randomly initialised CLIP and
SigLIP folders built here under the real short names' repo ids, so the whole
path (short name -> Hub download -> cache -> load -> cluster) runs with no
network. ``HF_ENDPOINT`` points the Hub client at it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("transformers")
torch = pytest.importorskip("torch")
from PIL import Image  # noqa: E402

from localhub import LocalHub  # noqa: E402
from tacluster.embed.backbones import load_backbone  # noqa: E402
from tacluster.run.cli import main  # noqa: E402
from tacluster.errors import BackboneError  # noqa: E402
from tacluster.testing import save_tiny_hf_clip, save_tiny_hf_siglip  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "cifar10-mini"
CLIP_ID = "openai/clip-vit-base-patch32"
SIGLIP_ID = "google/siglip-base-patch16-224"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {"clip": save_tiny_hf_clip(root / "clip", seed=0), "siglip": save_tiny_hf_siglip(root / "siglip", seed=0)}


@pytest.fixture()
def hub(models, tmp_path, monkeypatch):
    """A running stand-in Hub, an empty Hub cache and tacluster cache, online mode."""
    with LocalHub() as server:
        server.add_repo(CLIP_ID, models["clip"])
        server.add_repo(SIGLIP_ID, models["siglip"])
        server.add_repo("tacluster-test/broken-link", models["clip"])
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        monkeypatch.setenv("TACLUSTER_CACHE", str(tmp_path / "tacluster-cache"))
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "5")
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN"):
            monkeypatch.delenv(var, raising=False)
        yield server


def _batch(backbone, n: int = 3):
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)) for _ in range(n)]
    return torch.stack([backbone.preprocess(im) for im in images])


def test_short_name_downloads_on_first_use_and_second_load_makes_no_request(hub, models, tmp_path):
    first = load_backbone("clip", device="cpu")
    assert any("/resolve/" in r for r in hub.requests), hub.requests
    snapshot = first._dir
    assert str(snapshot).startswith(str(tmp_path / "hf-cache")), snapshot  # the standard Hub cache
    assert (snapshot / "config.json").is_file() and (snapshot / "model.safetensors").is_file()

    hub.requests.clear()
    second = load_backbone("clip", device="cpu")
    assert hub.requests == []  # served from the cache, not one request
    direct = load_backbone(f"hf:{models['clip']}", device="cpu")  # the same files, never downloaded
    assert first.fingerprint == second.fingerprint == direct.fingerprint
    x = _batch(direct)
    np.testing.assert_array_equal(second.encode_images(x)["image"], direct.encode_images(x)["image"])


def test_offline_with_an_empty_cache_is_one_line_naming_model_cache_and_fetch_command(hub, tmp_path, monkeypatch):
    with pytest.raises(BackboneError) as err:
        load_backbone("clip", offline=True)
    msg = str(err.value)
    assert "\n" not in msg
    assert CLIP_ID in msg and str(tmp_path / "hf-cache") in msg
    assert "tacluster backbones fetch clip" in msg
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the Hub's own switch does the same
    with pytest.raises(BackboneError, match="offline mode is on"):
        load_backbone("siglip")
    assert hub.requests == []


def test_cli_offline_flag_is_a_one_line_error_with_exit_code_2(hub, tmp_path, capsys):
    data = tmp_path / "photos"
    shutil.copytree(EXAMPLE / "frog", data / "frog")
    code = main(["cluster", str(data), "--k", "2", "--out", str(tmp_path / "run"), "--backbone", "clip",
                 "--offline", "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "tacluster backbones fetch clip" in err and "Traceback" not in err
    assert hub.requests == [] and not (tmp_path / "run" / "run.json").exists()


def test_interrupted_download_leaves_no_poisoned_cache_and_a_rerun_recovers(hub, models, tmp_path):
    name = "hf:tacluster-test/broken-link"
    hub.truncate.add("tacluster-test/broken-link/model.safetensors")
    with pytest.raises(BackboneError) as err:
        load_backbone(name)
    assert "\n" not in str(err.value) and "cannot download" in str(err.value)
    cache = tmp_path / "hf-cache"
    # Whatever is in the snapshot folder is whole: no half-written weights file under its real name.
    for f in cache.rglob("snapshots/*/*"):
        assert f.read_bytes() == (models["clip"] / f.name).read_bytes(), f
    assert not list(cache.rglob("snapshots/*/model.safetensors"))

    hub.truncate.clear()  # the network is back
    again = load_backbone(name)
    direct = load_backbone(f"hf:{models['clip']}")
    assert again.fingerprint == direct.fingerprint
    x = _batch(direct)
    np.testing.assert_array_equal(again.encode_images(x)["image"], direct.encode_images(x)["image"])


def test_unknown_repository_is_a_one_line_error(hub):
    with pytest.raises(BackboneError) as err:
        load_backbone("hf:tacluster-test/no-such-model")
    assert "\n" not in str(err.value) and "no model 'tacluster-test/no-such-model'" in str(err.value)


def test_siglip_text_side_pads_to_its_full_context_and_passes_no_mask(hub):
    b = load_backbone("siglip")
    assert b.model_type == "siglip" and b.name == "siglip"
    calls = []
    original = b._model.get_text_features
    b._model.get_text_features = lambda **kw: calls.append(kw) or original(**kw)
    short, long_ = b.encode_text(["cat", "a photo of the large cat."])
    assert set(calls[0]) == {"input_ids"} and calls[0]["input_ids"].shape == (2, 16)  # max_length
    np.testing.assert_allclose(np.linalg.norm([short, long_], axis=1), 1.0, atol=1e-5)
    # Padding to the full length is what makes a word's vector independent of its batch.
    alone = b.encode_text(["cat"])[0]
    np.testing.assert_allclose(alone, short, atol=1e-6)


def test_cli_cluster_with_siglip_short_name_end_to_end(hub, tmp_path):
    data = tmp_path / "photos"
    for cls in ("airplane", "frog", "ship", "horse", "truck"):
        shutil.copytree(EXAMPLE / cls, data / cls)
    vocab = tmp_path / "nouns.txt"
    words = ["airplane", "frog", "ship", "horse", "truck", "car", "dog", "tree", "sky", "water", "grass", "road"]
    vocab.write_text("\n".join(words))
    out = tmp_path / "run"
    assert main(["cluster", str(data), "--k", "5", "--out", str(out), "--backbone", "siglip",
                 "--vocabulary", str(vocab), "--device", "cpu", "--quiet", "--no-report"]) == 0
    info = json.loads((out / "run.json").read_text())
    assert info["settings"]["backbone"] == "siglip" and info["settings"]["resolved_method"] == "tac"
    names = {c["name"] for c in json.loads((out / "clusters.json").read_text())["clusters"]}
    assert names and names <= set(words)  # cluster names come from SigLIP's text side
    # predict with the saved model loads the backbone from the cache alone
    hub.requests.clear()
    assert main(["predict", str(out / "model"), str(data / "frog"), "--out", str(tmp_path / "p.csv"),
                 "--device", "cpu", "--quiet", "--offline"]) == 0
    assert hub.requests == []


def test_backbones_command_lists_fetches_and_reports_presence(hub, tmp_path, capsys):
    assert main(["backbones"]) == 0
    listing = capsys.readouterr().out
    row = next(line for line in listing.splitlines() if line.startswith("siglip "))
    assert "not fetched" in row and "768" in row
    assert main(["backbones", "fetch", "siglip"]) == 0
    fetched = capsys.readouterr().out
    assert str(tmp_path / "hf-cache") in fetched
    assert main(["backbones"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("siglip "))
    assert "present" in row and " 32 " in row  # the cached (tiny) model's own width
    hub.requests.clear()
    load_backbone("siglip", offline=True)  # what fetch put there loads offline
    assert hub.requests == []
    # another image-text model in the cache is listed under its hf: name
    assert main(["backbones", "fetch", "hf:tacluster-test/broken-link"]) == 0
    capsys.readouterr()
    assert main(["backbones"]) == 0
    assert "hf:tacluster-test/broken-link" in capsys.readouterr().out


def _auto_run(tmp_path, name: str, *extra: str) -> tuple[int, dict | None]:
    data = tmp_path / "photos"
    if not data.exists():
        for cls in ("frog", "ship"):
            shutil.copytree(EXAMPLE / cls, data / cls)
        (tmp_path / "nouns.txt").write_text("\n".join(["frog", "ship", "dog", "tree", "sky", "water"]))
    out = tmp_path / name
    code = main(["cluster", str(data), "--k", "2", "--out", str(out), "--backbone", "auto", "--vocabulary",
                 str(tmp_path / "nouns.txt"), "--device", "cpu", "--no-report", *extra])
    info = json.loads((out / "run.json").read_text()) if (out / "run.json").exists() else None
    return code, info


def test_backbone_auto_fetches_clip_announcing_it_then_uses_the_cache_with_no_request(hub, tmp_path, capsys):
    code, info = _auto_run(tmp_path, "first")
    err = capsys.readouterr().err
    assert code == 0 and info["settings"]["backbone"] == "clip" and info["settings"]["resolved_method"] == "tac"
    assert info["backbone_choice"] == {"requested": "auto", "backbone": "clip", "reason": "download"}
    line = next(x for x in err.splitlines() if x.startswith("backbone auto:"))
    assert CLIP_ID in line and "605 MB" in line and "first run" in line
    hub.requests.clear()
    code, info = _auto_run(tmp_path, "second")
    assert code == 0 and info["backbone_choice"]["reason"] == "cached" and hub.requests == []
    assert "backbone auto:" not in capsys.readouterr().err  # nothing to say when CLIP is there


def test_backbone_auto_falls_back_to_lite_offline_and_remembers_an_unreachable_hub(hub, tmp_path, capsys,
                                                                                   monkeypatch):
    import socket

    import tacluster.embed.backbones.auto as auto

    code, info = _auto_run(tmp_path, "offline", "--offline")
    err = capsys.readouterr().err
    assert code == 0 and info["settings"]["backbone"] == "lite" and info["backbone_choice"]["reason"] == "offline"
    assert "tacluster backbones fetch clip" in err and hub.requests == []

    with socket.socket() as s:  # a port nothing listens on: the probe is refused at once
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("HF_ENDPOINT", closed)
    code, info = _auto_run(tmp_path, "unreachable")
    assert code == 0 and info["backbone_choice"]["reason"] == "hub unreachable"
    assert "did not answer" in capsys.readouterr().err
    assert json.loads((tmp_path / "tacluster-cache" / auto.NOTE_FILE).read_text())["endpoint"] == closed

    def no_probe(*args):
        raise AssertionError("the hub was asked again within REMEMBER_S")
    monkeypatch.setattr(auto, "_hub_answers", no_probe)
    code, info = _auto_run(tmp_path, "again")
    assert code == 0 and info["settings"]["backbone"] == "lite"


def test_backbone_auto_with_embeddings_means_lite_as_before_and_asks_nothing(hub, tmp_path):
    from tacluster.run.workflows import _resolve_backbone

    name, choice = _resolve_backbone("auto", tmp_path / "x.npy", None, tmp_path)
    assert name == "lite" and choice.record()["reason"] == "embeddings given" and choice.message is None
    assert hub.requests == []
