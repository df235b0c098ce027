"""After clustering, on real photos (15-Scene from ../shared/data, the offline lite
backbone): `tacluster split`, `move` and `add`, and their one-line errors."""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from helpers import extract_members, shared_tarball

SEEN = ("coast", "forest", "highway", "kitchen")
NOUNS = "coast\nforest\nhighway\nkitchen\noffice\nbeach\ntree\ncar\nroom\nsea\nroad\nstove\ndesk\nwood\n"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A 4-cluster lite run of 40 scene photos (10 per class), and photos it has not seen:
    4 more of each of its classes and 6 of a class held out (office)."""
    tar = shared_tarball("scene15-train.tar.gz")
    from tacluster.run.workflows import cluster_images

    root = tmp_path_factory.mktemp("lifecycle")
    files = extract_members(tar, root / "x", 14, classes=set(SEEN))
    fit, more = root / "fit", root / "more"
    for f in files:
        n = int(f.stem.split("_")[-1])
        dst = (more if sorted(p for p in files if p.parent == f.parent).index(f) >= 10 else fit) / f.parent.name
        dst.mkdir(parents=True, exist_ok=True)
        shutil.move(f, dst / f"{n:04d}.jpg")
    for f in extract_members(tar, root / "y", 6, classes={"office"}):
        (more / "office").mkdir(parents=True, exist_ok=True)
        shutil.move(f, more / "office" / f.name)
    vocab = root / "nouns.txt"
    vocab.write_text(NOUNS)
    cache = root / "cache"
    run = root / "run"
    cluster_images(fit, run, 4, cache_dir=cache, vocabulary=str(vocab), progress=False, report=True)
    return {"run": run, "fit": fit, "more": more, "cache": cache, "root": root}


@pytest.fixture
def run_copy(base, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(base["run"], dst, symlinks=True)
    return dst


@pytest.fixture
def cli(capsys):
    from tacluster.run.cli import main

    def run(argv):
        capsys.readouterr()
        code = main([str(a) for a in argv])
        got = capsys.readouterr()
        return code, got.out, got.err

    return run


def _table(run: Path) -> dict:
    return pq.read_table(run / "assignments.parquet").to_pydict()


def _consistent(run: Path) -> dict[int, str]:
    """Every place a cluster's id, name and size live agree; returns {id: name}."""
    clusters = json.loads((run / "clusters.json").read_text(encoding="utf-8"))
    names = {c["id"]: c["name"] for c in clusters["clusters"]}
    assert sorted(names) == list(range(clusters["n_clusters"]))
    t = _table(run)
    assert all(names[c] == n for c, n in zip(t["cluster"], t["cluster_name"]))
    for c in clusters["clusters"]:
        assert c["size"] == t["cluster"].count(c["id"])
    meta = json.loads((run / "model" / "config.json").read_text())["metadata"]
    assert meta["cluster_names"] == [names[i] for i in range(len(names))]
    page = (run / "report.html").read_text(encoding="utf-8")
    assert all(html.escape(n, quote=False) in page for n in names.values())
    return names


def read_csv_rows(path: Path) -> list[dict]:
    import csv

    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _predict(cli, run: Path, source: Path, tmp_path: Path, cache: Path) -> dict[str, int]:
    out = tmp_path / "pred.csv"
    code, _, err = cli(["predict", run, source, "--out", out, "--cache-dir", cache, "--quiet", "--device", "cpu"])
    assert code == 0, err
    import csv

    with open(out, newline="") as fh:
        return {r["path"]: int(r["cluster"]) for r in csv.DictReader(fh) if r["cluster"]}


def test_split_undoes_a_merge_and_predict_returns_the_parts(run_copy, base, tmp_path, cli):
    from tacluster.evaluate.metrics import evaluate_clustering

    before = _table(run_copy)
    assert cli(["merge", run_copy, "0", "1"])[0] == 0
    code, out, err = cli(["split", run_copy, "0", "--k", "2", "--device", "cpu"])
    assert code == 0, err
    names = _consistent(run_copy)
    assert len(names) == 4
    after = _table(run_copy)
    merged = [i for i, c in enumerate(before["cluster"]) if c in (0, 1)]
    assert {after["cluster"][i] for i in merged} == {0, 3}  # the largest part keeps id 0, the other is new
    acc = evaluate_clustering([before["cluster"][i] for i in merged], [after["cluster"][i] for i in merged])["acc"]
    assert acc >= 95.0, acc
    # the other clusters are untouched (renumbered by the merge only)
    assert all(after["cluster"][i] == before["cluster"][i] - 1 for i in range(len(merged)) if before["cluster"][i] > 1)
    got = _predict(cli, run_copy, base["fit"], tmp_path, base["cache"])
    assert {p: got[p] for p in after["path"]} == dict(zip(after["path"], after["cluster"]))
    hist = json.loads((run_copy / "run.json").read_text())["history"]
    assert [h["action"] for h in hist] == ["merge", "split"] and hist[-1]["into"] == [0, 3]
    assert all(n in out for n in hist[-1]["names"])


def test_split_auto_picks_a_number_of_parts(run_copy, cli):
    code, out, err = cli(["split", run_copy, "2", "--k", "auto", "--quiet", "--device", "cpu"])
    assert code == 0, err
    hist = json.loads((run_copy / "run.json").read_text())["history"][-1]
    assert hist["k"] == "auto" and len(hist["into"]) >= 2
    assert len(_consistent(run_copy)) == 4 + len(hist["into"]) - 1


def _serve_marks(run: Path, flag: str, paths: list[str]) -> None:
    """`tacluster serve`'s pages tag exactly ``paths`` with ``flag`` ("new" / "moved") and count them."""
    import re

    from tacluster.serve.pages import cluster_page, overview_page
    from tacluster.serve.views import Views

    view = Views(run).current()
    tagged, counted = [], 0
    for c in view.rd.clusters:
        _, _, pages = view.page(c["id"], 0)
        for page in range(pages):
            html = cluster_page(view, run, "tok", None, c["id"], page).decode()
            for row in re.findall(rf'<figure class="tile[^"]* {flag}[^"]*" data-row="(\d+)"', html):
                tagged.append(view.rd.assignments.path[int(row)])
            m = re.search(rf'<span class="pill {flag}">(\d+) {flag}</span>', html)
            counted += int(m.group(1)) if m and page == 0 else 0
    assert sorted(tagged) == sorted(paths) and counted == len(paths)
    overview = overview_page(view, run, "tok", None).decode()
    assert f'class="pill {flag}">' in overview


def test_add_assigns_as_predict_skips_known_content_and_marks_new(run_copy, base, tmp_path, cli):
    n_before = len(_table(run_copy)["path"])
    # a copy of a fitted photo under a new name is the same content: skipped
    extra = tmp_path / "photos"
    shutil.copytree(base["more"], extra)
    shutil.copy(next(base["fit"].rglob("*.jpg")), extra / "coast" / "copy-of-a-fitted-one.jpg")
    code, out, err = cli(["add", run_copy, extra, "--device", "cpu"])
    assert code == 0, err
    t = _table(run_copy)
    added = {p: (c, w) for p, c, w in zip(t["path"][n_before:], t["cluster"][n_before:], t["new"][n_before:])}
    assert len(added) == 4 * 4 + 6 and "1 already in the run" in out
    assert not any(t["new"][:n_before]) and not any(t["moved"])
    got = _predict(cli, run_copy, extra, tmp_path, base["cache"])
    assert {p: c for p, (c, _) in added.items()} == {p: got[p] for p in added}
    new = [p for p, (_, w) in added.items() if w]
    assert all(f"new: {p}" in out for p in new)
    share = {kind: np.mean([w for p, (_, w) in added.items() if (Path(p).parent.name == "office") == (kind == "held")])
             for kind in ("held", "seen")}
    assert share["held"] > share["seen"], share  # the held-out class fits the clusters worst
    _consistent(run_copy)
    hist = json.loads((run_copy / "run.json").read_text())["history"][-1]
    assert hist["action"] == "add" and hist["added"] == 22 and hist["new"] == len(new)
    assert new  # the held-out class gives some
    _serve_marks(run_copy, "new", new)
    # added again: nothing new to add
    code, out, err = cli(["add", run_copy, extra, "--device", "cpu"])
    assert code == 0 and "added 0 image(s)" in out and len(_table(run_copy)["path"]) == n_before + 22


def test_moved_images_stay_through_rename_merge_and_add(run_copy, base, tmp_path, cli):
    t = _table(run_copy)
    src = [p for p, c in zip(t["path"], t["cluster"]) if c == 0][:2]
    listed = tmp_path / "list.txt"
    listed.write_text(src[1] + "\n")
    code, out, err = cli(["move", run_copy, src[0], "--from-list", listed, "--to", "3"])
    assert code == 0, err
    assert "moved 2 image(s) into cluster 3" in out
    t = _table(run_copy)
    row = {p: i for i, p in enumerate(t["path"])}
    assert all(t["cluster"][row[p]] == 3 and t["moved"][row[p]] for p in src) and sum(t["moved"]) == 2
    page = (run_copy / "clusters" / "cluster-3.html").read_text()
    assert page.count(">moved<") == 2
    assert "Moved here by hand (2)" in (run_copy / "report.html").read_text()
    _serve_marks(run_copy, "moved", src)
    assert cli(["rename", run_copy, "3", "by hand"])[0] == 0
    assert cli(["merge", run_copy, "1", "2"])[0] == 0  # ids after 2 shift down: "by hand" is 2 now
    assert cli(["add", run_copy, base["more"], "--quiet", "--device", "cpu"])[0] == 0
    names = _consistent(run_copy)
    t = _table(run_copy)
    assert all(names[t["cluster"][t["path"].index(p)]] == "by hand" for p in src)
    assert sum(t["moved"]) == 2
    # predict follows the person: a moved photo (matched by content, here under a new name) goes to
    # its cluster now, through the rename and the merge, with full confidence
    again = tmp_path / "again"
    again.mkdir()
    shutil.copy(src[0], again / "same-photo.jpg")
    pred = tmp_path / "moved.csv"
    code, _, err = cli(["predict", run_copy, again, "--out", pred, "--cache-dir", base["cache"], "--quiet",
                        "--device", "cpu"])
    assert code == 0, err
    row = read_csv_rows(pred)[0]
    assert row["cluster_name"] == "by hand" and float(row["confidence"]) == 1.0 and row["outlier"] == "false"


def test_refit_centres_follows_the_correction(run_copy, base, tmp_path, cli):
    from safetensors.numpy import load_file

    centres = load_file(str(run_copy / "model" / "arrays.safetensors"))["cluster_centers"]
    t = _table(run_copy)
    src = [p for p, c in zip(t["path"], t["cluster"]) if c == 1][:3]
    code, out, err = cli(["move", run_copy, *src, "--to", "0", "--refit-centres", "--quiet", "--device", "cpu"])
    assert code == 0, err
    new = load_file(str(run_copy / "model" / "arrays.safetensors"))["cluster_centers"]
    assert not np.allclose(centres[0], new[0]) and not np.allclose(centres[1], new[1])
    t = _table(run_copy)
    got = _predict(cli, run_copy, base["fit"], tmp_path, base["cache"])
    # every image where the run has it: the unmoved by the new centres, the moved where a person put them
    assert got == dict(zip(t["path"], t["cluster"])) and all(got[p] == 0 for p in src)
    assert json.loads((run_copy / "run.json").read_text())["history"][-1]["refit_centres"] is True
    _consistent(run_copy)


def _older_version(run: Path) -> None:
    """Make ``run`` look like one from before this version: no digest column."""
    import pyarrow as pa

    table = pq.read_table(run / "assignments.parquet")
    pq.write_table(table.drop(["digest"]), run / "assignments.parquet")
    info = json.loads((run / "run.json").read_text())
    info["tacluster_version"] = "0.1.0"
    (run / "run.json").write_text(json.dumps(info))
    assert isinstance(table, pa.Table)


@pytest.mark.parametrize("args, message", [
    (["split", "{run}", "9"], "no cluster '9'"),
    (["split", "{run}", "0", "--k", "1"], "into 2 to"),
    (["move", "{run}", "{tmp}/elsewhere.jpg", "--to", "1"], "not in run"),
    (["move", "{run}", "{member}", "--to", "nowhere"], "no cluster 'nowhere'"),
    (["move", "{run}", "--to", "1"], "name the images to move"),
    (["move", "{run}", "{member}", "--to", "1", "--cache-dir", "{tmp}"], "for --refit-centres"),
    (["add", "{run}", "{tmp}/missing-folder"], "does not exist"),
    (["add", "{run}", "--embeddings", "{tmp}/e.npy", "--batch-size", "8"], "drop it"),
    (["split", "{old}", "0"], "made by tacluster 0.1.0, which did not record"),
    (["add", "{old}", "{more}"], "made by tacluster 0.1.0, which did not record"),
])
def test_bad_input_is_one_line_and_writes_nothing(run_copy, base, tmp_path, cli, args, message):
    old = tmp_path / "old"
    shutil.copytree(run_copy, old)
    _older_version(old)
    snapshot = {d: {p: p.read_bytes() for p in d.rglob("*") if p.is_file()} for d in (run_copy, old)}
    member = _table(run_copy)["path"][0]
    argv = [a.format(run=run_copy, old=old, tmp=tmp_path, member=member, more=base["more"]) for a in args]
    code, _, err = cli(argv + (["--device", "cpu"] if argv[0] != "move" else []))
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tacluster: error: ") and message in lines[0], err
    for d, files in snapshot.items():
        assert {p: p.read_bytes() for p in d.rglob("*") if p.is_file()} == files


def test_split_and_add_on_a_run_of_embeddings(base, tmp_path, cli):
    """A run made from --embeddings reads its recorded source again to split; add takes --embeddings."""
    from tacluster.embed import embed_images
    from tacluster.embed.backbones import load_backbone
    from tacluster.run import cluster_embeddings

    bb = load_backbone("lite")
    for tag, src in (("fit", base["fit"]), ("more", base["more"])):
        emb = embed_images(src, bb, cache_dir=base["cache"], progress=False)
        for name in ("image", "joint"):
            np.save(tmp_path / f"{tag}_{name}.npy", emb.arrays[name])
            (tmp_path / f"{tag}_{name}.paths.txt").write_text("\n".join(emb.paths) + "\n")
    run = tmp_path / "byo"
    cluster_embeddings(tmp_path / "fit_image.npy", run, 4, backbone="lite", joint_embeddings=tmp_path / "fit_joint.npy",
                       cache_dir=base["cache"], vocabulary=str(base["root"] / "nouns.txt"), progress=False)
    code, _, err = cli(["split", run, "0", "--quiet", "--device", "cpu"])
    assert code == 0, err
    more = ["--embeddings", tmp_path / "more_image.npy", "--joint-embeddings", tmp_path / "more_joint.npy"]
    code, out, err = cli(["add", run, *more, "--quiet", "--device", "cpu"])
    assert code == 0, err
    t = _table(run)
    assert len(t["path"]) == 40 + 22 and t["digest"][-1] == ""
    pred = tmp_path / "p.csv"
    assert cli(["predict", run, *more, "--out", pred, "--quiet", "--device", "cpu"])[0] == 0
    import csv

    with open(pred, newline="") as fh:
        got = {r["path"]: int(r["cluster"]) for r in csv.DictReader(fh)}
    assert got == dict(zip(t["path"][40:], t["cluster"][40:]))
    _consistent(run)


def test_export_embeddings_writes_the_runs_vectors_that_cluster_reads_back(run_copy, base, tmp_path, cli):
    """`tacluster export RUN --embeddings F.parquet`: the run's own vectors (and, for lite, its joint
    vectors beside them); clustering them again with the run's settings gives the run's labels."""
    dst = tmp_path / "vectors.parquet"
    code, out, err = cli(["export", run_copy, "--embeddings", dst, "--device", "cpu"])
    assert code == 0, err
    joint = tmp_path / "vectors.joint.parquet"
    assert dst.is_file() and joint.is_file() and "--joint-embeddings" in out
    t, table = _table(run_copy), pq.read_table(dst).to_pydict()
    assert table["path"] == t["path"] and table["cluster"] == t["cluster"]
    assert len(table["embedding"][0]) == 1280 and len(pq.read_table(joint).column("embedding")[0]) == 1000
    info = json.loads((run_copy / "run.json").read_text())
    again = tmp_path / "again"
    code, _, err = cli(["cluster", "--embeddings", dst, "--joint-embeddings", joint, "--k", info["settings"]["n_clusters"],
                        "--out", again, "--vocabulary", base["root"] / "nouns.txt", "--cache-dir", base["cache"], "--device", "cpu",
                        "--quiet", "--no-report"])
    assert code == 0, err
    assert _table(again)["cluster"] == t["cluster"]  # the same vectors, the same settings: the same clusters
    # refused: an existing file, a name that is not .parquet, folder-export options; nothing overwritten
    before = dst.read_bytes()
    for argv, message in ((["--embeddings", dst], "exists"), (["--embeddings", tmp_path / "v.npy"], ".parquet"),
                          (["--embeddings", tmp_path / "w.parquet", "--copy"], "are for --to"),
                          (["--to", tmp_path / "folders", "--device", "cpu"], "are for --embeddings")):
        code, _, err = cli(["export", run_copy, *argv])
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert dst.read_bytes() == before and not (tmp_path / "folders").exists()


def test_predict_corrections_match_by_path_then_by_unambiguous_content(tmp_path):
    """A moved row wins for its own path, and for its content under another name only where the run
    holds that content in one cluster (an unmoved identical copy elsewhere keeps its cluster)."""
    from types import SimpleNamespace

    import pyarrow as pa

    from tacluster.run.workflows import _apply_corrections

    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "model" / "config.json").write_text("{}")
    pq.write_table(pa.table({"path": ["/p/a.jpg", "/p/b.jpg", "/p/c.jpg"], "digest": ["X", "X", "Y"],
                             "cluster": [2, 0, 1], "moved": [True, False, True]}), run / "assignments.parquet")
    emb = SimpleNamespace(paths=["/p/a.jpg", "/p/b.jpg", "/q/copy-of-a.jpg", "/q/copy-of-c.jpg"],
                          keys=["X", "X", "X", "Y"])
    labels, conf, outlier = np.full(4, 3), np.full(4, 0.5, dtype=np.float32), np.ones(4, dtype=bool)
    assert _apply_corrections(run / "model", emb, labels, conf, outlier) == 2
    assert labels.tolist() == [2, 3, 3, 1]  # a by path; b and a's copy: content X is in two clusters
    assert conf.tolist() == [1.0, 0.5, 0.5, 1.0] and outlier.tolist() == [False, True, True, False]


def _blobs(rng, centres: np.ndarray, n: int, spread: float = 0.35) -> np.ndarray:
    idx = rng.integers(0, len(centres), n)
    x = centres[idx] + spread * rng.standard_normal((n, centres.shape[1])) / np.sqrt(centres.shape[1])
    return x / np.linalg.norm(x, axis=1, keepdims=True), idx


def test_new_marks_a_kind_of_photo_the_fit_lacked_and_a_lone_odd_one():
    from tacluster.run.outliers import among_added, far_from_centre, novelty_mask

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((4, 32))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    fit, fit_labels = _blobs(rng, centres[:3], 210)
    seen, seen_labels = _blobs(rng, centres[:3], 90)
    unseen, _ = _blobs(rng, centres[3:], 30)
    # The unseen blob sits between the seen ones' directions, as a close class would, and is assigned
    # to the nearest seen cluster.
    added = np.vstack([seen, unseen])
    labels = np.r_[seen_labels, np.argmax(unseen @ centres[:3].T, axis=1)]
    group = among_added(fit, added)
    assert group[90:].mean() >= 0.8 and group[:90].mean() <= 0.1
    new = novelty_mask(fit, fit_labels, added, labels, 3)
    assert new[90:].mean() >= 0.8 and new[:90].mean() <= 0.1 and (new >= group).all()
    # One photo alone cannot form a group; far from every centre it is still new.
    odd = -centres[:1]
    assert not among_added(fit, odd).any()
    assert far_from_centre(fit, fit_labels, odd, np.array([0]), 3).all() and novelty_mask(fit, fit_labels, odd, np.array([0]), 3).all()
