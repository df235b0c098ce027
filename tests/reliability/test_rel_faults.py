"""Faults: kill -9 during embedding and during writing outputs, disk full while writing.

The kill tests run the real entry point (``python -m tacluster cluster``) in a
subprocess; a ``sitecustomize.py`` registers the tiny test backbone there and,
through environment variables, slows each batch (RELI_BATCH_SLEEP) or each
atomic rename of an output (RELI_WRITE_SLEEP) so that a kill after a random
delay (fixed seed) lands inside that stage.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from safetensors.numpy import load_file

import relihelpers
from relihelpers import assert_one_line_error, good_image, read_csv, read_run
from tacluster.embed import EmbeddingCache
from tacluster.run.rundir import STAGING
from tacluster.run.workflows import cluster_images

N_IMAGES = 60
BATCH = 4
OUTPUTS = ("assignments.parquet", "assignments.csv", "clusters.json", "skipped.csv", "run.json",
           "model/config.json", "model/arrays.safetensors")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """60 images, a vocabulary, and an uninterrupted reference run (own cache)."""
    root = tmp_path_factory.mktemp("faults")
    data = root / "data"
    for i in range(N_IMAGES):
        good_image(data / f"img_{i:03d}.png", i)
    (data / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    vocab = root / "nouns.txt"
    vocab.write_text("apple\nriver\nengine\nviolin\ncloud\n")
    site = relihelpers.write_sitecustomize(root / "site")
    ref = root / "reference"
    cluster_images(data, ref, 3, backbone="relitiny", method="kmeans", seed=0, device="cpu",
                   batch_size=BATCH, cache_dir=root / "ref_cache", vocabulary=str(vocab), progress=False,
                   report=False)
    return {"root": root, "data": data, "vocab": vocab, "site": site, "ref": ref}


def _argv(world, out: Path, cache: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tacluster", "cluster", str(world["data"]), "--k", "3", "--out", str(out),
            "--cache-dir", str(cache), "--vocabulary", str(world["vocab"]), "--backbone", "relitiny",
            "--method", "kmeans", "--seed", "0", "--device", "cpu", "--batch-size", str(BATCH),
            "--quiet", "--no-report", *extra]


def _start(world, out, cache, **env) -> subprocess.Popen:
    return subprocess.Popen(_argv(world, out, cache), env=relihelpers.subprocess_env(world["site"], **env),
                            cwd=relihelpers.REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for(cond, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"process ended (rc {proc.returncode}) before the kill point: "
                                 f"{proc.stderr.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the kill point")
        time.sleep(0.02)


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    proc.stdout.close()
    proc.stderr.close()


def _n_cached(cache: Path) -> int:
    bb = relihelpers.make_tiny()
    return len(EmbeddingCache(cache, bb.fingerprint, bb.outputs))


def _n_manifests(cache: Path) -> int:
    bb = relihelpers.make_tiny()
    d = cache / "embeddings" / bb.fingerprint / "manifest"
    return len(list(d.glob("*.jsonl"))) if d.is_dir() else 0


def _assert_whole(out: Path) -> None:
    """Every output present is complete and parseable (temp files are dot-names)."""
    for name in OUTPUTS:
        p = out / name
        if not p.exists():
            continue
        if name.endswith(".parquet"):
            pq.read_table(p)
        elif name.endswith(".csv"):
            rows = read_csv(p)
            assert p.read_bytes().startswith(b"path,"), name
            assert all(None not in r.values() for r in rows), name
        elif name.endswith(".json"):
            json.loads(p.read_text())
        else:
            load_file(str(p))


def _assert_same_as_reference(out: Path, ref: Path) -> None:
    assert (out / "assignments.csv").read_bytes() == (ref / "assignments.csv").read_bytes()
    assert (out / "skipped.csv").read_bytes() == (ref / "skipped.csv").read_bytes()
    assert json.loads((out / "clusters.json").read_text()) == json.loads((ref / "clusters.json").read_text())
    assert read_run(out)["status"] == "complete"


def _finish(world, out, cache, **env) -> dict:
    res = subprocess.run(_argv(world, out, cache), env=relihelpers.subprocess_env(world["site"], **env),
                         cwd=relihelpers.REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return read_run(out)


def test_kill_during_embedding_resumes_without_recomputing(world, tmp_path):
    rng = random.Random(8)
    cache, out = tmp_path / "cache", tmp_path / "out"
    log = tmp_path / "batches.log"
    n_before = 0
    for attempt in range(3):
        proc = _start(world, out, cache, RELI_BATCH_SLEEP="0.12", RELI_LOG=str(log))
        m_before = _n_manifests(cache)
        _wait_for(lambda: _n_manifests(cache) > m_before, proc)  # this attempt made progress
        time.sleep(rng.uniform(0.0, 0.35))
        _kill(proc)
        n_now = _n_cached(cache)
        assert n_before < n_now < N_IMAGES, (attempt, n_before, n_now)  # killed mid-embedding
        n_before = n_now
        # nothing was written to --out yet (outputs come after embedding)
        # run.json, and the lock file the killed run held (the kernel dropped the lock itself)
        assert not out.exists() or not [p for p in out.iterdir() if p.name not in ("run.json", ".tacluster-lock")]
    info = _finish(world, out, cache, RELI_LOG=str(log))
    assert info["counts"]["from_cache"] == n_before  # every finished batch was reused
    assert info["counts"]["embedded_now"] == N_IMAGES - n_before
    _assert_same_as_reference(out, world["ref"])
    # Work lost to the three kills is at most the batch in flight each time.
    embedded = sum(int(x) for x in log.read_text().split())
    assert N_IMAGES <= embedded <= N_IMAGES + 3 * BATCH


def test_kill_while_writing_outputs_leaves_whole_files_and_resumes(world, tmp_path):
    """Outputs are written whole into a staging folder, then renamed in: a kill
    while staging leaves ``out`` without outputs, a kill between the renames
    leaves whole files and the "incomplete" mark; the same command finishes."""
    rng = random.Random(3)
    cache, out = tmp_path / "cache", tmp_path / "out"
    # warm the cache so the subprocess reaches the output stage quickly
    cluster_images(world["data"], tmp_path / "warm", 3, backbone="relitiny", method="kmeans", device="cpu",
                   batch_size=BATCH, cache_dir=cache, vocabulary=str(world["vocab"]), progress=False,
                   report=False)
    # 1. killed while staging: nothing is in out yet but the staging folder
    proc = _start(world, out, cache, RELI_WRITE_SLEEP="0.25")
    _wait_for(lambda: (out / STAGING / "model" / "arrays.safetensors").exists(), proc)
    time.sleep(0.3)
    _kill(proc)
    assert not any((out / n).exists() for n in OUTPUTS)
    # 2. killed while the staged files are renamed in (each rename slowed)
    seen_partial = False
    for attempt in range(3):
        proc = _start(world, out, cache, RELI_WRITE_SLEEP="0.25")
        _wait_for(lambda: (out / "run.json").exists(), proc)
        time.sleep(rng.uniform(0.0, 1.4))
        _kill(proc)
        _assert_whole(out)
        present = {n for n in OUTPUTS if (out / n).exists()}
        seen_partial |= bool(present - {"run.json"}) and present != set(OUTPUTS)
        assert read_run(out).get("status") == "incomplete"  # marked, so nobody trusts it as finished
    assert seen_partial, "no kill landed between two renames; adjust the delays"
    info = _finish(world, out, cache)  # the same command again, no --overwrite needed
    assert info["counts"]["embedded_now"] == 0
    _assert_same_as_reference(out, world["ref"])
    leftovers = [p.name for d in (out, out / "model") for p in d.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == [] and not (out / STAGING).exists()


@pytest.mark.parametrize("failing", ["model", "assignments.csv", "clusters.json", "staged run.json",
                                     "incomplete mark"])
def test_disk_full_while_writing_outputs(world, tmp_path, monkeypatch, cli, failing):
    """ENOSPC surfaces at write or fsync; here fsync of one output's temp file
    fails. Every byte is written to the staging folder before anything in
    ``out`` is replaced, so the previous run's outputs stay, byte for byte."""
    cache, out = tmp_path / "cache", tmp_path / "out"
    base = ["cluster", world["data"], "--k", 3, "--out", out, "--cache-dir", cache, "--vocabulary",
            world["vocab"], "--backbone", "relitiny", "--method", "kmeans", "--device", "cpu",
            "--batch-size", BATCH, "--quiet", "--no-report"]
    assert cli(base)[0] == 0
    before = {n: (out / n).read_bytes() for n in OUTPUTS}

    real_fsync = os.fsync
    state = {"run_json_writes": 0}

    def fsync(fd):
        target = os.readlink(f"/proc/self/fd/{fd}")
        name = Path(target).name
        if name.startswith(".run.json."):
            state["run_json_writes"] += 1
        hit = {
            "model": False,
            "assignments.csv": name.startswith(".assignments.csv."),
            "clusters.json": name.startswith(".clusters.json."),
            "staged run.json": name.startswith(".run.json.") and state["run_json_writes"] == 1,
            "incomplete mark": name.startswith(".run.json.") and state["run_json_writes"] == 2,
        }[failing]
        if hit:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    if failing == "model":  # safetensors writes the model without fsync: fail its writer
        import safetensors.numpy

        def full(*a, **kw):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(safetensors.numpy, "save_file", full)
    code, _, err = cli(base + ["--seed", 1, "--overwrite"])  # a different run replacing the old one
    assert_one_line_error(code, err, "No space left on device.*free some disk space")
    monkeypatch.undo()

    _assert_whole(out)
    tmp_left = [p.name for d in (out, out / "model") for p in d.iterdir() if p.name.endswith(".tmp")]
    assert tmp_left == [] and not (out / STAGING).exists()
    for name in OUTPUTS:  # the previous run, byte for byte, run.json ("complete") included
        assert (out / name).read_bytes() == before[name], name
    assert read_run(out)["status"] == "complete" and read_run(out)["settings"]["seed"] == 0
    # the same command again, with space: finishes normally
    assert cli(base + ["--seed", 1, "--overwrite"])[0] == 0
    assert read_run(out)["status"] == "complete"
    assert read_run(out)["settings"]["seed"] == 1


def test_outputs_and_cache_honour_the_umask(tmp_path, cli):
    """With umask 022 every output, model file, thumbnail and cache file is 0644 and every folder
    0755, as with any other tool (the atomic writer's temp files kept mkstemp's 0600)."""
    src = tmp_path / "in"
    for i in range(6):
        good_image(src / f"img_{i}.png", i)
    vocab = tmp_path / "v.txt"
    vocab.write_text("apple\nriver\ncloud\n")
    old = os.umask(0o022)
    try:
        common = ["--cache-dir", tmp_path / "cache", "--device", "cpu", "--quiet"]
        assert cli(["cluster", src, "--k", 2, "--out", tmp_path / "out", "--vocabulary", vocab,
                    "--backbone", "relitiny", "--method", "kmeans", *common])[0] == 0
        assert cli(["predict", tmp_path / "out" / "model", src, "--out", tmp_path / "preds.csv", *common])[0] == 0
    finally:
        os.umask(old)
    wrong = []
    for root in (tmp_path / "out", tmp_path / "cache", tmp_path / "preds.csv"):
        for p in [root, *root.rglob("*")] if root.is_dir() else [root]:
            want = 0o755 if p.is_dir() else 0o644
            if p.stat().st_mode & 0o777 != want:
                wrong.append((str(p.relative_to(tmp_path)), oct(p.stat().st_mode & 0o777)))
    assert wrong == []


def test_atomic_write_fsyncs_the_folder_after_the_rename(tmp_path, monkeypatch):
    import stat

    from tacluster import _atomic

    synced = []
    real = os.fsync

    def fsync(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    _atomic.atomic_write_bytes(tmp_path / "f.txt", b"data")
    assert synced == [False, True]  # the file's bytes, then the folder's entry
