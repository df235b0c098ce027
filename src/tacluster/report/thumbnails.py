"""Thumbnails of the report's images (cached in ``DIR/thumbs``, a placeholder
for what cannot be decoded) and the short names and links of image paths."""

from __future__ import annotations

import hashlib
import io
import os
import re
from pathlib import Path

from tacluster._atomic import atomic_write_bytes
from tacluster._runfiles import THUMBS_DIR


def thumb_name(path: str, size: int) -> str:
    # The path string as given, hashed: photos/a/1.jpg and photos/b/1.jpg differ.
    digest = hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:24]
    return f"{digest}_{size}.jpg"



def make_thumb(src: Path, dst: Path, size: int) -> bool:
    """Write a JPEG thumbnail of ``src`` to ``dst``; return False if ``src`` cannot be decoded."""
    from PIL import Image, ImageOps

    try:
        with Image.open(src) as im:
            im.draft("RGB", (size, size))  # JPEG: decode at reduced scale, much faster
            im = ImageOps.exif_transpose(im)
            if im.mode not in ("RGB", "L"):
                # Flatten transparency onto white rather than onto black.
                rgba = im.convert("RGBA")
                im = Image.new("RGB", rgba.size, "white")
                im.paste(rgba, mask=rgba.getchannel("A"))
            im = im.convert("RGB")
            im.thumbnail((size, size), Image.Resampling.LANCZOS)
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=85, optimize=True)
    # Decoders of arbitrary user files raise many exception types (OSError,
    # SyntaxError, struct.error, DecompressionBombError, ...); one bad file must
    # cost a placeholder, never the report.
    except Exception:  # noqa: BLE001
        return False
    atomic_write_bytes(dst, buf.getvalue())
    return True



def ensure_thumb(thumbs_dir: Path, path: str, size: int) -> str | None:
    """File name (in ``thumbs_dir``) of the cached thumbnail of image ``path``, made
    when missing; None for a URL or a file that cannot be decoded."""
    name = thumb_name(path, size)
    if is_url(path):
        return None
    return name if (thumbs_dir / name).is_file() or make_thumb(Path(path), thumbs_dir / name, size) else None



def placeholder(thumbs_dir: Path, size: int) -> str:
    from PIL import Image, ImageDraw

    name = f"_unreadable_{size}.png"
    dst = thumbs_dir / name
    if not dst.is_file():
        im = Image.new("RGB", (size, size), "#eceff3")
        draw = ImageDraw.Draw(im)
        m = size // 4
        draw.line((m, m, size - m, size - m), fill="#b3bac5", width=max(2, size // 32))
        draw.line((m, size - m, size - m, m), fill="#b3bac5", width=max(2, size // 32))
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        atomic_write_bytes(dst, buf.getvalue())
    return f"{THUMBS_DIR}/{name}"



def short_file(path: str, limit: int = 22) -> str:
    """The file name, shortened in the middle when long, so its end (the number) stays readable."""
    name = os.path.basename(path) or path
    if len(name) <= limit:
        return name
    head = (limit - 1) // 2 - 2
    return name[:head] + "…" + name[-(limit - 1 - head):]



def short_name(path: str) -> str:
    parts = Path(path).parts
    return "/".join(parts[-2:]) if len(parts) >= 2 and parts[-2] != os.sep else path



_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")



def is_url(path: str) -> bool:
    """A URL (``https://...``, ``s3://...``) rather than a local path: the
    ``--embeddings`` inputs may list those. No thumbnail is made for it."""
    return bool(_URL.match(path))



def file_uri(path: str) -> str:
    """``file:`` URI of an image path (percent-encodes every unsafe character); a URL as it is."""
    if is_url(path):
        return path
    return Path(os.path.abspath(path)).as_uri()
