"""Reader: find the images to embed and decode them to RGB.

The reader never raises for one bad file: every input that cannot be used is
returned as a ``(path, reason)`` pair so the caller can report it. Only a
source that does not exist at all (or is of an unknown kind) is an error.
"""

from __future__ import annotations

import csv
import glob
import json
import math
import os
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from tacluster.errors import InputError
from tacluster._runfiles import EXPORT_MARKER, RUN_FILE, STAGING

#: File name endings treated as images when walking a folder (case-insensitive).
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".avif",
     ".heic", ".heif"}
)

#: Endings read only through the pillow-heif plugin (iPhone photos).
HEIF_EXTENSIONS: frozenset[str] = frozenset({".heic", ".heif"})

#: What a user is told is read, in messages.
SUPPORTED_NOTE = "supported: jpg, jpeg, jfif, png, bmp, gif, webp, tif, tiff, avif, heic/heif (with pillow-heif)"

#: A JPEG above Pillow's bomb limit (89 megapixels, e.g. an 11648 x 8736
#: camera photo) is decoded at reduced size through DCT scaling, asking for at
#: most this many pixels (the scale steps are 1/2, 1/4, 1/8 per side, so it
#: decodes to at most 4x this; the full image is never in memory). Other
#: formats above the limit cannot be decoded in part and stay refused.
LARGE_PHOTO_PIXELS = 12_000_000

#: Endings of a text file that lists image paths instead of a folder.
LIST_EXTENSIONS: frozenset[str] = frozenset({".csv", ".txt"})

# ``Image.open`` reports a decompression bomb through the *process-wide*
# warnings filter. ``warnings.catch_warnings`` is not thread-safe, so the
# (cheap, header-only) open is serialised; the expensive decode is not.
_OPEN_LOCK = threading.Lock()


@dataclass
class InputList:
    """Images found in a source.

    Attributes
    ----------
    paths : list of str
        Existing files to decode, in a deterministic order (sorted for a
        folder, file order for a list).
    skipped : list of (str, str)
        ``(path, reason)`` for every entry that was left out.
    """

    paths: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: Entries of a list that named a file already listed (kept once).
    duplicates: int = 0


#: Reasons :func:`list_inputs` gives for a whole folder it left out (not a skipped file).
FOLDER_REASONS = ("tacluster run directory", "tacluster export folder", "symlink loop")


def is_folder_left_out(path: str, reason: str) -> bool:
    """True for an entry of ``skipped`` that is a folder left out (tacluster's own outputs, a
    symlink loop or a folder reached twice), not a file: counted apart, so counts add up."""
    return reason.startswith(FOLDER_REASONS) or (reason.startswith("duplicate of ") and os.path.isdir(path))


class ImageDecodeError(InputError):
    """One image cannot be decoded; :attr:`reason` is the short reason."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"cannot decode {path!r}: {reason}")
        self.path = path
        self.reason = reason


def is_image_name(name: str) -> bool:
    """True when ``name`` ends with one of :data:`IMAGE_EXTENSIONS`."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def list_inputs(source: str | os.PathLike) -> InputList:
    """List the images of a folder or of a ``.csv``/``.txt`` list of paths.

    Parameters
    ----------
    source : str or path-like
        A folder (searched recursively, following symlinks, for files whose
        name ends with an image extension) or a list file: ``.txt`` with one
        path per line (blank lines and ``#`` comments ignored) or ``.csv``
        with a ``path`` column (else the first column is used). Relative
        paths in a list are resolved against the list's folder.

    Returns
    -------
    InputList
        Paths in a deterministic order and ``(path, reason)`` pairs for
        entries left out (``"missing"``, ``"not a file"``, ``"symlink loop"``,
        ``"unreadable directory: ..."``).

    Raises
    ------
    InputError
        When ``source`` does not exist or is a file that is not a list.
    """
    # Absolute (not resolved: symlinked names stay as the user sees them), so
    # the paths in the outputs do not depend on how INPUT was typed.
    src = Path(os.path.abspath(source))
    if not src.exists() and glob.has_magic(str(source)):
        return _glob(str(source))
    if not src.exists():
        raise InputError(
            f"image source {str(source)!r} does not exist; pass a folder of images "
            "or a .csv/.txt file that lists image paths"
        )
    if src.is_dir():
        return _walk_folder(src)
    if src.suffix.lower() in LIST_EXTENSIONS:
        return _read_list(src)
    if is_image_name(src.name):  # one photo (predict one image; cluster says it needs two)
        return check_paths([src])
    raise InputError(
        f"image source {str(source)!r} is neither a folder nor a .csv/.txt list; "
        "pass a folder of images or a list file with one path per line"
    )


def check_paths(paths: Iterable[str | os.PathLike], base: Path | None = None) -> InputList:
    """Keep the entries of an explicit path list that are existing files.

    Parameters
    ----------
    paths : iterable of str or path-like
        Image paths, in the order the caller wants them back.
    base : Path, optional
        Folder that relative paths are resolved against (the current
        directory when None).

    Returns
    -------
    InputList
        Existing files in input order, as absolute paths, each once (a file
        named again, in any spelling of the same path, is counted in
        ``duplicates``); others skipped as ``"missing"`` or ``"not a file"``.
    """
    out = InputList()
    seen: set[str] = set()
    for raw in paths:
        p = Path(raw)
        if base is not None and not p.is_absolute():
            p = base / p
        name = os.path.abspath(p)
        p = Path(name)
        if name in seen:
            out.duplicates += 1
            continue
        seen.add(name)
        if p.is_file():
            out.paths.append(name)
        elif p.exists():
            out.skipped.append((name, "not a file"))
        else:
            out.skipped.append((name, "missing"))
    return out


def _walk_folder(root: Path) -> InputList:
    found: list[str] = []
    skipped: list[tuple[str, str]] = []
    # Directories already entered, by (device, inode): following symlinks is
    # useful (datasets are often assembled from links) but a link back to an
    # ancestor would make os.walk loop for ever.
    seen: dict[tuple[int, int], str] = {}

    def on_error(err: OSError) -> None:
        skipped.append((str(err.filename), f"unreadable directory: {err.strerror or err}"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError as err:
            skipped.append((dirpath, f"unreadable directory: {err.strerror or err}"))
            dirnames[:] = []
            continue
        ident = (st.st_dev, st.st_ino)
        if ident in seen:
            # A second way into a directory: a loop when it leads back to an
            # ancestor, else just a duplicate (listing it again would embed
            # the same files twice under other names).
            why = "symlink loop" if _is_ancestor(os.path.realpath(dirpath), dirpath) else (
                f"duplicate of {seen[ident]}"
            )
            skipped.append((dirpath, why))
            dirnames[:] = []
            continue
        seen[ident] = dirpath
        if _is_run_dir(dirpath):
            # A run's outputs (thumbnails, map.png) are never inputs, even
            # when --out lies inside INPUT: one line for the whole folder.
            skipped.append((dirpath, "tacluster run directory (its outputs are not inputs)"))
            dirnames[:] = []
            continue
        if os.path.isfile(os.path.join(dirpath, EXPORT_MARKER)):
            # `tacluster export --to` inside INPUT: links to (or copies of) the
            # inputs themselves, which would be clustered a second time.
            skipped.append((dirpath, "tacluster export folder (its images are already inputs)"))
            dirnames[:] = []
            continue
        dirnames.sort()
        for name in filenames:
            if not is_image_name(name):
                continue
            full = os.path.join(dirpath, name)
            if os.path.isfile(full):
                found.append(full)
            elif os.path.lexists(full) and not os.path.exists(full):
                skipped.append((full, "missing"))  # dangling symlink
            else:
                skipped.append((full, "not a file"))
    found.sort()
    return _one_per_file(found, skipped)


def _one_per_file(found: list[str], skipped: list[tuple[str, str]]) -> InputList:
    """Each file once: a symlink to a file also listed under its own name (or
    under another link) is a duplicate, counted and left out; the name that is
    not a link is kept, else the first in order."""
    by_target: dict[str, list[str]] = {}
    for path in found:
        by_target.setdefault(os.path.realpath(path), []).append(path)
    keep: set[str] = set()
    for names in by_target.values():
        real = [n for n in names if not os.path.islink(n)]
        keep.add(real[0] if real else names[0])
    return InputList([p for p in found if p in keep], skipped, duplicates=len(found) - len(keep))


#: What marks a tacluster run directory (its run.json, its staging folder).
RUN_MARKER_FILE = RUN_FILE
STAGING_FOLDER = STAGING


def _is_run_dir(dirpath: str) -> bool:
    """True for a tacluster run directory (its run.json has a ``run_key``,
    finished or being written) or a run's staging folder."""
    if os.path.basename(dirpath.rstrip(os.sep)) == STAGING_FOLDER:
        return True
    marker = os.path.join(dirpath, RUN_MARKER_FILE)
    if not os.path.isfile(marker):
        return False
    try:
        with open(marker, encoding="utf-8") as fh:
            info = json.load(fh)
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and "run_key" in info


def _is_ancestor(real_target: str, link_path: str) -> bool:
    """True when ``real_target`` is a (resolved) ancestor of ``link_path``."""
    parent = os.path.realpath(os.path.dirname(link_path))
    return parent == real_target or parent.startswith(real_target.rstrip(os.sep) + os.sep)


def _read_list(path: Path) -> InputList:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read the image list {str(path)!r}: {err}") from err
    if path.suffix.lower() == ".csv":
        entries = _csv_paths(text)
    else:
        entries = [ln.strip() for ln in text.splitlines()]
        entries = [e for e in entries if e and not e.startswith("#")]
    return check_paths(entries, base=path.parent)


def _glob(pattern: str) -> InputList:
    """The image files a quoted shell pattern matches (``'photos/*.jpg'``, ``**`` recursive), sorted."""
    matches = sorted(p for p in glob.glob(os.path.expanduser(pattern), recursive=True) if is_image_name(p))
    if not matches:
        raise InputError(f"no image file matches {pattern!r}; give a folder, a .csv/.txt list or a pattern "
                         "that matches image files")
    return check_paths(matches)


def _csv_delimiter(first_line: str) -> str:
    """The delimiter of a list file: the one that makes a ``path`` header cell
    (a spreadsheet in a ``;`` locale writes ``path;label``), else what the
    csv sniffer finds among , ; tab |, else a comma."""
    for delim in ",;\t|":
        if "path" in (c.strip().lower() for c in next(csv.reader([first_line], delimiter=delim), [])):
            return delim
    try:
        return csv.Sniffer().sniff(first_line, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def _csv_paths(text: str) -> list[str]:
    lines = text.splitlines()
    delim = _csv_delimiter(next((ln for ln in lines if ln.strip()), ""))
    rows = [r for r in csv.reader(lines, delimiter=delim) if r and any(c.strip() for c in r)]
    if not rows:
        return []
    header = [c.strip().lower() for c in rows[0]]
    if "path" in header:
        col = header.index("path")
        body = rows[1:]
    else:
        # No "path" column: the first row is a header unless its first cell
        # already looks like an image path.
        col = 0
        body = rows if is_image_name(rows[0][0].strip()) else rows[1:]
    return [r[col].strip() for r in body if len(r) > col and r[col].strip()]


def decode_image(path: str | os.PathLike, *, draft_size: int | None = None) -> Image.Image:
    """Decode one image file to an RGB ``PIL.Image``.

    The whole image is decoded (so truncated files fail here, not later),
    turned upright by its EXIF orientation, and converted to RGB: alpha is
    composited on white, 16-bit and integer images are scaled to 8 bits,
    animated images give their first frame.

    Parameters
    ----------
    path : str or path-like
        The image file.
    draft_size : int, optional
        Decode a JPEG at the smallest of the scales 1/2, 1/4, 1/8 whose sides
        stay at least this many pixels (Pillow's draft mode: several times
        faster, for callers that want a thumbnail). Other formats decode whole.

    Returns
    -------
    PIL.Image.Image
        Mode ``"RGB"``, fully loaded.

    Raises
    ------
    ImageDecodeError
        With a short :attr:`~ImageDecodeError.reason`: ``"empty file"``,
        ``"not an image"``, ``"too large"``, ``"truncated or corrupt"``, ...
    """
    name = str(path)
    if os.path.splitext(name)[1].lower() in HEIF_EXTENSIONS and not _heif_opener():
        raise ImageDecodeError(name, "HEIC/HEIF needs the pillow-heif plugin (pip install pillow-heif)")
    try:
        if os.path.getsize(name) == 0:
            raise ImageDecodeError(name, "empty file")
        im = _open_bounded(name)
        if draft_size and im.format == "JPEG":
            im.draft("RGB", (int(draft_size), int(draft_size)))
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError(name, "not an image") from None
    except OSError as err:
        raise ImageDecodeError(name, f"unreadable: {err.strerror or err}") from None
    try:
        with im:
            im.seek(0)  # animated GIF/WebP/TIFF: first frame
            im.load()
            return _to_rgb(ImageOps.exif_transpose(im))
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        # Pillow reports broken data as OSError ("image file is truncated"),
        # SyntaxError (bad chunk) or ValueError depending on the plugin.
        raise ImageDecodeError(name, f"truncated or corrupt ({_short(err)})") from None
    except Image.DecompressionBombError:
        raise ImageDecodeError(name, "too large") from None


def _open_bounded(name: str) -> Image.Image:
    """``Image.open`` with Pillow's bomb check, except that a JPEG above its
    limit is opened for decoding at reduced size (:data:`LARGE_PHOTO_PIXELS`).
    Any other file above the limit, or a JPEG still above it at 1/8 scale,
    raises ``ImageDecodeError("too large")``."""
    with _OPEN_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return Image.open(name)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            pass
        limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None  # under the lock: no other open sees it
        try:
            im = Image.open(name)
        finally:
            Image.MAX_IMAGE_PIXELS = limit
    if im.format == "JPEG":
        scale = math.sqrt(LARGE_PHOTO_PIXELS / (im.width * im.height))
        im.draft("RGB", (max(1, int(im.width * scale)), max(1, int(im.height * scale))))
        if limit is None or im.width * im.height <= limit:  # the size it will decode to
            return im
    im.close()
    raise ImageDecodeError(name, "too large")


_HEIF: list[bool] = []


def _heif_opener() -> bool:
    """Register pillow-heif's opener once; False when the plugin is not installed."""
    if not _HEIF:
        try:
            import pillow_heif
        except ImportError:
            _HEIF.append(False)
        else:
            pillow_heif.register_heif_opener()
            _HEIF.append(True)
    return _HEIF[0]


def _short(err: BaseException, limit: int = 60) -> str:
    msg = str(err) or type(err).__name__
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


def _to_rgb(im: Image.Image) -> Image.Image:
    mode = im.mode
    if mode == "RGB":
        return im
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(im, dtype=np.float32)
        if mode.startswith("I;16"):
            arr = arr / 257.0  # 0..65535 -> 0..255
        elif arr.size and arr.max() > 255.0:
            # 32-bit "I"/"F" images are in practice 16-bit data (some TIFFs).
            arr = arr / 257.0
        elif mode == "F" and arr.size and arr.max() <= 1.0:
            arr = arr * 255.0  # float image in [0, 1]
        gray = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
        return gray.convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode in ("P", "L", "RGB", "1") and "transparency" in im.info
    )
    if has_alpha:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    # CMYK (Pillow undoes Adobe's inverted CMYK when decoding), L, 1, P,
    # YCbCr, LAB, HSV: Pillow's own conversions are the sensible ones.
    return im.convert("RGB")
