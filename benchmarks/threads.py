"""A shared CPU: tacluster's wall time idle and beside a competing tacluster job.

Reproduces issue 29's trigger: another tacluster job (embedding and clustering
a folder of ~1,000 photos, with spinning OpenMP threads as tacluster had
before) runs on the same cores while the measured command runs. Each measured
command runs with the OpenMP wait policy tacluster now sets (``PASSIVE``) and
with the old one (``ACTIVE``: what the OpenMP runtime did by default here),
once on an idle machine and once beside the competitor; the goal is at most 2x
the idle time under the load.

    python benchmarks/threads.py --data ../shared/data --out docs/threads.json

Cases: ``--method tac`` on 40 photos (embeddings cached: the training stage
is what collapsed), the default on 1,000 photos (cached), and embedding 200
photos from an empty cache (user and system time: the allocation churn).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, markdown_table, write_json  # noqa: E402

SRC = Path(__file__).resolve().parents[1] / "src"


def _extract(tarball: Path, dest: Path, per_class: int, n_classes: int | None = None) -> Path:
    """The first ``per_class`` photos of (the first ``n_classes``) classes, flat in ``dest``."""
    if dest.is_dir() and any(dest.iterdir()):  # extracted by an earlier call with --work
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    taken: dict[str, int] = {}
    with tarfile.open(tarball) as tar:
        for m in sorted((m for m in tar.getmembers() if m.isfile()), key=lambda m: m.name):
            cls = Path(m.name).parent.name
            if n_classes is not None and cls not in taken and len(taken) >= n_classes:
                continue
            if taken.get(cls, 0) >= per_class:
                continue
            taken[cls] = taken.get(cls, 0) + 1
            data = tar.extractfile(m).read()
            (dest / f"{cls}_{Path(m.name).name}").write_bytes(data)
    return dest


def _env(policy: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    env["OMP_WAIT_POLICY"] = policy
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))
    return env


def _run(args: list[str], policy: str) -> dict:
    """One ``tacluster`` command: wall, user and system seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    tic = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tacluster", *args, "--quiet", "--overwrite"], env=_env(policy),
                   check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - tic
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall_s": wall, "user_s": after.ru_utime - before.ru_utime, "sys_s": after.ru_stime - before.ru_stime,
            "load": os.getloadavg()[0]}


class Competitor:
    """Another tacluster job in a loop: embed a folder from an empty cache and cluster it."""

    def __init__(self, folder: Path, work: Path, policy: str):
        script = (f"i=0; while true; do i=$((i+1)); rm -rf '{work}/cache'; "
                  f"'{sys.executable}' -m tacluster cluster '{folder}' --k 17 --out '{work}/run' "
                  f"--cache-dir '{work}/cache' --quiet --overwrite --no-report >/dev/null 2>&1; done")
        self.proc = subprocess.Popen(["bash", "-c", script], env=_env(policy), start_new_session=True)
        time.sleep(20)  # past its start-up, into the embedding

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    ap.add_argument("--cases", default="tac40,default1000,embed200")
    ap.add_argument("--policies", default="PASSIVE,ACTIVE")
    ap.add_argument("--work", type=Path, default=None,
                    help="keep the extracted photos and the warm cache here (default: a temporary folder, removed)")
    ap.add_argument("--competitor-policy", default="ACTIVE",
                    help="the competing job's OpenMP wait policy (ACTIVE: a tacluster from before this change)")
    a = ap.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="tacluster-threads-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        scene = a.data / "scene15-train.tar.gz"
        p40 = _extract(scene, work / "p40", 10, n_classes=4)
        p1000 = _extract(scene, work / "p1000", 67)
        p200 = _extract(scene, work / "p200", 14)
        rival = _extract(a.data / "flowers17.tar.gz", work / "rival", 80)
        cache = work / "cache"
        cases = {
            "tac40": (["cluster", str(p40), "--k", "4", "--method", "tac", "--out", str(work / "r40"),
                       "--cache-dir", str(cache), "--backbone", "lite"], None),
            "default1000": (["cluster", str(p1000), "--k", "15", "--out", str(work / "r1000"),
                             "--cache-dir", str(cache), "--backbone", "lite"], None),
            "embed200": (["cluster", str(p200), "--k", "15", "--method", "kmeans", "--no-report",
                          "--out", str(work / "r200"), "--backbone", "lite"], "cold"),
        }
        chosen = [c for c in a.cases.split(",") if c]
        for name in chosen:  # warm the cache (and the imports) once
            args, cold = cases[name]
            if cold is None:
                _run(args, "PASSIVE")
        results: list[dict] = []
        for condition in ("idle", "loaded"):
            rival_job = Competitor(rival, work / "rival-run", a.competitor_policy) if condition == "loaded" else None
            try:
                for name in chosen:
                    for policy in a.policies.split(","):
                        args, cold = cases[name]
                        if cold:
                            args = [*args, "--cache-dir", str(work / f"cold-{condition}-{policy}")]
                        r = _run(args, policy)
                        results.append({"case": name, "policy": policy, "condition": condition, **r})
                        print(f"{name:12} {policy:8} {condition:7} {r['wall_s']:8.1f} s (load {r['load']:.1f})",
                              flush=True)
            finally:
                if rival_job is not None:
                    rival_job.stop()
        rows = []
        for name in chosen:
            for policy in a.policies.split(","):
                idle = next(r for r in results if (r["case"], r["policy"], r["condition"]) == (name, policy, "idle"))
                busy = next(r for r in results if (r["case"], r["policy"], r["condition"]) == (name, policy, "loaded"))
                rows.append([name, policy, idle["wall_s"], busy["wall_s"], busy["wall_s"] / idle["wall_s"],
                             busy["user_s"], busy["sys_s"], f"{idle['load']:.1f} / {busy['load']:.1f}"])
        print()
        print(markdown_table(["case", "OpenMP wait", "idle s", "loaded s", "loaded / idle", "loaded user s",
                              "loaded sys s", "load avg idle / loaded"], rows))
        if a.out:
            write_json(a.out, {"environment": environment(), "competitor_policy": a.competitor_policy,
                               "results": results})
    finally:
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
