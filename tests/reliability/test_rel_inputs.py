"""Bad and unusual inputs, each in a folder of good images, through the CLI and the API.

Every kind of the generated fuzz corpus (relihelpers.KINDS) runs ``tacluster
cluster`` in-process; the documented outcome is one of: clustered, skipped and
listed in skipped.csv with a reason, ignored (not an image name), or a one-line
error with exit code 2. docs/reliability.md lists them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import relihelpers
from relihelpers import KINDS, assert_one_line_error, build, read_csv, read_run
from tacluster.embed import EmbeddingCache, content_key, embed_images
from tacluster.embed import runner as runner_mod
from tacluster.errors import InputError, TaclusterError
from tacluster.run.workflows import cluster_images


def test_corpus_has_at_least_30_kinds():
    assert len(KINDS) >= 30


@pytest.mark.parametrize("kind_name", sorted(KINDS))
def test_fuzz_kind_through_cli(kind_name, tmp_path, cli, cluster_args):
    case = build(kind_name, tmp_path / "in")
    out = tmp_path / "out"
    code, _, err = cli(["cluster", case.source, "--k", case.k, *cluster_args(out, backbone=case.backbone),
                        *case.extra_args])
    if case.expect == "error":
        assert_one_line_error(code, err, case.reason)
        # nothing half-made is left behind for the user to clean up; a run with no usable image
        # keeps only its reasons (skipped.csv, and run.json saying it failed)
        left = sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) if out.exists() else []
        assert left in ([], ["run.json", "skipped.csv"]), left
        if left:
            assert read_run(out)["status"] == "failed" and "no usable images" in err
        return
    assert code == 0, err
    assert err == ""
    assigned = [r["path"] for r in read_csv(out / "assignments.csv")]
    skipped = {r["path"]: r["reason"] for r in read_csv(out / "skipped.csv")}
    assert len(set(assigned)) == len(assigned)
    assert all(reason for reason in skipped.values())
    for t in case.target:
        if case.expect == "use":
            assert t in assigned, (t, skipped.get(t))
        elif case.expect == "skip":
            assert t in skipped, (t, sorted(skipped))
            assert re.search(case.reason, skipped[t]), skipped[t]
            assert t not in assigned
        else:
            assert t not in assigned and t not in skipped
    # every good image around the bad one is still clustered
    goods = [p for p in Path(case.source if case.source.is_dir() else case.source.parent).iterdir()
             if p.name.startswith(("good_", "cifar_"))]
    assert goods and all(str(p) in assigned for p in goods)
    info = read_run(out)
    assert info["counts"]["assigned"] == len(assigned)
    # skipped.csv lists files and folders left out; the counts keep folders apart
    assert info["counts"]["skipped"] + info["counts"].get("folders_left_out", 0) == len(skipped)
    assert info["counts"]["inputs"] == info["counts"]["assigned"] + info["counts"]["skipped"]
    table = pq.read_table(out / "assignments.parquet")
    assert table.num_rows == len(assigned)
    assert sorted(set(table.column("cluster").to_pylist())) == [0, 1]


def test_fuzz_corpus_all_at_once_with_report(tmp_path, cli, cluster_args):
    """Every file kind in one folder, report included: one run survives them all."""
    root = tmp_path / "all"
    cases = []
    for name in sorted(KINDS):
        case = build(name, root / name)
        if case.expect in ("use", "skip") and case.source.is_dir() and case.backbone == "relitiny":
            cases.append(case)
    out = tmp_path / "out"
    code, _, err = cli(["cluster", root, "--k", 3, *cluster_args(out, report=True)])
    assert code == 0, err
    assigned = {r["path"] for r in read_csv(out / "assignments.csv")}
    skipped = {r["path"]: r["reason"] for r in read_csv(out / "skipped.csv")}
    # a link whose file this folder also holds directly is clustered once, under the file's own name
    assigned_real = {os.path.realpath(p) for p in assigned}
    for case in cases:
        for t in case.target:
            assert (os.path.realpath(t) in assigned_real) if case.expect == "use" else re.search(case.reason, skipped[t])
    page = (out / "report.html").read_text(encoding="utf-8")
    # the main page and the per-cluster pages that list every image (whole file names)
    pages = [page] + [p.read_text(encoding="utf-8") for p in sorted((out / "clusters").glob("*.html"))]
    assert all("<script" not in p.lower() for p in pages)
    assert any("&lt;img src=x onerror=alert(1)&gt;" in p for p in pages)


def test_duplicates_embedded_once_and_clustered_together(tmp_path):
    case = build("duplicate_files", tmp_path / "in")
    res = embed_images(case.source, relihelpers.make_tiny(), cache_dir=tmp_path / "c", progress=False)
    n_files = len(res.paths)
    assert res.stats.n_computed == n_files - 1  # two paths, one content
    rows = dict(zip(res.paths, res.arrays["image"]))
    np.testing.assert_array_equal(rows[case.target[0]], rows[case.target[1]])
    run = cluster_images(case.source, tmp_path / "out", 2, backbone="relitiny", method="kmeans",
                         cache_dir=tmp_path / "c", vocabulary=_vocab(tmp_path),
                         progress=False, report=False)
    lab = dict(zip(run.paths, run.labels))
    assert lab[case.target[0]] == lab[case.target[1]]


def _vocab(tmp_path: Path) -> str:
    p = tmp_path / "v.txt"
    p.write_text("apple\nriver\ncloud\n")
    return str(p)


def test_same_image_at_two_sizes_embeds_alike(tmp_path):
    case = build("same_image_two_sizes", tmp_path / "in")
    res = embed_images(case.source, relihelpers.make_tiny(), progress=False)
    rows = dict(zip(res.paths, res.arrays["image"]))
    a, b = rows[case.target[0]], rows[case.target[1]]
    assert float(a @ b) > 0.95  # different bytes, different keys, nearly the same vector
    assert not np.array_equal(a, b)


def test_nan_rows_are_skipped_not_cached_and_not_retried_as_usable(tmp_path):
    case = build("nan_from_backbone", tmp_path / "in")
    bb = relihelpers.make_nan()
    res = embed_images(case.source, bb, cache_dir=tmp_path / "c", progress=False)
    assert (case.target[0], "backbone produced NaN") in res.skipped
    assert np.isfinite(res.arrays["image"]).all() and np.isfinite(res.arrays["joint"]).all()
    cache = EmbeddingCache(tmp_path / "c", bb.fingerprint, bb.outputs)
    assert content_key(case.target[0]) not in cache


def test_unreadable_file_real_permissions(tmp_path, cli, cluster_args):
    case = build("zero_byte_file", tmp_path / "in")  # any folder of good images
    secret = case.source / "secret.png"
    secret.write_bytes(relihelpers.png_bytes(relihelpers.noise(seed=40)))
    secret.chmod(0)
    try:
        if os.access(secret, os.R_OK):
            pytest.skip("running as root (CI): chmod 000 does not stop reading; "
                        "test_unreadable_file_simulated covers this path")
        out = tmp_path / "out"
        code, _, err = cli(["cluster", case.source, "--k", 2, *cluster_args(out)])
        assert code == 0, err
        skipped = {r["path"]: r["reason"] for r in read_csv(out / "skipped.csv")}
        assert skipped[str(secret)].startswith("unreadable: Permission denied")
    finally:
        secret.chmod(0o644)


def test_unreadable_file_simulated(tmp_path, monkeypatch, cli, cluster_args):
    """As root a chmod 000 file is still readable; make open() fail the way it
    would for another user."""
    case = build("zero_byte_file", tmp_path / "in")
    secret = case.source / "secret.png"
    secret.write_bytes(relihelpers.png_bytes(relihelpers.noise(seed=41)))
    real = runner_mod.content_key

    def guarded(path, *a, **kw):
        if os.fspath(path) == str(secret):
            raise PermissionError(13, "Permission denied", str(secret))
        return real(path, *a, **kw)

    monkeypatch.setattr(runner_mod, "content_key", guarded)
    out = tmp_path / "out"
    code, _, err = cli(["cluster", case.source, "--k", 2, *cluster_args(out)])
    assert code == 0, err
    skipped = {r["path"]: r["reason"] for r in read_csv(out / "skipped.csv")}
    assert skipped[str(secret)] == "unreadable: Permission denied"


def test_unreadable_directory_simulated(tmp_path, monkeypatch, cli, cluster_args):
    case = build("zero_byte_file", tmp_path / "in")
    locked = case.source / "locked"
    relihelpers.good_image(locked / "x.png", 3)
    real_scandir = os.scandir

    def scandir(path="."):
        if not isinstance(path, int) and os.fspath(path) == str(locked):  # shutil.rmtree passes fds
            raise PermissionError(13, "Permission denied", str(locked))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    out = tmp_path / "out"
    code, _, err = cli(["cluster", case.source, "--k", 2, *cluster_args(out)])
    assert code == 0, err
    skipped = {r["path"]: r["reason"] for r in read_csv(out / "skipped.csv")}
    assert skipped[str(locked)].startswith("unreadable directory")


def test_api_raises_tacluster_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    kw = dict(backbone="relitiny", method="kmeans", cache_dir=tmp_path / "c", vocabulary=_vocab(tmp_path),
              progress=False, report=False)
    with pytest.raises(InputError, match="no usable images"):
        cluster_images(empty, tmp_path / "o1", 2, **kw)
    one = build("folder_with_one_image", tmp_path / "one").source
    with pytest.raises(InputError, match="only 1 usable image"):
        cluster_images(one, tmp_path / "o2", 2, **kw)
    for bad_k in (1, 0, -3, 2.5, True, "4"):
        with pytest.raises(InputError, match=">= 2"):
            cluster_images(one, tmp_path / "o3", bad_k, **kw)
    with pytest.raises(InputError, match="does not exist"):
        cluster_images(tmp_path / "nope", tmp_path / "o4", 2, **kw)
    with pytest.raises(TaclusterError, match="unknown backbone"):
        cluster_images(one, tmp_path / "o5", 2, **{**kw, "backbone": "nonesuch"})
    (tmp_path / "o6").mkdir()
    (tmp_path / "o6" / "mine.txt").write_text("user data")
    with pytest.raises(InputError, match="not empty"):
        cluster_images(one, tmp_path / "o6", 2, **kw)
    assert (tmp_path / "o6" / "mine.txt").read_text() == "user data"


def test_list_file_that_is_not_utf8(tmp_path, cli, cluster_args):
    lst = tmp_path / "list.txt"
    lst.write_bytes(b"caf\xe9.png\n")
    code, _, err = cli(["cluster", lst, "--k", 2, *cluster_args(tmp_path / "out")])
    assert_one_line_error(code, err, "cannot read the image list")


def test_out_is_a_file(tmp_path, cli, cluster_args):
    src = build("zero_byte_file", tmp_path / "in").source
    (tmp_path / "f").write_text("x")
    code, _, err = cli(["cluster", src, "--k", 2, *cluster_args(tmp_path / "f")])
    assert_one_line_error(code, err, "not a directory")


@pytest.mark.parametrize("method", ["spectral", "kmeans"])
def test_k_equal_to_the_number_of_usable_images_clusters(tmp_path, cli, cluster_args, method):
    """--k N on N usable images (here N = 2 next to an unreadable file) is accepted, not an internal error."""
    src = tmp_path / "in"
    relihelpers.good_image(src / "a.png", 0)
    relihelpers.good_image(src / "b.png", 1)
    (src / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "out"
    code, _, err = cli(["cluster", src, "--k", 2, *cluster_args(out, method=method)])
    assert code == 0, err
    assert sorted(int(r["cluster"]) for r in read_csv(out / "assignments.csv")) == [0, 1]
    code, _, err = cli(["cluster", src, "--k", 3, *cluster_args(tmp_path / "o3", method=method)])
    assert_one_line_error(code, err, r"larger than the 2 usable images.*--k 2 or fewer")


def test_numpy_integer_k_is_accepted_by_the_pipeline(tmp_path):
    src = tmp_path / "in"
    relihelpers.add_good(src, 4)
    run = cluster_images(src, tmp_path / "out", np.int64(2), backbone="relitiny", method="kmeans",
                         cache_dir=tmp_path / "c", vocabulary=_vocab(tmp_path), progress=False, report=False)
    assert len(run.names) == 2 and read_run(tmp_path / "out")["settings"]["n_clusters"] == 2


def test_run_directory_inside_the_input_is_never_clustered(tmp_path, cli, cluster_args):
    """--out inside INPUT: the next run must not read the first run's thumbnails and map as photos."""
    nest = tmp_path / "nest"
    goods = relihelpers.add_good(nest, 6)
    code, _, err = cli(["cluster", nest, "--k", 2, *cluster_args(nest / "run", report=True)])
    assert code == 0, err
    assert list((nest / "run" / "thumbs").glob("*.jpg"))
    for out, expected in ((nest / "run2", ["run"]), (nest / "run", ["run", "run2"])):
        code, _, err = cli(["cluster", nest, "--k", 2, *cluster_args(out, report=True), "--overwrite"])
        assert code == 0, err
        assigned = [r["path"] for r in read_csv(out / "assignments.csv")]
        assert len(assigned) == len(goods), assigned
        skipped = read_csv(out / "skipped.csv")
        # said once per run directory, not once per file in it
        runs = [r for r in skipped if "tacluster run" in r["reason"]]
        assert sorted(Path(r["path"]).name for r in runs) == expected


def test_overwrite_replaces_the_whole_run_directory(tmp_path, cli, cluster_args):
    """Nothing of the old run survives --overwrite: no old evaluation, confusion matrix or thumbnails."""
    src = tmp_path / "in"
    relihelpers.add_good(src / "a", 4)
    relihelpers.add_good(src / "b", 4)
    out = tmp_path / "out"
    code, _, err = cli(["cluster", src, "--k", 2, *cluster_args(out, report=True)])
    assert code == 0, err
    code, _, err = cli(["evaluate", out, "--labels", "parent-dir"])
    assert code == 0, err
    assert (out / "evaluation.json").is_file() and (out / "confusion.png").is_file()
    (out / "thumbs" / "0123456789abcdef01234567_128.jpg").write_bytes(b"stale thumbnail")
    (out / "auto_k.png").write_bytes(b"old auto-k figure")
    code, _, err = cli(["cluster", src, "--k", 3, *cluster_args(out, report=True), "--overwrite"])
    assert code == 0, err
    left = sorted(p.name for p in out.iterdir())
    assert "evaluation.json" not in left and "confusion.png" not in left and "auto_k.png" not in left, left
    page = (out / "report.html").read_text(encoding="utf-8")
    assert all(f"thumbs/{t.name}" in page for t in (out / "thumbs").iterdir()), "a thumbnail of the old run survived"
    assert read_run(out)["settings"]["n_clusters"] == 3


def test_overwrite_of_a_folder_that_is_no_run_keeps_the_users_files(tmp_path, cli, cluster_args):
    src = tmp_path / "in"
    relihelpers.add_good(src, 4)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, _, err = cli(["cluster", src, "--k", 2, *cluster_args(out), "--overwrite"])
    assert code == 0, err
    assert (out / "notes.txt").read_text() == "mine"


def _path_by_readme_rule(text: str) -> str:
    """The documented rule (docs/cli.md, "Paths in the outputs"), with the standard library only: a
    file:// URI holds percent-encoded bytes."""
    import urllib.parse

    if text.startswith("file://"):
        return os.fsdecode(urllib.parse.unquote_to_bytes(text[len("file://"):]))
    return text


def test_outputs_are_utf8_and_every_path_leads_back_to_its_file(tmp_path, cli, cluster_args):
    """A file name with the byte 0xff: assignments.csv/.parquet, clusters.json, skipped.csv and the
    predictions are valid UTF-8, and each path in them names the real file."""
    src = tmp_path / "in"
    relihelpers.add_good(src, 8)
    bad = os.fsdecode(os.fsencode(str(src)) + b"/bad\xffname.png")
    relihelpers.good_image(Path(bad), 3)
    broken = os.fsdecode(os.fsencode(str(src)) + b"/broken\xfe.jpg")
    Path(broken).write_bytes(b"not an image")
    out = tmp_path / "out"
    code, _, err = cli(["cluster", src, "--k", 2, *cluster_args(out, report=True)])
    assert code == 0, err
    code, _, err = cli(["predict", out / "model", src, "--out", tmp_path / "preds.csv",
                        "--cache-dir", tmp_path / "c2", "--quiet", "--device", "cpu"])
    assert code == 0, err
    import csv
    import json

    for f in (out / "assignments.csv", out / "skipped.csv", tmp_path / "preds.csv"):
        text = f.read_bytes().decode("utf-8")  # strict
        paths = [_path_by_readme_rule(r["path"]) for r in csv.DictReader(text.splitlines())]
        assert paths and all(os.path.isfile(p) for p in paths), (f.name, paths)
    csv_paths = {_path_by_readme_rule(r["path"]) for r in csv.DictReader(
        (out / "assignments.csv").read_bytes().decode("utf-8").splitlines())}
    assert bad in csv_paths
    assert _path_by_readme_rule(read_csv(out / "skipped.csv")[0]["path"]) == broken
    parquet_paths = [_path_by_readme_rule(p) for p in pq.read_table(out / "assignments.parquet").column("path").to_pylist()]
    assert set(parquet_paths) == csv_paths
    clusters = json.loads((out / "clusters.json").read_bytes().decode("utf-8"))
    for c in clusters["clusters"]:
        assert all(os.path.isfile(_path_by_readme_rule(p)) for p in c["representatives"] + c["outliers"])
    (out / "run.json").read_bytes().decode("utf-8")
    (out / "report.html").read_bytes().decode("utf-8")
    # pages show the odd byte as file managers do (U+FFFD), not as a \udcff escape
    pages = [p.read_bytes().decode("utf-8") for p in (out / "clusters").glob("cluster-*.html")]
    assert any("bad\ufffdname.png" in page for page in pages)
    assert not any("\\udc" in page for page in pages + [(out / "report.html").read_text(encoding="utf-8")])
    code, _, err = cli(["evaluate", out, "--labels", "parent-dir"])
    assert code == 0, err


def test_paths_in_outputs_are_absolute_whatever_the_input_was_typed_as(tmp_path, monkeypatch, cli, cluster_args):
    src = tmp_path / "in"
    relihelpers.add_good(src, 4)
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(["cluster", "in", "--k", 2, *cluster_args(tmp_path / "rel")])
    assert code == 0, err
    code, _, err = cli(["cluster", src, "--k", 2, *cluster_args(tmp_path / "abs")])
    assert code == 0, err
    rel = [r["path"] for r in read_csv(tmp_path / "rel" / "assignments.csv")]
    assert rel == [r["path"] for r in read_csv(tmp_path / "abs" / "assignments.csv")]
    assert all(os.path.isabs(p) and os.path.isfile(p) for p in rel)
    assert read_run(tmp_path / "rel")["settings"]["input"] == str(src)


def test_a_path_listed_twice_is_clustered_once_and_counted(tmp_path, monkeypatch, cli, cluster_args):
    src = tmp_path / "in"
    goods = relihelpers.add_good(src, 4)
    lst = tmp_path / "list.txt"
    lst.write_text("\n".join([str(g) for g in goods] + [f"in/{goods[0].name}", str(goods[1])]) + "\n")
    code, out_text, err = cli(["cluster", lst, "--k", 2, *[a for a in cluster_args(tmp_path / "out") if a != "--quiet"]])
    assert code == 0, err
    paths = [r["path"] for r in read_csv(tmp_path / "out" / "assignments.csv")]
    assert sorted(paths) == sorted(str(g) for g in goods)
    assert read_run(tmp_path / "out")["counts"]["duplicates"] == 2
    assert "2 duplicate" in out_text + err


def test_when_every_input_is_skipped_the_reasons_are_kept_and_shown(tmp_path, cli, cluster_args):
    """Every listed .jpg is missing: the one-line error gives the top reasons (not a hint about file
    types), skipped.csv lists each file, and the --out can be used again once the inputs are fixed."""
    lst = tmp_path / "list.txt"
    lst.write_text("a.jpg\nb.jpg\nc.jpg\n")
    (tmp_path / "c.jpg").write_bytes(b"not an image")
    out = tmp_path / "out"
    code, _, err = cli(["cluster", lst, "--k", 2, *cluster_args(out)])
    assert_one_line_error(code, err, r"no usable images.*2 missing.*1 not an image.*skipped\.csv")
    assert "supported:" not in err
    rows = read_csv(out / "skipped.csv")
    assert sorted(Path(r["path"]).name for r in rows) == ["a.jpg", "b.jpg", "c.jpg"]
    for i, name in enumerate(["a.jpg", "b.jpg"]):
        relihelpers.good_image(tmp_path / name, i)
    code, _, err = cli(["cluster", lst, "--k", 2, *cluster_args(out, method="spectral")])
    assert code == 0, err
    assert [Path(r["path"]).name for r in read_csv(out / "skipped.csv")] == ["c.jpg"]


def test_an_empty_folder_still_names_the_supported_types(tmp_path, cli, cluster_args):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("x")
    code, _, err = cli(["cluster", tmp_path / "in", "--k", 2, *cluster_args(tmp_path / "out")])
    assert_one_line_error(code, err, r"no usable images.*supported: jpg")
    assert read_csv(tmp_path / "out" / "skipped.csv") == []


SCENE_NOUNS = ["bedroom", "coast", "forest", "highway", "kitchen", "mountain", "office", "street",
               "bed", "car", "suburb", "store", "field"]


def test_vocabulary_words_the_backbone_cannot_use_are_reported(tmp_path, cli, cluster_args):
    """13 words, 3 known to the backbone: the run says which were not usable, and names stay distinct."""
    src = tmp_path / "in"
    relihelpers.add_good(src, 10)
    vocab = tmp_path / "scenes.txt"
    vocab.write_text("\n".join(SCENE_NOUNS) + "\n")
    out = tmp_path / "out"
    args = [a for a in cluster_args(out, backbone="relipicky") if a != "--quiet"]
    args[args.index("--vocabulary") + 1] = str(vocab)
    code, text, err = cli(["cluster", src, "--k", 5, *args])
    assert code == 0, err
    assert re.search(r"3 of 13 vocabulary words usable.*not known.*bedroom, forest, highway", text + err), text + err
    info = read_run(out)
    assert info["settings"]["vocabulary_usable"] == 3
    assert sorted(info["settings"]["vocabulary_unknown"]) == sorted(set(SCENE_NOUNS) - {"bed", "coast", "car"})
    names = [r["cluster_name"] for r in read_csv(out / "assignments.csv")]
    import json

    cluster_names = [c["name"] for c in json.loads((out / "clusters.json").read_text())["clusters"]]
    assert len(set(cluster_names)) == 5 and set(names) <= set(cluster_names)


def test_vocabulary_with_no_usable_word_is_refused(tmp_path, cli, cluster_args):
    src = tmp_path / "in"
    relihelpers.add_good(src, 4)
    vocab = tmp_path / "none.txt"
    vocab.write_text("bedroom\nforest\n")
    args = cluster_args(tmp_path / "out", backbone="relipicky")
    args[args.index("--vocabulary") + 1] = str(vocab)
    code, _, err = cli(["cluster", src, "--k", 2, *args])
    assert_one_line_error(code, err, r"none of the 2 words of the vocabulary .* is known to backbone 'relipicky'")


def test_cluster_summary_reads_well_and_names_the_k_searched(tmp_path, cli, cluster_args):
    src = tmp_path / "in"
    relihelpers.add_good(src, 30)
    args = [a for a in cluster_args(tmp_path / "out") if a != "--quiet"]
    code, text, err = cli(["cluster", src, "--k", "auto", *args])
    assert code == 0, err
    first = text.splitlines()[0]
    assert ") (" not in first and "0 skipped" not in first, first
    auto = read_run(tmp_path / "out")["auto_k"]
    lo, hi = min(auto["candidates"]), max(auto["candidates"])
    assert f"K chosen automatically from {lo}..{hi}" in first, first


def test_outliers_are_far_below_their_clusters_typical_confidence():
    from tacluster.run.outliers import outlier_mask

    rng = np.random.default_rng(0)
    confident = rng.uniform(0.96, 0.996, 40)  # a confident, correct cluster: no outlier
    typical = np.r_[rng.uniform(0.9, 0.97, 39), 0.41]  # one image far below its cluster
    labels = np.r_[np.zeros(40, int), np.ones(40, int)]
    mask = outlier_mask(labels, np.r_[confident, typical], 2)
    assert not mask[:40].any()
    assert mask[40:].tolist() == [False] * 39 + [True]


def test_assignments_have_an_outlier_column_that_agrees_with_clusters_json(tmp_path, cli, cluster_args):
    import json

    src = tmp_path / "in"
    relihelpers.add_good(src, 20)
    out = tmp_path / "out"
    code, _, err = cli(["cluster", src, "--k", 2, *cluster_args(out)])
    assert code == 0, err
    rows = read_csv(out / "assignments.csv")
    assert all(r["outlier"] in ("true", "false") for r in rows)
    flagged = {r["path"] for r in rows if r["outlier"] == "true"}
    listed = {p for c in json.loads((out / "clusters.json").read_text())["clusters"] for p in c["outliers"]}
    assert listed == flagged
    table = pq.read_table(out / "assignments.parquet")
    assert {p for p, o in zip(table.column("path").to_pylist(), table.column("outlier").to_pylist()) if o} == flagged


def test_run_json_records_the_device_used(tmp_path, cli, cluster_args):
    src = tmp_path / "in"
    relihelpers.add_good(src, 4)
    args = cluster_args(tmp_path / "out")
    args[args.index("--device") + 1] = "auto"
    code, _, err = cli(["cluster", src, "--k", 2, *args])
    assert code == 0, err
    import torch

    assert read_run(tmp_path / "out")["settings"]["device_used"] == ("cuda" if torch.cuda.is_available() else "cpu")


def test_overwrite_never_removes_files_tacluster_did_not_write(tmp_path, cli, cluster_args):
    """A run directory that also holds the user's photos (INPUT inside --out): --overwrite replaces
    the run's files only."""
    work = tmp_path / "work"
    photos = relihelpers.add_good(work / "photos", 4)
    (work / "notes.txt").write_text("mine")
    for k in (2, 3):
        code, _, err = cli(["cluster", work / "photos", "--k", k, *cluster_args(work, report=True), "--overwrite"])
        assert code == 0, err
    assert all(p.is_file() for p in photos) and (work / "notes.txt").read_text() == "mine"
    assert read_run(work)["settings"]["n_clusters"] == 3
