"""Do tacluster's results move with the faiss version? (issue 9)

Users of the TAC reference code reported CIFAR-10 ACC 76 with one faiss build
and 90 with another. This runs ``benchmarks/stability.py`` (CIFAR-10 Lite0
features, 300 images per class; one thread) once per faiss build, each in its
own process with that build first on ``PYTHONPATH``, and compares every fit's
labels with those of the installed build.

tacluster needs faiss >= 1.14.2 (k-means++ initialisation; 1.7.4-1.13.2 now
stop with a DependencyError naming the upgrade). Install the other builds
beside the environment first, e.g.::

    pip install --no-deps --target /tmp/faiss-1.14.2 faiss-cpu==1.14.2
    pip install --no-deps --target /tmp/faiss-1.15.0 faiss-cpu==1.15.0
    python benchmarks/faiss_versions.py /tmp/faiss-1.14.2 /tmp/faiss-1.15.0 --seeds 5

Prints a markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import environment, markdown_table, write_json  # noqa: E402


def run_build(site: str | None, work: Path, args) -> tuple[str, dict, dict]:
    """One stability run with the faiss build in ``site`` (None: the installed one)."""
    tag = Path(site).name if site else "installed"
    env = dict(os.environ)
    src = str(HERE.parent / "src")
    env["PYTHONPATH"] = os.pathsep.join([p for p in (site, src, env.get("PYTHONPATH")) if p])
    out, labels = work / f"{tag}.json", work / f"{tag}.npz"
    cmd = [sys.executable, str(HERE / "stability.py"), "--threads", "1", "--seeds", str(args.seeds),
           "--methods", *args.methods, "--fixes", *args.fixes, "--out", str(out), "--save-labels", str(labels)]
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    result = json.loads(out.read_text())
    return result["faiss_version"], result, dict(np.load(labels))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sites", nargs="+", help="folders holding other faiss-cpu builds (pip install --target)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--methods", nargs="+", default=["kmeans", "spectral", "no-train", "tac"])
    ap.add_argument("--fixes", nargs="*", default=["no-train consensus=20"])
    ap.add_argument("--out", default="benchmarks/results/faiss_versions.json")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="tacluster-faiss-") as tmp:
        runs = [run_build(site, Path(tmp), args) for site in [None, *args.sites]]
    ref_version, _, ref_labels = runs[0]
    rows, records = [], []
    for config in list(args.methods) + list(args.fixes):
        for version, result, labels in runs:
            rec = next(r for r in result["rows"] if r["config"] == config)
            same = sum(np.array_equal(labels[f"{config}|{s}"], ref_labels[f"{config}|{s}"]) for s in range(args.seeds))
            acc = rec["acc"]
            rows.append([config, version, statistics.mean(acc), statistics.stdev(acc) if len(acc) > 1 else 0.0,
                         f"{same}/{args.seeds}"])
            records.append({"config": config, "faiss": version, "acc": acc, "identical_to_" + ref_version: same})
    table = markdown_table(["config", "faiss", "ACC mean", "ACC std", f"labels = faiss {ref_version}"], rows)
    print(table)
    payload = {"reference_faiss": ref_version, "n_seeds": args.seeds, "rows": records, "table": table,
               "environment": environment()}
    write_json(args.out, payload)
    return payload


if __name__ == "__main__":
    main()
