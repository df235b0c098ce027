"""`tacluster serve` on a large run: how long a cluster of 50k images takes to open.

    python benchmarks/serve.py [--big 50000] [--others 5000] [--repeats 5] [--out benchmarks/results/serve.json]

Builds a run directory by hand (no embedding, no report): one cluster of
``--big`` rows and two of ``--others``, with the files ``tacluster serve``
reads (assignments.parquet, clusters.json, run.json, model/config.json). The
``PAGE_SIZE`` most confident rows of the big cluster point at real 64x64 JPEGs,
so the first page's thumbnails can be timed too; the other paths need not exist
(a page lists them, the browser asks for thumbnails lazily). A server on a free
port is timed through http.client, every measurement repeated ``--repeats``
times and interleaved (the median is printed):

* ``first page after a change``: the page after run.json changed, i.e. the run
  read again (parquet, the report's member order) plus the page;
* ``cluster page``: the big cluster's first and last page, warm;
* ``overview``: the clusters by size with their thumbnail strips;
* ``thumbnails``: the first page's thumbnails fetched by 6 threads, as a
  browser does (made once, then from DIR/thumbs);
* ``rename``: one rename through the page's POST (all 60k rows rewritten
  through the journal, with the undo snapshot; this run has no report to rebuild).

The HTML sizes show that the page is bounded: nothing sends all assignments
to the browser.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, markdown_table, write_json  # noqa: E402


def make_run(root: Path, big: int, others: int, real: int) -> Path:
    """A finished-looking run of ``big + 2 * others`` rows; the ``real`` most confident of cluster 0 are JPEGs."""
    from PIL import Image

    from tacluster.run.tables import parquet_bytes

    rng = np.random.default_rng(0)
    sizes = [big, others, others]
    labels = np.repeat(np.arange(3), sizes)
    conf = rng.uniform(0.3, 1.0, labels.size)
    conf[:real] = 1.0 - np.arange(real) * 1e-9  # the first page of cluster 0, in this order
    paths = [str(root / "photos" / f"d{i % 100:02d}" / f"{i:06d}.jpg") for i in range(labels.size)]
    for i in range(real):
        Path(paths[i]).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(paths[i], quality=80)
    names = ["big", "small one", "small two"]
    run = root / "run"
    (run / "model").mkdir(parents=True)
    (run / "assignments.parquet").write_bytes(parquet_bytes({
        "path": paths, "cluster": labels.tolist(), "confidence": conf.tolist(),
        "cluster_name": [names[c] for c in labels], "x": rng.normal(size=labels.size).tolist(),
        "y": rng.normal(size=labels.size).tolist(), "outlier": (conf < 0.35).tolist()}))
    clusters = [{"id": c, "size": s, "name": names[c], "top_nouns": [], "representatives": [], "outliers": []}
                for c, s in enumerate(sizes)]
    (run / "clusters.json").write_text(json.dumps({"n_clusters": 3, "clusters": clusters}))
    (run / "model" / "config.json").write_text(json.dumps({"n_clusters": 3, "metadata": {"cluster_names": names}}))
    (run / "run.json").write_text(json.dumps({"status": "complete", "run_key": "bench", "history": []}))
    return run


def get(port: int, token: str, path: str) -> tuple[float, int]:
    """Seconds and response size of one GET."""
    t = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    conn.request("GET", path, headers={"Cookie": f"tacluster_token={token}"})
    res = conn.getresponse()
    body = res.read()
    conn.close()
    assert res.status == 200, (path, res.status, body[:200])
    return time.perf_counter() - t, len(body)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--big", type=int, default=50_000)
    ap.add_argument("--others", type=int, default=5_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default="benchmarks/results/serve.json")
    a = ap.parse_args()

    from tacluster.serve import make_server
    from tacluster.serve.views import PAGE_SIZE

    with tempfile.TemporaryDirectory() as tmp:
        run = make_run(Path(tmp), a.big, a.others, PAGE_SIZE)
        server = make_server(run, 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port, token = server.port, server.token
        last = -(-a.big // PAGE_SIZE) - 1
        times: dict[str, list[float]] = {}
        sizes: dict[str, int] = {}

        def take(name: str, path: str) -> None:
            sec, size = get(port, token, path)
            times.setdefault(name, []).append(sec)
            sizes[name] = size

        def thumbnails() -> float:
            t = time.perf_counter()
            with ThreadPoolExecutor(6) as pool:
                list(pool.map(lambda r: get(port, token, f"/thumb/{r}"), range(PAGE_SIZE)))
            return time.perf_counter() - t

        times["thumbnails, first page (made)"] = [thumbnails()]
        def rename(rep: int) -> None:
            from urllib.parse import urlencode

            from tacluster.serve.views import run_version

            t = time.perf_counter()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
            body = urlencode({"token": token, "version": run_version(run), "cluster": "1", "name": f"small {rep}"})
            conn.request("POST", "/action/rename", body, {"Content-Type": "application/x-www-form-urlencoded",
                                                          "Origin": f"http://127.0.0.1:{port}"})
            res = conn.getresponse()
            res.read()
            conn.close()
            assert res.status == 303, res.status
            times.setdefault("rename (POST, journaled edit, no report)", []).append(time.perf_counter() - t)

        for rep in range(a.repeats):
            rename(rep)  # a change: the next page reads the run again
            take("first page after a change", "/cluster/0")
            take("cluster page (first)", "/cluster/0")
            take("cluster page (last)", f"/cluster/0?page={last}")
            take("overview", "/")
            times.setdefault("thumbnails, first page (cached)", []).append(thumbnails())
        server.shutdown()
        server.server_close()

    rows = [[name, f"{statistics.median(v) * 1000:.0f}", f"{min(v) * 1000:.0f}", f"{max(v) * 1000:.0f}",
             f"{sizes[name] / 1024:.0f}" if name in sizes else "-"] for name, v in times.items()]
    print(f"tacluster serve, a cluster of {a.big:,} images (+ 2 x {a.others:,}), {PAGE_SIZE} per page; "
          f"median of {a.repeats} (interleaved)")
    print(markdown_table(["request", "median ms", "min ms", "max ms", "HTML KiB"], rows))
    dst = write_json(a.out, {"big": a.big, "others": a.others, "page_size": PAGE_SIZE, "repeats": a.repeats,
                             "seconds": times, "bytes": sizes, "environment": environment()})
    print(f"wrote {dst}")


if __name__ == "__main__":
    main()
