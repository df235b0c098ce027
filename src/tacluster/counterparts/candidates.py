"""Noun selection over a candidate pool: rank every noun with a cheap bank, select
exactly among the best candidates (tacluster's saving; the paper embeds every
noun with all 7 templates).

A noun's assignment (argmax centre, softmax confidence) depends only on its own
vector and the centres, so :func:`select_nouns` over the pool's exact vectors
keeps exactly the nouns the full exact bank keeps as long as each of those is
in the pool. The pool is :func:`select_nouns` itself run on the ranking bank
with ``pool`` nouns per centre instead of 5; ``benchmarks/noun_candidates.py``
measures how large ``pool`` must be for the kept nouns to match.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from tacluster.counterparts.selection import NounSelection, select_nouns

#: Candidates per semantic centre (benchmarks/noun_candidates.py, docs/tuning.md).
NOUN_POOL = 20


@dataclass
class CandidateSelection:
    """The exact selection among the candidates, in the full vocabulary's rows.

    Attributes
    ----------
    selection : NounSelection
        ``indices`` are rows of the ranking bank (the whole vocabulary).
    pool : ndarray of shape (n_pool,), int64
        Rows of the candidates, sorted.
    pool_embeddings : ndarray of shape (n_pool, d), float32
        Their exact vectors (row i is noun ``pool[i]``).
    kept_embeddings : ndarray of shape (n_kept, d), float32
        The exact vectors of ``selection.indices``.
    """

    selection: NounSelection
    pool: np.ndarray
    pool_embeddings: np.ndarray
    kept_embeddings: np.ndarray


def select_from_candidates(
    centres: np.ndarray,
    ranking_embeddings: np.ndarray,
    exact_embeddings: Callable[[np.ndarray], np.ndarray],
    *,
    pool: int = NOUN_POOL,
    per_centre: int = 5,
    temperature: float = 1.0,
) -> CandidateSelection:
    """Reverse zero-shot selection with exact vectors for each centre's ``pool`` best candidates only.

    Parameters
    ----------
    centres : ndarray of shape (n_centres, d)
    ranking_embeddings : ndarray of shape (n_nouns, d)
        The cheap bank (e.g. one prompt template) every noun is ranked with.
    exact_embeddings : callable
        Maps sorted rows (int64, shape (m,)) of the vocabulary to their exact
        vectors, shape (m, d) (e.g. the 7-template bank, computed or cached).
    pool, per_centre, temperature
        Candidates per centre; nouns kept per centre and the softmax
        temperature of :func:`select_nouns`.

    Returns
    -------
    CandidateSelection
    """
    if pool < per_centre:
        raise ValueError(f"pool={pool} must be >= per_centre={per_centre}")
    candidates = np.unique(select_nouns(centres, ranking_embeddings, per_centre=pool,
                                        temperature=temperature).indices)
    exact = np.ascontiguousarray(exact_embeddings(candidates), dtype=np.float32)
    if exact.shape != (len(candidates), ranking_embeddings.shape[1]):
        raise ValueError(f"exact_embeddings returned shape {exact.shape} for {len(candidates)} candidates "
                         f"of width {ranking_embeddings.shape[1]}")
    sel = select_nouns(centres, exact, per_centre=per_centre, temperature=temperature)
    kept = exact[sel.indices]
    rows = NounSelection(indices=candidates[sel.indices], centre=sel.centre, confidence=sel.confidence)
    return CandidateSelection(selection=rows, pool=candidates, pool_embeddings=exact, kept_embeddings=kept)
