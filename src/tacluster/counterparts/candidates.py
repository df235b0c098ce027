"""Noun selection over a candidate pool: rank every noun with a cheap bank, select
exactly among the best candidates (tacluster's saving; the paper embeds every
noun with all 7 templates).

A noun's assignment (argmax centre, softmax confidence) depends only on its own
vector and the centres, so :func:`select_nouns` over the pool's exact vectors
keeps exactly the nouns the full exact bank keeps as long as each of those is
in the pool. The pool holds, for every centre, the ``pool`` nouns the ranking
bank gives the highest probability of that centre (:func:`candidate_pool`);
``benchmarks/noun_candidates.py`` measures how large ``pool`` must be for the
kept nouns to match.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from tacluster.counterparts.selection import NounSelection, select_nouns

#: Candidates per semantic centre: the smallest measured on lite:lite0/conse that keeps >= 95 % of the full bank's
#: kept nouns on all twelve domains' fit parts of a 20,000-noun sample (200: >= 97.1 %, ACC unchanged; 80 kept
#: 86.7 % on blood cells; docs/results.md, "Candidate noun pool").
NOUN_POOL = 200


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


def candidate_pool(centres: np.ndarray, ranking_embeddings: np.ndarray, *, pool: int = NOUN_POOL,
                   temperature: float = 1.0, block: int = 16384) -> np.ndarray:
    """Sorted rows of the nouns among the ``pool`` most probable for some centre under the ranking bank.

    For each centre l the nouns with the highest softmax probability p(l | noun)
    (the quantity :func:`select_nouns` ranks by), whatever their argmax
    centre: a noun the exact bank gives to l can sit at another argmax under
    the cheap bank (on ``lite:lite0/conse``, pooling only each centre's argmax
    nouns kept 82-99 % of the nouns at 40 per centre). Memory stays at
    ``block * n_centres`` floats.
    """
    c = torch.from_numpy(np.ascontiguousarray(centres, dtype=np.float32))
    n_nouns = ranking_embeddings.shape[0]
    top_p = torch.empty((0, c.shape[0]))
    top_i = torch.empty((0, c.shape[0]), dtype=torch.int64)
    with torch.inference_mode():
        for start in range(0, n_nouns, block):
            t = torch.from_numpy(np.array(ranking_embeddings[start : start + block], dtype=np.float32, order="C"))
            p = torch.softmax((t @ c.T) / temperature, dim=1)
            idx = torch.arange(start, start + len(t)).unsqueeze(1).expand_as(p)
            top_p, pick = torch.cat([top_p, p]).topk(min(pool, len(top_p) + len(p)), dim=0)
            top_i = torch.cat([top_i, idx]).gather(0, pick)
    return np.unique(top_i.numpy()).astype(np.int64)


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
    candidates = candidate_pool(centres, ranking_embeddings, pool=pool, temperature=temperature)
    exact = np.ascontiguousarray(exact_embeddings(candidates), dtype=np.float32)
    if exact.shape != (len(candidates), ranking_embeddings.shape[1]):
        raise ValueError(f"exact_embeddings returned shape {exact.shape} for {len(candidates)} candidates "
                         f"of width {ranking_embeddings.shape[1]}")
    sel = select_nouns(centres, exact, per_centre=per_centre, temperature=temperature)
    kept = exact[sel.indices]
    rows = NounSelection(indices=candidates[sel.indices], centre=sel.centre, confidence=sel.confidence)
    return CandidateSelection(selection=rows, pool=candidates, pool_embeddings=exact, kept_embeddings=kept)
