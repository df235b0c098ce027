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
from typing import Callable, Iterator

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
    #: (name, blocks) per part in row order; ``blocks()`` yields arrays of shape (m, dim).
    parts: list[tuple[str, Callable[[], Iterator[np.ndarray]]]] = field(default_factory=list, repr=False)

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
        for row, block in self._checked_blocks(what):
            out[row:row + len(block)] = block
        return out

    def rows(self, what: str = "--embeddings"):
        """The rows for block-by-block readers, without a float32 copy of the source.

        The rows are checked as :meth:`load` checks them (same errors), then
        returned as a :class:`tacluster._blocks.NormalisedRows` view: every
        slice read from it has the values :meth:`load` would give. A single
        ``.npy`` file is viewed through its memory map (1.28 M x 1000 joint
        vectors: 5.1 GB of float32 not held); other layouts (clip-retrieval's
        parts, Parquet) whose vectors are float16 are gathered into one
        float16 array, half of :meth:`load`'s. Float32 vectors in those
        layouts: :meth:`load` (a float16 copy would round them).
        """
        from tacluster._blocks import NormalisedRows

        if self.kind == "npy":
            for _ in self._checked_blocks(what):
                pass
            return NormalisedRows(_load_npy(Path(self.source), what))
        half = np.empty((self.n_rows, self.dim), dtype=np.float16)
        for row, raw in self._checked_blocks(what, raw=True):
            if raw.dtype != np.float16:
                return self.load(what)
            half[row:row + len(raw)] = raw
        return NormalisedRows(half)

    def _checked_blocks(self, what: str, *, raw: bool = False) -> Iterator[tuple[int, np.ndarray]]:
        """``(first row, normalised float32 block)`` over all parts, after the row checks
        (``raw``: the block as the source holds it)."""
        row = 0
        for name, blocks in self.parts:
            for source_block in blocks():
                block = np.asarray(source_block, dtype=np.float32)
                if row + len(block) > self.n_rows:
                    raise InputError(f"{what} {self.source!r}: {name} holds more rows than its paths list")
                finite = np.isfinite(block).all(axis=1)
                if not finite.all():
                    i = row + int(np.flatnonzero(~finite)[0])
                    raise InputError(
                        f"{what} {self.source!r}: row {i} ({self.paths[i]}) in {name} has NaN or inf values "
                        f"({int((~finite).sum())} such row(s) in that block); drop or re-embed them"
                    )
                norms = np.linalg.norm(block, axis=1, keepdims=True)
                if (norms == 0).any():
                    i = row + int(np.flatnonzero(norms[:, 0] == 0)[0])
                    raise InputError(
                        f"{what} {self.source!r}: row {i} ({self.paths[i]}) in {name} is all zeros "
                        "(no direction to compare); drop such rows"
                    )
                yield row, (np.asarray(source_block) if raw else block / norms)
                row += len(block)
        if row != self.n_rows:
            raise InputError(f"{what} {self.source!r}: {row} vectors read for {self.n_rows} paths; the file changed?")


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
        parts.append((f"{emb_dir.name}/{npy.name}", lambda npy=npy: _npy_blocks(npy, what)))
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


def _npy_blocks(path: Path, what: str) -> Iterator[np.ndarray]:
    arr = _load_npy(path, what)
    for start in range(0, arr.shape[0], LOAD_BLOCK):
        yield arr[start:start + LOAD_BLOCK]


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
    return ExternalEmbeddings(str(path), "npy", paths, int(dim), named, [(path.name, lambda: _npy_blocks(path, what))])


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
    try:
        pf = pq.ParquetFile(path, memory_map=True)
        n = pf.metadata.num_rows
        first = next(pf.iter_batches(batch_size=1, columns=[vec]), None)
        paths_col = pq.read_table(path, columns=[pcol], memory_map=True).column(pcol) if pcol else None
    except (OSError, ValueError) as exc:
        raise InputError(f"{what}: cannot read {str(path)!r} as Parquet ({_short(exc)})") from None
    if pcol is not None:
        paths, named = _path_column(paths_col, str(path), pcol, what), True
    else:
        paths, named = _row_ids(n), False
    dim = 0
    if first is not None and first.num_rows:
        dim = _list_widths(first.column(0), 0, None, str(path), vec, what)
    parts = [(f"column {vec!r}", lambda: _parquet_blocks(path, vec, dim, what))]
    return ExternalEmbeddings(str(path), "parquet", paths, dim, named, parts)


def _parquet_blocks(path: Path, col: str, dim: int, what: str) -> Iterator[np.ndarray]:
    """The vectors of a list column, one record batch (<= LOAD_BLOCK rows) at a time."""
    import pyarrow.parquet as pq

    row = 0
    for batch in pq.ParquetFile(path, memory_map=True).iter_batches(batch_size=LOAD_BLOCK, columns=[col]):
        arr = batch.column(0)
        _list_widths(arr, row, dim, str(path), col, what)
        yield arr.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
        row += len(arr)


def _list_widths(arr, row: int, dim: int | None, where: str, col: str, what: str) -> int:
    """The one length of every vector of a list array starting at row ``row``
    (``dim`` when given); an error naming the first null or odd-length row."""
    import pyarrow as pa

    if arr.null_count:
        bad = row + int(np.flatnonzero(np.asarray(arr.is_null()))[0])
        raise InputError(f"{what} {where!r}: row {bad} has no vector in column {col!r} (null); drop it")
    if pa.types.is_fixed_size_list(arr.type):
        lengths = np.full(len(arr), arr.type.list_size)
    else:
        lengths = np.diff(np.asarray(arr.offsets))
    if dim is None:
        dim = int(lengths[0])
    odd = np.flatnonzero(lengths != dim)
    if odd.size:
        raise InputError(
            f"{what} {where!r}: vectors in column {col!r} have different lengths "
            f"(row 0: {dim}, row {row + int(odd[0])}: {int(lengths[odd[0]])}); every row needs the same width"
        )
    return int(dim)


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

