"""`tacluster serve`: the token, same-origin POSTs, files outside the run and
escaping (through an HTTP client, against a server started on a free port);
every action through HTTP; a real headless chromium renaming, merging and
marking outliers on a run of ../shared/data photos; kill -9 of the server
during an edit (the run is then in its old or its new state)."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import pyarrow.parquet as pq
import pytest

import relihelpers
from devtools import CHROMIUM, Browser
from relihelpers import assert_one_line_error, edit_state, read_csv, read_run
from tacluster.run.edit import EDIT_STAGING, JOURNAL
from tacluster.serve import make_server
from tacluster.serve.views import run_version

RUN_FILES = ("assignments.parquet", "assignments.csv", "clusters.json", "model/config.json", "run.json")


def _make_run(data: Path, out: Path, cache: Path, vocab: Path, k: int) -> Path:
    from tacluster.run.workflows import cluster_images

    cluster_images(data, out, k, backbone="relitiny", method="kmeans", cache_dir=cache,
                   vocabulary=str(vocab), progress=False, report=True)
    return out


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, vocab):
    """A finished 3-cluster run (report included) of 24 generated images; tests work on copies."""
    root = tmp_path_factory.mktemp("serve")
    relihelpers.add_good(root / "photos" / "a", 12)
    relihelpers.add_good(root / "photos" / "b", 12)
    (root / "secret.txt").write_text("outside the run")
    return {"root": root, "run": _make_run(root / "photos", root / "run", root / "cache", vocab, 3),
            "cache": root / "cache", "data": root / "photos"}


@pytest.fixture
def run_copy(base_run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(base_run["run"], dst, symlinks=True)
    return dst


class Client:
    """HTTP to one server, as a browser would send it (Host, Origin), unless told otherwise."""

    def __init__(self, server):
        self.server, self.port, self.token = server, server.port, server.token

    def request(self, method: str, path: str, body: dict | None = None, headers: dict | None = None,
                cookie: str | None = "own"):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        hdrs = {"Host": f"127.0.0.1:{self.port}"}
        if cookie:
            hdrs["Cookie"] = f"tacluster_token={self.token if cookie == 'own' else cookie}"
        data = None
        if body is not None:
            data = urlencode(body, doseq=True).encode()
            hdrs.update({"Content-Type": "application/x-www-form-urlencoded",
                         "Origin": f"http://127.0.0.1:{self.port}"})
        hdrs.update(headers or {})
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)  # the path goes as written
        for key, value in hdrs.items():
            if value is not None:
                conn.putheader(key, value)
        conn.putheader("Content-Length", str(len(data or b"")))
        conn.endheaders(data)
        res = conn.getresponse()
        out = res.status, dict(res.getheaders()), res.read()
        conn.close()
        return out

    def get(self, path: str, **kw):
        return self.request("GET", path, **kw)

    def post(self, action: str, fields: dict, **kw):
        body = {"token": self.token, "version": run_version(self.server.run_dir), **fields}
        return self.request("POST", f"/action/{action}", body=body, **kw)


@pytest.fixture
def served(run_copy):
    server = make_server(run_copy, 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Client(server)
    server.shutdown()
    server.server_close()


def _digests(run: Path) -> dict[str, str]:
    return {n: hashlib.sha256((run / n).read_bytes()).hexdigest() for n in RUN_FILES}


# --------------------------------------------------------------------------- security


def test_every_request_needs_the_token(served):
    status, headers, _ = served.get("/", cookie=None)
    assert status == 403
    assert served.get("/", cookie="wrong")[0] == 403
    assert served.get("/?token=wrong", cookie=None)[0] == 403
    for path in ("/cluster/0", "/thumb/0", "/image/0", "/run/map.png", "/run/assignments.csv"):
        assert served.get(path, cookie=None)[0] == 403, path
    # the printed link sets a strict cookie and drops the token from the address
    status, headers, _ = served.get(f"/?token={served.token}", cookie=None)
    assert status == 303 and headers["Location"] == "/"
    cookie = headers["Set-Cookie"]
    assert f"tacluster_token={served.token}" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    status, headers, body = served.get("/")
    assert status == 200 and b"Clusters" in body
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    # another host name (DNS rebinding) is refused even with the token
    assert served.get("/", headers={"Host": f"evil.example:{served.port}"})[0] == 403


@pytest.mark.parametrize("case", ["no token", "wrong token", "cookie only", "cross-origin", "other host",
                                  "cross-site fetch", "GET"])
def test_state_changing_requests_are_refused_and_change_nothing(served, case):
    run = served.server.run_dir
    before = _digests(run)
    fields = {"cluster": "0", "name": "hacked"}
    body = {"token": served.token, "version": run_version(run), **fields}
    headers: dict = {}
    cookie = "own"
    if case == "no token":
        body.pop("token")
        cookie = None
    elif case == "wrong token":
        body["token"] = "x" * len(served.token)
    elif case == "cookie only":  # a forged form carries the browser's cookie but not the token
        body.pop("token")
    elif case == "cross-origin":
        headers["Origin"] = "http://evil.example"
    elif case == "other host":
        headers["Host"] = f"evil.example:{served.port}"
    elif case == "cross-site fetch":
        headers["Sec-Fetch-Site"] = "cross-site"
    if case == "GET":  # with the cookie, the fields in the query: not an action
        body.pop("token")
        status, _, _ = served.get(f"/action/rename?{urlencode(body)}")
        assert status == 404
    else:
        status, _, page = served.request("POST", "/action/rename", body=body, headers=headers, cookie=cookie)
        assert status == 403, (case, page[:300])
    assert _digests(run) == before
    assert "hacked" not in (run / "clusters.json").read_text()


@pytest.mark.parametrize("path", [
    "/run/../../secret.txt", "/run/%2e%2e/%2e%2e/secret.txt", "/run/%2E%2E%2F%2E%2E%2Fsecret.txt",
    "/run/..%2f..%2fsecret.txt", "/run/%252e%252e/%252e%252e/secret.txt", "/run/..%5c..%5csecret.txt",
    "/run//etc/passwd", "/run/%2fetc%2fpasswd", "/run/out-link", "/run/thumbs/../../secret.txt",
    "/run/.tacluster-undo", "/run/model", "/run/%00", "/run/%ff",
    "/../secret.txt", "/static/../app.py", "/static/%2e%2e%2fapp.py", "/image/999999", "/image/-1",
    "/thumb/999999", "/thumb/..%2f..%2fsecret.txt", "/image/0%2f..%2f..%2fsecret.txt",
])
def test_paths_outside_the_run_are_refused(served, path, base_run):
    run = served.server.run_dir
    (run / "out-link").symlink_to(base_run["root"] / "secret.txt")  # a link out of the run
    status, _, body = served.get(path)
    assert status in (403, 404), (path, status)
    assert b"outside the run" not in body and b"root:" not in body


def test_the_runs_own_files_and_images_are_served(served):
    run = served.server.run_dir
    status, headers, body = served.get("/run/map.png")
    assert status == 200 and headers["Content-Type"] == "image/png" and body == (run / "map.png").read_bytes()
    assert "script" not in headers["Content-Security-Policy"] and "default-src 'none'" in headers["Content-Security-Policy"]
    rows = pq.read_table(run / "assignments.parquet").column("path").to_pylist()
    status, _, body = served.get("/image/3")
    assert status == 200 and body == Path(rows[3]).read_bytes()
    status, headers, body = served.get("/thumb/3")
    assert status == 200 and headers["Content-Type"] == "image/jpeg" and body[:2] == b"\xff\xd8"


def test_names_are_escaped(served):
    evil = '<img src=x onerror="alert(1)">&'
    status, headers, _ = served.post("rename", {"cluster": "1", "name": evil})
    assert status == 303, _
    for path in ("/", "/cluster/1"):
        body = served.get(path)[2].decode()
        assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;&amp;" in body and "<img src=x" not in body


def test_serve_command_errors_are_one_line(run_copy, tmp_path, cli, capsys):
    def refused(argv: list, pattern: str) -> None:
        code, _, err = cli(["serve", *argv, "--no-browser"])
        assert_one_line_error(code, err, pattern)

    refused([tmp_path / "nothing"], "is not a directory")
    refused([tmp_path], "not found")
    refused([run_copy, "--port", "70000"], "must be an integer from 0")
    busy = make_server(run_copy, 0)
    try:
        refused([run_copy, "--port", busy.port], f"port {busy.port} cannot be used")
    finally:
        busy.server_close()
    with pytest.raises(SystemExit):
        cli(["serve", "--help"])
    assert "--no-browser" in capsys.readouterr().out


# --------------------------------------------------------------------------- actions


def test_each_action_runs_the_journaled_edit_and_a_stale_page_is_refused(served, tmp_path):
    run = served.server.run_dir
    names = edit_state(run)
    stale = run_version(run)
    status, headers, _ = served.post("rename", {"cluster": "0", "name": "first", "back": "/cluster/0?page=0"})
    assert status == 303 and headers["Location"].startswith("/cluster/0?page=0&note=")
    assert edit_state(run)[0] == "first"
    # a form made before that edit is refused, and nothing changes
    before = _digests(run)
    status, _, page = served.request("POST", "/action/rename", body={
        "token": served.token, "version": stale, "cluster": "1", "name": "late"})
    assert status == 409 and b"reload" in page
    assert _digests(run) == before
    # an edit made meanwhile by the command line is seen on the next page
    from tacluster.run.edit import rename_cluster

    rename_cluster(run, 2, "from the cli")
    assert b"from the cli" in served.get("/")[2]

    rows = pq.read_table(run / "assignments.parquet").to_pydict()
    picked = [i for i, c in enumerate(rows["cluster"]) if c == 1][:2]
    status, _, page = served.post("outliers", {"image": [str(i) for i in picked], "mark": "1"})
    assert status == 303, page
    flags = pq.read_table(run / "assignments.parquet").column("outlier").to_pylist()
    assert all(flags[i] for i in picked)
    entry = next(c for c in json.loads((run / "clusters.json").read_text())["clusters"] if c["id"] == 1)
    assert {rows["path"][i] for i in picked} <= set(entry["outliers"])
    assert b"outlier" in served.get("/cluster/1")[2]

    status, _, page = served.post("merge", {"cluster": ["1", "0"], "name": "together"})
    assert status == 303, page
    merged = edit_state(run)
    assert len(merged) == 2 and "together" in merged.values()

    assert served.post("undo", {})[0] == 303  # the merge
    assert edit_state(run) == {0: "first", 1: names[1], 2: "from the cli"}
    assert served.post("undo", {})[0] == 303  # the outliers
    assert not any(pq.read_table(run / "assignments.parquet").column("outlier").to_pylist()[i] for i in picked)
    history = [h["action"] for h in read_run(run)["history"]]
    assert history == ["rename", "rename", "outliers", "merge", "undo", "undo"]

    status, _, page = served.post("export", {"to": str(tmp_path / "export"), "mode": "copy"})
    assert status == 303, page
    assert sum(1 for p in (tmp_path / "export").rglob("*") if p.is_file() and p.parent != tmp_path / "export") \
        == len(rows["path"])  # (beside the folders, the export's marker file)
    # move and split: the journaled edits of `tacluster move` and `tacluster split`
    one = next(i for i, c in enumerate(pq.read_table(run / "assignments.parquet").column("cluster").to_pylist())
               if c == 0)
    status, _, page = served.post("move", {"image": [str(one)], "to": "1", "back": "/cluster/0?page=0"})
    assert status == 303, page
    moved = pq.read_table(run / "assignments.parquet").to_pydict()
    assert moved["cluster"][one] == 1 and moved["moved"][one]
    assert b'id="move-selected"' in served.get("/cluster/0")[2]
    k_before = len(edit_state(run))
    status, _, page = served.post("split", {"cluster": "1", "k": "2"})
    assert status == 303, page
    assert len(edit_state(run)) == k_before + 1
    assert [h["action"] for h in read_run(run)["history"]][-2:] == ["move", "split"]
    # a refused edit says why, in one line, and changes nothing
    before = _digests(run)
    status, _, page = served.post("merge", {"cluster": ["1"]})
    assert status == 400 and b"at least two clusters" in page
    status, _, page = served.post("rename", {"cluster": "0", "name": "from the cli"})
    assert status == 400 and b"already called" in page
    status, _, page = served.post("split", {"cluster": "0", "k": "many"})
    assert status == 400 and b"whole number" in page
    assert served.post("nonesuch", {"cluster": "0"})[0] == 404
    assert _digests(run) == before


def test_a_cluster_opens_a_page_at_a_time(served, monkeypatch):
    import tacluster.serve.views as views

    monkeypatch.setattr(views, "PAGE_SIZE", 3)
    run = served.server.run_dir
    sizes = {c["id"]: c["size"] for c in json.loads((run / "clusters.json").read_text())["clusters"]}
    cid = max(sizes, key=sizes.get)
    conf = {}
    t = pq.read_table(run / "assignments.parquet").to_pydict()
    for i, (c, s) in enumerate(zip(t["cluster"], t["confidence"])):
        if c == cid:
            conf[i] = s
    shown = []
    pages = -(-sizes[cid] // 3)
    for page in range(pages + 1):  # one past the end: clamped to the last page
        body = served.get(f"/cluster/{cid}?page={page}")[2].decode()
        rows = [int(r) for r in __import__("re").findall(r'data-row="(\d+)"', body)]
        assert 1 <= len(rows) <= 3
        if page < pages:
            shown += rows
        assert ('rel="next"' in body) == (page < pages - 1)
    assert sorted(shown) == sorted(conf)  # every member once, most confident first
    assert [conf[r] for r in shown] == sorted(conf.values(), reverse=True)


# --------------------------------------------------------------------------- real browser


@pytest.fixture(scope="module")
def flower_run(tmp_path_factory, shared_data, vocab):
    """A 3-cluster run of 24 photos (3 classes of ../shared/data/flowers17); where that
    folder is absent, of generated images, so the browser checks still run."""
    if CHROMIUM is None:
        pytest.skip("Chromium not installed (apt-get install -y chromium); real-browser checks skipped")
    root = tmp_path_factory.mktemp("flowers")
    try:
        shared_data.extract(shared_data.tarball("flowers17.tar.gz"), root / "photos", 8, {"c1", "c2", "c3"})
    except pytest.skip.Exception as absent:
        print(f"{absent}; the browser test runs on generated images")
        for cls in ("a", "b", "c"):
            relihelpers.add_good(root / "photos" / cls, 6)
    return {"run": _make_run(root / "photos", root / "run", root / "cache", vocab, 3),
            "data": root / "photos", "cache": root / "cache"}


def _click(browser: Browser, js: str) -> None:
    """Run ``js`` (a click that submits a form) and wait for the page it leads to."""
    browser.evaluate(f"window.__before = 1; {js}; true")
    browser.wait_for("window.__before === undefined")


def test_real_browser_renames_merges_marks_undoes_moves_and_splits(flower_run, tmp_path, cli):
    run = tmp_path / "run"
    shutil.copytree(flower_run["run"], run)
    server = make_server(run, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    browser = Browser(tmp_path / "profile")
    try:
        browser.goto(server.url)
        assert browser.evaluate("document.querySelectorAll('article.cluster').length") == 3
        sizes = [c["size"] for c in json.loads((run / "clusters.json").read_text())["clusters"]]
        assert browser.evaluate("document.querySelectorAll('.strip img').length") == sum(min(n, 12) for n in sizes)
        # thumbnails are images the browser decoded (lazily: those in view)
        browser.wait_for("[...document.querySelectorAll('.strip img')].slice(0, 4).every(i => i.naturalWidth > 0)")

        _click(browser, "const f = document.querySelector('#cluster-0 form.rename');"
                        "f.querySelector('input[name=name]').value = 'yellow <b>flowers</b>'; f.querySelector('button').click()")
        where = browser.evaluate("location.pathname + ' ' + document.title")
        assert where.startswith("/ "), where
        assert browser.evaluate("document.querySelector('#cluster-0 .name').textContent") == "yellow <b>flowers</b>"
        assert "renamed" in browser.evaluate("document.getElementById('note').textContent")
        assert edit_state(run)[0] == "yellow <b>flowers</b>"

        _click(browser, "document.querySelector('#cluster-2 input[name=cluster]').click();"
                        "document.querySelector('#cluster-1 input[name=cluster]').click();"
                        "document.querySelector('#merge-button').click()")
        assert browser.evaluate("document.getElementById('n-clusters').textContent") == "2"
        names = edit_state(run)
        assert len(names) == 2 and names[0] == "yellow <b>flowers</b>"
        sizes = [c["size"] for c in json.loads((run / "clusters.json").read_text())["clusters"]]
        assert sum(sizes) == len(read_csv(run / "assignments.csv")) == len(read_csv(flower_run["run"] / "assignments.csv"))
        # predict with the edited model agrees with the assignments on disk
        preds = tmp_path / "p.csv"
        code, _, err = cli(["predict", run, flower_run["data"], "--out", preds, "--cache-dir",
                            flower_run["cache"], "--quiet", "--device", "cpu"])
        assert code == 0, err
        got = {r["path"]: (r["cluster"], r["cluster_name"]) for r in read_csv(preds)}
        assert got == {r["path"]: (r["cluster"], r["cluster_name"]) for r in read_csv(run / "assignments.csv")}

        big = max(names, key=lambda c: sum(1 for r in read_csv(run / "assignments.csv") if int(r["cluster"]) == c))
        browser.goto(f"http://127.0.0.1:{server.port}/cluster/{big}")
        tiles = browser.evaluate("[...document.querySelectorAll('.grid .tile')].map(t => +t.dataset.row)")
        _click(browser, "const boxes = document.querySelectorAll('.grid input[name=image]');"
                        "boxes[0].click(); boxes[1].click(); document.getElementById('mark-outliers').click()")
        flags = pq.read_table(run / "assignments.parquet").column("outlier").to_pylist()
        assert flags[tiles[0]] and flags[tiles[1]]
        assert browser.evaluate("[...document.querySelectorAll('.grid .tile.outlier')].map(t => +t.dataset.row)"
                                ".filter(r => r === %d || r === %d).length" % (tiles[0], tiles[1])) == 2
        if os.environ.get("TACLUSTER_KEEP_SCREENSHOT"):  # docs/serve-cluster.png
            browser.screenshot(Path(os.environ["TACLUSTER_KEEP_SCREENSHOT"]) / "serve-cluster.png")

        _click(browser, "document.getElementById('undo').click()")
        flags = pq.read_table(run / "assignments.parquet").column("outlier").to_pylist()
        assert not flags[tiles[0]] or not flags[tiles[1]]
        assert [h["action"] for h in read_run(run)["history"]] == ["rename", "merge", "outliers", "undo"]

        # move: select an image of the big cluster and send it to the other one; the page tags it
        other = next(c for c in edit_state(run) if c != big)
        browser.goto(f"http://127.0.0.1:{server.port}/cluster/{big}")
        row = browser.evaluate("+document.querySelector('.grid .tile').dataset.row")
        _click(browser, "document.querySelector('.grid input[name=image]').click();"
                        f"document.querySelector('select[name=to]').value = '{other}';"
                        "document.getElementById('move-selected').click()")
        moved = pq.read_table(run / "assignments.parquet").to_pydict()
        assert moved["cluster"][row] == other and moved["moved"][row]
        browser.goto(f"http://127.0.0.1:{server.port}/cluster/{other}")
        assert browser.evaluate(f"document.querySelector('.tile[data-row=\"{row}\"]').classList.contains('moved')")
        # split: the big cluster into 2 parts from its page
        browser.goto(f"http://127.0.0.1:{server.port}/cluster/{big}")
        _click(browser, "document.getElementById('split-button').click()")
        assert browser.evaluate("document.getElementById('n-clusters').textContent") == "3"
        assert [h["action"] for h in read_run(run)["history"]][-2:] == ["move", "split"]
        code, _, err = cli(["predict", run, flower_run["data"], "--out", tmp_path / "p2.csv", "--cache-dir",
                            flower_run["cache"], "--quiet", "--device", "cpu"])
        assert code == 0, err
        got = {r["path"]: r["cluster"] for r in read_csv(tmp_path / "p2.csv")}
        on_disk = {r["path"]: r["cluster"] for r in read_csv(run / "assignments.csv")}
        assert got == on_disk  # after the move and the split; the moved image where a person put it
        # export: one folder per cluster, links, from the overview's form
        browser.goto(f"http://127.0.0.1:{server.port}/")
        dst = tmp_path / "exported"
        _click(browser, f"const f = document.getElementById('export'); f.querySelector('input[name=to]').value = "
                        f"{json.dumps(str(dst))}; f.querySelector('button').click()")
        folders = {d.name: sum(1 for _ in d.iterdir()) for d in dst.iterdir() if d.is_dir()}
        assert len(folders) == 3 and sum(folders.values()) == len(on_disk)
        assert "exported" in browser.evaluate("document.getElementById('note').textContent")
        if os.environ.get("TACLUSTER_KEEP_SCREENSHOT"):  # docs/serve.png
            browser.goto(f"http://127.0.0.1:{server.port}/")
            browser.screenshot(Path(os.environ["TACLUSTER_KEEP_SCREENSHOT"]) / "serve.png")
    finally:
        browser.close()
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------- kill -9


def _start_server(run: Path, site: Path) -> tuple[subprocess.Popen, str, int]:
    proc = subprocess.Popen([sys.executable, "-m", "tacluster", "serve", str(run), "--no-browser"],
                            env=relihelpers.subprocess_env(site, RELI_WRITE_SLEEP="0.15"), cwd=relihelpers.REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if "?token=" in line:
            url = line.strip()
            return proc, url.split("token=")[1], int(url.split(":")[2].split("/")[0])
    raise AssertionError(proc.stderr.read()[-2000:])


def test_kill_of_the_server_during_an_edit_leaves_the_old_or_the_new_state(run_copy, tmp_path, cli):
    site = relihelpers.write_sitecustomize(tmp_path / "site")
    outcomes, committed = set(), 0
    # every atomic write slowed to 0.15 s: the first kill lands while the edit is staged (before
    # its journal, the commit point), the second while its files are moved in
    for attempt, mark in enumerate([EDIT_STAGING, JOURNAL]):
        old, new = edit_state(run_copy)[0], f"renamed {attempt}"
        proc, token, port = _start_server(run_copy, site)
        body = urlencode({"token": token, "version": run_version(run_copy), "cluster": "0", "name": new})

        def post() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            try:
                conn.request("POST", "/action/rename", body, {
                    "Content-Type": "application/x-www-form-urlencoded", "Origin": f"http://127.0.0.1:{port}"})
                conn.getresponse().read()
            except (OSError, http.client.HTTPException):
                pass  # the server was killed under it

        sender = threading.Thread(target=post, daemon=True)
        sender.start()
        deadline = time.monotonic() + 120
        while not (run_copy / mark).exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.2)
        after_commit, outcome = relihelpers.kill_and_recover(proc, run_copy, cli, old, new)
        sender.join(timeout=30)
        committed += after_commit
        outcomes.add(outcome)
    assert outcomes == {"old", "new"} and committed == 1, (outcomes, committed)
