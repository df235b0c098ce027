"""The HTTP side of ``tacluster serve``: the standard library's threading HTTP
server on 127.0.0.1, the routes, and the actions, each a call of the journaled
edits of :mod:`tacluster.run.edit`.

Every request needs the token (``?token=`` once, then a SameSite=Strict,
HttpOnly cookie); a POST needs it in its body too, and must come from this
server's own origin. Only the run directory's files (``/run/...``), the run's
own images and thumbnails, by their row in the assignments (``/image/ROW``,
``/thumb/ROW``), and the package's assets (``/static/...``) are served.
"""

from __future__ import annotations

import mimetypes
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, urlencode, urlsplit

from tacluster.errors import InputError
from tacluster.run import edit
from tacluster.serve import pages, security
from tacluster.serve.views import RunBusy, RunView, Views

#: Served for every page: nothing but this server's own files, no inline script or style.
PAGE_CSP = ("default-src 'none'; img-src 'self'; style-src 'self'; script-src 'self'; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'")
#: Served for the run's files and images (a report page, an SVG): no script at all. Not a
#: sandbox: its opaque origin would keep the cookie off the report's own thumbnail requests.
FILE_CSP = "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; form-action 'none'"
STATIC = {"serve.css": "text/css; charset=utf-8", "serve.js": "text/javascript; charset=utf-8"}
MAX_FORM_BYTES = 1 << 20

# --------------------------------------------------------------------------- actions
# Each takes (run directory, form fields, the view the form was made from) and
# returns the message shown after it; InputError is shown as a refusal.


def _field(form: dict[str, list[str]], name: str, default: str | None = None) -> str:
    values = form.get(name)
    if not values:
        if default is None:
            raise InputError(f"the form lacks {name!r}")
        return default
    return values[0]


def _rows(form: dict[str, list[str]], view: RunView) -> list[str]:
    """The images a form selected (``image=ROW`` fields) as the run's paths."""
    paths = view.rd.assignments.path
    try:
        rows = [int(r) for r in form.get("image", [])]
    except ValueError:
        raise InputError("an image of the selection is not a row number") from None
    if any(not 0 <= r < len(paths) for r in rows):
        raise InputError("an image of the selection is not in the run")
    if not rows:
        raise InputError("select at least one image first")
    return [paths[r] for r in rows]


def _rename(run: Path, form: dict, view: RunView) -> str:
    cid, old, new = edit.rename_cluster(run, _field(form, "cluster"), _field(form, "name"))
    return f"cluster {cid} renamed from {old!r} to {new!r}"


def _merge(run: Path, form: dict, view: RunView) -> str:
    ids = form.get("cluster", [])
    if len(ids) < 2:
        raise InputError("tick at least two clusters to merge")
    name = _field(form, "name", "").strip() or None
    new_id, merged = edit.merge_clusters(run, ids, name=name)
    return f"merged clusters {', '.join(map(str, merged))} into cluster {new_id}; later ids renumbered"


def _outliers(run: Path, form: dict, view: RunView) -> str:
    flag = _field(form, "mark", "1") == "1"
    paths = _rows(form, view)
    n = edit.mark_outliers(run, paths, outlier=flag)
    return f"{n} of {len(paths)} selected image(s) {'marked as outliers' if flag else 'no longer outliers'}"


def _undo(run: Path, form: dict, view: RunView) -> str:
    undone = edit.undo_last_edit(run)
    return f"undid the last edit ({undone.get('action')})"


def _export(run: Path, form: dict, view: RunView) -> str:
    to = Path(_field(form, "to").strip()).expanduser()
    done = edit.export_run(run, to, mode=_field(form, "mode", "link"))
    missing = f"; {len(done.missing)} image(s) of the run are not files here and were left out" if done.missing else ""
    return f"exported {sum(done.counts.values())} images into {len(done.counts)} folders under {to}{missing}"


def _split(run: Path, form: dict, view: RunView) -> str:
    from tacluster.run.split import split_cluster

    text = _field(form, "k", "2").strip().lower()
    if text != "auto" and not text.isdigit():
        raise InputError(f"parts {text!r}: give a whole number >= 2, or auto")
    res = split_cluster(run, _field(form, "cluster"), text if text == "auto" else int(text))
    parts = ", ".join(f"{i} {n!r} ({s})" for i, n, s in zip(res.ids, res.names, res.sizes))
    return f"cluster {res.cluster} split into {len(res.ids)}: {parts}"


def _move(run: Path, form: dict, view: RunView) -> str:
    from tacluster.run.move import move_images

    paths = _rows(form, view)
    res = move_images(run, paths, _field(form, "to"))
    there = f" ({res.already_there} were there already)" if res.already_there else ""
    return f"moved {res.moved} image(s) into cluster {res.cluster}{there}"


#: POST /action/NAME: each runs one journaled edit of :mod:`tacluster.run.edit` (split and
#: move through :mod:`tacluster.run.split` / :mod:`tacluster.run.move`, the same journal).
ACTIONS: dict[str, Callable[[Path, dict, RunView], str]] = {
    "rename": _rename, "merge": _merge, "outliers": _outliers, "undo": _undo, "export": _export,
    "split": _split, "move": _move,
}


# --------------------------------------------------------------------------- server


class ReviewServer(ThreadingHTTPServer):
    """One run directory behind one token, on 127.0.0.1 only."""

    daemon_threads = True

    def __init__(self, views: Views, port: int, token: str, quiet: bool = True):
        self.run_dir = views.dir
        self.token = token
        self.quiet = quiet
        self.views = views
        self.edit_lock = threading.Lock()  # one edit at a time; each checks the version under it
        super().__init__(("127.0.0.1", port), _Handler)

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/?token={self.token}"


class _Handler(BaseHTTPRequestHandler):
    server: ReviewServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        if not self.server.quiet:
            super().log_message(format, *args)

    # ----------------------------------------------------------------- replies

    def _send(self, status: int, body: bytes, ctype: str = "text/html; charset=utf-8",
              headers: dict[str, str] | None = None, csp: str = PAGE_CSP) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", csp)
        self.send_header("X-Content-Type-Options", "nosniff")
        # same-origin, not no-referrer: under no-referrer chromium sends "Origin: null" with form POSTs
        self.send_header("Referrer-Policy", "same-origin")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        if "Cache-Control" not in (headers or {}):
            self.send_header("Cache-Control", "no-store")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _message(self, status: int, title: str, message: str, back: str = "/") -> None:
        self._send(status, pages.message_page(self.server.run_dir, title, message, back))

    def _file(self, path: Path, cache: bool = False) -> None:
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        try:
            body = path.read_bytes()
        except OSError:
            return self._message(404, "Not found", "that file cannot be read")
        headers = {"Cache-Control": "private, max-age=3600"} if cache else {}
        self._send(200, body, ctype, headers, csp=FILE_CSP)

    # ----------------------------------------------------------------- GET

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if "token" in query:  # the printed link: set the cookie, then drop the token from the address
            if not security.same_token(query["token"][0], self.server.token):
                return self._message(403, "Wrong token", "open the link `tacluster serve` printed")
            rest = urlencode([(k, v) for k, vs in query.items() if k != "token" for v in vs])
            cookie = f"{security.COOKIE}={self.server.token}; HttpOnly; SameSite=Strict; Path=/"
            return self._send(303, b"", headers={"Location": url.path + (f"?{rest}" if rest else ""),
                                                 "Set-Cookie": cookie})
        hosts, _ = security.own_origins(self.server.port)
        if self.headers.get("Host") not in hosts:
            return self._message(403, "Refused", "this server answers to 127.0.0.1 and localhost only")
        if not security.same_token(security.cookie_token(self.headers.get("Cookie")), self.server.token):
            return self._message(403, "No token", "open the link `tacluster serve` printed (it holds the token)")
        try:
            self._route(url.path, query)
        except RunBusy as exc:
            self._message(503, "Busy", str(exc))
        except InputError as exc:
            self._message(404, "Not found", str(exc))
        except Exception as exc:  # noqa: BLE001 - one line to the browser, the server keeps serving
            print(f"tacluster serve: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
            self._message(500, "Internal error", f"{type(exc).__name__}: {exc}")

    do_HEAD = do_GET

    def _route(self, path: str, query: dict[str, list[str]]) -> None:
        server = self.server
        note = (query.get("note") or [None])[0]
        if path == "/":
            return self._send(200, pages.overview_page(server.views.current(), server.run_dir, server.token, note))
        if m := re.fullmatch(r"/cluster/(-?\d+)", path):
            page = (query.get("page") or ["0"])[0]
            view = server.views.current()
            body = pages.cluster_page(view, server.run_dir, server.token, note, int(m[1]),
                                      int(page) if page.isdigit() else 0)
            return self._send(200, body)
        if m := re.fullmatch(r"/(thumb|image)/(\d+)", path):
            view = server.views.current()
            row = int(m[2])
            if m[1] == "thumb":
                found = server.views.thumbnail(view, row)
            else:
                found = _image_file(view, row)
            if found is None:
                return self._message(404, "Not found", f"the run has no image {row} on disk")
            return self._file(found, cache=m[1] == "thumb")
        if path.startswith("/run/"):
            found = security.run_file(server.run_dir, path[len("/run/"):])
            if found is None:
                return self._message(403, "Refused", "only the run directory's own files are served")
            return self._file(found)
        if m := re.fullmatch(r"/static/([a-z]+\.[a-z]+)", path):
            if m[1] in STATIC:
                body = (Path(__file__).with_name("static") / m[1]).read_bytes()
                return self._send(200, body, STATIC[m[1]], {"Cache-Control": "private, max-age=600"})
        self._message(404, "Not found", "no such page")

    # ----------------------------------------------------------------- POST

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        server = self.server
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_FORM_BYTES:
            self.close_connection = True
            return self._message(413, "Refused", "the form is too large")
        body = self.rfile.read(length)
        if not security.same_origin(self.headers, server.port):
            return self._message(403, "Refused", "a request from another site or host is refused")
        try:
            form = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            return self._message(400, "Refused", "the form is not UTF-8")
        token = (form.get("token") or [None])[0] or self.headers.get(security.TOKEN_HEADER)
        if not security.same_token(token, server.token):
            return self._message(403, "No token", "the request does not carry this server's token")
        back = (form.get("back") or ["/"])[0]
        if not back.startswith("/") or back.startswith("//") or "\\" in back:
            back = "/"
        m = re.fullmatch(r"/action/([a-z-]+)", urlsplit(self.path).path)
        action = ACTIONS.get(m[1]) if m else None
        if action is None:
            return self._message(404, "Not found", "no such action", back)
        with server.edit_lock:
            try:
                view = server.views.current()
                given = (form.get("version") or [""])[0]
                if given != view.version:
                    return self._message(409, "The run changed", "the run was changed (in another tab or by a "
                                         "command) since this page was loaded; nothing was done: reload and "
                                         "try again", back)
                note = action(server.run_dir, form, view)
            except InputError as exc:
                return self._message(400, "Not done", str(exc), back)
            except Exception as exc:  # noqa: BLE001 - the edit's journal keeps the run whole
                print(f"tacluster serve: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
                return self._message(500, "Internal error", f"{type(exc).__name__}: {exc}", back)
        path, _, fragment = back.partition("#")
        location = path + ("&" if "?" in path else "?") + urlencode({"note": note}) + (f"#{fragment}" if fragment else "")
        self._send(303, b"", headers={"Location": location})


def _image_file(view: RunView, row: int) -> Path | None:
    """Row ``row``'s own image file (one the assignments list), if it is a file on disk."""
    from tacluster.report.thumbnails import is_url

    paths = view.rd.assignments.path
    if not 0 <= row < len(paths) or is_url(paths[row]):
        return None
    path = Path(paths[row])
    return path if path.is_file() else None


def make_server(run_dir: str | Path, port: int = 0, *, token: str | None = None, quiet: bool = True) -> ReviewServer:
    """A review server for ``run_dir`` on 127.0.0.1:``port`` (0: a free port), not yet serving;
    ``token`` defaults to a fresh random one, ``quiet=False`` logs each request to stderr.

    Raises
    ------
    InputError
        ``run_dir`` holds no finished run, or ``port`` is out of range or taken.
    """
    import errno

    from tacluster.run.rundir import recover_pending

    run = Path(run_dir)
    if not run.is_dir():
        raise InputError(f"{str(run)!r} is not a directory; pass the output directory of a tacluster run")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise InputError(f"--port {port!r} must be an integer from 0 (any free port) to 65535")
    recover_pending(run)
    views = Views(run)
    views.current()  # a run that cannot be read is refused now, not on the first page
    try:
        return ReviewServer(views, port, token or security.new_token(), quiet=quiet)
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, errno.EACCES):
            raise InputError(f"port {port} cannot be used ({exc.strerror}); choose another --port, or 0 for any free one") from None
        raise


def serve_run(run_dir: str | Path, port: int = 0, *, open_browser: bool = True) -> None:
    """Serve ``run_dir`` for review until interrupted; print the link (with its token) first."""
    server = make_server(run_dir, port)
    print(f"tacluster serve: reviewing {server.run_dir} at\n  {server.url}\n(only this link opens it; Ctrl-C stops)",
          flush=True)
    if open_browser:
        import webbrowser

        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
