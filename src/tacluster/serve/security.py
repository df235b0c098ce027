"""What ``tacluster serve`` lets through: the token every request must carry,
same-origin checks of state-changing requests, and the files a URL may name
(inside the run directory only: no ``..``, encoded or not, no symlink out)."""

from __future__ import annotations

import hmac
import secrets
from pathlib import Path
from urllib.parse import unquote

#: Cookie set on the first visit with ``?token=``; HttpOnly, SameSite=Strict.
COOKIE = "tacluster_token"
#: Header (or form field ``token``) that state-changing requests carry the token in.
TOKEN_HEADER = "X-Tacluster-Token"


def new_token() -> str:
    """A fresh random token for one server (URL-safe, 256 bits)."""
    return secrets.token_urlsafe(32)


def same_token(given: str | None, token: str) -> bool:
    """``given`` is the server's token (constant-time comparison)."""
    return given is not None and hmac.compare_digest(given.encode("utf-8", "replace"), token.encode())


def cookie_token(header: str | None) -> str | None:
    """The token in a ``Cookie:`` header, if any."""
    for part in (header or "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == COOKIE:
            return value
    return None


def own_origins(port: int) -> tuple[set[str], set[str]]:
    """The Host headers and the Origins this server answers to on ``port``."""
    hosts = {f"127.0.0.1:{port}", f"localhost:{port}"}
    return hosts, {f"http://{h}" for h in hosts}


def same_origin(headers, port: int) -> bool:
    """A request from this server's own pages: Host is ours (no DNS rebinding), and
    Origin, where the browser sends one, is ours too; ``Sec-Fetch-Site`` agrees."""
    hosts, origins = own_origins(port)
    if headers.get("Host") not in hosts:
        return False
    origin = headers.get("Origin")
    if origin is not None and origin not in origins:
        return False
    return headers.get("Sec-Fetch-Site") in (None, "same-origin", "none")


def run_file(run_dir: Path, encoded: str) -> Path | None:
    """The file of the run directory that the URL part ``encoded`` names, or None
    when it names anything else: a ``..`` or ``.`` segment (encoded or not), a
    hidden name, a backslash or NUL, a folder, or a path that leaves the run
    directory once links are resolved."""
    try:
        text = unquote(encoded, errors="strict")  # once: %252e stays the name "%2e"
    except UnicodeDecodeError:
        return None
    if not text or "\x00" in text or "\\" in text:
        return None
    parts = text.split("/")
    if any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        return None
    root = run_dir.resolve()
    target = (root / text).resolve()
    if not target.is_relative_to(root) or not target.is_file():
        return None
    return target
