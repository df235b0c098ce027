"""Tests of the HTML report built from a run's output directory."""

from __future__ import annotations

import csv
import html
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tacluster.report import figures
from tacluster.errors import InputError
from tacluster.report import build_report, save_confusion_png

XSS = "<script>alert(1)</script>"
NOUN_AMP = 'salt & "pepper" \'shaker\''
CLUSTER_NAMES = {0: "red things", 1: "green & leafy", 2: "blue sky"}
COLOURS = {0: (220, 40, 40), 1: (40, 180, 60), 2: (40, 80, 220)}
N_SKIPPED = 205  # more than the 200 the page lists


class _Refs(HTMLParser):
    """Collects every URL-bearing attribute, <img> src and the visible text."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []  # (tag, attr, value)
        self.img_src: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href", "srcset", "action", "poster", "data") and value is not None:
                self.refs.append((tag, name, value))
            if tag == "img" and name == "src":
                self.img_src.append(value)

    def handle_data(self, data):
        self.text.append(data)


def _parse(page: str) -> _Refs:
    p = _Refs()
    p.feed(page)
    return p


@pytest.fixture()
def run_dir(tmp_path: Path) -> tuple[Path, dict]:
    """A fake run directory: 42 images in two folders (same file names), 3 clusters."""
    rng = np.random.default_rng(0)
    imgs = tmp_path / "images"
    rows = []
    for folder_i, folder in enumerate(("a", "b")):
        (imgs / folder).mkdir(parents=True)
        for i in range(20):
            cid = i % 3
            col = tuple(int(v) for v in np.clip(np.array(COLOURS[cid]) + rng.integers(-25, 25, 3), 0, 255))
            p = imgs / folder / f"{i:02d}.jpg"  # same names in a/ and b/
            Image.new("RGB", (48 + 8 * folder_i, 40), col).save(p)
            rows.append((str(p), cid, float(rng.uniform(0.3, 1.0))))
    # A path holding markup: directory "<script>alert(1)<", file "script>.jpg".
    xss_path = imgs / f"{XSS}.jpg"
    xss_path.parent.mkdir(parents=True)
    Image.new("RGB", (40, 40), COLOURS[2]).save(xss_path)
    rows.append((str(xss_path), 2, 0.05))
    broken = imgs / "broken.jpg"
    broken.write_bytes(b"this is not a jpeg")
    rows.append((str(broken), 0, 0.99))  # most confident of cluster 0: always shown

    paths = [r[0] for r in rows]
    cluster = np.array([r[1] for r in rows], dtype=np.int64)
    conf = np.array([r[2] for r in rows])
    xy = np.array([[np.cos(2 * np.pi * c / 3), np.sin(2 * np.pi * c / 3)] for c in cluster]) * 5
    xy += rng.normal(0, 0.6, xy.shape)
    out = tmp_path / "run"
    out.mkdir()
    pq.write_table(
        pa.table({
            "path": paths, "cluster": cluster, "confidence": conf,
            "cluster_name": [CLUSTER_NAMES[c] for c in cluster], "x": xy[:, 0], "y": xy[:, 1],
        }),
        out / "assignments.parquet",
    )
    clusters = []
    for cid, name in CLUSTER_NAMES.items():
        m = cluster == cid
        members = [p for p, k in zip(paths, cluster) if k == cid]
        nouns = [{"noun": name.split()[0], "score": 3.1}, {"noun": "thing", "score": 1.2}]
        if cid == 1:
            nouns.append({"noun": NOUN_AMP, "score": 0.7})
        clusters.append({
            "id": cid, "size": int(m.sum()), "name": name, "top_nouns": nouns,
            "mean_confidence": float(conf[m].mean()),
            "representatives": members[:3],
            "outliers": [str(xss_path)] if cid == 2 else members[-1:],
        })
    (out / "clusters.json").write_text(json.dumps({"n_clusters": 3, "clusters": clusters}))
    (out / "run.json").write_text(json.dumps({
        "tacluster_version": "0.1.0",
        "command": f"tacluster cluster {imgs} --out {out}",
        "settings": {"backbone": "lite", "n_clusters": 3, "seed": 0, "nested": {"a": [1, 2]}},
        "timings_s": {"embed": 12.5, "cluster": 0.75, "report": 95.0},
        "counts": {"inputs": len(rows) + N_SKIPPED, "assigned": len(rows), "skipped": N_SKIPPED},
        "auto_k": {"candidates": [2, 3, 4, 5], "scores": [0.4, 0.7, 0.69, 0.5], "chosen": 4, "plateau": [3, 4],
                   "tolerance": 0.02},
        "host_note": "unknown keys are shown, not rejected",
    }))
    with (out / "skipped.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "reason"])
        for i in range(N_SKIPPED):
            w.writerow([str(imgs / f"bad_{i:03d}<b>.gif"), "cannot identify image file"])
    info = {"paths": paths, "cluster": cluster, "confidence": conf, "xss_path": str(xss_path), "broken": str(broken),
            "sizes": {cid: int((cluster == cid).sum()) for cid in CLUSTER_NAMES}}
    return out, info


def test_report_lists_clusters_and_summary(run_dir):
    out, info = run_dir
    dst = build_report(out, thumbs_per_cluster=5)
    assert dst == out / "report.html" and dst.is_file()
    page = dst.read_text(encoding="utf-8")
    for cid, name in CLUSTER_NAMES.items():
        assert html.escape(name) in page
        assert f'id="cluster-{cid}"' in page
        assert f"{info['sizes'][cid]} images" in page
    # Clusters appear largest first.
    order = sorted(CLUSTER_NAMES, key=lambda c: (-info["sizes"][c], c))
    positions = [page.index(f'id="cluster-{c}"') for c in order]
    assert positions == sorted(positions)
    # The noun with & and quotes is escaped, never raw.
    assert "salt &amp; " in page and NOUN_AMP not in page and '"pepper"' not in page
    text = "".join(_parse(page).text)
    assert NOUN_AMP in text  # and reads back as the original text
    # Summary: counts, settings (including nested and unknown keys), timings, auto-k.
    assert f"{len(info['paths']) + N_SKIPPED:,}" in page
    assert "backbone" in page and "lite" in page and "host_note" in page
    assert "1 min 48 s" in page  # 12.5 + 0.75 + 95 s of timings in total
    assert "auto_k.png" in page and "chosen k = 4" in page
    assert "Every k from 3 to 4 scores within 2 % of the best" in page  # how sure the choice is
    # Skipped files: first 200 listed, the rest counted, names escaped.
    assert page.count("cannot identify image file") == 200
    assert "and 5 more" in page
    assert "bad_000&lt;b&gt;.gif" in page and "bad_000<b>" not in page
    assert not list(out.glob(".*.tmp")), "temporary files left behind"


def test_markup_in_paths_is_escaped_and_outlier_marked(run_dir):
    out, info = run_dir
    page = build_report(out).read_text(encoding="utf-8")
    assert "<script" not in page.lower()
    assert html.escape(XSS) in page  # shown as text (alt, caption, title)
    text = "".join(_parse(page).text)
    assert "script>.jpg" in text  # the caption reads the file name literally
    # The outlier tile is flagged, and its link is a quoted file URI of the original.
    uri = Path(info["xss_path"]).as_uri()
    assert "%3Cscript%3E" in uri
    idx = page.index(f'href="{uri}"')
    tile = page[page.rindex("<figure", 0, idx): page.index("</figure>", idx)]
    assert 'class="tile outlier"' in tile and ">outlier<" in tile


def test_page_references_only_files_inside_dir(run_dir):
    out, info = run_dir
    page = build_report(out, thumbs_per_cluster=8).read_text(encoding="utf-8")
    parsed = _parse(page)
    originals = {Path(p).as_uri() for p in info["paths"]}
    assert parsed.refs, "no links found at all"
    n_file_links = 0
    for tag, attr, value in parsed.refs:
        url = urlparse(value)
        if value.startswith("#"):
            continue
        if url.scheme == "file":
            assert tag == "a" and value in originals, value
            assert Path(unquote(url.path)).is_file()
            n_file_links += 1
            continue
        # Everything else is a relative path to an existing file inside DIR.
        assert not url.scheme and not url.netloc and not value.startswith("/"), value
        target = (out / unquote(value)).resolve()
        assert target.is_relative_to(out.resolve()) and target.is_file(), value
    assert n_file_links >= 3 * 8
    assert "http:" not in page and "https:" not in page and "url(" not in page


def test_thumbnails_distinct_cached_and_placeholder(run_dir):
    out, info = run_dir
    page = build_report(out, thumbs_per_cluster=20, thumb_size=64).read_text(encoding="utf-8")
    thumbs = [s for s in _parse(page).img_src if s.startswith("thumbs/")]
    shown = [p for p in info["paths"] if p != info["broken"]]
    # Every readable image got its own JPEG: a/00.jpg and b/00.jpg do not collide.
    jpgs = sorted((out / "thumbs").glob("*.jpg"))
    assert len(jpgs) == len(shown)
    assert len({s for s in thumbs if s.endswith(".jpg")}) == len(shown)
    with Image.open(jpgs[0]) as im:
        assert im.format == "JPEG" and max(im.size) <= 64
    # The undecodable file got the placeholder and a label, not a crash.
    assert any("_unreadable_" in s for s in thumbs)
    assert ">unreadable<" in page
    # Regenerated only when missing.
    before = {p.name: p.stat().st_mtime_ns for p in jpgs}
    jpgs[0].unlink()
    build_report(out, thumbs_per_cluster=20, thumb_size=64)
    after = {p.name: p.stat().st_mtime_ns for p in (out / "thumbs").glob("*.jpg")}
    assert after.keys() == before.keys()
    changed = [n for n in before if before[n] != after[n]]
    assert changed == [jpgs[0].name]


def test_map_and_auto_k_are_pngs(run_dir, monkeypatch):
    out, info = run_dir
    monkeypatch.setattr(figures, "MAP_MAX_POINTS", 10)  # force the subsampling path
    page = build_report(out).read_text(encoding="utf-8")
    for name in ("map.png", "auto_k.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(out / name) as im:
            im.verify()
        assert f'src="{name}"' in page
    with Image.open(out / "map.png") as im:
        assert im.size[0] > 400 and im.size[1] > 300
    assert f"10 of {len(info['paths'])} images drawn" in page
    # with many clusters only the largest are named on the map (here: 2 of 3)
    monkeypatch.setattr(figures, "MAP_LABELS_MAX", 2)
    calls = []
    spread = figures.spread_labels
    monkeypatch.setattr(figures, "spread_labels", lambda fig, labels: calls.append(
        sorted(t.get_text() for t in labels)) or spread(fig, labels))
    build_report(out)
    largest = sorted(info["sizes"], key=lambda c: (-info["sizes"][c], c))[:2]
    assert calls == [sorted(CLUSTER_NAMES[c] for c in largest)]


def test_optional_files_absent(run_dir):
    out, info = run_dir
    (out / "run.json").unlink()
    (out / "skipped.csv").write_text("")
    page = build_report(out).read_text(encoding="utf-8")
    assert "run.json was not found" in page
    assert "No files were skipped" in page
    assert not (out / "auto_k.png").exists()


def _drop_column(out: Path) -> None:
    t = pq.read_table(out / "assignments.parquet")
    pq.write_table(t.drop(["confidence"]), out / "assignments.parquet")


def _unknown_cluster(out: Path) -> None:
    t = pq.read_table(out / "assignments.parquet")
    c = t.column("cluster").to_numpy().copy()
    c[0] = 7
    t = t.set_column(t.column_names.index("cluster"), "cluster", pa.array(c))
    pq.write_table(t, out / "assignments.parquet")


def _edit_json(name: str, edit) -> callable:
    def apply(out: Path) -> None:
        data = json.loads((out / name).read_text())
        edit(data)
        (out / name).write_text(json.dumps(data))
    return apply


@pytest.mark.parametrize(
    ("breaker", "named"),
    [
        (lambda out: (out / "assignments.parquet").unlink(), "assignments.parquet"),
        (lambda out: (out / "assignments.parquet").write_bytes(b"PAR1 garbage"), "assignments.parquet"),
        (_drop_column, "assignments.parquet"),
        (_unknown_cluster, "clusters.json"),
        (lambda out: (out / "clusters.json").unlink(), "clusters.json"),
        (lambda out: (out / "clusters.json").write_text('{"clusters": [{"id": 0,'), "clusters.json"),
        (lambda out: (out / "clusters.json").write_text('{"n_clusters": 3}'), "clusters.json"),
        (_edit_json("clusters.json", lambda d: d["clusters"][1].pop("size")), "clusters.json"),
        (_edit_json("clusters.json", lambda d: d["clusters"][0].update(top_nouns=[{"score": 1}])), "clusters.json"),
        (lambda out: (out / "run.json").write_text("[1, 2"), "run.json"),
        (_edit_json("run.json", lambda d: d["auto_k"].update(scores=[0.1])), "run.json"),
        (lambda out: (out / "skipped.csv").write_text("file,why\nx,y\n"), "skipped.csv"),
    ],
    ids=["no-parquet", "bad-parquet", "missing-column", "unknown-cluster", "no-clusters",
         "truncated-json", "no-clusters-key", "no-size", "noun-without-noun", "bad-run-json",
         "auto-k-mismatch", "skipped-header"],
)
def test_malformed_inputs_raise_input_error(run_dir, breaker, named):
    out, _ = run_dir
    breaker(out)
    with pytest.raises(InputError, match=named.replace(".", r"\.")):
        build_report(out)
    assert not (out / "report.html").exists()


def test_bad_arguments(tmp_path, run_dir):
    out, _ = run_dir
    with pytest.raises(InputError, match="not a directory"):
        build_report(tmp_path / "nope")
    with pytest.raises(InputError, match="thumb_size=0"):
        build_report(out, thumb_size=0)
    with pytest.raises(InputError, match="thumbs_per_cluster=-1"):
        build_report(out, thumbs_per_cluster=-1)


# --------------------------------------------------------------------------- confusion


def test_matched_row_order_puts_matches_on_diagonal():
    perm = np.array([2, 0, 3, 1])
    m = np.eye(4, dtype=int)[perm] * 50 + 1  # cluster i is mostly class perm[i]
    m = np.vstack([m, [3, 3, 3, 3]])  # a fifth, unmatched cluster
    order = figures.matched_row_order(m)
    assert sorted(order.tolist()) == list(range(5))
    assert order[-1] == 4
    reordered = m[order]
    assert np.all(np.argmax(reordered[:4], axis=1) == np.arange(4))


def test_save_confusion_png(tmp_path):
    m = np.array([[5, 40, 0], [30, 2, 1], [0, 3, 25], [1, 1, 1]])
    dst = save_confusion_png(m, ["c-a", "c-b", "c-c", "c-d"], ["cat", "dog", "ship"], tmp_path / "cm.png")
    assert dst == tmp_path / "cm.png"
    with Image.open(dst) as im:
        assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 250
    with pytest.raises(InputError, match="3 class names"):
        save_confusion_png(m[:, :2], ["a", "b", "c", "d"], ["x", "y", "z"], tmp_path / "x.png")
    with pytest.raises(InputError, match="non-negative"):
        save_confusion_png(-m, ["a", "b", "c", "d"], ["x", "y", "z"], tmp_path / "x.png")
    with pytest.raises(InputError, match="2-D"):
        save_confusion_png(np.arange(3), ["a"], ["x", "y", "z"], tmp_path / "x.png")


# --------------------------------------------------------------------------- browser

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    if CHROMIUM is None:
        pytest.skip("Chromium not installed (apt-get install -y chromium); real-browser checks skipped")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


def test_real_browser_renders_report(run_dir, tmp_path):
    out, info = run_dir
    dst = build_report(out, thumbs_per_cluster=6)
    res = _chromium(["--dump-dom", dst.as_uri()], tmp_path / "profile")
    assert res.returncode == 0, res.stderr[-2000:]
    dom = res.stdout
    parsed = _parse(dom)
    text = "".join(parsed.text)
    for cid, name in CLUSTER_NAMES.items():
        assert name in text
        assert f"{info['sizes'][cid]} images" in text
    assert NOUN_AMP in text
    assert sum(s.startswith("thumbs/") for s in parsed.img_src) >= 3 * 6
    assert "<script" not in dom.lower()  # the path in the DOM stayed text

    shot = tmp_path / "shot.png"
    res = _chromium([f"--screenshot={shot}", "--window-size=1280,2000", "--hide-scrollbars",
                     dst.as_uri()], tmp_path / "profile2")
    assert res.returncode == 0, res.stderr[-2000:]
    with Image.open(shot) as im:
        assert im.format == "PNG" and im.size == (1280, 2000)
        # Not a blank page: the rendered pixels vary.
        assert len(np.unique(np.asarray(im.convert("L")))) > 20
    if os.environ.get("TACLUSTER_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["TACLUSTER_KEEP_SCREENSHOT"])


def test_run_time_is_the_runs_own_total_with_each_top_level_stage_once(run_dir):
    """timings_s holds 'total' and 'fit.*' sub-stages: the card shows the run's total (not the sum of
    every entry), and the table lists each top-level stage once and one total row."""
    out, _ = run_dir
    info = json.loads((out / "run.json").read_text())
    info["timings_s"] = {"load_backbone": 1.0, "embed": 6.0, "noun_bank": 0.5, "fit": 3.0,
                         "fit.spectral": 2.9, "naming": 0.2, "write": 0.4, "total": 11.5}
    (out / "run.json").write_text(json.dumps(info))
    page = build_report(out).read_text(encoding="utf-8")
    assert "11.5 s" in page and "25.5 s" not in page
    assert page.count(">total<") == 1
    assert "fit.spectral" not in page
    for stage in ("load the backbone", "embed the images", "embed the nouns", "cluster", "name the clusters",
                  "write the outputs"):
        assert page.count(f">{stage}<") == 1, stage


def test_run_details_show_what_was_used_in_words(run_dir):
    """No developer dump: zero counts that do not apply, empty parameter dicts and raw JSON are
    not shown; the device is the one used, versions read as words."""
    out, _ = run_dir
    info = json.loads((out / "run.json").read_text())
    info["settings"] = {
        "input": "/data/scenes", "n_clusters": 5, "backbone": "lite", "method": "auto",
        "resolved_method": "spectral", "seed": 0, "vocabulary": "wordnet", "estimator_params": {},
        "device": "auto", "device_used": "cpu", "batch_size": 64, "cache_dir": "/cache",
        "backbone_fingerprint": "abc123", "n_centres": 0, "kept_nouns": 0,
    }
    info["versions"] = {"tacluster": "0.1.0", "python": "3.11.9", "numpy": "2.1.0", "torch": "2.13.0",
                        "faiss": "1.14.2"}
    (out / "run.json").write_text(json.dumps(info))
    page = build_report(out).read_text(encoding="utf-8")
    text = " ".join(" ".join(_parse(page).text).split())
    info["counts"] = {**info["counts"], "embedded_now": 3, "from_cache": 39, "duplicates": 0}
    (out / "run.json").write_text(json.dumps(info))
    page = build_report(out).read_text(encoding="utf-8")
    text = " ".join(" ".join(_parse(page).text).split())
    assert "images from the cache 39" in text and "counts.from_cache" not in text
    for dump in ("n_centres", "kept_nouns", "estimator_params", "{}", "resolved_method", '"torch"'):
        assert dump not in text, dump
    assert "device cpu" in text and "device auto" not in text
    assert "spectral clustering" in text and "WordNet" in text
    assert "tacluster 0.1.0, Python 3.11.9, numpy 2.1.0, torch 2.13.0, faiss 1.14.2" in text


def test_run_details_say_what_method_auto_chose_and_why(run_dir):
    out, _ = run_dir
    info = json.loads((out / "run.json").read_text())
    info["settings"].update(method="auto", resolved_method="auto", method_chosen="kmeans",
                            method_scores={"kmeans": 0.6107, "spectral-fused": 0.6027},
                            method_reason="kmeans: modularity 0.6107 > spectral-fused's 0.6027")
    (out / "run.json").write_text(json.dumps(info))
    text = " ".join(" ".join(_parse(build_report(out).read_text(encoding="utf-8")).text).split())
    assert "method chosen k-means (modularity on the image neighbour graph: kmeans 0.6107, spectral-fused " \
           "0.6027); why: kmeans: modularity 0.6107 > spectral-fused's 0.6027" in text
    assert "method_reason" not in text


def test_gallery_says_how_many_images_it_shows_and_links_every_image(run_dir):
    """12 of 32 shown must say so, and every member of a cluster must be one click away."""
    out, info = run_dir
    page = build_report(out, thumbs_per_cluster=5).read_text(encoding="utf-8")
    text = " ".join(" ".join(_parse(page).text).split())
    for cid, size in info["sizes"].items():
        assert f"{min(5, size)} of {size} shown" in text
        sub = out / "clusters" / f"cluster-{cid}.html"
        assert f'href="clusters/cluster-{cid}.html"' in page and sub.is_file()
        parsed = _parse(sub.read_text(encoding="utf-8"))
        links = {unquote(urlparse(v).path) for tag, attr, v in parsed.refs if v.startswith("file:")}
        members = {p for p, c in zip(info["paths"], info["cluster"]) if c == cid}
        assert links == members, cid
        # nothing outside DIR is loaded by the sub-page either
        assert all(attr != "src" or not urlparse(v).scheme for tag, attr, v in parsed.refs)


def test_cluster_pages_are_bounded_and_point_to_the_assignments(run_dir, monkeypatch):
    """Past PAGE_MEMBERS_MAX a page lists the most confident members and says where the rest are."""
    from tacluster.report import html as report_html

    out, info = run_dir
    monkeypatch.setattr(report_html, "PAGE_MEMBERS_MAX", 3)
    build_report(out)
    for cid, size in info["sizes"].items():
        parsed = _parse((out / "clusters" / f"cluster-{cid}.html").read_text(encoding="utf-8"))
        # each row links its file twice (the thumbnail and the path)
        links = list(dict.fromkeys(unquote(urlparse(v).path) for tag, attr, v in parsed.refs if v.startswith("file:")))
        rows = sorted((-c, p) for p, k, c in zip(info["paths"], info["cluster"], info["confidence"]) if k == cid)
        assert links == [p for _, p in rows[:3]], cid  # the most confident, ties by path
        text = " ".join(" ".join(parsed.text).split())
        if size > 3:
            assert f"The 3 most confident of this cluster's {size:,} images" in text
            assert any(v == "../assignments.csv" for tag, attr, v in parsed.refs)


def test_thumbnail_captions_keep_the_file_name_readable(run_dir, tmp_path):
    """A long file name is shortened in the middle, so its number at the end stays visible."""
    out, _ = run_dir
    long = tmp_path / "holiday" / "a_very_long_file_name_from_the_camera_0123.jpg"
    long.parent.mkdir()
    Image.new("RGB", (40, 40), COLOURS[0]).save(long)
    table = pq.read_table(out / "assignments.parquet").to_pydict()
    for col, value in (("path", str(long)), ("cluster", 0), ("confidence", 1.0),
                       ("cluster_name", CLUSTER_NAMES[0]), ("x", 0.0), ("y", 0.0)):
        table[col].append(value)
    pq.write_table(pa.table(table), out / "assignments.parquet")
    page = build_report(out, thumbs_per_cluster=3).read_text(encoding="utf-8")
    figs = re.findall(r"<figcaption[^>]*>(.*?)</figcaption>", page, re.S)
    mine = [f for f in figs if "0123.jpg" in f]
    assert mine, figs
    for f in mine:
        shown = re.sub(r"<[^>]+>", " ", f).split()
        assert shown[0] == "holiday" and shown[-1].endswith("camera_0123.jpg"[-8:]) and len(shown[-1]) <= 24, shown
        assert "…" in shown[-1]


def test_map_labels_do_not_overlap(tmp_path):
    """Eight clusters whose centres almost coincide: their names are moved apart."""
    from tacluster.report.figures import cluster_colors, draw_map
    from tacluster.report.reading import Assignments

    rng = np.random.default_rng(0)
    cluster = np.repeat(np.arange(8), 20)
    x = rng.normal(0, 0.01, cluster.size) + cluster * 0.001
    y = rng.normal(0, 0.01, cluster.size)
    a = Assignments([f"/i/{i}.jpg" for i in range(cluster.size)], cluster, np.ones(cluster.size), x, y)
    clusters = [{"id": c, "name": f"cluster name {c}"} for c in range(8)]
    info = draw_map(a, clusters, cluster_colors(list(range(8))), tmp_path / "map.png")
    boxes = info["label_boxes"]
    assert len(boxes) == 8
    for i in range(8):
        for j in range(i + 1, 8):
            (a0, a1, a2, a3), (b0, b1, b2, b3) = boxes[i], boxes[j]
            assert min(a2, b2) <= max(a0, b0) or min(a3, b3) <= max(a1, b1), (i, j)


def test_map_keeps_neighbourhoods():
    """The map is a projection that keeps neighbourhoods (t-SNE; PCA scored 0.85 here)."""
    from sklearn.manifold import trustworthiness

    from tacluster.report.layout import map_coordinates
    from tacluster.synthetic import make_world

    x = make_world(n_samples=600, n_classes=10, dim=64, n_nouns=100, noise=1.0, seed=0).image_embeddings
    assert trustworthiness(x, map_coordinates(x, 0), n_neighbors=10) > 0.95
