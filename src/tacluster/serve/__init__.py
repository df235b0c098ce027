"""``tacluster serve``: review and fix a finished run in the browser, through the
journaled edits of :mod:`tacluster.run.edit` (the files on disk stay the one
source of truth)."""

from tacluster.serve.app import make_server, serve_run

__all__ = ["make_server", "serve_run"]
