"""How file paths are written into tacluster's outputs (CSV, Parquet, JSON).

Every output is valid UTF-8, and every path in it leads back to its file:

* a path whose name is valid UTF-8 is written as it is;
* a path that is not (a file name with the byte 0xff, say) is written as a
  ``file://`` URI of its absolute path, every byte outside ``A-Za-z0-9_.-~/``
  percent-encoded: ``file:///photos/bad%FFname.jpg``.
  ``urllib.parse.unquote_to_bytes(text[len("file://"):])`` gives the path's
  exact bytes back (:func:`text_to_path` does that).

The rule is unambiguous because written paths are absolute (they start with
``/``), so no plain path starts with ``file://``.
"""

from __future__ import annotations

import os
import re
import urllib.parse

URI_PREFIX = "file://"


def path_to_text(path: str) -> str:
    """``path`` (a ``str`` from the file system, possibly with surrogate escapes) as valid Unicode text."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        raw = os.fsencode(os.path.abspath(path))
        return URI_PREFIX + urllib.parse.quote_from_bytes(raw, safe="/")


def text_to_path(text: str) -> str:
    """Inverse of :func:`path_to_text`: the path as the file system knows it."""
    if text.startswith(URI_PREFIX):
        return os.fsdecode(urllib.parse.unquote_to_bytes(text[len(URI_PREFIX):]))
    return text


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def display_text(text: str) -> str:
    """``text`` for people (HTML pages): each byte of a file name that is not UTF-8 (a surrogate
    escape) shown as U+FFFD, as file managers show it, instead of a ``\\udcff`` escape."""
    return _LONE_SURROGATE.sub("\ufffd", text)


def page_bytes(html: str) -> bytes:
    """An HTML page as valid UTF-8, with :func:`display_text`'s replacement for undecodable bytes."""
    return display_text(html).encode("utf-8")
