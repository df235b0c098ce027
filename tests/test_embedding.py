"""Tests of the embedding stage: reader, cache (writer) and runner."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tacluster.embed import (
    CorruptShardWarning,
    EmbeddingCache,
    content_key,
    decode_image,
    embed_images,
    list_inputs,
    run_tasks,
)
from tacluster.embed import runner as runner_mod
from tacluster.embed.reader import ImageDecodeError
from tacluster.errors import BackboneError, InputError
from tacluster.testing import TinyBackbone

SHARED = Path(__file__).resolve().parents[2] / "shared"


def _noise(path: Path, seed: int, size=(20, 24), fmt=None) -> Path:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt)
    return path


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "imgs"
    for i in range(10):
        _noise(root / f"c{i % 2}" / f"{i:02d}.png", seed=i)
    return root


def _reference(source, **kw):
    return embed_images(source, TinyBackbone(), cache_dir=None, progress=False, **kw)


# -- runner + cache ------------------------------------------------------------


def test_cache_miss_then_hit(folder, tmp_path):
    cache = tmp_path / "cache"
    bb = TinyBackbone()
    first = embed_images(folder, bb, cache_dir=cache, batch_size=4, progress=False)
    assert first.stats.n_computed == 10 and first.stats.n_cached == 0
    assert len(first.paths) == 10 and first.skipped == []
    assert set(first.arrays) == {"image", "joint"}
    assert first.arrays["image"].shape == (10, 8) and first.arrays["joint"].shape == (10, 5)
    assert first.arrays["image"].dtype == np.float32
    # 3 batches of <= 4 -> 3 shards, each with its manifest
    root = cache / "embeddings" / "tiny0001"
    assert len(list((root / "shards").glob("*.safetensors"))) == 3
    assert len(list((root / "manifest").glob("*.jsonl"))) == 3

    bb2 = TinyBackbone()
    second = embed_images(folder, bb2, cache_dir=cache, batch_size=4, progress=False)
    assert second.stats.n_computed == 0 and second.stats.n_cached == 10
    assert bb2.n_images == 0
    assert second.paths == first.paths
    for name in first.arrays:
        np.testing.assert_array_equal(second.arrays[name], first.arrays[name])
    # rows belong to their paths: same as an uncached run
    ref = _reference(folder)
    np.testing.assert_allclose(first.arrays["image"], ref.arrays["image"], rtol=1e-5, atol=1e-6)


def test_paths_are_sorted_and_in_input_order(folder):
    res = _reference(folder)
    assert res.paths == sorted(res.paths)
    explicit = list(reversed(res.paths))
    rev = _reference(explicit)
    assert rev.paths == explicit
    np.testing.assert_allclose(rev.arrays["image"], res.arrays["image"][::-1], atol=1e-6)


def test_cache_is_keyed_by_content(folder, tmp_path):
    cache = tmp_path / "cache"
    first = embed_images(folder, TinyBackbone(), cache_dir=cache, progress=False)
    src = folder / "c0" / "00.png"
    shutil.copy(src, folder / "copy.png")
    os.rename(folder / "c1" / "01.png", folder / "c1" / "renamed.png")
    bb = TinyBackbone()
    second = embed_images(folder, bb, cache_dir=cache, progress=False)
    assert bb.n_images == 0 and second.stats.n_computed == 0
    assert second.stats.n_cached == 11
    rows = dict(zip(second.paths, second.arrays["image"]))
    np.testing.assert_array_equal(rows[str(folder / "copy.png")], rows[str(src)])
    old = dict(zip(first.paths, first.arrays["image"]))
    np.testing.assert_array_equal(rows[str(folder / "c1" / "renamed.png")], old[str(folder / "c1" / "01.png")])


def test_duplicate_bytes_embedded_once_without_cache(folder):
    shutil.copy(folder / "c0" / "00.png", folder / "dup.png")
    bb = TinyBackbone()
    res = embed_images(folder, bb, progress=False)
    assert len(res.paths) == 11 and bb.n_images == 10 and res.stats.n_computed == 10


def test_resume_after_simulated_kill(folder, tmp_path):
    cache = tmp_path / "cache"
    crashing = TinyBackbone(fail_after=2)
    with pytest.raises(BackboneError, match="simulated crash"):
        embed_images(folder, crashing, cache_dir=cache, batch_size=2, progress=False)
    assert len(EmbeddingCache(cache, "tiny0001", ("image", "joint"))) == 4

    bb = TinyBackbone()
    resumed = embed_images(folder, bb, cache_dir=cache, batch_size=2, progress=False)
    assert resumed.stats.n_cached == 4 and resumed.stats.n_computed == 6
    assert bb.n_images == 6
    ref = _reference(folder, batch_size=2)
    assert resumed.paths == ref.paths
    for name in ref.arrays:
        np.testing.assert_allclose(resumed.arrays[name], ref.arrays[name], rtol=1e-5, atol=1e-6)


def test_leftovers_of_a_kill_are_ignored(folder, tmp_path):
    """A kill between shard and manifest leaves an orphan shard; one inside a
    write leaves a temp file. Neither is read as data."""
    cache = tmp_path / "cache"
    embed_images(folder, TinyBackbone(), cache_dir=cache, batch_size=5, progress=False)
    root = cache / "embeddings" / "tiny0001"
    (root / "shards" / "99999999999999999999-deadbeef.safetensors").write_bytes(b"orphan")
    (root / "shards" / ".x.safetensors.tmp").write_bytes(b"half")
    (root / "manifest" / ".y.jsonl.abcd.tmp").write_text('{"key": "tru')
    stale = root / "shards" / ".old.safetensors.tmp"
    stale.write_bytes(b"left by a kill long ago")
    os.utime(stale, (1e9, 1e9))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = embed_images(folder, TinyBackbone(), cache_dir=cache, batch_size=5, progress=False)
    assert res.stats.n_cached == 10 and res.stats.n_computed == 0
    assert not stale.exists()  # old temp files are cleaned up
    assert (root / "shards" / ".x.safetensors.tmp").exists()  # young ones may be a live writer's


@pytest.mark.parametrize("damage", ["garbage", "wrong_width", "truncated"])
def test_corrupted_shard_is_detected_and_recomputed(folder, tmp_path, damage):
    cache = tmp_path / "cache"
    first = embed_images(folder, TinyBackbone(), cache_dir=cache, batch_size=4, progress=False)
    shard = sorted((cache / "embeddings" / "tiny0001" / "shards").glob("*.safetensors"))[0]
    if damage == "garbage":
        shard.write_bytes(b"\x00not a safetensors file")
    elif damage == "truncated":
        shard.write_bytes(shard.read_bytes()[:-100])
    else:
        from safetensors.numpy import save_file

        save_file({"image": np.zeros((4, 3), np.float32), "joint": np.zeros((4, 5), np.float32)}, str(shard))

    bb = TinyBackbone()
    with pytest.warns(CorruptShardWarning, match="corrupt"):
        second = embed_images(folder, bb, cache_dir=cache, batch_size=4, progress=False)
    assert second.stats.n_computed == 4 and second.stats.n_cached == 6 and bb.n_images == 4
    np.testing.assert_allclose(second.arrays["image"], first.arrays["image"], rtol=1e-5, atol=1e-6)
    assert shard.with_name(shard.name + ".corrupt").exists()
    # the bad shard was set aside: the next run neither warns nor recomputes
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        third = embed_images(folder, TinyBackbone(), cache_dir=cache, batch_size=4, progress=False)
    assert third.stats.n_computed == 0


def test_nan_rows_are_skipped_and_not_cached(folder, tmp_path):
    black = folder / "black.png"
    Image.new("RGB", (8, 8)).save(black)
    cache = tmp_path / "cache"
    res = embed_images(folder, TinyBackbone(), cache_dir=cache, progress=False)
    assert (str(black), "backbone produced NaN") in res.skipped
    assert len(res.paths) == 10 and np.isfinite(res.arrays["image"]).all()
    assert content_key(black) not in EmbeddingCache(cache, "tiny0001", ("image", "joint"))
    again = embed_images(folder, TinyBackbone(), cache_dir=cache, progress=False)
    assert again.stats.n_computed == 0 and (str(black), "backbone produced NaN") in again.skipped


def test_undecodable_files_are_remembered(folder, tmp_path, monkeypatch):
    (folder / "text.jpg").write_text("not an image")
    cache = tmp_path / "cache"
    first = embed_images(folder, TinyBackbone(), cache_dir=cache, progress=False)
    assert (str(folder / "text.jpg"), "not an image") in first.skipped
    calls = []
    real = runner_mod.decode_image
    monkeypatch.setattr(runner_mod, "decode_image", lambda p: calls.append(p) or real(p))
    second = embed_images(folder, TinyBackbone(), cache_dir=cache, progress=False)
    assert calls == [] and second.skipped == first.skipped


def test_backbone_with_malformed_output_raises(folder):
    class Broken(TinyBackbone):
        def encode_images(self, batch):
            return {"image": np.zeros((batch.shape[0], 8), np.float32)}  # no "joint"

    with pytest.raises(BackboneError, match="'joint'"):
        embed_images(folder, Broken(), progress=False)


def test_process_workers_match_threads(folder):
    threads = _reference(folder, num_workers=2, decode_in="threads")
    procs = _reference(folder, num_workers=2, decode_in="processes")
    inline = _reference(folder, num_workers=0)
    assert threads.paths == procs.paths == inline.paths
    np.testing.assert_array_equal(threads.arrays["image"], procs.arrays["image"])
    np.testing.assert_array_equal(threads.arrays["image"], inline.arrays["image"])


def test_bad_parameters_and_missing_source(tmp_path, folder):
    with pytest.raises(InputError, match="does not exist"):
        embed_images(tmp_path / "nope", TinyBackbone(), progress=False)
    with pytest.raises(InputError, match="batch_size=0"):
        embed_images(folder, TinyBackbone(), batch_size=0, progress=False)
    (tmp_path / "notes.md").write_text("x")
    with pytest.raises(InputError, match="neither a folder"):
        list_inputs(tmp_path / "notes.md")


def test_empty_folder_gives_empty_result(tmp_path):
    (tmp_path / "empty").mkdir()
    res = embed_images(tmp_path / "empty", TinyBackbone(), cache_dir=tmp_path / "c", progress=False)
    assert res.paths == [] and res.skipped == []
    assert res.arrays["image"].shape[0] == 0 and res.arrays["image"].dtype == np.float32
    assert res.stats.n_computed == 0


def test_run_tasks_runs_every_task_in_order():
    assert run_tasks([3, 1, 2], lambda t: t * 10) == [30, 10, 20]


# -- reader: bad and unusual files ---------------------------------------------


def _jpeg_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", **kw)
    return buf.getvalue()


@pytest.fixture
def zoo(tmp_path):
    """A folder of awkward files; returns (root, expectations)."""
    root = tmp_path / "zoo"
    root.mkdir()
    _noise(root / "good.png", 1)
    (root / "zero.jpg").write_bytes(b"")
    full = _jpeg_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)))
    (root / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (root / "text.jpg").write_text("hello, I am not a JPEG")
    (root / "dir.jpg").mkdir()
    (root / "notes.txt").write_text("ignored: not an image extension")
    Image.new("RGB", (1, 1), (200, 10, 10)).save(root / "tiny.png")
    Image.new("CMYK", (10, 8), (0, 255, 255, 0)).save(root / "cmyk.JPG")
    Image.fromarray(np.full((6, 5), 65535, np.uint16)).save(root / "sixteen.png")
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([0, 0, 255] + [255, 0, 0] * 255)
    pal.putpixel((1, 1), 1)
    pal.save(root / "palette.png", transparency=0)
    rot = Image.new("RGB", (30, 20), (0, 128, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    (root / "rotated.jpeg").write_bytes(_jpeg_bytes(rot, exif=exif.tobytes()))
    frames = [Image.new("RGB", (6, 6), c) for c in [(255, 0, 0), (0, 0, 255)]]
    frames[0].save(root / "anim.gif", save_all=True, append_images=frames[1:], duration=50)
    Image.new("LA", (5, 5), (0, 0)).save(root / "la.png")  # fully transparent black
    Image.new("1", (5, 5), 1).save(root / "bilevel.bmp")
    return root


def test_bad_files_are_skipped_with_reasons(zoo):
    listed = list_inputs(zoo)
    names = [Path(p).name for p in listed.paths]
    assert "dir.jpg" not in names and "notes.txt" not in names
    assert "cmyk.JPG" in names  # extension match is case-insensitive

    res = embed_images(zoo, TinyBackbone(), progress=False)
    reasons = {Path(p).name: r for p, r in res.skipped}
    assert reasons["zero.jpg"] == "empty file"
    assert reasons["truncated.jpg"].startswith("truncated or corrupt")
    assert reasons["text.jpg"] == "not an image"
    ok = {Path(p).name for p in res.paths}
    assert ok == {"good.png", "tiny.png", "cmyk.JPG", "sixteen.png", "palette.png",
                  "rotated.jpeg", "anim.gif", "la.png", "bilevel.bmp"}
    assert np.isfinite(res.arrays["image"]).all()


def test_decode_converts_modes_sensibly(zoo):
    def px(name, xy=(0, 0)):
        im = decode_image(zoo / name)
        assert im.mode == "RGB"
        return im.getpixel(xy)

    assert px("tiny.png") == (200, 10, 10)
    r, g, b = px("cmyk.JPG", (4, 4))  # cyan-free red in CMYK = (0, 255, 255, 0) -> red
    assert r > 200 and g < 40 and b < 40
    assert px("sixteen.png") == (255, 255, 255)  # 65535 scaled to 255, not clipped garbage
    assert px("palette.png") == (255, 255, 255)  # transparent index composited on white
    assert px("palette.png", (1, 1)) == (255, 0, 0)
    assert px("la.png") == (255, 255, 255)
    assert px("anim.gif") == (255, 0, 0)  # first frame
    assert px("bilevel.bmp") == (255, 255, 255)
    assert decode_image(zoo / "rotated.jpeg").size == (20, 30)  # EXIF rotation applied


def test_sixteen_bit_midtones_scale(tmp_path):
    Image.fromarray(np.array([[0, 32896, 65535]], np.uint16)).save(tmp_path / "g.png")
    im = decode_image(tmp_path / "g.png")
    assert [im.getpixel((x, 0))[0] for x in range(3)] == [0, 128, 255]


@pytest.mark.parametrize("pixels", [150, 400])  # warning range and error range
def test_decompression_bombs_are_rejected(tmp_path, monkeypatch, pixels):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    Image.new("RGB", (pixels // 10, 10)).save(tmp_path / "big.png")
    with pytest.raises(ImageDecodeError) as info:
        decode_image(tmp_path / "big.png")
    assert info.value.reason == "too large"
    res = embed_images([tmp_path / "big.png"], TinyBackbone(), progress=False)
    assert res.skipped == [(str(tmp_path / "big.png"), "too large")]


def test_symlink_loop_and_unreadable_dir_are_skipped(tmp_path, monkeypatch):
    root = tmp_path / "data"
    _noise(root / "a" / "1.png", 1)
    _noise(root / "b" / "2.png", 2)
    os.symlink(root, root / "a" / "loop")
    os.symlink(root / "b", root / "b_again")
    (root / "secret").mkdir()
    real_scandir = os.scandir

    def scandir(path="."):
        if os.path.basename(os.fspath(path)) == "secret":
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    listed = list_inputs(root)
    assert listed.paths == [str(root / "a" / "1.png"), str(root / "b" / "2.png")]
    reasons = dict(listed.skipped)
    assert reasons[str(root / "a" / "loop")] == "symlink loop"
    assert reasons[str(root / "b_again")].startswith("duplicate of")
    assert reasons[str(root / "secret")].startswith("unreadable directory")


def test_csv_and_txt_lists(tmp_path, folder):
    lists = tmp_path / "lists"
    lists.mkdir()
    good = folder / "c0" / "00.png"
    rel = os.path.relpath(folder / "c1" / "01.png", lists)
    (lists / "l.csv").write_text(f"label,path\nx,{good}\ny,{rel}\nz,gone.png\n")
    listed = list_inputs(lists / "l.csv")
    # absolute and normalised: the outputs do not depend on how a path was written
    assert listed.paths == [str(good), os.path.abspath(lists / rel)]
    assert listed.skipped == [(str(lists / "gone.png"), "missing")]

    (lists / "noheader.csv").write_text(f"{good},cat\n{rel},dog\n")
    assert list_inputs(lists / "noheader.csv").paths == [str(good), os.path.abspath(lists / rel)]

    (lists / "l.txt").write_text(f"# my images\n{rel}\n\nmissing.jpg\n{good}\n")
    res = embed_images(lists / "l.txt", TinyBackbone(), progress=False)
    assert res.paths == [os.path.abspath(lists / rel), str(good)]
    assert res.skipped == [(str(lists / "missing.jpg"), "missing")]
    assert res.arrays["image"].shape == (2, 8)


# -- the real offline backbone -------------------------------------------------


def test_real_lite_backbone_on_cifar_images(tmp_path):
    from tacluster.embed.backbones.lite import LiteBackbone  # a core dependency: its failure is a failure
    archive = SHARED / "data" / "cifar10-train.tar.gz"
    if not archive.exists():
        pytest.skip(f"{archive} not found (../shared is absent)")
    out = tmp_path / "cifar"
    with tarfile.open(archive) as tar:
        members = []
        for m in tar:
            if m.isfile() and m.name.endswith(".jpg"):
                members.append(m)
            if len(members) == 4:
                break
        tar.extractall(out, members=members, filter="data")
    bb = LiteBackbone()
    res = embed_images(out, bb, cache_dir=tmp_path / "cache", batch_size=2, progress=False)
    assert len(res.paths) == 4 and res.skipped == []
    assert set(res.arrays) == set(bb.outputs)
    img = res.arrays["image"]
    assert img.shape == (4, 1280) and np.isfinite(img).all()
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1.0, atol=1e-4)
    again = embed_images(out, bb, cache_dir=tmp_path / "cache", progress=False)
    assert again.stats.n_computed == 0
    for name in res.arrays:
        np.testing.assert_array_equal(again.arrays[name], res.arrays[name])


def test_embedding_progress_is_shown_when_stderr_is_not_a_terminal(folder, tmp_path, capsys):
    """Logs and CI (stderr a file or pipe) still see the embedding's progress, as plain lines."""
    embed_images(folder, TinyBackbone(), cache_dir=tmp_path / "c", progress=True, batch_size=4)
    err = capsys.readouterr().err
    assert "\r" not in err
    assert "embedding (tiny): 10 images" in err and "10/10" in err, err
    embed_images(folder, TinyBackbone(), cache_dir=tmp_path / "c", progress=False)
    assert capsys.readouterr().err == ""
