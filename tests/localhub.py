"""A stand-in for the Hugging Face Hub on 127.0.0.1, for the download tests.

It serves folders the test built (tiny random models) under Hub repo ids with
the endpoints ``huggingface_hub.snapshot_download`` / ``hf_hub_download`` use:
repository info, the recursive file tree, and ``resolve`` (HEAD and GET with
Range). Every request is logged, so a test can assert that a run made none,
and a file can be set to break off half-way to test interrupted downloads.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse


class LocalHub:
    """``with LocalHub() as hub: hub.add_repo("org/name", folder)``; ``hub.url`` is the endpoint."""

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, bytes]] = {}
        self.requests: list[str] = []
        self.truncate: set[str] = set()  # "repo/filename" served half, then the connection drops
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def add_repo(self, repo_id: str, folder: Path) -> None:
        folder = Path(folder)
        self.repos[repo_id] = {
            str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
        }

    def commit(self, repo_id: str) -> str:
        h = hashlib.sha1()
        for name, data in sorted(self.repos[repo_id].items()):
            h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
        return h.hexdigest()

    def __enter__(self) -> "LocalHub":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(hub: LocalHub):
    info = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?$")
    tree = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?P<path>/.*)?$")
    resolve = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def _json(self, obj, status: int = 200) -> None:
            body = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _not_found(self, repo: str | None) -> None:
            body = b'{"error": "Repository not found"}'
            self.send_response(404 if repo in hub.repos else 401)
            self.send_header("X-Error-Code", "EntryNotFound" if repo in hub.repos else "RepoNotFound")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            path = unquote(urlparse(self.path).path)
            hub.requests.append(f"{self.command} {path}")
            if m := tree.match(path):
                repo = m["repo"]
                if repo not in hub.repos:
                    return self._not_found(repo)
                files = hub.repos[repo]
                return self._json([
                    {"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest(),
                     "lfs": {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}}
                    for name, data in sorted(files.items())
                ])
            if m := info.match(path):
                repo = m["repo"]
                if repo not in hub.repos:
                    return self._not_found(repo)
                return self._json({
                    "id": repo, "modelId": repo, "sha": hub.commit(repo), "private": False,
                    "siblings": [{"rfilename": name} for name in sorted(hub.repos[repo])],
                })
            if m := resolve.match(path):
                repo, name = m["repo"], m["file"]
                if repo not in hub.repos or name not in hub.repos[repo]:
                    return self._not_found(repo)
                return self._send_file(repo, name, hub.repos[repo][name])
            self._not_found(None)

        def _send_file(self, repo: str, name: str, data: bytes) -> None:
            etag = hashlib.sha256(data).hexdigest()
            start = 0
            rng = self.headers.get("Range")
            if rng and (rm := re.match(r"bytes=(\d+)-", rng)):
                start = int(rm[1])
            self.send_response(206 if start else 200)
            self.send_header("X-Repo-Commit", hub.commit(repo))
            self.send_header("ETag", f'"{etag}"')
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data) - start))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if self.command == "HEAD":
                return
            body = data[start:]
            if f"{repo}/{name}" in hub.truncate:
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

    return Handler
