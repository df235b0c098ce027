"""Duplicates in a collection: byte-identical files and near-identical images.

Two images are duplicates when their files have the same content digest (the
SHA-256 the embedding cache keys them by, so no file is hashed twice) or when
they look the same: the aligned similarity of their grey thumbnails
(:mod:`tacluster.embed.look`, :mod:`tacluster.run.alignment`: a correlation
that undoes slight crops) is at least :data:`LOOK_THRESHOLD`, measured on
re-encoded, resized, slightly cropped and recoloured copies
(``benchmarks/duplicates.py``). The thumbnails do not depend on the backbone.
Where there are no image files (``--embeddings``), the cosine of the
embeddings is compared instead, at a threshold per backbone (:data:`THRESHOLDS`).

Candidates come from the kNN graph of :func:`tacluster.cluster.neighbours.knn`
(on the thumbnails' or the embeddings' vectors)
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
``similarity`` is the similarity to the group's first (kept) image.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from tacluster._paths import path_to_text
from tacluster.errors import InputError
from tacluster.report.reading import DUPLICATE_COLUMNS as COLUMNS, read_duplicates  # noqa: F401 (public here too)
from tacluster.run.rundir import DUPLICATES_FILE

#: Aligned similarity of two thumbnails at and above which they are near duplicates:
#: the highest pair recall at >= 95 % precision on the fit parts of four shared
#: domains with planted copies (benchmarks/duplicates.py, docs/duplicates.md).
LOOK_THRESHOLD = 0.95
#: Above this many members a component is cut on the thumbnails' unaligned cosine
#: (one dense product) instead of the aligned similarity of every pair.
ALIGNED_LINK_MAX = 1000
#: Embedding cosine threshold per backbone family (only where there are no image files) (the part of the name before ":").
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
        raise InputError(f"--threshold {threshold!r}: the similarity threshold must be a number in (0, 1], "
                         f"e.g. {LOOK_THRESHOLD}")
    return value


def find_duplicates(
    digests: Sequence[str | None] | None,
    embeddings: np.ndarray | None,
    threshold: float,
    *,
    looks: np.ndarray | None = None,
    sizes: Sequence[int | None] | None = None,
    neighbours: int = NEIGHBOURS,
    search: str = "auto",
) -> list[DuplicateGroup]:
    """Groups of byte-identical and near-identical images.

    Parameters
    ----------
    digests : sequence of str or None, length n, or None
        Content digest of each image (None where unknown, e.g. ``--embeddings``).
    embeddings : ndarray of shape (n, d), or None
        One row per image; L2-normalised here. Compared when ``looks`` is None.
    threshold : float in (0, 1]
        Two images are near duplicates when their similarity is at least this:
        the aligned similarity of their looks (:data:`LOOK_THRESHOLD`), else
        the cosine of their embeddings (:data:`THRESHOLDS`).
    looks : ndarray of shape (n, LOOK_SIZE ** 2), uint8, optional
        :mod:`tacluster.embed.look` thumbnails; compared by
        :func:`tacluster.run.alignment.aligned_similarity` (undoes slight crops).
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
    sim = _Similarity.of(embeddings, looks)
    n = sim.n
    if digests is not None and len(digests) != n:
        raise InputError(f"{len(digests)} digests for {n} images; give one per row")
    if n < 2:
        return []
    rows, cols = _near_edges(sim, threshold, neighbours, search)
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
        for part in _complete_link(sim, np.asarray(members, dtype=np.int64), threshold, digests):
            groups.append(_group(sim, part, digests, size_of))
    groups.sort(key=lambda g: int(g.members.min()))
    return groups


class _Similarity:
    """What two images are compared by: ``vectors`` for the kNN candidates, ``pairs`` for the score."""

    def __init__(self, vectors: np.ndarray, looks: np.ndarray | None):
        self.vectors, self.looks, self.n = vectors, looks, vectors.shape[0]

    @classmethod
    def of(cls, embeddings, looks) -> "_Similarity":
        if looks is not None:
            from tacluster.run.alignment import look_vectors

            looks = np.asarray(looks, dtype=np.uint8)
            return cls(look_vectors(looks), looks)
        if embeddings is None:
            raise InputError("find_duplicates needs embeddings or looks")
        x = np.asarray(embeddings, dtype=np.float32)
        return cls(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12), None)

    def pairs(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        if self.looks is None:
            out = np.empty(rows.size, dtype=np.float32)
            for start in range(0, rows.size, 1 << 16):
                r, c = rows[start:start + (1 << 16)], cols[start:start + (1 << 16)]
                out[start:start + r.size] = np.einsum("id,id->i", self.vectors[r], self.vectors[c])
            return out
        from tacluster.run.alignment import aligned_similarity

        return aligned_similarity(self.looks, rows, cols, self.vectors)

    def matrix(self, members: np.ndarray) -> np.ndarray:
        """Every pair of ``members``; looks are aligned up to :data:`ALIGNED_LINK_MAX` members (above,
        their unaligned cosine, a dense product)."""
        if self.looks is None or members.size > ALIGNED_LINK_MAX:
            v = self.vectors[members]
            return v @ v.T
        i, j = np.triu_indices(members.size, k=1)
        out = np.eye(members.size, dtype=np.float32)
        out[i, j] = out[j, i] = self.pairs(members[i], members[j])
        return out


def _near_edges(sim: _Similarity, threshold: float, neighbours: int, search: str) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(i, j)``, i < j, of the kNN graph whose similarity is at least ``threshold``."""
    from tacluster.cluster.neighbours import knn

    n = sim.n
    k = int(min(neighbours, n - 1))
    if search == "auto":
        search = "exact" if n <= EXACT_MAX else "ivf"
    if search not in ("exact", "ivf"):
        raise InputError(f"search={search!r}; use 'auto', 'exact' or 'ivf'")
    nbr = knn(sim.vectors if search == "exact" else _pca_rows(sim.vectors, SEARCH_DIMS), k, method=search)
    rows = np.repeat(np.arange(n, dtype=np.int64), nbr.shape[1])
    cols = nbr.reshape(-1).astype(np.int64)
    ok = (cols >= 0) & (cols != rows)
    pairs = np.unique(np.stack([np.minimum(rows[ok], cols[ok]), np.maximum(rows[ok], cols[ok])], axis=1), axis=0)
    if not pairs.size:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    keep = sim.pairs(pairs[:, 0], pairs[:, 1]) >= threshold
    return pairs[keep, 0], pairs[keep, 1]


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


def _complete_link(sim: _Similarity, members: np.ndarray, threshold: float, digests) -> list[np.ndarray]:
    """``members`` as it is when every pair is a duplicate; else cut by complete linkage at
    ``threshold`` (files with one digest count as similarity 1 and stay together)."""
    sims = sim.matrix(members)
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


def _group(similarity: _Similarity, members: np.ndarray, digests, size_of: np.ndarray | None) -> DuplicateGroup:
    members = np.sort(members)
    if size_of is not None:
        members = members[np.argsort(-size_of[members], kind="stable")]
    sim = np.ones(members.size, dtype=np.float32)
    sim[1:] = similarity.pairs(np.full(members.size - 1, members[0]), members[1:])
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
    #: "measured" (:data:`LOOK_THRESHOLD`, :data:`THRESHOLDS`), "fallback" (:data:`FALLBACK_THRESHOLD`) or "given".
    threshold_source: str
    #: "looks" (the thumbnails) or "embeddings" (no image files).
    compared: str = "embeddings"
    #: ``(path, reason)`` of inputs left out (``tacluster duplicates``).
    skipped: list = field(default_factory=list)

    def csv_bytes(self) -> bytes:
        return duplicates_csv_bytes(self.paths, self.digests, self.sizes, self.groups)

    @property
    def n_images(self) -> int:
        """Images that belong to a group."""
        return sum(len(g.members) for g in self.groups)

    def summary(self) -> dict:
        """run.json's ``duplicates`` entry."""
        return {"file": DUPLICATES_FILE, "compared": self.compared, "threshold": self.threshold,
                "threshold_source": self.threshold_source,
                "groups": len(self.groups), "images": self.n_images,
                "identical_groups": sum(bool(g.identical.all()) for g in self.groups),
                "identical_images": sum(int(g.identical.sum()) for g in self.groups),
                "by_content": self.digests is not None}


def look_duplicates(looks, threshold: float | None = None) -> Duplicates:
    """:func:`find_duplicates` on the thumbnails of a collection (:class:`tacluster.embed.look.Looks`),
    at ``threshold`` or :data:`LOOK_THRESHOLD`."""
    value, source = (check_threshold(threshold), "given") if threshold is not None else (LOOK_THRESHOLD, "measured")
    sizes = file_sizes(looks.paths)
    groups = find_duplicates(looks.keys, None, value, looks=looks.array, sizes=sizes) if looks.paths else []
    return Duplicates(list(looks.paths), list(looks.keys), sizes, groups, value, source, "looks")


def collection_duplicates(emb, backbone: str, threshold: float | None = None, *,
                          cache_dir=None, progress: bool = False) -> Duplicates:
    """The duplicates of an embedded collection (``EmbeddingResult``: its paths and content
    digests): on the images' thumbnails (read through the cache at ``cache_dir``), or on the
    ``image`` vectors where there are no files (``--embeddings``, or a file changed since it
    was embedded); at ``threshold`` or the measured default."""
    from tacluster.embed.look import collection_looks

    if emb.paths and emb.keys is not None:
        looks = collection_looks(emb.paths, emb.keys, cache_dir, progress=progress)
        if not looks.skipped:
            return look_duplicates(looks, threshold)
    if threshold is not None:
        value, source = check_threshold(threshold), "given"
    else:
        family = str(backbone).split(":")[0].strip().lower()
        value, source = duplicate_threshold(backbone), "measured" if family in THRESHOLDS else "fallback"
    sizes = file_sizes(emb.paths)
    groups = find_duplicates(emb.keys, np.asarray(emb.arrays["image"]), value, sizes=sizes) if emb.paths else []
    return Duplicates(list(emb.paths), emb.keys, sizes, groups, value, source, "embeddings")
