"""End to end: the CLI on the bundled example with the offline default backbone."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from tacluster.run.cli import main

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "cifar10-mini"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One clustering run of the bundled example (plus two bad files), shared by the tests."""
    work = tmp_path_factory.mktemp("cli")
    data = work / "photos"
    shutil.copytree(EXAMPLE, data)
    (data / "broken.jpg").write_bytes(b"not an image")
    (data / "empty.png").write_bytes(b"")
    cache = work / "cache"
    out = work / "run"
    code = main(["cluster", str(data), "--k", "10", "--out", str(out), "--cache-dir", str(cache),
                 "--device", "cpu", "--quiet"])
    assert code == 0
    return {"data": data, "out": out, "cache": cache, "work": work}


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_outputs_exist_and_agree(run):
    out = run["out"]
    for name in ("assignments.parquet", "assignments.csv", "clusters.json", "skipped.csv",
                 "run.json", "report.html", "model/config.json", "model/arrays.safetensors"):
        assert (out / name).is_file(), name
    rows = _read_csv(out / "assignments.csv")
    skipped = _read_csv(out / "skipped.csv")
    n_inputs = sum(1 for p in run["data"].rglob("*") if p.is_file())
    assert len(rows) + len(skipped) == n_inputs == 302
    assert {Path(r["path"]).name for r in skipped} == {"broken.jpg", "empty.png"}
    assert all(r["reason"] for r in skipped)
    clusters = json.loads((out / "clusters.json").read_text())
    sizes = {c["id"]: c["size"] for c in clusters["clusters"]}
    assert sum(sizes.values()) == len(rows) == 300
    counted = np.bincount([int(r["cluster"]) for r in rows], minlength=10)
    assert [sizes[i] for i in range(10)] == counted.tolist()
    names = {c["id"]: c["name"] for c in clusters["clusters"]}
    assert all(r["cluster_name"] == names[int(r["cluster"])] for r in rows)
    assert len(set(names.values())) == 10 and all(names.values())
    conf = np.array([float(r["confidence"]) for r in rows])
    assert ((conf > 0) & (conf <= 1)).all()
    for c in clusters["clusters"]:
        assert c["top_nouns"] and c["representatives"]
    info = json.loads((out / "run.json").read_text())
    assert info["counts"] == {**info["counts"], "inputs": 302, "assigned": 300, "skipped": 2}
    assert info["settings"]["n_clusters"] == 10 and "embed" in info["timings_s"]
    choice = info["method_choice"]  # the default (lite, --method auto): what it chose, its scores and why
    assert info["settings"]["method_chosen"] == choice["chosen"] in choice["scores"]
    assert info["settings"]["method_reason"] == choice["reason"] and choice["reason"].startswith(choice["chosen"])
    html = (out / "report.html").read_text()
    assert all(n.replace("&", "&amp;") in html for n in names.values() if "'" not in n and '"' not in n)


def test_evaluate_matches_an_independent_computation(run, capsys):
    out = run["out"]
    assert main(["evaluate", str(out / "assignments.csv"), "--labels", "parent-dir"]) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "evaluation.json").read_text())
    rows = _read_csv(out / "assignments.csv")
    truth = [Path(r["path"]).parent.name for r in rows]
    pred = [int(r["cluster"]) for r in rows]
    classes = sorted(set(truth))
    m = np.zeros((10, len(classes)))
    for t, p in zip(truth, pred):
        m[p, classes.index(t)] += 1
    r, c = linear_sum_assignment(-m)
    assert result["acc"] == pytest.approx(100 * m[r, c].sum() / len(rows))
    assert result["nmi"] == pytest.approx(100 * normalized_mutual_info_score(truth, pred))
    assert result["ari"] == pytest.approx(100 * adjusted_rand_score(truth, pred))
    assert f"{result['acc']:.2f}" in printed
    assert (out / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the offline default is far better than chance (10 %) on these 32-px images
    assert result["acc"] > 25


def test_predict_assigns_new_images_like_the_fitted_ones(run):
    """Copies of clustered images (new names) get the clusters their originals got."""
    out, work = run["out"], run["work"]
    new = work / "new"
    rows = _read_csv(out / "assignments.csv")
    picked = rows[::15]
    new.mkdir()
    for i, r in enumerate(picked):
        shutil.copy(r["path"], new / f"new_{i:03d}.jpg")
    (new / "notes.txt").write_text("not an image")
    preds = work / "preds.csv"
    assert main(["predict", str(out / "model"), str(new), "--out", str(preds),
                 "--cache-dir", str(run["cache"]), "--device", "cpu", "--quiet"]) == 0
    got = {Path(r["path"]).name: r for r in _read_csv(preds)}
    for i, r in enumerate(picked):
        g = got[f"new_{i:03d}.jpg"]
        assert g["cluster"] == r["cluster"] and g["cluster_name"] == r["cluster_name"]


def test_rerun_is_served_from_the_cache(run, tmp_path):
    out = tmp_path / "again"
    assert main(["cluster", str(run["data"]), "--k", "10", "--out", str(out), "--cache-dir", str(run["cache"]),
                 "--device", "cpu", "--quiet", "--no-report"]) == 0
    info = json.loads((out / "run.json").read_text())
    assert info["counts"]["embedded_now"] == 0 and info["counts"]["from_cache"] == 300
    # same seed, same data: same clusters
    a = {r["path"]: r["cluster"] for r in _read_csv(out / "assignments.csv")}
    b = {r["path"]: r["cluster"] for r in _read_csv(run["out"] / "assignments.csv")}
    assert a == b


@pytest.mark.parametrize(
    "args, message",
    [
        (["cluster", "{work}/missing", "--k", "3", "--out", "{work}/o1"], "does not exist"),
        (["cluster", "{work}/emptydir", "--k", "3", "--out", "{work}/o2"], "no usable images"),
        (["cluster", "{data}", "--k", "301", "--out", "{work}/o3"], "larger than the 300 usable images"),
        (["cluster", "{data}", "--k", "303", "--out", "{work}/o3"], "larger than the 302 image files"),
        (["cluster", "{data}", "--k", "3", "--out", "{work}/o4", "--backbone", "nonesuch"], "unknown backbone"),
        (["cluster", "{data}", "--k", "3", "--out", "{out}"], "different tacluster run"),
        (["cluster", "{data}", "--k", "1", "--out", "{work}/o5"], "at least 2|>= 2"),
        (["cluster", "{data}", "--k", "3", "--out", "{work}/o6", "--method", "spectral", "--consensus", "5"],
         "consensus=5 combines k-means runs, which method='spectral' does not make"),
        (["predict", "{work}/nomodel", "{data}", "--out", "{work}/p.csv"], "does not exist"),
        (["evaluate", "{work}/none.csv", "--labels", "parent-dir"], "does not exist"),
    ],
)
def test_errors_are_one_line_without_traceback(run, capsys, args, message):
    (run["work"] / "emptydir").mkdir(exist_ok=True)
    fmt = {"work": run["work"], "data": run["data"], "out": run["out"]}
    argv = [a.format(**fmt) for a in args] + (["--cache-dir", str(run["cache"]), "--quiet"] if args[0] == "cluster" else [])
    before = sorted(p.name for p in run["out"].iterdir())
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("tacluster: error:") and "Traceback" not in err
    import re

    assert re.search(message, err), err
    assert sorted(p.name for p in run["out"].iterdir()) == before  # nothing already written is lost


def test_help_reads_well():
    res = subprocess.run([sys.executable, "-m", "tacluster", "cluster", "--help"], capture_output=True, text=True,
                         cwd=REPO, env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0
    for flag in ("--k", "--out", "--backbone", "--method", "--seed", "--device", "--batch-size", "--quiet"):
        assert flag in res.stdout


def test_cluster_with_a_clip_backbone_runs_tac(tmp_path):
    """`--method auto` with a CLIP backbone is the paper's TAC (tiny random CLIP, a few images)."""
    pytest.importorskip("transformers")
    from helpers import save_tiny_hf_clip

    model = save_tiny_hf_clip(tmp_path / "clip", seed=0)
    data = tmp_path / "photos"
    for cls in ("airplane", "frog", "ship"):
        shutil.copytree(EXAMPLE / cls, data / cls)
    vocab = tmp_path / "nouns.txt"
    vocab.write_text("\n".join(["airplane", "frog", "ship", "car", "dog", "tree", "sky", "water", "grass"]))
    out = tmp_path / "run"
    assert main(["cluster", str(data), "--k", "3", "--out", str(out), "--backbone", f"hf:{model}",
                 "--vocabulary", str(vocab), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu",
                 "--quiet", "--no-report"]) == 0
    info = json.loads((out / "run.json").read_text())
    assert info["settings"]["resolved_method"] == "tac"
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["params"]["method"] == "tac" and set(config["kept_nouns"]) <= set(vocab.read_text().split("\n"))
    names = {c["name"] for c in json.loads((out / "clusters.json").read_text())["clusters"]}
    assert names <= set(vocab.read_text().split("\n"))
    assert len(_read_csv(out / "assignments.csv")) == 90


def test_k_auto_writes_its_search_to_run_json(run, tmp_path):
    out = tmp_path / "auto"
    assert main(["cluster", str(run["data"]), "--k", "auto", "--out", str(out), "--cache-dir", str(run["cache"]),
                 "--device", "cpu", "--quiet"]) == 0
    info = json.loads((out / "run.json").read_text())
    auto = info["auto_k"]
    assert auto["chosen"] in auto["candidates"] and len(auto["scores"]) == len(auto["candidates"])
    clusters = json.loads((out / "clusters.json").read_text())
    n = sum(c["size"] for c in clusters["clusters"])
    assert auto["candidates"] == list(range(2, min(30, n // 10) + 1))  # at least 10 images per cluster
    assert clusters["n_clusters"] == auto["chosen"] == len(clusters["clusters"])
    assert auto["criterion"].startswith("plateau of kNN-graph modularity")  # the criterion that chose, by name
    # which end of the plateau and why (issue 30): the near end exactly when the eigengap reaches the threshold
    assert auto["plateau_end"] == ("near" if auto["eigengap"] >= auto["eigengap_threshold"] else "far")
    assert auto["chosen"] == auto["plateau"][0 if auto["plateau_end"] == "near" else 1]
    lo, hi = auto["plateau"]  # how sure: the ks scoring within the tolerance of the best
    assert lo <= auto["chosen"] <= hi and auto["tolerance"] == 0.02
    within = [k for k, s in zip(auto["candidates"], auto["scores"]) if s >= max(auto["scores"]) * (1 - 0.02)]
    assert [min(within), max(within)] == [lo, hi]
    assert (out / "auto_k.png").is_file()


def _readme_block(heading: str, lang: str) -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split(heading, 1)[1]
    return section.split(f"```{lang}\n", 1)[1].split("```", 1)[0]


def test_readme_python_api_example_runs_as_written(run, tmp_path, monkeypatch):
    """The README's Python API block, executed as is from a copy of the repository root
    (embeddings served from the module's cache: same images, same content keys)."""
    code = _readme_block("## Python API", "python")
    (tmp_path / "examples").symlink_to(REPO / "examples")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TACLUSTER_CACHE", str(run["cache"]))
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert len(namespace["labels"]) == 600
    assert (tmp_path / "model" / "config.json").is_file()
    assert (tmp_path / "runs" / "example" / "report.html").is_file()
    assert len(namespace["run"].paths) == 300


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_is_accepted_before_or_after_the_subcommand(tmp_path, where):
    """Errors say 'rerun with --debug': the flag works wherever it is typed, and shows the traceback."""
    from tacluster.errors import InputError

    args = ["report", str(tmp_path / "nope")]
    argv = ["--debug", *args] if where == "before" else [*args, "--debug"]
    with pytest.raises(InputError):
        main(argv)
    assert main(args) == 2


def test_interrupt_before_anything_was_cached_does_not_claim_cached_work(monkeypatch, tmp_path, capsys):
    import tacluster.run.workflows

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(tacluster.run.workflows, "cluster_images", interrupted)
    assert main(["cluster", str(tmp_path), "--k", "2", "--out", str(tmp_path / "o"), "--quiet"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "cached" not in err.replace("nothing was cached", ""), err
    assert "nothing was cached" in err


def test_every_subcommand_help_has_a_description():
    from tacluster.run.cli import _parser

    sub = next(a for a in _parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, parser in sub.choices.items():
        assert parser.description, name


def test_readme_cli_examples_run_as_written(run, tmp_path, monkeypatch, capsys):
    """The README's first command and its 'After clustering' commands, in order, from a copy of the
    repository root (embeddings served from the module's cache)."""
    import shlex

    two = _readme_block("## The two commands", "bash").splitlines()
    assert [ln.split("#")[0].strip() for ln in two] == ["make demo", "make test"]
    first = _readme_block("`make demo` runs", "bash").splitlines()[0]
    demo = (REPO / "Makefile").read_text(encoding="utf-8").split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    assert "/bin/" + first.split("#")[0].strip() in demo, demo  # the README's command is make demo's
    after = [ln for ln in _readme_block("## After clustering", "bash").splitlines() if ln.strip()]
    (tmp_path / "examples").symlink_to(REPO / "examples")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TACLUSTER_CACHE", str(run["cache"]))
    for line in [first, *after]:
        argv = shlex.split(line, comments=True)
        assert argv[0] == "tacluster", line
        assert main(argv[1:]) == 0, (line, capsys.readouterr().err)
    clusters = json.loads((tmp_path / "runs" / "example" / "clusters.json").read_text())["clusters"]
    assert len(clusters) == 9 and "keepers" in {c["name"] for c in clusters}
    assert len([p for p in (tmp_path / "sorted").iterdir() if p.is_dir()]) == 10  # and export's marker file
    assert len(_read_csv(tmp_path / "new.csv")) == 300


def test_k_help_states_the_auto_range_the_code_searches(capsys):
    """--help's auto-K range is the range the estimator searches (choose_k.search_range), example by example."""
    import re

    from tacluster import TextAidedClustering
    from tacluster.choices.choose_k import search_range
    from tacluster.run.cli import _parser
    from tacluster.synthetic import make_world

    with pytest.raises(SystemExit):
        _parser().parse_args(["cluster", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    examples = re.findall(r"(\d+)\.\.(\d+) for (\d+)", help_text)
    assert len(examples) >= 3 and "sqrt" not in help_text, help_text
    for lo, hi, n in examples:
        assert search_range(int(n)) == (int(lo), int(hi)), (lo, hi, n)
    est = TextAidedClustering("auto", "kmeans", random_state=0).fit(make_world(150, 3, 16, 40, seed=0).image_embeddings)
    assert (int(est.auto_k_.candidates[0]), int(est.auto_k_.candidates[-1])) == search_range(150) == (2, 15)


def _small_run(run, tmp_path, n_per_class: int = 4):
    """Three classes of the example (served from the module's cache), clustered with K = 3."""
    photos = tmp_path / "photos"
    for cls in ("airplane", "automobile", "bird"):
        (photos / cls).mkdir(parents=True)
        for f in sorted((EXAMPLE / cls).iterdir())[:n_per_class]:
            shutil.copy(f, photos / cls / f.name)
    args = ["cluster", str(photos), "--k", "3", "--out", str(tmp_path / "out"), "--cache-dir", str(run["cache"]),
            "--device", "cpu", "--quiet"]
    assert main(args) == 0
    return photos, args


def test_rerun_into_an_edited_run_is_refused_and_keeps_the_edits(run, tmp_path, capsys):
    """A rerun of the same command would silently drop a rename: exit 2 naming the edits, files
    untouched; --overwrite replaces the run as asked."""
    photos, args = _small_run(run, tmp_path)
    out = tmp_path / "out"
    assert main(["rename", str(out), "0", "scenery"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "1 edit(s) (rename)" in err and "--overwrite" in err, err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert main([*args, "--overwrite"]) == 0
    run_json = json.loads((out / "run.json").read_text())
    assert not run_json.get("history")
    assert "scenery" not in {c["name"] for c in json.loads((out / "clusters.json").read_text())["clusters"]}


def test_rerun_over_changed_input_is_refused(run, tmp_path, capsys):
    """A new photo in the input would renumber the clusters of the run in --out: refused unless
    --overwrite; the same input again still reruns quietly."""
    photos, args = _small_run(run, tmp_path)
    assert main(args) == 0  # unchanged input, no edits: the same run again is fine
    extra = sorted((EXAMPLE / "cat").iterdir())[0]
    shutil.copy(extra, photos / "bird" / "new-one.jpg")
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "1 new, 0 gone" in err and "--overwrite" in err, err
    assert len(_read_csv(tmp_path / "out" / "assignments.csv")) == 12
    assert main([*args, "--overwrite"]) == 0
    assert len(_read_csv(tmp_path / "out" / "assignments.csv")) == 13


@pytest.mark.parametrize("content", [None, "# only a comment\n\n"])
def test_a_bad_vocabulary_is_refused_before_any_image_is_embedded(tmp_path, capsys, content):
    vocab = tmp_path / "nouns.txt"
    if content is not None:
        vocab.write_text(content)
    data = tmp_path / "photos"
    shutil.copytree(EXAMPLE / "frog", data / "frog")
    cache = tmp_path / "cache"
    code = main(["cluster", str(data), "--k", "2", "--out", str(tmp_path / "run"), "--backbone", "lite",
                 "--vocabulary", str(vocab), "--cache-dir", str(cache), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "vocabulary file" in err and "Traceback" not in err
    assert "embedding" not in err and not (cache / "embeddings").exists()  # nothing embedded first
    assert not (tmp_path / "run").exists()
