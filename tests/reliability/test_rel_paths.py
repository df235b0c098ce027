"""User paths of the second new-user pass (issue 29): exports inside the input,
links, camera-size photos, other image formats, predict's skipped files and
exports of runs whose images are gone. Each test is named after the behaviour."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

import relihelpers
from relihelpers import assert_one_line_error, read_csv, read_run
from tacluster.embed.reader import ImageDecodeError, decode_image, list_inputs


def _clustered(tmp_path, cli, cluster_args, src: Path, name: str = "out", k: int = 2) -> Path:
    out = tmp_path / name
    code, _, err = cli(["cluster", src, "--k", k, *cluster_args(out)])
    assert code == 0, err
    return out


def test_an_export_inside_the_input_is_not_clustered_again(tmp_path, cli, cluster_args):
    photos = tmp_path / "photos"
    goods = relihelpers.add_good(photos, 6)
    out = _clustered(tmp_path, cli, cluster_args, photos)
    code, _, err = cli(["export", out, "--to", photos / "sorted"])
    assert code == 0, err
    assert any(p.is_symlink() for p in (photos / "sorted").rglob("*"))
    out2 = _clustered(tmp_path, cli, cluster_args, photos, "out2")
    assert len(read_csv(out2 / "assignments.csv")) == len(goods)
    skipped = read_csv(out2 / "skipped.csv")
    assert [Path(r["path"]).name for r in skipped] == ["sorted"]
    assert "export folder" in skipped[0]["reason"]
    # the folder is listed with its reason, but counted apart: the counts add up over files
    counts = read_run(out2)["counts"]
    assert counts["skipped"] == 0 and counts["folders_left_out"] == 1
    assert counts["inputs"] == counts["assigned"] + counts["skipped"] == len(goods)


def test_a_link_to_a_file_already_listed_is_counted_as_a_duplicate(tmp_path):
    photos = tmp_path / "photos"
    goods = relihelpers.add_good(photos, 4)
    (photos / "links").mkdir()
    os.symlink(goods[0], photos / "links" / "again.png")
    os.symlink(goods[1], photos / "a_first_link.png")  # sorts before the file it points to
    outside = relihelpers.good_image(tmp_path / "elsewhere" / "only_here.png", 3)
    os.symlink(outside, photos / "links" / "only_link.png")  # a dataset assembled from links: kept
    found = list_inputs(photos)
    assert found.duplicates == 2
    assert str(goods[0]) in found.paths and str(goods[1]) in found.paths  # the real names are kept
    assert str(photos / "links" / "only_link.png") in found.paths
    assert len(found.paths) == len(goods) + 1


def test_a_camera_size_jpeg_over_pillows_bomb_limit_is_decoded_at_reduced_size(tmp_path):
    path = tmp_path / "camera.jpg"
    Image.new("RGB", (11648, 8736), (90, 140, 200)).save(path, quality=50)  # 101.8 MP, a real camera size
    assert 11648 * 8736 > Image.MAX_IMAGE_PIXELS
    im = decode_image(path)
    assert im.mode == "RGB"
    assert im.size == (11648 // 2, 8736 // 2)  # DCT-scaled: never decoded whole
    assert im.getpixel((10, 10)) == pytest.approx((90, 140, 200), abs=3)


def test_a_png_over_the_bomb_limit_is_still_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    Image.new("RGB", (40, 30)).save(tmp_path / "warn.png")  # 1,200 px: Pillow's warning range
    with pytest.raises(ImageDecodeError, match="too large"):
        decode_image(tmp_path / "warn.png")
    from tacluster.embed import reader

    monkeypatch.setattr(reader, "LARGE_PHOTO_PIXELS", 300)  # the same ratio to the limit as 12 MP to 89 MP
    Image.new("RGB", (40, 30)).save(tmp_path / "warn.jpg")  # a JPEG of that size decodes, reduced
    assert decode_image(tmp_path / "warn.jpg").size == (20, 15)


def test_jfif_jpe_and_avif_files_are_clustered_and_heic_without_its_plugin_is_listed(tmp_path, cli, cluster_args,
                                                                                      monkeypatch):
    photos = tmp_path / "photos"
    goods = relihelpers.add_good(photos, 4)
    im = Image.open(goods[0]).convert("RGB")
    im.save(photos / "phone.jfif", format="JPEG")
    im.save(photos / "old.jpe", format="JPEG")
    im.save(photos / "modern.avif", format="AVIF")
    (photos / "iphone.heic").write_bytes(b"\0\0\0\x18ftypheic" + b"\0" * 64)
    from tacluster.embed import reader

    monkeypatch.setattr(reader, "_HEIF", [False])  # as on a machine without pillow-heif
    out = _clustered(tmp_path, cli, cluster_args, photos)
    assigned = {Path(r["path"]).name for r in read_csv(out / "assignments.csv")}
    assert {"phone.jfif", "old.jpe", "modern.avif"} <= assigned
    skipped = {Path(r["path"]).name: r["reason"] for r in read_csv(out / "skipped.csv")}
    assert "pillow-heif" in skipped["iphone.heic"]


def test_predict_lists_each_skipped_file_and_an_empty_folder_exits_2(tmp_path, cli, cluster_args, shared_cache):
    photos = tmp_path / "photos"
    relihelpers.add_good(photos, 6)
    out = _clustered(tmp_path, cli, cluster_args, photos)
    new = tmp_path / "new"
    relihelpers.add_good(new, 2)
    (new / "broken.jpg").write_bytes(b"not a jpeg")
    preds = tmp_path / "preds.csv"
    common = ["--cache-dir", shared_cache, "--device", "cpu"]
    code, stdout, err = cli(["predict", out, new, "--out", preds, *common])
    assert code == 0, err
    assert "1 skipped" in stdout and "not an image" in stdout and str(preds) in stdout
    rows = {Path(r["path"]).name: r for r in read_csv(preds)}
    assert rows["broken.jpg"]["cluster"] == "" and rows["broken.jpg"]["cluster_name"].startswith("skipped: ")
    (tmp_path / "empty").mkdir()
    code, _, err = cli(["predict", out, tmp_path / "empty", "--out", tmp_path / "p2.csv", *common])
    assert_one_line_error(code, err, r"no images to assign.*supported: jpg")


def test_export_of_a_run_whose_images_are_gone_exports_the_rest_and_leaves_no_partial_folder(
        tmp_path, cli, cluster_args, monkeypatch):
    photos = tmp_path / "photos"
    goods = relihelpers.add_good(photos, 6)
    out = _clustered(tmp_path, cli, cluster_args, photos)
    goods[0].unlink()
    code, stdout, err = cli(["export", out, "--to", tmp_path / "links"])
    assert code == 0, err
    assert "not exported: 1 image" in stdout
    links = [p for p in (tmp_path / "links").rglob("*") if p.is_symlink()]
    assert len(links) == len(goods) - 1 and all(p.exists() for p in links)  # no dangling link

    from tacluster.run import edit

    calls = []

    def copy_then_fail(src, dst):
        calls.append(src)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return shutil.copyfile(src, dst)

    monkeypatch.setattr(edit.shutil, "copy2", copy_then_fail)
    code, _, err = cli(["export", out, "--to", tmp_path / "copies", "--copy"])
    assert code == 2 and "No space left" in err
    assert not (tmp_path / "copies").exists()  # nothing half-written blocks a retry
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []
    monkeypatch.undo()
    code, _, err = cli(["export", out, "--to", tmp_path / "copies", "--copy"])
    assert code == 0, err

    for p in goods[1:]:
        p.unlink()
    code, _, err = cli(["export", out, "--to", tmp_path / "none"])
    assert_one_line_error(code, err, r"none of the run's \d+ images is a file here")
    assert not (tmp_path / "none").exists()
    assert read_run(out)["status"] == "complete"


def test_heic_photos_are_clustered_with_the_pillow_heif_plugin(tmp_path, cli, cluster_args):
    pillow_heif = pytest.importorskip("pillow_heif", reason="the [heif] extra (pillow-heif) is not installed")
    pillow_heif.register_heif_opener()
    photos = tmp_path / "photos"
    goods = relihelpers.add_good(photos, 4)
    Image.open(goods[1]).convert("RGB").resize((64, 64)).save(photos / "iphone.heic", format="HEIF")
    out = _clustered(tmp_path, cli, cluster_args, photos)
    assert "iphone.heic" in {Path(r["path"]).name for r in read_csv(out / "assignments.csv")}


def test_threads_option_runs_at_that_count_and_run_json_records_it(tmp_path, cli, cluster_args, capsys):
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    photos = tmp_path / "photos"
    relihelpers.add_good(photos, 6)
    try:
        code, _, err = cli(["cluster", photos, "--k", 2, *cluster_args(tmp_path / "out"), "--threads", 1])
        assert code == 0, err
        assert read_run(tmp_path / "out")["settings"]["threads"] == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(SystemExit) as exc:
        cli(["cluster", photos, "--k", 2, *cluster_args(tmp_path / "out2"), "--threads", "0"])
    assert exc.value.code == 2
    assert "--threads: '0' is not a whole number >= 1" in capsys.readouterr().err


def test_k_is_checked_against_the_files_before_any_embedding(tmp_path, cli, cluster_args, monkeypatch):
    from tacluster.embed import runner

    photos = tmp_path / "photos"
    relihelpers.add_good(photos, 2)
    for p in list(photos.glob("cifar_*")):
        p.unlink()

    def no_embedding(*a, **k):
        raise AssertionError("embedded before K was checked")

    monkeypatch.setattr(runner, "_run_with_progress", no_embedding)
    code, _, err = cli(["cluster", photos, "--k", 1000, *cluster_args(tmp_path / "o1")])
    assert_one_line_error(code, err, r"--k 1000 is larger than the 2 image files found in .*; use --k 2 or fewer")
    code, _, err = cli(["cluster", photos, "--k", "auto", *cluster_args(tmp_path / "o2")])
    assert_one_line_error(code, err, r"--k auto needs at least 3 images and found 2 image files .*give --k 2")
    assert "k_range" not in err
    monkeypatch.undo()  # one listed image is decoded first: the error then says whether it is usable
    (photos / "good_01.png").unlink()
    code, _, err = cli(["cluster", photos, "--k", 2, *cluster_args(tmp_path / "o3")])
    assert_one_line_error(code, err, r"only 1 usable image in .*needs at least 2 images")
    assert "--k 1" not in err  # never the advice to use a K that is then refused


def test_a_file_that_failed_to_decode_is_not_decoded_again_on_a_rerun(tmp_path, cli, cluster_args, monkeypatch):
    from tacluster.embed import runner

    photos = tmp_path / "photos"
    relihelpers.add_good(photos, 4)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff junk that is no JPEG")
    cache = tmp_path / "cache"
    code, _, err = cli(["cluster", photos, "--k", 2, *cluster_args(tmp_path / "o1", cache=cache)])
    assert code == 0, err
    decoded = []
    real = runner.decode_image
    monkeypatch.setattr(runner, "decode_image", lambda p: decoded.append(Path(p).name) or real(p))
    code, _, err = cli(["cluster", photos, "--k", 2, *cluster_args(tmp_path / "o2", cache=cache)])
    assert code == 0, err
    assert decoded == []  # the failure is cached by content digest, like the embeddings
    skipped = {Path(r["path"]).name: r["reason"] for r in read_csv(tmp_path / "o2" / "skipped.csv")}
    assert skipped["broken.jpg"].startswith("truncated or corrupt") or skipped["broken.jpg"] == "not an image"


def test_a_semicolon_csv_list_is_read_by_its_delimiter(tmp_path, cli, cluster_args):
    photos = tmp_path / "photos"
    goods = relihelpers.add_good(photos, 4)
    listing = tmp_path / "list.csv"
    listing.write_text("path;label\n" + "".join(f"{p};x{i % 2}\n" for i, p in enumerate(goods)))
    out = _clustered(tmp_path, cli, cluster_args, listing)
    assert len(read_csv(out / "assignments.csv")) == len(goods)
    assert read_csv(out / "skipped.csv") == []


def test_a_quoted_pattern_and_a_single_image_are_inputs_and_an_expanded_glob_is_explained(
        tmp_path, cli, cluster_args, shared_cache):
    photos = tmp_path / "photos"
    goods = relihelpers.add_good(photos, 6)
    out = _clustered(tmp_path, cli, cluster_args, str(photos / "good_*.png"))
    assert sorted(Path(r["path"]).name for r in read_csv(out / "assignments.csv")) == [
        p.name for p in goods if p.name.startswith("good_")]
    preds = tmp_path / "one.csv"
    code, _, err = cli(["predict", out, goods[0], "--out", preds, "--cache-dir", shared_cache, "--device", "cpu"])
    assert code == 0, err
    assert [Path(r["path"]).name for r in read_csv(preds)] == [goods[0].name]
    code, _, err = cli(["cluster", goods[0], goods[1], goods[2], "--k", 2, *cluster_args(tmp_path / "o2")])
    assert_one_line_error(code, err, r"got 3 inputs .*quote a pattern .*'photos/\*\.jpg'")
    code, _, err = cli(["cluster", str(photos / "*.gif"), "--k", 2, *cluster_args(tmp_path / "o3")])
    assert_one_line_error(code, err, r"no image file matches")


def test_evaluate_warns_when_every_label_is_the_same_and_writes_absolute_paths(tmp_path, cli, cluster_args,
                                                                                monkeypatch):
    photos = tmp_path / "photos"
    relihelpers.add_good(photos, 6)  # one folder: parent-dir gives every image the label "photos"
    out = _clustered(tmp_path, cli, cluster_args, photos)
    monkeypatch.chdir(tmp_path)
    code, stdout, err = cli(["evaluate", "out", "--labels", "parent-dir", "--confusion", "conf.png"])
    assert code == 0, err
    assert "ACC" in stdout
    assert "warning: every image has the same label 'photos'" in err
    import json

    result = json.loads((out / "evaluation.json").read_text())
    assert Path(result["confusion_png"]).is_absolute() and Path(result["confusion_png"]).is_file()
    assert result["warnings"]


def test_a_second_command_on_a_run_directory_being_written_is_refused_at_once(tmp_path, cli, cluster_args):
    import subprocess
    import sys

    photos = tmp_path / "photos"
    relihelpers.add_good(photos, 4)
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pathlib import Path\nfrom tacluster.run.rundir import run_lock\n"
         "with run_lock(Path(sys.argv[1])):\n    print('locked', flush=True)\n    time.sleep(60)\n", str(out)],
        stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")})
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, _, err = cli(["cluster", photos, "--k", 2, *cluster_args(out)])
        assert_one_line_error(code, err, rf"another tacluster command \(pid {holder.pid}\) is writing")
        assert [p.name for p in out.iterdir()] == [".tacluster-lock"]  # nothing of the refused run
    finally:
        holder.kill()  # as kill -9: the kernel drops the lock with the process
        holder.wait()
    code, _, err = cli(["cluster", photos, "--k", 2, *cluster_args(out)])
    assert code == 0, err
    assert read_run(out)["status"] == "complete"


def test_a_refused_run_leaves_no_folder_it_created(tmp_path, cli, cluster_args):
    photos = tmp_path / "photos"
    relihelpers.add_good(photos, 2)
    code, _, err = cli(["cluster", photos, "--k", 2, *cluster_args(tmp_path / "new" / "out"), "--vocabulary",
                        tmp_path / "missing.txt"])
    assert code == 2, err
    assert not (tmp_path / "new").exists()


def test_progress_in_a_log_is_plain_lines_not_bars(tmp_path, cli, vocab, shared_cache):
    photos = tmp_path / "photos"
    relihelpers.add_good(photos, 8)
    code, _, err = cli(["cluster", photos, "--k", 2, "--out", tmp_path / "out", "--cache-dir", tmp_path / "cache",
                        "--vocabulary", vocab, "--backbone", "relitiny", "--method", "tac", "--device", "cpu"])
    assert code == 0, err
    assert "\r" not in err  # stderr is not a terminal here: no bar redraws
    lines = err.splitlines()
    for stage, unit in (("embedding (relitiny)", "images"), ("training heads", "epochs"), ("thumbnails", "images")):
        assert any(ln.startswith(f"{stage}: ") and f" {unit} in " in ln for ln in lines), (stage, err)


def test_cluster_pages_show_lazy_thumbnails_most_confident_first(tmp_path, cli, cluster_args):
    import re

    photos = tmp_path / "photos"
    relihelpers.add_good(photos, 8)
    out = tmp_path / "out"
    code, _, err = cli(["cluster", photos, "--k", 2, *cluster_args(out, report=True)])
    assert code == 0, err
    rows = read_csv(out / "assignments.csv")
    for page in sorted((out / "clusters").glob("cluster-*.html")):
        html = page.read_text(encoding="utf-8")
        cid = int(page.stem.split("-")[1])
        members = sorted((r for r in rows if int(r["cluster"]) == cid), key=lambda r: -float(r["confidence"]))
        imgs = re.findall(r'<img src="\.\./(thumbs/[^"]+)" alt="" loading="lazy"', html)
        assert len(imgs) == len(members)  # every member of a small cluster has its thumbnail
        assert all((out / src).is_file() for src in imgs)
        listed = re.findall(r'<td class="path"><a href="[^"]+">([^<]+)</a>', html)
        assert [Path(p).name for p in listed] == [Path(r["path"]).name for r in members]
        assert "img-src 'self' file:" in html  # the page's policy lets the thumbnails load


def test_an_emoji_cluster_name_rebuilds_the_report_without_glyph_warnings(tmp_path, cli, cluster_args):
    import warnings

    photos = tmp_path / "photos"
    relihelpers.add_good(photos, 6)
    out = tmp_path / "out"
    code, _, err = cli(["cluster", photos, "--k", 2, *cluster_args(out, report=True)])
    assert code == 0, err
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, _, err = cli(["rename", out, "0", "cats \U0001F431"])
        code2, _, err2 = cli(["rename", out, "1", "dogs \U0001F436"])
    assert code == 0 and code2 == 0, err + err2
    assert not [w for w in caught if "Glyph" in str(w.message)], [str(w.message) for w in caught]
    assert "Glyph" not in err + err2


def test_embeddings_of_a_backbone_not_here_cluster_without_names_offline_and_text_methods_say_why(
        tmp_path, cli, monkeypatch):
    """Item 26: ``--embeddings x.npy --backbone <VLM> --method kmeans`` offline, the model not cached:
    clustered without names (said in one warning, run.json too), predicted from vectors alike;
    a method that needs the noun side is one line saying what to do. Nothing is downloaded."""
    import json

    import numpy as np

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty Hugging Face cache
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16))
    x = np.concatenate([c + 0.2 * rng.normal(size=(20, 16)) for c in centres]).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    base = ["cluster", "--embeddings", tmp_path / "x.npy", "--backbone", "hf:someone/some-clip", "--k", "3",
            "--offline"]
    code, _, err = cli([*base, "--method", "kmeans", "--out", tmp_path / "run"])
    assert code == 0, err
    assert "no cluster names: backbone 'hf:someone/some-clip'" in err and "offline" in err
    rows = read_csv(tmp_path / "run" / "assignments.csv")
    assert {r["cluster_name"] for r in rows} == {"cluster 0", "cluster 1", "cluster 2"}
    assert len({r["cluster"] for r in rows[:20]}) == 1  # the three blobs are found
    run = read_run(tmp_path / "run")
    assert run["settings"]["noun_bank"] == "none" and run["settings"]["backbone_fingerprint"] is None
    assert any(w.startswith("no cluster names") for w in run["warnings"])
    assert json.loads((tmp_path / "run" / "clusters.json").read_text())  # the report's inputs are whole
    code, _, err = cli(["predict", tmp_path / "run" / "model", "--embeddings", tmp_path / "x.npy", "--out",
                        tmp_path / "p.csv", "--offline"])
    assert code == 0, err
    assert [r["cluster"] for r in read_csv(tmp_path / "p.csv")] == [r["cluster"] for r in rows]
    code, _, err = cli([*base, "--method", "tac", "--out", tmp_path / "run2"])
    assert_one_line_error(code, err, r"method 'tac' needs the model's noun side.*--method kmeans")
    assert not (tmp_path / "run2").exists()
    code, _, err = cli(["predict", tmp_path / "run" / "model", tmp_path / "x.npy", "--out", tmp_path / "q.csv",
                        "--offline"])  # images need the model itself
    assert_one_line_error(code, err, r"not in the Hugging Face cache .* offline")
