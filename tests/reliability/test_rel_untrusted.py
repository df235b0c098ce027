"""Untrusted files: model directories that try to execute code or lie, and a
report that must show hostile file names and nouns as text."""

from __future__ import annotations

import json
import re
import pickle
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import relihelpers
from relihelpers import assert_one_line_error, build, read_csv
from tacluster.errors import ModelFileError
from tacluster.estimator import TextAidedClustering
from tacluster.run.workflows import cluster_images, predict_images


class _Boom:
    """Unpickling this runs code: it touches a marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("untrusted")
    case = build("cmyk_jpeg", root / "in")
    vocab = root / "v.txt"
    vocab.write_text("apple\nriver\ncloud\nlamp\n")
    out = root / "run"
    cluster_images(case.source, out, 2, backbone="relitiny", method="no-train", cache_dir=root / "c",
                   vocabulary=str(vocab), progress=False, report=False)
    return {"root": root, "data": case.source, "model": out / "model", "cache": root / "c"}


def _copy_model(fitted, tmp_path) -> Path:
    dst = tmp_path / "model"
    shutil.copytree(fitted["model"], dst)
    return dst


def test_pickle_bombs_in_a_model_dir_are_never_loaded(fitted, tmp_path, monkeypatch, cli):
    model = _copy_model(fitted, tmp_path)
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Boom(marker))
    (model / "model.pkl").write_bytes(payload)
    np.save(model / "arrays.npy", np.array([_Boom(marker)], dtype=object), allow_pickle=True)
    (model / "state.pt").write_bytes(payload)
    assert not marker.exists()
    # Prove nothing deserialises: every unpickling entry point fails the test if called.
    import torch

    def forbidden(*a, **kw):
        raise AssertionError("a model directory was unpickled")

    for mod, name in ((pickle, "load"), (pickle, "loads"), (np, "load"), (torch, "load")):
        monkeypatch.setattr(mod, name, forbidden)
    est = TextAidedClustering.load(model)
    assert est.method == "no-train"
    code, _, err = cli(["predict", model, fitted["data"], "--out", tmp_path / "p.csv", "--cache-dir",
                        fitted["cache"], "--device", "cpu", "--quiet"])
    assert code == 0, err
    assert not marker.exists()


def test_arrays_file_replaced_by_a_pickle_is_refused(fitted, tmp_path):
    model = _copy_model(fitted, tmp_path)
    marker = tmp_path / "pwned"
    (model / "arrays.safetensors").write_bytes(pickle.dumps(_Boom(marker)))
    with pytest.raises(ModelFileError, match="corrupted"):
        TextAidedClustering.load(model)
    assert not marker.exists()


def _tamper(model: Path, edit) -> None:
    cfg = json.loads((model / "config.json").read_text())
    edit(cfg)
    (model / "config.json").write_text(json.dumps(cfg))


TAMPERED_CONFIGS = {
    "extra_param": lambda c: c["params"].update(evil="__import__('os').system('id')"),
    # K is stored in params and (newer format) at the top level: tamper both
    "n_clusters_is_a_string": lambda c: (c["params"].update(n_clusters="2"), c.update(n_clusters="2")),
    "n_clusters_wrong": lambda c: (c["params"].update(n_clusters=5), c.update(n_clusters=5)),
    "method_unknown": lambda c: c["params"].update(method="exec"),
    "method_changed_to_tac": lambda c: c["params"].update(method="tac"),
    "n_features_not_a_number": lambda c: c.update(n_features_in="twelve"),
    "n_features_wrong": lambda c: c.update(n_features_in=99),
    "kept_nouns_too_few": lambda c: c.update(kept_nouns=c["kept_nouns"][:1]),
    "params_not_an_object": lambda c: c.update(params=["x"]),
    "format_version_future": lambda c: c.update(format_version=99),
    "not_a_tacluster_config": lambda c: c.update(format="something-else"),
}


@pytest.mark.parametrize("name", sorted(TAMPERED_CONFIGS))
def test_tampered_config_raises_model_file_error(fitted, tmp_path, name, cli):
    model = _copy_model(fitted, tmp_path)
    _tamper(model, TAMPERED_CONFIGS[name])
    with pytest.raises(ModelFileError):
        TextAidedClustering.load(model)
    code, _, err = cli(["predict", model, fitted["data"], "--out", tmp_path / "p.csv", "--quiet"])
    # estimator messages for inconsistent arrays name the array, not the file (reported)
    assert_one_line_error(code, err, "model|config|cluster_centers")


@pytest.mark.parametrize("damage", ["garbage_json", "empty_config", "missing_arrays", "huge_header",
                                    "nan_centres", "wrong_shape"])
def test_corrupted_model_dir(fitted, tmp_path, damage, cli):
    model = _copy_model(fitted, tmp_path)
    arrays = model / "arrays.safetensors"
    if damage == "garbage_json":
        (model / "config.json").write_bytes(b"{\"format\": \xff\xfe")
    elif damage == "empty_config":
        (model / "config.json").write_text("")
    elif damage == "missing_arrays":
        arrays.unlink()
    elif damage == "huge_header":  # header length claims 2**60 bytes
        arrays.write_bytes((2**60).to_bytes(8, "little") + b"{}")
    else:
        a = load_file(str(arrays))
        c = a["cluster_centers"]
        a["cluster_centers"] = np.full_like(c, np.nan) if damage == "nan_centres" else c[:, :3].copy()
        save_file(a, str(arrays))
    with pytest.raises(ModelFileError):
        TextAidedClustering.load(model)
    code, _, err = cli(["predict", model, fitted["data"], "--out", tmp_path / "p.csv", "--quiet"])
    assert_one_line_error(code, err, "model|config|arrays|cluster_centers")
    assert not (tmp_path / "p.csv").exists()


@pytest.mark.parametrize("meta", [["not", "an", "object"], {"backbone": "relitiny", "cluster_names": ["only one"]},
                                  {"backbone": "relitiny", "cluster_names": "ab"}])
def test_tampered_metadata_is_a_model_file_error(fitted, tmp_path, meta, cli):
    model = _copy_model(fitted, tmp_path)
    _tamper(model, lambda c: c.update(metadata=meta))
    code, _, err = cli(["predict", model, fitted["data"], "--out", tmp_path / "p.csv", "--cache-dir",
                        fitted["cache"], "--device", "cpu", "--quiet"])
    assert_one_line_error(code, err, "metadata")


def test_model_from_another_backbone_version(fitted, tmp_path, monkeypatch, cli):
    monkeypatch.setattr(relihelpers, "WEIGHTS_VERSION", 2)  # same name, other weights
    with pytest.raises(ModelFileError, match="fingerprints differ"):
        predict_images(fitted["model"], fitted["data"], cache_dir=fitted["cache"], device="cpu", progress=False)
    code, _, err = cli(["predict", fitted["model"], fitted["data"], "--out", tmp_path / "p.csv", "--cache-dir",
                        fitted["cache"], "--device", "cpu", "--quiet"])
    assert_one_line_error(code, err, "different version of backbone 'relitiny'.*re-run `tacluster cluster`")


def test_model_from_another_backbone_name(fitted, tmp_path, cli):
    model = _copy_model(fitted, tmp_path)
    _tamper(model, lambda c: c["metadata"].update(backbone="nonesuch"))
    code, _, err = cli(["predict", model, fitted["data"], "--out", tmp_path / "p.csv", "--quiet"])
    assert_one_line_error(code, err, "unknown backbone 'nonesuch'")


# --------------------------------------------------------------------------- report


XSS_NOUNS = ["<script>alert(2)</script>", "<img src=y onerror=alert(3)>", "\" onmouseover=\"alert(4)"]


class _DomScan(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.handlers: list[tuple[str, str]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.handlers += [(tag, k) for k, _ in attrs if k.lower().startswith("on")]

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture(scope="module")
def xss_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("xss")
    case = build("spaces_quotes_markup_in_name", root / "in")
    (case.source / "<b onclick=alert(5)>bad.jpg").write_bytes(b"not an image")  # goes to the skipped table
    vocab = root / "v.txt"
    vocab.write_text("\n".join(XSS_NOUNS) + "\n")
    out = root / "run"
    cluster_images(case.source, out, 2, backbone="relitiny", method="kmeans", cache_dir=root / "c",
                   vocabulary=str(vocab), progress=False, report=True)
    return case, out


def test_report_escapes_every_string_from_the_data(xss_run):
    case, out = xss_run
    page = (out / "report.html").read_text(encoding="utf-8")
    scan = _DomScan()
    scan.feed(page)
    assert "script" not in scan.tags and scan.handlers == []
    assert "<script" not in page.lower() and "<img src=x" not in page and "<img src=y" not in page
    text = "".join(scan.text)
    assert "<script>alert(2)</script>" in text  # a noun, shown literally as a cluster name
    # a file name, shown literally (whole on its cluster's page; the thumbnail caption may shorten it)
    for sub in sorted((out / "clusters").glob("cluster-*.html")):
        sub_scan = _DomScan()
        sub_scan.feed(sub.read_text(encoding="utf-8"))
        assert "script" not in sub_scan.tags and sub_scan.handlers == [] and "<img src=x" not in sub.read_text()
        text += "".join(sub_scan.text)
    assert "<img src=x onerror=alert(1)>.png" in text
    assert "<b onclick=alert(5)>bad.jpg" in text  # a skipped file
    names = {r["cluster_name"] for r in read_csv(out / "assignments.csv")}
    assert names <= set(XSS_NOUNS) and names


def test_report_in_headless_chromium_has_no_injected_elements(xss_run, tmp_path):
    chromium = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if chromium is None:
        pytest.skip("Chromium not installed (apt-get install -y chromium); browser check skipped")
    _, out = xss_run
    res = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage",
         "--disable-background-networking", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
         (out / "report.html").as_uri()],
        capture_output=True, text=True, timeout=90, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    scan = _DomScan()
    scan.feed(res.stdout)
    assert "script" not in scan.tags, "the DOM holds a script element"
    assert scan.handlers == [], scan.handlers
    assert "<script>alert(2)</script>" in "".join(scan.text)


def _predict(cli, fitted, model, out, *extra):
    return cli(["predict", model, fitted["data"], "--out", out, "--cache-dir", fitted["cache"],
                "--device", "cpu", *extra])


def test_predict_out_that_is_a_folder_names_the_folder_not_a_temp_file(fitted, tmp_path, cli):
    code, _, err = _predict(cli, fitted, fitted["model"], tmp_path, "--quiet")
    assert_one_line_error(code, err, r"--out .* is a folder")
    assert ".tmp" not in err


def test_predict_out_parquet_writes_parquet(fitted, tmp_path, cli):
    import pyarrow.parquet as pq

    code, _, err = _predict(cli, fitted, fitted["model"], tmp_path / "p.parquet", "--quiet")
    assert code == 0, err
    table = pq.read_table(tmp_path / "p.parquet")
    assert {"path", "cluster", "confidence", "cluster_name"} <= set(table.column_names)
    code, _, err = _predict(cli, fitted, fitted["model"], tmp_path / "p.json", "--quiet")
    assert_one_line_error(code, err, r"\.csv or \.parquet")


def test_predict_accepts_a_run_directory_for_its_model(fitted, tmp_path, cli):
    code, _, err = _predict(cli, fitted, fitted["model"].parent, tmp_path / "p.csv", "--quiet")
    assert code == 0, err
    assert read_csv(tmp_path / "p.csv")
    code, _, err = _predict(cli, fitted, fitted["root"], tmp_path / "q.csv", "--quiet")
    assert_one_line_error(code, err, "not a tacluster model")


def test_predict_prints_per_cluster_counts(fitted, tmp_path, cli):
    code, out, err = _predict(cli, fitted, fitted["model"], tmp_path / "p.csv")
    assert code == 0, err
    rows = [r for r in read_csv(tmp_path / "p.csv") if r["cluster"] != ""]
    for c in {r["cluster"] for r in rows}:
        n = sum(r["cluster"] == c for r in rows)
        name = next(r["cluster_name"] for r in rows if r["cluster"] == c)
        assert re.search(rf"^\s+{c}\s+{n}\s+{re.escape(name)}$", out, re.M), out


def test_predict_writes_the_same_columns_as_assignments(fitted, tmp_path, cli):
    """name, confidence and outlier, flagged by the run's own per-cluster rule (saved in the model)."""
    code, _, err = _predict(cli, fitted, fitted["model"], tmp_path / "p.csv", "--quiet")
    assert code == 0, err
    preds = {r["path"]: r for r in read_csv(tmp_path / "p.csv") if r["cluster"] != ""}
    rows = read_csv(fitted["model"].parent / "assignments.csv")
    assert set(rows[0]) <= set(next(iter(preds.values())))
    for r in rows:
        p = preds[r["path"]]
        assert (p["cluster"], p["cluster_name"], p["outlier"]) == (r["cluster"], r["cluster_name"], r["outlier"])
