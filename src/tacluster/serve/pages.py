"""The HTML pages of ``tacluster serve``, rendered on the server (autoescaped
Jinja, as the report's): the overview, one page of a cluster, a message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tacluster._paths import page_bytes
from tacluster.report.html import template_env
from tacluster.serve.views import PAGE_SIZE, THUMB_SIZE, RunView

_ENV = None


def _env() -> Any:
    global _ENV
    if _ENV is None:
        _ENV = template_env(Path(__file__).with_name("templates"))
    return _ENV


def _common(view: RunView | None, run_dir: Path, token: str, note: str | None) -> dict[str, Any]:
    return {"run_name": run_dir.resolve().name, "token": token, "note": note,
            "version": view.version if view else "", "thumb": THUMB_SIZE,
            "history": (view.rd.run.get("history") or []) if view else []}


def overview_page(view: RunView, run_dir: Path, token: str, note: str | None) -> bytes:
    """Clusters by size with names, confidence, outliers and a strip of thumbnails; the map; the actions."""
    a = view.rd.assignments
    html = _env().get_template("overview.html.j2").render(
        **_common(view, run_dir, token, note), clusters=view.clusters(), n_images=len(a.path),
        n_outliers=int(view.outlier.sum()), n_new=int(view.new.sum()),
        mean_confidence=float(a.confidence.mean()) if len(a.path) else None,
        has_map=(run_dir / "map.png").is_file(), has_report=(run_dir / "report.html").is_file())
    return page_bytes(html)


def cluster_page(view: RunView, run_dir: Path, token: str, note: str | None, cid: int, page: int) -> bytes:
    """One page (:data:`PAGE_SIZE` images, most confident first) of a cluster, selectable."""
    cluster = view.cluster(cid)
    tiles, page, pages = view.page(cid, page)
    lo, hi = view.bounds.get(cid, (0, 0))
    html = _env().get_template("cluster.html.j2").render(
        **_common(view, run_dir, token, note), cluster=cluster, color=view.colors[cid], tiles=tiles,
        page=page, pages=pages, total=hi - lo, first=page * PAGE_SIZE,
        n_outliers=int(view.outlier[view.order[lo:hi]].sum()),
        n_moved=int(view.moved[view.order[lo:hi]].sum()), n_new=int(view.new[view.order[lo:hi]].sum()),
        others=sorted((c for c in view.rd.clusters if c["id"] != cid), key=lambda c: c["id"]))
    return page_bytes(html)


def message_page(run_dir: Path, title: str, message: str, back: str) -> bytes:
    """A refusal or error, in words, with the way back."""
    html = _env().get_template("message.html.j2").render(
        **_common(None, run_dir, "", None), title=title, message=message, back=back)
    return page_bytes(html)
