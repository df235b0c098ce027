"""benchmarks/paper.py --download: torchvision fetches the data set, against a local HTTP server.

Needs torchvision (the open_clip environment of .ci/run); nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import pickle
import sys
import tarfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

tvd = pytest.importorskip("torchvision.datasets", reason="torchvision is not installed here (open_clip venv)")

REPO = Path(__file__).resolve().parents[1]


def _load_paper():
    spec = importlib.util.spec_from_file_location("paper_bench_dl", REPO / "benchmarks" / "paper.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["paper_bench_dl"] = mod
    spec.loader.exec_module(mod)
    return mod


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _fake_cifar10(served: Path) -> dict:
    """A tiny cifar-10-python.tar.gz in torchvision's layout; returns the md5 table."""
    rng = np.random.default_rng(0)
    files = {}
    for name, n in [*((f"data_batch_{i}", 2) for i in range(1, 6)), ("test_batch", 3)]:
        files[name] = pickle.dumps({"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                                    "labels": [int(x) for x in rng.integers(0, 10, n)]})
    files["batches.meta"] = pickle.dumps({"label_names": [f"c{i}" for i in range(10)]})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (served / "cifar-10-python.tar.gz").write_bytes(buf.getvalue())
    return {"tgz": _md5(buf.getvalue()), **{k: _md5(v) for k, v in files.items()}}


@pytest.fixture()
def server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download_fetches_cifar10_with_torchvision_then_reads_it(server, tmp_path, monkeypatch):
    served, url = server
    md5 = _fake_cifar10(served)
    monkeypatch.setattr(tvd.CIFAR10, "url", f"{url}/cifar-10-python.tar.gz")
    monkeypatch.setattr(tvd.CIFAR10, "tgz_md5", md5["tgz"])
    monkeypatch.setattr(tvd.CIFAR10, "train_list", [[f"data_batch_{i}", md5[f"data_batch_{i}"]] for i in range(1, 6)])
    monkeypatch.setattr(tvd.CIFAR10, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(tvd.CIFAR10, "meta", {"filename": "batches.meta", "key": "label_names",
                                              "md5": md5["batches.meta"]})
    paper = _load_paper()
    root = tmp_path / "data"
    paper.download("cifar10", root)
    paths, labels = paper.load_split("cifar10", root, tmp_path / "work", "train")
    assert len(paths) == 10 and all(Path(p).is_file() for p in paths)
    assert len(paper.load_split("cifar10", root, tmp_path / "work", "test")[0]) == 3


def test_failed_download_is_one_line_with_the_prefetch_command(tmp_path, monkeypatch):
    monkeypatch.setattr(tvd.CIFAR10, "url", "http://127.0.0.1:9/cifar-10-python.tar.gz")  # nothing listens
    paper = _load_paper()
    with pytest.raises(SystemExit) as err:
        paper.download("cifar10", tmp_path / "data")
    msg = str(err.value)
    assert "\n" not in msg and "cannot download CIFAR10" in msg
    assert "torchvision.datasets.CIFAR10(" in msg and "download=True" in msg
    with pytest.raises(SystemExit, match="no public direct download"):
        paper.download("imagenet10", tmp_path / "data")
