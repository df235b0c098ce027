"""Duplicates in a collection: byte-identical files and near-identical images.

Two images are duplicates when their files have the same content digest (the
SHA-256 the embedding cache keys them by, so no file is hashed twice) or when
their L2-normalised embeddings have a cosine of at least a threshold measured
per backbone (:data:`THRESHOLDS`, ``benchmarks/duplicates.py``): re-encoded,
resized, slightly cropped or recoloured copies of one photo.

Candidates come from the kNN graph of :func:`tacluster.cluster.neighbours.knn`
(exact up to :data:`EXACT_MAX` images; above, faiss IVF on the leading
principal axes, the cosines then taken at full width), never an N^2 pass.
Groups are the connected components of the duplicate edges
(``scipy.sparse.csgraph``); a component in which some pair is below the
threshold is cut by complete linkage, so every two members of a group are
duplicates of each other and a chain of merely similar images (A~B, B~C, A
not ~ C) never becomes one blob.

``duplicates.csv`` (every run writes one; ``tacluster duplicates`` writes it
for a folder) has one row per image of a group, every member included:
``group, path, digest, size_bytes, kind, similarity``. Rows of a group are
largest file first (the one ``export --skip-duplicates`` keeps); ``kind`` is
``identical`` when another member has the same bytes, else ``near``;
``similarity`` is the cosine to the group's first (kept) image.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from tacluster._paths import path_to_text
from tacluster.errors import InputError
from tacluster.report.reading import DUPLICATE_COLUMNS as COLUMNS, read_duplicates  # noqa: F401 (public here too)
from tacluster.run.rundir import DUPLICATES_FILE

#: Cosine threshold per backbone family (the part of the name before ":").
#: ``lite``: the highest pair recall at >= 95 % precision on planted copies of
#: flowers17's fit part (benchmarks/duplicates.py, docs/duplicates.md): 0.87.
#: Its features find crops, mild colour shifts and byte copies (>= 90 %
#: recall), not half-size or combined copies (distinct photos come as close).
THRESHOLDS: dict[str, float] = {"lite": 0.87}
#: Backbones without a measurement (CLIP, SigLIP, OpenCLIP: no weights could be
#: loaded where the threshold was measured). 0.95 is the cosine commonly used
#: for near-duplicate removal with CLIP image embeddings; pass ``threshold=`` to change it.
FALLBACK_THRESHOLD = 0.95
#: Candidate neighbours per image: a photo with more near copies than this
#: still forms one group through its copies' own neighbours.
NEIGHBOURS = 10
#: Up to this many images the candidates are exact neighbours; above, a faiss
#: IVF index (near copies are far closer than anything else, so the probed
#: lists hold them; recall measured at 100k in benchmarks/duplicates.py).
EXACT_MAX = 20_000
#: Above :data:`EXACT_MAX` the candidates are searched on this many principal
#: axes (faiss PCA), 20x fewer flops at lite's 1280 dims; the edges keep the
#: full-width cosine.
SEARCH_DIMS = 64


@dataclass
class DuplicateGroup:
    """One group of duplicates.

    Attributes
    ----------
    members : ndarray of shape (m,), int64
        Row indices, largest file first (by ``sizes``; then input order).
    identical : ndarray of shape (m,), bool
        Whether another member has the same content digest.
    similarity : ndarray of shape (m,), float32
        Cosine of each member to ``members[0]``.
    """

    members: np.ndarray
    identical: np.ndarray
    similarity: np.ndarray


def duplicate_threshold(backbone: str) -> float:
    """The measured cosine threshold of a backbone family, or :data:`FALLBACK_THRESHOLD`."""
    return THRESHOLDS.get(str(backbone).split(":")[0].strip().lower(), FALLBACK_THRESHOLD)


def check_threshold(threshold) -> float:
    """``threshold`` as a float in (0, 1]; an :class:`InputError` naming the value otherwise."""
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        value = float("nan")
    if isinstance(threshold, bool) or not 0.0 < value <= 1.0:
        raise InputError(f"--threshold {threshold!r}: the cosine similarity threshold must be a number in (0, 1], "
                         "e.g. 0.9")
    return value


def find_duplicates(
    digests: Sequence[str | None] | None,
    embeddings: np.ndarray,
    threshold: float,
    *,
    sizes: Sequence[int | None] | None = None,
    neighbours: int = NEIGHBOURS,
    search: str = "auto",
) -> list[DuplicateGroup]:
    """Groups of byte-identical and near-identical images.

    Parameters
    ----------
    digests : sequence of str or None, length n, or None
        Content digest of each image (None where unknown, e.g. ``--embeddings``).
    embeddings : ndarray of shape (n, d)
        One row per image; L2-normalised here.
    threshold : float in (0, 1]
        Two images are near duplicates when their cosine is at least this.
    sizes : sequence of int or None, length n, optional
        File sizes; a group lists its largest file first.
    neighbours : int
        Candidates per image from the kNN graph.
    search : {"auto", "exact", "ivf"}
        How the kNN graph is built (``"auto"``: exact up to :data:`EXACT_MAX`).

    Returns
    -------
    list of DuplicateGroup
        Ordered by their first member's row.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    threshold = check_threshold(threshold)
    x = np.asarray(embeddings, dtype=np.float32)
    n = x.shape[0]
    if digests is not None and len(digests) != n:
        raise InputError(f"{len(digests)} digests for {n} embeddings; give one per row")
    if n < 2:
        return []
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    rows, cols = _near_edges(x, threshold, neighbours, search)
    same_rows, same_cols = _identical_edges(digests)
    rows, cols = np.concatenate([rows, same_rows]), np.concatenate([cols, same_cols])
    graph = coo_matrix((np.ones(rows.size, dtype=np.int8), (rows, cols)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    counts = np.bincount(comp)
    in_group = np.flatnonzero(counts[comp] > 1)
    by_comp: dict[int, list[int]] = {}
    for i in in_group:
        by_comp.setdefault(int(comp[i]), []).append(int(i))
    size_of = np.array([-1 if s is None else int(s) for s in sizes], dtype=np.int64) if sizes is not None else None
    groups = []
    for members in by_comp.values():
        for part in _complete_link(x, np.asarray(members, dtype=np.int64), threshold, digests):
            groups.append(_group(x, part, digests, size_of))
    groups.sort(key=lambda g: int(g.members.min()))
    return groups


def _near_edges(x: np.ndarray, threshold: float, neighbours: int, search: str) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(i, j)`` of the kNN graph whose cosine is at least ``threshold``."""
    from tacluster.cluster.neighbours import knn

    n = x.shape[0]
    k = int(min(neighbours, n - 1))
    if search == "auto":
        search = "exact" if n <= EXACT_MAX else "ivf"
    if search not in ("exact", "ivf"):
        raise InputError(f"search={search!r}; use 'auto', 'exact' or 'ivf'")
    nbr = knn(x if search == "exact" else _pca_rows(x, SEARCH_DIMS), k, method=search)
    rows, cols = [], []
    block = max(1, (1 << 24) // max(1, k * x.shape[1]))  # ~64 MB of gathered neighbour rows at a time
    for start in range(0, n, block):
        idx = nbr[start:start + block]
        sims = np.einsum("id,ikd->ik", x[start:start + block], x[idx])
        r, c = np.nonzero(sims >= threshold)
        rows.append(r + start)
        cols.append(idx[r, c])
    return np.concatenate(rows).astype(np.int64), np.concatenate(cols).astype(np.int64)


def _pca_rows(x: np.ndarray, dims: int, sample: int = 10_000, seed: int = 0) -> np.ndarray:
    """``x`` projected on its ``dims`` leading principal axes (fitted on a sample), rows re-normalised:
    the space the IVF candidate search runs in (cosines are then checked on ``x`` itself)."""
    import faiss

    if x.shape[1] <= dims:
        return x
    rng = np.random.default_rng(seed)
    train = x[np.sort(rng.choice(x.shape[0], size=min(sample, x.shape[0]), replace=False))]
    pca = faiss.PCAMatrix(x.shape[1], dims)
    pca.train(np.ascontiguousarray(train))
    z = pca.apply(np.ascontiguousarray(x))
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


def _identical_edges(digests: Sequence[str | None] | None) -> tuple[np.ndarray, np.ndarray]:
    """Pairs joining every file to the first file with the same digest."""
    rows: list[int] = []
    cols: list[int] = []
    if digests is not None:
        first: dict[str, int] = {}
        for i, d in enumerate(digests):
            if d is None or d == "":
                continue
            j = first.setdefault(d, i)
            if j != i:
                rows.append(i)
                cols.append(j)
    return np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)


def _complete_link(x: np.ndarray, members: np.ndarray, threshold: float, digests) -> list[np.ndarray]:
    """``members`` as it is when every pair is a duplicate; else cut by complete linkage at
    ``threshold`` (files with one digest count as cosine 1 and stay together)."""
    sims = x[members] @ x[members].T
    if digests is not None:
        d = [digests[i] for i in members]
        same = np.array([[a is not None and a != "" and a == b for b in d] for a in d])
        sims[same] = 1.0
    if sims.min() >= threshold - 1e-6:
        return [members]
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    dist = np.clip(1.0 - sims.astype(np.float64), 0.0, 2.0)
    np.fill_diagonal(dist, 0.0)
    labels = fcluster(linkage(squareform(dist, checks=False), method="complete"),
                      t=1.0 - threshold + 1e-6, criterion="distance")
    return [members[labels == lab] for lab in np.unique(labels) if (labels == lab).sum() > 1]


def _group(x: np.ndarray, members: np.ndarray, digests, size_of: np.ndarray | None) -> DuplicateGroup:
    members = np.sort(members)
    if size_of is not None:
        members = members[np.argsort(-size_of[members], kind="stable")]
    sim = (x[members] @ x[members[0]]).astype(np.float32)
    if digests is None:
        identical = np.zeros(members.size, dtype=bool)
    else:
        d = [digests[i] for i in members]
        counts: dict[str, int] = {}
        for v in d:
            if v:
                counts[v] = counts.get(v, 0) + 1
        identical = np.array([bool(v) and counts[v] > 1 for v in d])
        sim[[bool(v) and v == d[0] for v in d]] = 1.0
    return DuplicateGroup(members, identical, np.minimum(sim, 1.0))


# --------------------------------------------------------------------------- the CSV


def file_sizes(paths: Sequence[str]) -> list[int | None]:
    """Size in bytes of each local file; None where it cannot be read (a URL, a gone file)."""
    out: list[int | None] = []
    for p in paths:
        try:
            out.append(os.stat(p).st_size)
        except (OSError, ValueError):
            out.append(None)
    return out


def duplicates_csv_bytes(paths: Sequence[str], digests, sizes, groups: Sequence[DuplicateGroup]) -> bytes:
    """``duplicates.csv``: one row per member of each group (the header alone when there is none)."""
    from tacluster.run.tables import csv_bytes

    rows = []
    for g, group in enumerate(groups):
        for i, same, sim in zip(group.members, group.identical, group.similarity):
            size = sizes[i] if sizes is not None else None
            rows.append((g, path_to_text(paths[i]), (digests[i] or "") if digests is not None else "",
                         "" if size is None else int(size), "identical" if same else "near", f"{float(sim):.4f}"))
    return csv_bytes(COLUMNS, rows)


def paths_to_skip(groups: dict[int, list[dict]]) -> set[str]:
    """Every member of each group but its largest file (ties: the first listed): what
    ``export --skip-duplicates`` leaves out."""
    skip: set[str] = set()
    for rows in groups.values():
        keep = max(range(len(rows)), key=lambda i: (rows[i]["size_bytes"] or -1, -i))
        skip.update(r["path"] for i, r in enumerate(rows) if i != keep)
    return skip


# --------------------------------------------------------------------------- a collection


@dataclass
class Duplicates:
    """The duplicates of one collection, with what ``duplicates.csv`` and run.json need."""

    paths: list[str]
    digests: list[str] | None
    sizes: list[int | None]
    groups: list[DuplicateGroup]
    threshold: float
    #: "measured" (:data:`THRESHOLDS`), "fallback" (:data:`FALLBACK_THRESHOLD`) or "given".
    threshold_source: str

    def csv_bytes(self) -> bytes:
        return duplicates_csv_bytes(self.paths, self.digests, self.sizes, self.groups)

    @property
    def n_images(self) -> int:
        """Images that belong to a group."""
        return sum(len(g.members) for g in self.groups)

    def summary(self) -> dict:
        """run.json's ``duplicates`` entry."""
        return {"file": DUPLICATES_FILE, "threshold": self.threshold, "threshold_source": self.threshold_source,
                "groups": len(self.groups), "images": self.n_images,
                "identical_groups": sum(bool(g.identical.all()) for g in self.groups),
                "identical_images": sum(int(g.identical.sum()) for g in self.groups),
                "by_content": self.digests is not None}


def collection_duplicates(emb, backbone: str, threshold: float | None = None) -> Duplicates:
    """:func:`find_duplicates` over an embedded collection (``EmbeddingResult``: its paths,
    content digests and ``image`` vectors), at ``threshold`` or the backbone's default."""
    if threshold is None:
        family = str(backbone).split(":")[0].strip().lower()
        value, source = duplicate_threshold(backbone), "measured" if family in THRESHOLDS else "fallback"
    else:
        value, source = check_threshold(threshold), "given"
    sizes = file_sizes(emb.paths)
    groups = find_duplicates(emb.keys, np.asarray(emb.arrays["image"]), value, sizes=sizes) if emb.paths else []
    return Duplicates(list(emb.paths), emb.keys, sizes, groups, value, source)
