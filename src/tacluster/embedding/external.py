"""Embeddings made elsewhere ("bring your own"): read, checked, L2-normalised.

``tacluster cluster --embeddings SOURCE`` clusters vectors a user already has
instead of embedding images. Three layouts are read, memory-mapped where the
format allows (``np.load(mmap_mode="r")``, Parquet through a memory map):

* **clip-retrieval's output folder**: ``img_emb/img_emb_N.npy`` (float16 or
  float32, one row per image) beside ``metadata/metadata_N.parquet`` (column
  ``image_path``, or ``url``), shard N of each holding the same rows, shards
  taken in numeric order. SOURCE is that folder (or its ``img_emb`` folder).
* **a plain .npy** of shape (N, d), with the paths in a sidecar list
  ``<name>.paths.txt`` (one per line) or ``<name>.paths.csv`` (a ``path``
  column, or the first one) next to it; without one, rows are named
  ``row-000000``, ``row-000001``, ...
* **a .parquet** file with a vector column (``list<float>`` or
  ``fixed_size_list``, named ``embedding``, ``emb`` or ``vector``, or given
  with ``column=``) and a path column (``path``, ``image_path``, ``url`` or
  ``filepath``; rows are named ``row-...`` without one).

Paths are kept as written (a URL stays a URL). :func:`open_embeddings` reads
only shapes and paths; :meth:`ExternalEmbeddings.load` reads the vectors block
by block into one float32 array with unit rows, rejecting non-finite and
all-zero rows by name.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from tacluster.errors import InputError

#: Vector columns looked for in a Parquet file, in this order.
VECTOR_COLUMNS = ("embedding", "emb", "vector")
#: Path columns looked for in a Parquet file (and a sidecar CSV), in this order.
PATH_COLUMNS = ("path", "image_path", "url", "filepath")
#: Rows converted to float32 at a time while loading.
LOAD_BLOCK = 65536

_SHARD = re.compile(r"^img_emb_(\d+)\.npy$")
_META = re.compile(r"^metadata_(\d+)\.parquet$")


@dataclass
class ExternalEmbeddings:
    """Vectors from a file or folder made outside tacluster (see the module docstring).

    Attributes
    ----------
    source : str
        What was given (file or folder).
    kind : {"clip-retrieval", "npy", "parquet"}
    paths : list of str, length n
        One per row: the path or URL, or ``row-NNNNNN`` where the source has none.
    dim : int
        Width of the vectors.
    named : bool
        Whether ``paths`` came from the source (False: generated row ids).
    """

    source: str
    kind: str
    paths: list[str]
    dim: int
    named: bool
    #: (name, rows) per part in row order; rows: an array-like of shape (m, dim) sliced lazily.
    parts: list[tuple[str, Callable[[], object]]] = field(default_factory=list, repr=False)

    @property
    def n_rows(self) -> int:
        return len(self.paths)

    def describe(self) -> dict:
        """What run.json records about the source."""
        return {"source": os.path.abspath(self.source), "format": self.kind, "rows": self.n_rows, "dims": self.dim}

    def load(self, what: str = "--embeddings") -> np.ndarray:
        """All rows as one C-contiguous float32 (n, dim) array, each row L2-normalised.

        Raises :class:`InputError` naming the first row (and its path) that
        holds NaN/inf or is all zeros.
        """
        out = np.empty((self.n_rows, self.dim), dtype=np.float32)
        row = 0
        for name, opener in self.parts:
            rows = opener()
            m = len(rows)
            for start in range(0, m, LOAD_BLOCK):
                block = np.asarray(rows[start:start + LOAD_BLOCK], dtype=np.float32)
                finite = np.isfinite(block).all(axis=1)
                if not finite.all():
                    i = row + start + int(np.flatnonzero(~finite)[0])
                    raise InputError(
                        f"{what} {self.source!r}: row {i} ({self.paths[i]}) in {name} has NaN or inf values "
                        f"({int((~finite).sum())} such row(s) in that block); drop or re-embed them"
                    )
                norms = np.linalg.norm(block, axis=1, keepdims=True)
                if (norms == 0).any():
                    i = row + start + int(np.flatnonzero(norms[:, 0] == 0)[0])
                    raise InputError(
                        f"{what} {self.source!r}: row {i} ({self.paths[i]}) in {name} is all zeros "
                        "(no direction to compare); drop such rows"
                    )
                out[row + start:row + start + len(block)] = block / norms
            row += m
        return out


def open_embeddings(source: str | os.PathLike, *, column: str | None = None,
                    what: str = "--embeddings") -> ExternalEmbeddings:
    """Inspect ``source`` (shapes, paths) without reading the vectors.

    Parameters
    ----------
    source : clip-retrieval output folder (or its ``img_emb``), ``.npy`` or ``.parquet``
    column : the Parquet vector column (default: the first of :data:`VECTOR_COLUMNS`)
    what : how error messages name the source (``"--embeddings"``)

    Raises
    ------
    InputError
        A missing source, an unknown layout, a missing metadata shard, shards of
        different widths or row counts, a sidecar list of the wrong length, no rows.
    """
    p = Path(source)
    if not p.exists():
        raise InputError(f"{what} {str(source)!r} does not exist")
    if p.is_dir():
        emb = _open_clip_retrieval(p, what)
    elif p.suffix.lower() == ".npy":
        emb = _open_npy(p, what)
    elif p.suffix.lower() == ".parquet":
        emb = _open_parquet(p, column, what)
    else:
        raise InputError(
            f"{what} {str(source)!r}: give clip-retrieval's output folder (img_emb/ + metadata/), "
            "a .npy or a .parquet file"
        )
    if emb.n_rows == 0:
        raise InputError(f"{what} {str(source)!r} holds no rows; nothing to cluster")
    if emb.dim == 0:
        raise InputError(f"{what} {str(source)!r}: the vectors have 0 dimensions")
    return emb


# ---- clip-retrieval


def _open_clip_retrieval(folder: Path, what: str) -> ExternalEmbeddings:
    if (folder / "img_emb").is_dir():
        emb_dir, meta_dir = folder / "img_emb", folder / "metadata"
    elif any(_SHARD.match(n) for n in os.listdir(folder)):
        emb_dir, meta_dir = folder, folder.parent / "metadata"
    else:
        raise InputError(
            f"{what} {str(folder)!r} holds no img_emb/img_emb_*.npy (clip-retrieval's layout); "
            "give that folder, a .npy or a .parquet file"
        )
    shards = sorted(((int(m.group(1)), emb_dir / n) for n in os.listdir(emb_dir) if (m := _SHARD.match(n))))
    if not shards:
        raise InputError(f"{what} {str(folder)!r}: {str(emb_dir)!r} holds no img_emb_N.npy shard; nothing to cluster")
    if not meta_dir.is_dir():
        raise InputError(
            f"{what} {str(folder)!r}: no metadata/ folder beside {emb_dir.name}/ "
            "(clip-retrieval writes metadata/metadata_N.parquet with the image paths)"
        )
    metas = {int(m.group(1)): meta_dir / n for n in os.listdir(meta_dir) if (m := _META.match(n))}
    paths: list[str] = []
    parts = []
    dim = None
    for idx, npy in shards:
        arr = _load_npy(npy, what)
        if dim is None:
            dim = arr.shape[1]
        elif arr.shape[1] != dim:
            raise InputError(
                f"{what} {str(folder)!r}: shards have different widths ({shards[0][1].name} has {dim} dims, "
                f"{npy.name} has {arr.shape[1]}); give the vectors of one model"
            )
        meta = metas.get(idx)
        if meta is None:
            raise InputError(
                f"{what} {str(folder)!r}: {emb_dir.name}/{npy.name} has no metadata/metadata_{idx}.parquet "
                "beside it (its rows' paths); copy it over or remove the shard"
            )
        rows = _metadata_paths(meta, what)
        if len(rows) != arr.shape[0]:
            raise InputError(
                f"{what} {str(folder)!r}: {npy.name} has {arr.shape[0]} rows but {meta.name} lists "
                f"{len(rows)}; the shards do not match"
            )
        paths += rows
        parts.append((f"{emb_dir.name}/{npy.name}", lambda npy=npy: _load_npy(npy, what)))
    return ExternalEmbeddings(str(folder), "clip-retrieval", paths, int(dim), True, parts)


def _metadata_paths(meta: Path, what: str) -> list[str]:
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(meta).names
    except (OSError, ValueError) as exc:  # pyarrow raises ArrowInvalid (a ValueError) on a bad file
        raise InputError(f"{what}: cannot read {str(meta)!r} as Parquet ({_short(exc)})") from None
    col = next((c for c in ("image_path", "url", "path", "filepath") if c in names), None)
    if col is None:
        raise InputError(
            f"{what}: {str(meta)!r} has no image_path or url column (columns: {', '.join(names[:10])})"
        )
    return _path_column(pq.read_table(meta, columns=[col], memory_map=True).column(col), str(meta), col, what)


# ---- .npy


def _load_npy(path: Path, what: str) -> np.ndarray:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"{what}: cannot read {str(path)!r} as a .npy array ({_short(exc)})") from None
    if arr.ndim != 2:
        raise InputError(f"{what}: {str(path)!r} has shape {arr.shape}; expected (rows, dims)")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InputError(f"{what}: {str(path)!r} holds {arr.dtype} values; expected floats")
    return arr


def _open_npy(path: Path, what: str) -> ExternalEmbeddings:
    arr = _load_npy(path, what)
    n, dim = arr.shape
    sidecar = _sidecar(path)
    if sidecar is None:
        paths, named = _row_ids(n), False
    else:
        paths, named = _read_sidecar(sidecar, what), True
        if len(paths) != n:
            raise InputError(
                f"{what} {str(path)!r} has {n} rows but {sidecar.name} lists {len(paths)} paths; "
                "they must match one to one"
            )
    return ExternalEmbeddings(str(path), "npy", paths, int(dim), named, [(path.name, lambda: _load_npy(path, what))])


def _sidecar(path: Path) -> Path | None:
    for name in (f"{path.stem}.paths.txt", f"{path.stem}.paths.csv", f"{path.name}.paths.txt", f"{path.name}.paths.csv"):
        if (path.parent / name).is_file():
            return path.parent / name
    return None


def _read_sidecar(path: Path, what: str) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{what}: cannot read the path list {str(path)!r} ({_short(exc)})") from None
    if path.suffix.lower() != ".csv":
        return [line.strip() for line in text.splitlines() if line.strip()]
    rows = [r for r in csv.reader(text.splitlines()) if r and any(c.strip() for c in r)]
    if not rows:
        return []
    header = [c.strip().lower() for c in rows[0]]
    col = next((header.index(c) for c in PATH_COLUMNS if c in header), None)
    body = rows[1:] if col is not None else rows
    col = col or 0
    if any(len(r) <= col or not r[col].strip() for r in body):
        raise InputError(f"{what}: {str(path)!r} has a row without a path")
    return [r[col].strip() for r in body]


# ---- .parquet


def _open_parquet(path: Path, column: str | None, what: str) -> ExternalEmbeddings:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"{what}: cannot read {str(path)!r} as Parquet ({_short(exc)})") from None
    names = schema.names
    if column is not None:
        if column not in names:
            raise InputError(f"{what} {str(path)!r} has no column {column!r} (columns: {', '.join(names[:10])})")
        vec = column
    else:
        vec = next((c for c in VECTOR_COLUMNS if c in names), None)
        if vec is None:
            raise InputError(
                f"{what} {str(path)!r}: no vector column ({', '.join(VECTOR_COLUMNS)}); name it with "
                f"--embedding-column (columns: {', '.join(names[:10])})"
            )
    vtype = schema.field(vec).type
    if not (pa.types.is_list(vtype) or pa.types.is_large_list(vtype) or pa.types.is_fixed_size_list(vtype)) \
            or not (pa.types.is_floating(vtype.value_type) or pa.types.is_integer(vtype.value_type)):
        raise InputError(
            f"{what} {str(path)!r}: column {vec!r} is {vtype}, not a list of floats; "
            "choose the vector column with --embedding-column"
        )
    pcol = next((c for c in PATH_COLUMNS if c in names), None)
    table = pq.read_table(path, columns=[vec] + ([pcol] if pcol else []), memory_map=True)
    n = table.num_rows
    if pcol is not None:
        paths, named = _path_column(table.column(pcol), str(path), pcol, what), True
    else:
        paths, named = _row_ids(n), False
    chunks = [c for c in table.column(vec).chunks if len(c)]
    dim = _list_width(chunks, str(path), vec, what) if n else 0
    parts = [(f"column {vec!r}", lambda: _ChunkedRows(chunks, dim))]
    return ExternalEmbeddings(str(path), "parquet", paths, dim, named, parts)


def _list_width(chunks, where: str, col: str, what: str) -> int:
    """The one length of every vector of a list column; an error for null or ragged rows."""
    import pyarrow as pa

    dim = None
    row = 0
    for c in chunks:
        if c.null_count:
            bad = row + int(np.flatnonzero(np.asarray(c.is_null()))[0])
            raise InputError(f"{what} {where!r}: row {bad} has no vector in column {col!r} (null); drop it")
        if pa.types.is_fixed_size_list(c.type):
            lengths = np.full(len(c), c.type.list_size)
        else:
            offsets = np.asarray(c.offsets)
            lengths = np.diff(offsets)
        if dim is None:
            dim = int(lengths[0])
        odd = np.flatnonzero(lengths != dim)
        if odd.size:
            bad = row + int(odd[0])
            raise InputError(
                f"{what} {where!r}: vectors in column {col!r} have different lengths "
                f"(row 0: {dim}, row {bad}: {int(lengths[odd[0]])}); every row needs the same width"
            )
        row += len(c)
    return int(dim or 0)


class _ChunkedRows:
    """Rows of a list column's chunks, sliceable like an (n, dim) array (contiguous slices only)."""

    def __init__(self, chunks, dim: int):
        self._chunks = chunks
        self._dim = dim
        self._starts = np.cumsum([0] + [len(c) for c in chunks])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, sl: slice) -> np.ndarray:
        start, stop, _ = sl.indices(len(self))
        pieces = []
        for i, c in enumerate(self._chunks):
            lo, hi = max(start, self._starts[i]), min(stop, self._starts[i + 1])
            if lo >= hi:
                continue
            sub = c.slice(int(lo - self._starts[i]), int(hi - lo))
            pieces.append(sub.flatten().to_numpy(zero_copy_only=False).reshape(-1, self._dim))
        if not pieces:
            return np.zeros((0, self._dim), dtype=np.float32)
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


# ---- shared


def _path_column(col, where: str, name: str, what: str) -> list[str]:
    values = col.to_pylist()
    for i, v in enumerate(values):
        if v is None or (isinstance(v, str) and not v.strip()):
            raise InputError(f"{what} {where!r}: row {i} has no {name} (empty); every row needs one")
    return [v if isinstance(v, str) else str(v) for v in values]


def _row_ids(n: int) -> list[str]:
    width = max(6, len(str(max(n - 1, 0))))
    return [f"row-{i:0{width}d}" for i in range(n)]


def _short(exc: BaseException, limit: int = 120) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def match_joint(image: ExternalEmbeddings, joint: ExternalEmbeddings) -> None:
    """Check that joint vectors belong row by row to the image vectors."""
    if joint.n_rows != image.n_rows:
        raise InputError(
            f"--joint-embeddings {joint.source!r} has {joint.n_rows} rows but --embeddings "
            f"{image.source!r} has {image.n_rows}; give the joint vectors of the same images in the same order"
        )
    if image.named and joint.named and joint.paths != image.paths:
        i = next(i for i, (a, b) in enumerate(zip(image.paths, joint.paths)) if a != b)
        raise InputError(
            f"--joint-embeddings {joint.source!r}: row {i} is {joint.paths[i]!r} but --embeddings row {i} is "
            f"{image.paths[i]!r}; give the joint vectors of the same images in the same order"
        )


def backbone_widths(backbone) -> dict[str, int]:
    """Width of each of the backbone's outputs, from one forward pass of a blank
    synthetic image (no user image is read). ``"joint"`` is the noun space's
    width (the image width for a CLIP-like backbone)."""
    import torch
    from PIL import Image

    blank = Image.new("RGB", (256, 256), (128, 128, 128))
    with torch.inference_mode():
        out = backbone.encode_images(torch.stack([backbone.preprocess(blank)]))
    widths = {k: int(np.asarray(v).shape[1]) for k, v in out.items()}
    widths.setdefault("joint", widths["image"])
    return widths

