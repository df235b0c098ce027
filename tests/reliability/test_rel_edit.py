"""After clustering: `tacluster export`, `rename` and `merge` end to end, and a
kill -9 during a rename, split, move or add (the run is then in its old or its new
state, never a mix)."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import relihelpers
from relihelpers import assert_one_line_error, read_csv, read_run
from relihelpers import edit_state as _state
from tacluster.run.edit import EDIT_STAGING, JOURNAL


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """A finished 3-cluster run (report included) of 24 images; tests work on copies."""
    from tacluster.run.workflows import cluster_images

    root = tmp_path_factory.mktemp("edit")
    data = root / "photos"
    relihelpers.add_good(data / "a", 12)
    relihelpers.add_good(data / "b", 12)
    vocab = root / "v.txt"
    vocab.write_text("apple\nriver\nengine\nviolin\ncloud\ntiger\n")
    out = root / "run"
    cluster_images(data, out, 3, backbone="relitiny", method="kmeans", cache_dir=root / "cache",
                   vocabulary=str(vocab), progress=False, report=True)
    return {"root": root, "data": data, "run": out, "cache": root / "cache"}


@pytest.fixture
def run_copy(base_run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(base_run["run"], dst, symlinks=True)
    return dst


def test_rename_updates_assignments_model_history_and_report(run_copy, base_run, tmp_path, cli):
    before = _state(run_copy)
    code, out, err = cli(["rename", run_copy, "0", "sunset beach"])
    assert code == 0, err
    after = _state(run_copy)
    assert after == {**before, 0: "sunset beach"}
    hist = read_run(run_copy)["history"]
    assert hist[-1]["action"] == "rename" and hist[-1]["from"] == before[0] and hist[-1]["to"] == "sunset beach"
    # by name too, and predict uses the new names
    assert cli(["rename", run_copy, "sunset beach", "dusk"])[0] == 0
    preds = tmp_path / "p.csv"
    code, _, err = cli(["predict", run_copy, base_run["data"], "--out", preds, "--cache-dir", base_run["cache"],
                        "--quiet", "--device", "cpu"])
    assert code == 0, err
    got = {r["path"]: (r["cluster"], r["cluster_name"]) for r in read_csv(preds)}
    want = {r["path"]: (r["cluster"], r["cluster_name"]) for r in read_csv(run_copy / "assignments.csv")}
    assert got == want and "dusk" in {n for _, n in got.values()}
    assert not (run_copy / JOURNAL).exists() and not (run_copy / EDIT_STAGING).exists()


@pytest.mark.parametrize("args, message", [
    (["rename", "{run}", "7", "x"], "no cluster '7'"),
    (["rename", "{run}", "0", "{name1}"], "already called"),
    (["rename", "{run}", "0", "  "], "cannot be empty"),
    (["merge", "{run}", "1", "1"], "at least two different clusters"),
    (["rename", "{tmp}", "0", "x"], "no finished tacluster run"),
])
def test_edit_errors_are_one_line(run_copy, tmp_path, cli, args, message):
    name1 = json.loads((run_copy / "clusters.json").read_text())["clusters"][1]["name"]
    before = {p.name: p.read_bytes() for p in run_copy.iterdir() if p.is_file()}
    argv = [a.format(run=run_copy, tmp=tmp_path, name1=name1) for a in args]
    code, _, err = cli(argv)
    assert_one_line_error(code, err, message)
    assert {p.name: p.read_bytes() for p in run_copy.iterdir() if p.is_file()} == before


def test_merge_updates_everything_and_predict_assigns_the_merged_cluster(run_copy, base_run, tmp_path, cli):
    before = _state(run_copy)
    rows_before = {r["path"]: int(r["cluster"]) for r in read_csv(run_copy / "assignments.csv")}
    code, out, err = cli(["merge", run_copy, "2", "0", "--name", "everything else"])
    assert code == 0, err
    after = _state(run_copy)
    assert len(after) == 2
    # 2 and 0 became one cluster (ids renumbered to 0..1), 1 kept its members
    rows_after = {r["path"]: int(r["cluster"]) for r in read_csv(run_copy / "assignments.csv")}
    merged = {p for p, c in rows_before.items() if c in (0, 2)}
    assert len({rows_after[p] for p in merged}) == 1
    assert after[rows_after[next(iter(merged))]] == "everything else"
    others = {p for p, c in rows_before.items() if c == 1}
    assert {after[rows_after[p]] for p in others} == {before[1]}
    assert read_run(run_copy)["history"][-1]["action"] == "merge"
    preds = tmp_path / "p.csv"
    code, _, err = cli(["predict", run_copy / "model", base_run["data"], "--out", preds,
                        "--cache-dir", base_run["cache"], "--quiet", "--device", "cpu"])
    assert code == 0, err
    got = {r["path"]: (r["cluster"], r["cluster_name"]) for r in read_csv(preds)}
    want = {r["path"]: (r["cluster"], r["cluster_name"]) for r in read_csv(run_copy / "assignments.csv")}
    assert got == want
    assert {"outlier"} <= set(read_csv(preds)[0])
    # the report's per-cluster pages follow the new ids
    assert sorted(p.name for p in (run_copy / "clusters").glob("*.html")) == ["cluster-0.html", "cluster-1.html"]


@pytest.mark.parametrize("mode", ["link", "copy"])
def test_export_makes_one_safe_folder_per_cluster(run_copy, tmp_path, cli, mode):
    # names that need cleaning, and two that clash once cleaned
    assert cli(["rename", run_copy, "0", "a/b: c?"])[0] == 0
    assert cli(["rename", run_copy, "1", "a_b_ c_"])[0] == 0
    dst = tmp_path / "export"
    code, out, err = cli(["export", run_copy, "--to", dst, f"--{mode}"])
    assert code == 0, err
    rows = read_csv(run_copy / "assignments.csv")
    folders = sorted(p.name for p in dst.iterdir() if p.is_dir())
    assert len(folders) == 3 and all("/" not in f and ":" not in f and "?" not in f for f in folders)
    assert (dst / ".tacluster-export.json").is_file()  # marks it, so a run over a folder holding it skips it
    files = [p for p in dst.rglob("*") if not p.is_dir() and p.parent != dst]
    assert len(files) == len(rows)
    for f in files:
        assert f.is_symlink() == (mode == "link")
        assert f.resolve().is_file()
    by_folder = {}
    for f in files:
        by_folder.setdefault(f.parent.name, set()).add(f.read_bytes())
    for r in rows:
        assert any(Path(r["path"]).read_bytes() in contents for contents in by_folder.values())
    code, _, err = cli(["export", run_copy, "--to", dst])
    assert_one_line_error(code, err, "not an empty folder")


def _kill_while_editing(argv: list[str], run: Path, site: Path, delay: float) -> bool:
    """Start ``tacluster ARGV`` (every atomic rename slowed to 0.15 s), kill -9 it ``delay`` s
    after it begins staging its files; True when the kill landed after the commit point."""
    proc = subprocess.Popen([sys.executable, "-m", "tacluster", *argv],
                            env=relihelpers.subprocess_env(site, RELI_WRITE_SLEEP="0.15"),
                            cwd=relihelpers.REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600  # a busy machine: torch alone took 20 s to import
    while not (run / EDIT_STAGING).exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    proc.stderr.close()
    return (run / JOURNAL).exists()


def test_kill_during_rename_leaves_the_old_or_the_new_state(run_copy, tmp_path, cli):
    """kill -9 at random moments of a rename (every atomic rename slowed): after the next
    tacluster command on the run, every file tells the same story, old or new."""
    site = relihelpers.write_sitecustomize(tmp_path / "site")
    rng = random.Random(5)
    outcomes = set()
    committed_kills = 0
    delays = [0.05, 1.2, 2.6, 3.2]
    for attempt, delay in enumerate(delays):
        old = _state(run_copy)[0]
        new = f"renamed {attempt}"
        # staging takes >= 11 x 0.15 s (5 files and the undo snapshot's 6) before the journal (the
        # commit point, ~1.8 s): the first kills land before it, the later ones while files are
        # moved in (another 11 x 0.15 s) or the report is rebuilt
        committed_kills += _kill_while_editing(["rename", str(run_copy), "0", new], run_copy, site,
                                               delay + rng.uniform(0.0, 0.1))
        code, _, err = cli(["report", run_copy])  # any tacluster command on the run recovers it
        assert code == 0, err
        names = _state(run_copy)
        assert names[0] in (old, new)
        outcomes.add("new" if names[0] == new else "old")
        assert not (run_copy / JOURNAL).exists() and not (run_copy / EDIT_STAGING).exists()
    print(f"kills after the commit point: {committed_kills} of {len(delays)}; outcomes: {sorted(outcomes)}")
    assert committed_kills >= 1, "no kill landed after the commit point; adjust the delays"
    assert outcomes == {"old", "new"}, "no kill landed before the commit point; adjust the delays"


def test_rename_of_a_run_without_report_makes_none(base_run, tmp_path, cli, cluster_args):
    out = tmp_path / "plain"
    code, _, err = cli(["cluster", base_run["data"], "--k", 2, *cluster_args(out)])  # --no-report
    assert code == 0, err
    assert cli(["rename", out, "1", "second"])[0] == 0
    assert not (out / "report.html").exists()
    assert json.loads((out / "clusters.json").read_text())["clusters"][1]["name"] == "second"


def _edit_argv(command: str, run: Path, base_run: dict) -> list[str]:
    """The command line of one edit of ``run`` (a copy of ``base_run``'s run)."""
    if command == "split":
        return ["split", str(run), "0", "--k", "2", "--device", "cpu", "--quiet"]
    if command == "move":
        first = read_csv(run / "assignments.csv")[0]
        return ["move", str(run), first["path"], "--to", "2" if first["cluster"] != "2" else "1", "--quiet"]
    more = base_run["root"] / "more"
    if not more.is_dir():
        for i in range(100, 106):
            relihelpers.good_image(more / f"new_{i}.png", i)
    return ["add", str(run), str(more), "--device", "cpu", "--quiet"]


_EDIT_STATE = ("assignments.csv", "assignments.parquet", "clusters.json", "skipped.csv",
               "model/config.json", "model/arrays.safetensors")


def _edit_state(run: Path) -> tuple:
    """The files an edit rewrites (bytes), and how many edits run.json's history holds."""
    return tuple((run / n).read_bytes() for n in _EDIT_STATE) + (len(read_run(run).get("history", [])),)


@pytest.mark.parametrize("command", ["split", "move", "add"])
def test_kill_during_split_move_add_leaves_the_old_or_the_new_state(base_run, tmp_path, cli, command):
    """kill -9 at moments before and after the commit point of a split, move or add (every
    atomic rename slowed): after the next tacluster command every file is old, or every one new."""
    site = relihelpers.write_sitecustomize(tmp_path / "site")
    run = tmp_path / "run"
    reference = tmp_path / "reference"
    shutil.copytree(base_run["run"], reference, symlinks=True)
    code, _, err = cli(_edit_argv(command, reference, base_run))
    assert code == 0, err
    shutil.copytree(base_run["run"], run, symlinks=True)
    old = _edit_state(run)
    new = _edit_state(reference)
    assert old != new
    outcomes, committed_kills = set(), 0
    # two kills, each a fresh process (torch's import alone took ~20 s on the busy test machine):
    # one before the commit point, one while the staged files are moved in
    for attempt, delay in enumerate([0.05, 2.6]):
        shutil.rmtree(run)
        shutil.copytree(base_run["run"], run, symlinks=True)
        # staging takes >= 12 x 0.15 s (6 files and their undo snapshot) before the journal (the
        # commit point, ~1.8 s); moving them in takes as long again
        committed_kills += _kill_while_editing(_edit_argv(command, run, base_run), run, site, delay)
        code, _, err = cli(["report", run])  # any tacluster command on the run recovers it
        assert code == 0, err
        state = _edit_state(run)
        assert state in (old, new), f"attempt {attempt}: a mix of the old and the new state"
        outcomes.add("new" if state == new else "old")
        assert not (run / JOURNAL).exists() and not (run / EDIT_STAGING).exists()
        _state(run)
    print(f"{command}: kills after the commit point: {committed_kills} of 2; outcomes: {sorted(outcomes)}")
    assert committed_kills >= 1, "no kill landed after the commit point; adjust the delays"
    assert outcomes == {"old", "new"}, "no kill landed before the commit point; adjust the delays"


def test_undo_puts_back_each_edit_in_turn_and_refuses_what_does_not_match(run_copy):
    from tacluster.errors import InputError
    from tacluster.run.edit import mark_outliers, merge_clusters, rename_cluster, undo_last_edit

    files = ("assignments.parquet", "assignments.csv", "clusters.json", "model/config.json")

    def snap() -> dict:
        return {n: (run_copy / n).read_bytes() for n in files}

    states = [snap()]
    rename_cluster(run_copy, 0, "one")
    states.append(snap())
    merge_clusters(run_copy, [1, 2])
    states.append(snap())
    rows = read_csv(run_copy / "assignments.csv")
    calm = next(r["path"] for r in rows if r["outlier"] == "false")
    assert mark_outliers(run_copy, [calm, calm]) == 1
    assert next(r for r in read_csv(run_copy / "assignments.csv") if r["path"] == calm)["outlier"] == "true"
    with pytest.raises(InputError, match="is not an image of run"):
        mark_outliers(run_copy, [calm, "/no/such.jpg"])
    for expected, action in zip(reversed(states), ["outliers", "merge", "rename"]):
        assert undo_last_edit(run_copy)["action"] == action
        assert snap() == expected
        _state(run_copy)
    with pytest.raises(InputError, match="nothing to undo"):
        undo_last_edit(run_copy)
    assert [h["action"] for h in read_run(run_copy)["history"]] == [
        "rename", "merge", "outliers", "undo", "undo", "undo"]
    # an undo record that does not match run.json's history is refused, nothing changed
    rename_cluster(run_copy, 0, "two")
    info = read_run(run_copy)
    info["history"][-1]["to"] = "something else"
    (run_copy / "run.json").write_text(json.dumps(info))
    before = snap()
    with pytest.raises(InputError, match="does not match run.json's history"):
        undo_last_edit(run_copy)
    assert snap() == before
    # nor is one whose later edits lost their records (an undo would take back two edits)
    info["history"][-1]["to"] = "two"
    (run_copy / "run.json").write_text(json.dumps(info))
    rename_cluster(run_copy, 0, "three")
    shutil.rmtree(sorted((run_copy / ".tacluster-undo").iterdir())[-1])
    with pytest.raises(InputError, match="does not match run.json's history"):
        undo_last_edit(run_copy)


def test_an_edit_while_another_command_writes_the_run_is_refused_and_changes_nothing(run_copy, tmp_path, cli):
    """Two edits at once each read the old state and one was lost: every edit holds the run's lock."""
    import hashlib

    from tacluster.errors import InputError
    from tacluster.run.edit import mark_outliers, merge_clusters, undo_last_edit
    from tacluster.run.rundir import run_lock

    def digests():
        return {p.relative_to(run_copy).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(run_copy.rglob("*")) if p.is_file() and p.name != ".tacluster-lock"}

    before = digests()
    with run_lock(run_copy):  # e.g. a `tacluster cluster` or another edit writing it now
        code, _, err = cli(["rename", run_copy, "0", "while busy"])
        assert_one_line_error(code, err, "another tacluster command")
        assert "wait for it to finish, then edit again" in err
        code, _, err = cli(["split", run_copy, "0", "--k", "2", "--device", "cpu"])
        assert_one_line_error(code, err, "another tacluster command")
        for call in (lambda: merge_clusters(run_copy, [0, 1]), lambda: mark_outliers(run_copy, []),
                     lambda: undo_last_edit(run_copy)):
            with pytest.raises(InputError, match="another tacluster command"):
                call()
    assert digests() == before
    code, _, err = cli(["rename", run_copy, "0", "after"])  # the lock went with its holder
    assert code == 0, err
    assert _state(run_copy)[0] == "after"
