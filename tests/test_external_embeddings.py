"""``tacluster cluster --embeddings``: vectors made elsewhere (clip-retrieval, .npy, .parquet)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tacluster.run.cli import main

VOCAB = ["airplane", "frog", "ship", "car", "dog", "tree", "sky", "water", "grass"]
SIZES = (25, 35)  # rows of the two clip-retrieval shards


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny CLIP (hf:<folder>), its noun bank, and 60 float16 vectors in 3 groups around noun
    directions, with small PNG files as their images."""
    from helpers import save_tiny_hf_clip
    from PIL import Image

    from tacluster.embed.backbones import load_backbone
    from tacluster.nouns.bank import cached_noun_bank

    work = tmp_path_factory.mktemp("byo")
    model = save_tiny_hf_clip(work / "clip", seed=0)
    vocab = work / "nouns.txt"
    vocab.write_text("\n".join(VOCAB))
    cache = work / "cache"
    bb = load_backbone(f"hf:{model}", device="cpu")
    bank = cached_noun_bank(bb, VOCAB, cache_dir=cache, progress=False)
    rng = np.random.default_rng(0)
    centres = np.asarray(bank.embeddings)[[0, 1, 2]]
    truth = np.repeat(np.arange(3), 20)
    rng.shuffle(truth)
    x = centres[truth] + 0.15 * rng.standard_normal((60, bank.embeddings.shape[1]))
    x16 = x.astype(np.float16)
    images = work / "images"
    images.mkdir()
    paths = []
    for i in range(60):
        p = images / f"img{i:03d}.png"
        Image.new("RGB", (20, 20), (40 * truth[i], 90, 200 - 50 * truth[i])).save(p)
        paths.append(str(p))
    return {"work": work, "model": model, "vocab": vocab, "cache": cache, "bb": bb, "bank": bank,
            "x16": x16, "truth": truth, "paths": paths}


def _args(w, out, *extra):
    return ["cluster", "--k", "3", "--out", str(out), "--backbone", f"hf:{w['model']}",
            "--vocabulary", str(w["vocab"]), "--cache-dir", str(w["cache"]), "--device", "cpu", "--quiet", *extra]


def _clip_retrieval_folder(root: Path, x: np.ndarray, paths, column="image_path") -> Path:
    (root / "img_emb").mkdir(parents=True)
    (root / "metadata").mkdir()
    start = 0
    for shard, n in enumerate(SIZES):
        np.save(root / "img_emb" / f"img_emb_{shard}.npy", x[start:start + n])
        pq.write_table(pa.table({column: paths[start:start + n], "caption": [""] * n}),
                       root / "metadata" / f"metadata_{shard}.parquet")
        start += n
    return root


def _labels(out: Path) -> tuple[list[str], np.ndarray]:
    with open(out / "assignments.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [r["path"] for r in rows], np.array([int(r["cluster"]) for r in rows])


def _api_labels(w, method: str) -> np.ndarray:
    """TextAidedClustering through the API on the same vectors, noun bank and parameters as the pipeline."""
    from tacluster.estimator import TextAidedClustering

    x = w["x16"].astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    bb, bank = w["bb"], w["bank"]
    est = TextAidedClustering(3, method, random_state=0, device="cpu", verbose=False, tau=bb.retrieval_tau)
    return est.fit(x, noun_embeddings=bank.embeddings, nouns=bank.words).labels_


@pytest.mark.parametrize("method", ["no-train", "auto"])
def test_clip_retrieval_folder_and_parquet_file_give_the_api_labels(world, tmp_path, method):
    w = world
    expected = _api_labels(w, "tac" if method == "auto" else method)
    folder = _clip_retrieval_folder(tmp_path / "clip_out", w["x16"], w["paths"])
    flat = tmp_path / "vectors.parquet"
    pq.write_table(pa.table({
        "path": w["paths"],
        "embedding": pa.array(list(w["x16"].astype(np.float32)), type=pa.list_(pa.float32())),
    }), flat)
    fixed = tmp_path / "fixed.parquet"
    d = w["x16"].shape[1]
    pq.write_table(pa.table({
        "image_path": w["paths"],
        "vec": pa.FixedSizeListArray.from_arrays(pa.array(w["x16"].reshape(-1)), d),
    }), fixed)
    runs = [(folder, []), (folder / "img_emb", []), (flat, []), (fixed, ["--embedding-column", "vec"])]
    for i, (source, extra) in enumerate(runs[:2] if method == "auto" else runs):
        out = tmp_path / f"run{i}"
        extra = extra + ([] if i == 0 else ["--no-report"])
        assert main(_args(w, out, "--embeddings", str(source), "--method", method, *extra)) == 0
        paths, labels = _labels(out)
        assert paths == w["paths"]
        np.testing.assert_array_equal(labels, expected, err_msg=str(source))
    # the outputs of a run from images: model, clusters.json, run.json with the source, report with thumbnails
    out = tmp_path / "run0"
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "complete" and info["settings"]["input"] is None
    assert info["settings"]["embeddings"] == str(folder.resolve())
    assert info["embeddings"]["image"]["format"] == "clip-retrieval" and info["embeddings"]["image"]["rows"] == 60
    assert info["counts"]["assigned"] == 60 and info["counts"]["embedded_now"] == 0
    assert (out / "model" / "config.json").is_file()
    assert len(json.loads((out / "clusters.json").read_text())["clusters"]) == 3
    html = (out / "report.html").read_text()
    assert 'class="tag unreadable"' not in html
    assert len(list((out / "thumbs").glob("*.jpg"))) > 0


def test_python_api_cluster_embeddings(world, tmp_path):
    from tacluster.run import workflows as pipeline

    npy = tmp_path / "emb.npy"
    np.save(npy, w16 := world["x16"])
    (tmp_path / "emb.paths.txt").write_text("\n".join(world["paths"]) + "\n")
    run = pipeline.cluster_embeddings(npy, tmp_path / "out", 3, backbone=f"hf:{world['model']}", method="no-train",
                                      vocabulary=str(world["vocab"]), cache_dir=world["cache"], device="cpu",
                                      progress=False, report=False)
    assert run.paths == world["paths"]
    np.testing.assert_array_equal(run.labels, _api_labels(world, "no-train"))
    # without a sidecar list the rows are named row-000000 ...
    bare = tmp_path / "bare" / "emb.npy"
    bare.parent.mkdir()
    np.save(bare, w16)
    run2 = pipeline.cluster_embeddings(bare, tmp_path / "out2", 3, backbone=f"hf:{world['model']}",
                                       method="no-train", vocabulary=str(world["vocab"]), cache_dir=world["cache"],
                                       device="cpu", progress=False)
    assert run2.paths[:2] == ["row-000000", "row-000001"]
    np.testing.assert_array_equal(run2.labels, run.labels)
    html = (tmp_path / "out2" / "report.html").read_text()
    assert '<span class="tag unreadable">unreadable</span>' in html  # ids are no files: placeholders


def test_url_paths_are_kept_and_the_report_has_no_thumbnails_for_them(world, tmp_path):
    w = world
    urls = [f"https://example.com/photos/{i:03d}.jpg" for i in range(60)]
    folder = _clip_retrieval_folder(tmp_path / "clip_out", w["x16"], urls, column="url")
    out = tmp_path / "run"
    assert main(_args(w, out, "--embeddings", str(folder), "--method", "no-train")) == 0
    paths, labels = _labels(out)
    assert paths == urls
    np.testing.assert_array_equal(labels, _api_labels(w, "no-train"))
    html = (out / "report.html").read_text()
    assert "not a local file" in html and 'href="https://example.com/photos/' in html
    assert not list((out / "thumbs").glob("*.jpg"))
    page = (out / "clusters" / "cluster-0.html").read_text()
    assert 'href="https://example.com/photos/' in page


def _one_line_error(capsys, argv, pattern: str) -> str:
    import re

    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    # (a model load may print its own progress bar to stderr first: the error is the last line)
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.strip()]
    assert "Traceback" not in err and err.endswith("\n"), err
    assert lines[-1].startswith("tacluster: error:") and sum("error" in ln for ln in lines) == 1, err
    assert re.search(pattern, lines[-1]), err
    return lines[-1]


def test_a_dimension_mismatch_is_a_one_line_error(world, tmp_path, capsys):
    npy = tmp_path / "wide.npy"
    np.save(npy, np.random.default_rng(0).standard_normal((30, 24)).astype(np.float32))
    err = _one_line_error(capsys, _args(world, tmp_path / "out", "--embeddings", str(npy)),
                          r"embeddings have 24 dims but backbone 'hf:.*' embeds nouns in 16; "
                          r"pass the backbone that made them with --backbone")
    assert "24" in err and not (tmp_path / "out" / "run.json").exists()


def test_lite_needs_joint_embeddings(tmp_path, capsys):
    pytest.importorskip("efficientnet_lite_pytorch")
    npy = tmp_path / "visual.npy"
    np.save(npy, np.random.default_rng(0).standard_normal((30, 1280)).astype(np.float16))
    vocab = tmp_path / "nouns.txt"
    vocab.write_text("dog\ncat\nship\n")
    args = ["cluster", "--embeddings", str(npy), "--k", "3", "--out", str(tmp_path / "out"), "--backbone", "lite",
            "--vocabulary", str(vocab), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--quiet"]
    _one_line_error(capsys, args, r"backbone 'lite' needs the images' joint \(noun-space, 1000-dim\) vectors.*"
                                  r"--joint-embeddings")
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.random.default_rng(0).standard_normal((30, 512)).astype(np.float32))
    _one_line_error(capsys, [*args[:2], str(wrong), *args[3:]],
                    r"embeddings have 512 dims but backbone 'lite' makes 1280-dim image features")


def test_lite_with_joint_embeddings_clusters_the_visual_side_and_names_from_the_joint(tmp_path):
    """The offline backbone: 1280-d visual vectors clustered (its default method), joint vectors for names."""
    pytest.importorskip("efficientnet_lite_pytorch")
    from tacluster.embed.backbones import load_backbone
    from tacluster.estimator import TextAidedClustering
    from tacluster.nouns.bank import cached_noun_bank
    from tacluster.run.workflows import recommended_method

    rng = np.random.default_rng(1)
    truth = np.repeat(np.arange(3), 15)
    visual = rng.standard_normal((3, 1280))[truth] + 0.3 * rng.standard_normal((45, 1280))
    joint = np.abs(rng.standard_normal((3, 1000)))[truth] + 0.1 * np.abs(rng.standard_normal((45, 1000)))
    np.save(tmp_path / "visual.npy", visual.astype(np.float32))
    np.save(tmp_path / "joint.npy", joint.astype(np.float32))
    names = [f"photos/{i}.jpg" for i in range(45)]
    for stem in ("visual", "joint"):
        (tmp_path / f"{stem}.paths.txt").write_text("\n".join(names))
    vocab = tmp_path / "nouns.txt"
    vocab.write_text("dog\ncat\nship\ncar\nbird\n")
    out = tmp_path / "out"
    assert main(["cluster", "--embeddings", str(tmp_path / "visual.npy"), "--joint-embeddings",
                 str(tmp_path / "joint.npy"), "--k", "3", "--out", str(out), "--vocabulary", str(vocab),
                 "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--quiet", "--no-report"]) == 0
    paths, labels = _labels(out)
    assert paths == names
    bb = load_backbone("lite", device="cpu")
    bank = cached_noun_bank(bb, ["dog", "cat", "ship", "car", "bird"], cache_dir=tmp_path / "cache", progress=False)
    u = visual.astype(np.float32)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    j = joint.astype(np.float32)
    j /= np.linalg.norm(j, axis=1, keepdims=True)
    est = TextAidedClustering(3, recommended_method("lite"), random_state=0, device="cpu", verbose=False)
    expected = est.fit(u, noun_embeddings=bank.embeddings, nouns=bank.words, joint_embeddings=j).labels_
    np.testing.assert_array_equal(labels, expected)
    info = json.loads((out / "run.json").read_text())
    assert info["embeddings"]["joint"]["dims"] == 1000 and info["settings"]["resolved_method"] == recommended_method("lite")
    # the model assigns from the visual vectors alone: predict takes them without --joint-embeddings
    pred = tmp_path / "pred.csv"
    assert main(["predict", str(out), "--embeddings", str(tmp_path / "visual.npy"), "--out", str(pred),
                 "--device", "cpu", "--quiet"]) == 0
    with pred.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["path"] for r in rows] == names
    np.testing.assert_array_equal([int(r["cluster"]) for r in rows], labels)
    # joint rows must belong to the image rows
    (tmp_path / "joint.paths.txt").write_text("\n".join(reversed(names)))
    from tacluster.errors import InputError
    from tacluster.run.workflows import cluster_embeddings

    with pytest.raises(InputError, match="row 0 is 'photos/44.jpg' but --embeddings row 0 is 'photos/0.jpg'"):
        cluster_embeddings(tmp_path / "visual.npy", tmp_path / "out3", 3, backbone="lite",
                           joint_embeddings=tmp_path / "joint.npy", vocabulary=str(vocab),
                           cache_dir=tmp_path / "cache", device="cpu", progress=False)


def _bad_layouts(root: Path, x: np.ndarray, paths) -> dict[str, tuple[list[str], str]]:
    """name -> (extra argv, expected message) for inputs that are refused before anything is written."""
    cases = {}
    ragged = _clip_retrieval_folder(root / "ragged", x, paths)
    np.save(ragged / "img_emb" / "img_emb_1.npy", np.zeros((SIZES[1], 8), np.float16))
    cases["ragged"] = ([str(ragged)], r"shards have different widths \(img_emb_0.npy has 16 dims, img_emb_1.npy has 8\)")
    short = _clip_retrieval_folder(root / "short", x, paths)
    np.save(short / "img_emb" / "img_emb_1.npy", x[:10])
    cases["rows"] = ([str(short)], r"img_emb_1.npy has 10 rows but metadata_1.parquet lists 35")
    nometa = _clip_retrieval_folder(root / "nometa", x, paths)
    (nometa / "metadata" / "metadata_1.parquet").unlink()
    cases["missing metadata"] = ([str(nometa)], r"img_emb/img_emb_1.npy has no metadata/metadata_1.parquet")
    nofolder = _clip_retrieval_folder(root / "nofolder", x, paths)
    for f in (nofolder / "metadata").iterdir():
        f.unlink()
    (nofolder / "metadata").rmdir()
    cases["no metadata folder"] = ([str(nofolder)], r"no metadata/ folder beside img_emb/")
    empty = root / "empty.npy"
    np.save(empty, np.zeros((0, 16), np.float32))
    cases["zero rows"] = ([str(empty)], r"holds no rows; nothing to cluster")
    (root / "other").mkdir()
    cases["unknown folder"] = ([str(root / "other")], r"holds no img_emb/img_emb_\*.npy")
    side = root / "side.npy"
    np.save(side, x)
    (root / "side.paths.txt").write_text("a.jpg\nb.jpg\n")
    cases["sidecar"] = ([str(side)], r"has 60 rows but side.paths.txt lists 2 paths")
    nocol = root / "nocol.parquet"
    pq.write_table(pa.table({"path": paths, "feats": pa.array(list(x.astype(np.float32)))}), nocol)
    cases["no vector column"] = ([str(nocol)], r"no vector column \(embedding, emb, vector\); name it with --embedding-column")
    jag = root / "jagged.parquet"
    pq.write_table(pa.table({"path": ["a", "b", "c"], "embedding": [[1.0] * 16, [1.0] * 16, [1.0] * 15]}), jag)
    cases["ragged list"] = ([str(jag)], r"different lengths \(row 0: 16, row 2: 15\)")
    nulls = root / "nulls.parquet"
    pq.write_table(pa.table({"path": ["a", "b", "c"], "embedding": [[1.0] * 16, None, [1.0] * 16]}), nulls)
    cases["null vector"] = ([str(nulls)], r"row 1 has no vector in column 'embedding' \(null\)")
    return cases


def test_bad_inputs_are_one_line_errors(world, tmp_path, capsys):
    w = world
    for name, (extra, pattern) in _bad_layouts(tmp_path / "in", w["x16"], w["paths"]).items():
        _one_line_error(capsys, _args(w, tmp_path / name.replace(" ", "_"), "--embeddings", *extra), pattern)
        assert not (tmp_path / name.replace(" ", "_")).exists(), name
    # neither or both of INPUT and --embeddings
    _one_line_error(capsys, _args(w, tmp_path / "o1"), r"nothing to cluster: give INPUT .* or --embeddings")
    npy = tmp_path / "ok.npy"
    np.save(npy, w["x16"])
    _one_line_error(capsys, ["cluster", str(tmp_path), *_args(w, tmp_path / "o2", "--embeddings", str(npy))[1:]],
                    r"not both")
    # a CLIP-like backbone's image vectors are its joint vectors
    _one_line_error(capsys, _args(w, tmp_path / "o3", "--embeddings", str(npy), "--joint-embeddings", str(npy)),
                    r"drop --joint-embeddings")
    # non-finite and all-zero rows, named by row and path
    for value, pattern in ((np.nan, r"row 7 \(row-000007\) in bad.npy has NaN or inf"), (0.0, r"row 7 .* all zeros")):
        bad = w["x16"].copy()
        bad[7] = value
        np.save(tmp_path / "bad.npy", bad)
        _one_line_error(capsys, _args(w, tmp_path / "o4", "--embeddings", str(tmp_path / "bad.npy")), pattern)


def test_readers_stream_in_blocks_and_normalise_rows(tmp_path, monkeypatch):
    """Every layout gives the same unit rows and paths, read in blocks smaller than a row group / shard."""
    import tacluster.embed.external as ext

    monkeypatch.setattr(ext, "LOAD_BLOCK", 5)
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((60, 16)) * 3).astype(np.float16)
    paths = [f"/data/{i}.jpg" for i in range(60)]
    ref = x.astype(np.float32)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    folder = _clip_retrieval_folder(tmp_path / "cr", x, paths)
    lists = tmp_path / "lists.parquet"
    pq.write_table(pa.table({"filepath": paths, "emb": pa.array(list(x.astype(np.float32)))}), lists,
                   row_group_size=7)
    fixed = tmp_path / "fixed.parquet"
    pq.write_table(pa.table({"url": paths, "vector": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 16)}),
                   fixed, row_group_size=7)
    npy = tmp_path / "x.npy"
    np.save(npy, x)
    with open(tmp_path / "x.paths.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["label", "image_path"], *(["c", p] for p in paths)])
    for source, kind in ((folder, "clip-retrieval"), (lists, "parquet"), (fixed, "parquet"), (npy, "npy")):
        emb = ext.open_embeddings(source)
        assert (emb.kind, emb.dim, emb.paths, emb.named) == (kind, 16, paths, True), source
        got = emb.load()
        assert got.dtype == np.float32 and got.flags.c_contiguous
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6, err_msg=str(source))
    # clip-retrieval's shards are taken in numeric order (10 after 2), not by name
    many = tmp_path / "many"
    (many / "img_emb").mkdir(parents=True)
    (many / "metadata").mkdir()
    for shard, lo in ((0, 0), (2, 20), (10, 40)):
        np.save(many / "img_emb" / f"img_emb_{shard}.npy", x[lo:lo + 20])
        pq.write_table(pa.table({"image_path": paths[lo:lo + 20]}), many / "metadata" / f"metadata_{shard}.parquet")
    emb = ext.open_embeddings(many)
    assert emb.paths == paths
    np.testing.assert_allclose(emb.load(), ref, rtol=1e-6, atol=1e-6)


def test_predict_with_confidence_is_the_argmax_and_max_of_predict_proba(world):
    from tacluster.estimator import TextAidedClustering

    x = w32 = world["x16"].astype(np.float32)
    bank = world["bank"]
    for method, kw in (("tac", dict(n_epochs=1, min_steps=5)), ("no-train", {}), ("kmeans", {})):
        est = TextAidedClustering(3, method, random_state=0, **kw).fit(w32, noun_embeddings=bank.embeddings, nouns=bank.words)
        proba = est.predict_proba(x)
        labels, conf = est.predict_with_confidence(x)
        np.testing.assert_array_equal(labels, proba.argmax(1))
        np.testing.assert_allclose(conf, proba.max(1), atol=1e-6)


@pytest.mark.parametrize("method", ["no-train"])
def test_predict_with_embeddings_gives_the_fit_labels_on_the_same_vectors(world, tmp_path, method, capsys):
    """`tacluster predict --embeddings` reads the layouts of `cluster --embeddings`: on the
    vectors the model was fitted on it returns the fit's labels (after a merge, the run's ids)."""
    from tacluster.run.workflows import predict_images

    w = world
    folder = _clip_retrieval_folder(tmp_path / "clip_out", w["x16"], w["paths"])
    out = tmp_path / "run"
    assert main(_args(w, out, "--embeddings", str(folder), "--method", method, "--no-report")) == 0
    paths, labels = _labels(out)
    preds = tmp_path / "preds.csv"
    assert main(["predict", str(out), "--embeddings", str(folder), "--out", str(preds), "--cache-dir",
                 str(w["cache"]), "--device", "cpu", "--quiet"]) == 0
    with open(preds, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["path"] for r in rows] == paths
    np.testing.assert_array_equal([int(r["cluster"]) for r in rows], labels)
    with open(out / "assignments.csv", newline="") as fh:
        fitted = [float(r["confidence"]) for r in csv.DictReader(fh)]
    np.testing.assert_allclose([float(r["confidence"]) for r in rows], fitted, atol=1e-3)
    # the Python API, from a plain .npy of the first rows
    npy = tmp_path / "some.npy"
    np.save(npy, w["x16"][:10])
    pred = predict_images(out / "model", None, embeddings=npy, cache_dir=w["cache"], device="cpu", progress=False)
    np.testing.assert_array_equal(pred.labels, labels[:10])
    assert pred.paths[0] == "row-000000"


def test_predict_with_embeddings_errors_are_one_line(world, tmp_path, capsys):
    w = world
    npy = tmp_path / "ok.npy"
    np.save(npy, w["x16"])
    out = tmp_path / "run"
    assert main(_args(w, out, "--embeddings", str(npy), "--method", "no-train", "--no-report")) == 0
    base = ["predict", str(out), "--out", str(tmp_path / "p.csv"), "--cache-dir", str(w["cache"]), "--device", "cpu"]
    wide = tmp_path / "wide.npy"
    np.save(wide, np.ones((5, 24), np.float32))
    _one_line_error(capsys, [*base, "--embeddings", str(wide)],
                    r"embeddings have 24 dims but backbone 'hf:.*' embeds nouns in 16; pass the backbone")
    _one_line_error(capsys, [*base, "--embeddings", str(tmp_path / "missing.npy")], r"missing\.npy")
    _one_line_error(capsys, base, r"nothing to predict: give INPUT .* or --embeddings")
    _one_line_error(capsys, [base[0], base[1], str(tmp_path), *base[2:], "--embeddings", str(npy)], r"not both")
    assert not (tmp_path / "p.csv").exists()


def test_npy_rows_view_reads_the_values_load_gives_without_a_copy(tmp_path):
    from tacluster._blocks import NormalisedRows
    from tacluster.embed.external import open_embeddings
    from tacluster.errors import InputError

    x = (np.random.default_rng(2).standard_normal((50, 12)) * 4).astype(np.float16)
    np.save(tmp_path / "j.npy", x)
    src = open_embeddings(tmp_path / "j.npy")
    view, whole = src.rows(), src.load()
    assert isinstance(view, NormalisedRows) and isinstance(view.base, np.memmap)
    np.testing.assert_array_equal(view[10:30], whole[10:30])
    np.testing.assert_array_equal(np.asarray(view), whole)
    x[33] = 0
    np.save(tmp_path / "j.npy", x)
    with pytest.raises(InputError, match=r"row 33 \(row-000033\) in j.npy is all zeros"):
        open_embeddings(tmp_path / "j.npy").rows()


def test_rows_of_float16_shards_are_a_float16_view_and_float32_ones_load(tmp_path):
    """clip-retrieval's float16 shards are gathered as one float16 array read through a
    normalising view (half of load's float32), with load's values; float32 vectors are
    loaded as they are (a float16 copy would round them)."""
    from tacluster._blocks import NormalisedRows
    from tacluster.embed.external import open_embeddings

    x = np.random.default_rng(3).standard_normal((sum(SIZES), 16)) * 3
    paths = [f"img{i}.jpg" for i in range(len(x))]
    src = open_embeddings(_clip_retrieval_folder(tmp_path / "half", x.astype(np.float16), paths))
    view, whole = src.rows(), src.load()
    assert isinstance(view, NormalisedRows) and view.base.dtype == np.float16
    assert view.shape == whole.shape == (sum(SIZES), 16) and whole.dtype == np.float32
    np.testing.assert_array_equal(view[5:40], whole[5:40])
    np.testing.assert_array_equal(np.asarray(view), whole)

    flat = tmp_path / "single.parquet"
    pq.write_table(pa.table({"embedding": list(x.astype(np.float32)), "path": paths}), flat)
    rows = open_embeddings(flat).rows()
    assert isinstance(rows, np.ndarray) and rows.dtype == np.float32
    np.testing.assert_array_equal(rows, open_embeddings(flat).load())


def test_embedding_options_are_refused_with_embeddings(world, tmp_path, capsys):
    """Issue 28: --batch-size and --engine did nothing with --embeddings (nothing is embedded)."""
    w = world
    npy = tmp_path / "ok.npy"
    np.save(npy, w["x16"])
    for extra, flags in ((["--batch-size", "8"], "--batch-size"), (["--engine", "local"], "--engine"),
                         (["--batch-size", "8", "--engine", "ray"], "--batch-size and --engine")):
        _one_line_error(capsys, _args(w, tmp_path / "o", "--embeddings", str(npy), *extra),
                        rf"{flags} set how images are embedded, but --embeddings vectors are read")
        assert not (tmp_path / "o").exists()
    assert main(_args(w, tmp_path / "run", "--embeddings", str(npy), "--method", "kmeans")) == 0
    settings = json.loads((tmp_path / "run" / "run.json").read_text())["settings"]
    assert "batch_size" not in settings and "engine" not in settings  # run.json records only what ran
    _one_line_error(capsys, ["predict", str(tmp_path / "run"), "--embeddings", str(npy), "--out",
                             str(tmp_path / "p.csv"), "--batch-size", "8", "--quiet"], r"drop --batch-size")


def test_external_vectors_are_read_as_the_users_large_scale_asks(world, tmp_path):
    """Issue 28: the reader decided the large-N path again from the row count, ignoring large_scale."""
    from tacluster._blocks import _RowView
    from tacluster.embed.external import open_embeddings
    from tacluster.run.workflows import _read_external

    npy = tmp_path / "v.npy"
    np.save(npy, world["x16"])
    for large_scale, lazy in (("auto", False), (True, True), (False, False)):
        emb = _read_external((open_embeddings(npy), None), world["bb"], "hf", large_scale)
        assert isinstance(emb.arrays["image"], _RowView) is lazy, large_scale


def test_fewer_clusters_than_asked_is_one_warning_line_and_recorded(world, tmp_path, capsys):
    """Issue 28: nothing said so when a fit yielded fewer distinct clusters than --k."""
    npy = tmp_path / "two.npy"
    np.save(npy, np.repeat(world["x16"][:2], 30, axis=0))  # 60 rows, 2 distinct vectors
    assert main(_args(world, tmp_path / "run", "--embeddings", str(npy), "--method", "kmeans")) == 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "warning" in ln]
    assert lines == ["tacluster: warning: the fit produced 2 distinct clusters of the n_clusters=3 asked for "
                     "(method='kmeans'); the data holds fewer distinct groups than that: ask for fewer clusters"]
    assert "Traceback" not in err and "CollapseWarning" not in err
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["warnings"] == [lines[0].removeprefix("tacluster: warning: ")]
    np.save(npy, world["x16"])  # three groups: no warning, none recorded
    assert main(_args(world, tmp_path / "run3", "--embeddings", str(npy), "--method", "kmeans")) == 0
    assert "warning" not in capsys.readouterr().err
    assert "warnings" not in json.loads((tmp_path / "run3" / "run.json").read_text())
