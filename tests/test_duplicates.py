"""Duplicates: planted copies of real photos, byte-identical files, duplicates.csv in every run,
``export --skip-duplicates``, ``tacluster duplicates`` and its errors, and the chaining rule."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from helpers import extract_members, shared_tarball
from tacluster.run.cli import main
from tacluster.run.duplicates import COLUMNS, EXACT_MAX, find_duplicates
from tacluster.run.workflows import folder_duplicates
from tacluster.testing import plant_copy

#: original (index into the sorted photos) -> the copies planted of it: every kind the thumbnails
#: find (100 % pair recall on flowers17's planted copies, docs/duplicates.md), the four together too.
PLANTED = {0: ("crop5", "colour", "half"), 5: ("colour", "all"), 10: ("crop5", "jpeg40"), 13: ("identical",)}


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """16 flowers (4 classes x 4, distinct photos: class c4 starts with mirrored crops of one photo,
    the data set's own near-duplicates) plus planted copies of four of them, and one cache."""
    root = tmp_path_factory.mktemp("dup")
    tar = shared_tarball("flowers17.tar.gz")
    originals = sorted(extract_members(tar, root / "photos", 4, classes={"c1", "c2", "c3", "c5"}))
    assert len(originals) == 16
    copies = {}
    for i, transforms in PLANTED.items():
        for t in transforms:
            dst = root / "photos" / "copies" / f"{originals[i].stem}-{t}.jpg"
            plant_copy(originals[i], dst, t)
            copies[str(dst)] = str(originals[i])
    return {"dir": root / "photos", "originals": [str(p) for p in originals], "copies": copies,
            "cache": root / "cache", "root": root}


@pytest.fixture(scope="module")
def found(photos):
    out = photos["root"] / "found.csv"
    result = folder_duplicates(photos["dir"], out, cache_dir=photos["cache"], progress=False)
    return result, out


def _groups_of(csv_path: Path) -> dict[int, list[dict]]:
    with open(csv_path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    groups: dict[int, list[dict]] = {}
    for r in rows:
        groups.setdefault(int(r["group"]), []).append(r)
    return groups


def test_planted_copies_are_found_and_distinct_photos_are_not_grouped(photos, found):
    result, _ = found
    group_of = {}
    for g, grp in enumerate(result.groups):
        for i in grp.members:
            group_of[result.paths[i]] = g
    for copy, original in photos["copies"].items():
        assert copy in group_of and group_of.get(original) == group_of[copy], (copy, original)
    for grp in result.groups:
        originals = {p for p in (result.paths[i] for i in grp.members) if p in photos["originals"]}
        assert len(originals) == 1, f"distinct photos grouped: {sorted(originals)}"
    assert len(result.groups) == len(PLANTED)


def test_byte_identical_copy_is_an_identical_group(photos, found):
    result, out = found
    original = photos["originals"][13]
    rows = next(rows for rows in _groups_of(out).values() if any(r["path"] == original for r in rows))
    assert {r["kind"] for r in rows} == {"identical"} and len(rows) == 2
    assert {r["digest"] for r in rows} == {hashlib.sha256(Path(original).read_bytes()).hexdigest()}
    assert all(float(r["similarity"]) == 1.0 for r in rows)


def test_csv_lists_every_member_largest_first(photos, found):
    result, out = found
    with open(out, newline="", encoding="utf-8") as fh:
        assert next(csv.reader(fh)) == list(COLUMNS)
    groups = _groups_of(out)
    assert sorted(groups) == list(range(len(PLANTED)))
    for rows in groups.values():
        paths = [r["path"] for r in rows]
        assert len(paths) == len(set(paths)) >= 2
        sizes = [int(r["size_bytes"]) for r in rows]
        assert sizes == [os.path.getsize(p) for p in paths] and sizes == sorted(sizes, reverse=True)
        assert all(r["digest"] == hashlib.sha256(Path(r["path"]).read_bytes()).hexdigest() for r in rows)
        assert float(rows[0]["similarity"]) == 1.0
        assert all(result.threshold <= float(r["similarity"]) <= 1.0 for r in rows)
        assert {r["kind"] for r in rows} <= {"identical", "near"}
    n_members = sum(len(transforms) + 1 for transforms in PLANTED.values())
    assert sum(len(rows) for rows in groups.values()) == n_members


def test_no_duplicates_gives_the_header_alone(photos, tmp_path):
    folder = tmp_path / "distinct"
    folder.mkdir()
    for p in photos["originals"][:6]:
        (folder / Path(p).name).write_bytes(Path(p).read_bytes())
    out = tmp_path / "d.csv"
    assert folder_duplicates(folder, out, cache_dir=photos["cache"], progress=False).groups == []
    assert out.read_text(encoding="utf-8").splitlines() == [",".join(COLUMNS)]


def test_cluster_run_writes_duplicates_report_and_export_keeps_the_largest(photos, found, tmp_path, capsys):
    result, standalone = found
    run = tmp_path / "run"
    assert main(["cluster", str(photos["dir"]), "--k", "4", "--out", str(run), "--cache-dir", str(photos["cache"]),
                 "--quiet"]) == 0
    in_run = _groups_of(run / "duplicates.csv")
    assert sorted(sorted(r["path"] for r in rows) for rows in in_run.values()) == \
        sorted(sorted(r["path"] for r in rows) for rows in _groups_of(standalone).values())
    info = json.loads((run / "run.json").read_text())["duplicates"]
    assert info["groups"] == len(PLANTED) and info["images"] == sum(len(r) for r in in_run.values())
    assert info["threshold"] == result.threshold and info["threshold_source"] == "measured"
    assert info["compared"] == "looks"
    page = (run / "report.html").read_text(encoding="utf-8")
    assert 'id="duplicates"' in page and f"{len(PLANTED)} groups" in page
    assert f"thumbnails correlating &ge; {result.threshold}" in page
    assert page.count("/copies/") >= len(photos["copies"])  # every planted copy has a tile

    to = tmp_path / "sorted"
    assert main(["export", str(run), "--to", str(to), "--skip-duplicates"]) == 0
    exported = sorted(os.readlink(p) for p in to.rglob("*") if p.is_symlink())
    n_assigned = len(result.paths)
    assert len(exported) == n_assigned - sum(len(rows) - 1 for rows in in_run.values())
    for rows in in_run.values():
        largest = max(rows, key=lambda r: int(r["size_bytes"]))["path"]
        assert [p for p in exported if p in {r["path"] for r in rows}] == [largest]
    to_all = tmp_path / "all"
    assert main(["export", str(run), "--to", str(to_all)]) == 0
    assert sum(1 for p in to_all.rglob("*") if p.is_symlink()) == n_assigned


def test_export_skip_duplicates_refuses_a_run_without_the_file(photos, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["cluster", str(photos["dir"]), "--k", "4", "--out", str(run), "--cache-dir", str(photos["cache"]),
                 "--quiet", "--no-report"]) == 0
    (run / "duplicates.csv").unlink()  # as a run of an older tacluster
    capsys.readouterr()
    assert main(["export", str(run), "--to", str(tmp_path / "x"), "--skip-duplicates"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "duplicates.csv" in err and not (tmp_path / "x").exists()


def test_cli_writes_the_csv_and_prints_one_line(photos, tmp_path, capsys):
    out = tmp_path / "d.csv"
    assert main(["duplicates", str(photos["dir"]), "--out", str(out), "--cache-dir", str(photos["cache"])]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    n_members = sum(len(transforms) + 1 for transforms in PLANTED.values())
    assert len(printed) == 1 and printed[0].startswith(
        f"{len(PLANTED)} duplicate group(s) holding {n_members} of {16 + len(photos['copies'])} images "
        "(2 of them byte-identical")
    assert len(_groups_of(out)) == len(PLANTED)
    strict = tmp_path / "strict.csv"
    assert main(["duplicates", str(photos["dir"]), "--out", str(strict), "--cache-dir", str(photos["cache"]),
                 "--threshold", "1", "--quiet"]) == 0
    assert [rows[0]["kind"] for rows in _groups_of(strict).values()] == ["identical"]  # only the same bytes left


@pytest.mark.parametrize("case", ["missing", "empty", "threshold-text", "threshold-zero", "threshold-above-one",
                                  "out-is-folder"])
def test_cli_errors_are_one_line_and_write_nothing(photos, tmp_path, capsys, case):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "d.csv"
    source, extra = str(photos["dir"]), []
    if case == "missing":
        source = str(tmp_path / "nope")
    elif case == "empty":
        source = str(empty)
    elif case == "out-is-folder":
        out = empty
    else:
        extra = ["--threshold", {"threshold-text": "high", "threshold-zero": "0", "threshold-above-one": "1.5"}[case]]
    code = main(["duplicates", source, "--out", str(out), "--cache-dir", str(photos["cache"]), "--quiet", *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("tacluster: error:"), err
    assert not (tmp_path / "d.csv").exists() and not any(empty.iterdir())


@pytest.mark.parametrize("option", [["--backbone", "lite"], ["--device", "cpu"], ["--offline"]])
def test_cli_refuses_model_options_since_no_model_runs(photos, tmp_path, capsys, option):
    with pytest.raises(SystemExit) as stop:
        main(["duplicates", str(photos["dir"]), "--out", str(tmp_path / "d.csv"), *option])
    assert stop.value.code == 2 and f"unrecognized arguments: {option[0]}" in capsys.readouterr().err
    assert not (tmp_path / "d.csv").exists()


def test_thumbnails_are_cached_and_a_bad_file_is_skipped(photos, tmp_path, monkeypatch, capsys):
    import tacluster.embed.look as look

    folder = tmp_path / "few"
    folder.mkdir()
    for p in photos["originals"][:3] + [next(c for c in photos["copies"] if c.endswith("-half.jpg"))]:
        (folder / Path(p).name).write_bytes(Path(p).read_bytes())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    cache = tmp_path / "cache"
    first = folder_duplicates(folder, None, cache_dir=cache, progress=False)
    assert [len(g.members) for g in first.groups] == [2] and [p for p, _ in first.skipped] == [str(folder / "broken.jpg")]

    def no_decoding(path):
        raise AssertionError(f"{path} decoded again")
    monkeypatch.setattr(look, "read_look", lambda path: no_decoding(path) if "broken" not in str(path)
                        else look.decode_image(path))
    again = folder_duplicates(folder, None, cache_dir=cache, progress=False)
    assert [g.members.tolist() for g in again.groups] == [g.members.tolist() for g in first.groups]
    assert main(["duplicates", str(folder), "--out", str(tmp_path / "d.csv"), "--cache-dir", str(cache)]) == 0
    assert capsys.readouterr().out.strip().endswith("; 1 file(s) skipped")


def _smooth_looks(n: int, seed: int = 0) -> np.ndarray:
    """Random smooth grey thumbnails (as :mod:`tacluster.embed.look` stores them)."""
    from PIL import Image

    from tacluster.embed.look import LOOK_SIZE

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        small = Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8))
        out.append(np.asarray(small.resize((LOOK_SIZE, LOOK_SIZE), Image.BICUBIC), dtype=np.uint8).reshape(-1))
    return np.stack(out)


def test_aligned_similarity_undoes_a_crop_and_keeps_distinct_images_apart():
    from PIL import Image

    from tacluster.embed.look import LOOK_SIZE
    from tacluster.run.alignment import aligned_similarity, look_vectors
    from tacluster.run.duplicates import LOOK_THRESHOLD

    looks = _smooth_looks(6)
    side = LOOK_SIZE
    im = Image.fromarray(looks[0].reshape(side, side))
    cropped = im.crop((3, 3, side, side)).resize((side, side), Image.BOX)  # 5 % cut, stretched back
    brighter = np.clip(looks[1].astype(np.int16) * 1.1 + 12, 0, 255).astype(np.uint8)
    all_looks = np.vstack([looks, np.asarray(cropped, dtype=np.uint8).reshape(1, -1), brighter[None]])
    crop_pair = (0, 6)
    sims = aligned_similarity(all_looks, np.array([0, 6, 1, 0, 2]), np.array([6, 0, 7, 1, 3]))
    assert sims[0] == pytest.approx(sims[1], abs=1e-6), "symmetric"
    assert sims[0] >= LOOK_THRESHOLD and sims[2] >= 0.99
    assert max(sims[3], sims[4]) < 0.8, "different images stay apart"
    v = look_vectors(all_looks)
    assert float(v[crop_pair[0]] @ v[crop_pair[1]]) < LOOK_THRESHOLD, "the alignment is what finds the crop"


def _chain(n: int, step: float, dim: int = 16) -> np.ndarray:
    """Unit vectors on a circle arc, consecutive ones ``step`` radians apart."""
    angles = np.arange(n) * step
    x = np.zeros((n, dim), dtype=np.float32)
    x[:, 0], x[:, 1] = np.cos(angles), np.sin(angles)
    return x


def test_a_chain_of_similar_images_is_not_one_group():
    x = _chain(8, 0.3)  # neighbours: cos 0.955; two apart: 0.825; the ends: cos(2.1) < 0
    groups = find_duplicates(None, x, 0.9)
    assert groups, "consecutive images are duplicates"
    for g in groups:
        sims = x[g.members] @ x[g.members].T
        assert sims.min() >= 0.9 - 1e-6, "every two members of a group are duplicates"
        assert len(g.members) <= 2


def test_identical_digests_group_whatever_the_vectors():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 32)).astype(np.float32)
    groups = find_duplicates(["a", "b", "a", None, "c", "a"], x, 0.99)
    assert [g.members.tolist() for g in groups] == [[0, 2, 5]] and groups[0].identical.all()


def test_large_collections_search_ivf_and_find_the_same_pairs():
    rng = np.random.default_rng(1)
    base = rng.standard_normal((3000, 96)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    copies = base[:200] + 0.1 * rng.standard_normal((200, 96)).astype(np.float32) / np.sqrt(96)
    x = np.vstack([base, copies])
    exact = find_duplicates(None, x, 0.95, search="exact")
    ivf = find_duplicates(None, x, 0.95, search="ivf")
    assert len(exact) == 200 and {tuple(g.members) for g in ivf} == {tuple(g.members) for g in exact}
    assert x.shape[0] < EXACT_MAX  # "auto" searches exactly here; the IVF path is forced above


def test_embedding_stores_each_images_thumbnail_so_duplicates_decode_nothing_again(photos, tmp_path, monkeypatch):
    import tacluster.embed.look as look
    from tacluster.embed import embed_images
    from tacluster.embed.backbones import load_backbone

    cache = tmp_path / "cache"
    emb = embed_images(photos["originals"][:4], load_backbone("lite"), cache_dir=cache, progress=False)
    monkeypatch.setattr(look, "read_look", lambda path: (_ for _ in ()).throw(AssertionError(f"{path} decoded")))
    found = look.collection_looks(emb.paths, emb.keys, cache, progress=False)
    assert found.paths == emb.paths and not found.skipped
    direct = np.stack([look.image_look(look.decode_image(p)) for p in emb.paths])
    np.testing.assert_array_equal(found.array, direct)
