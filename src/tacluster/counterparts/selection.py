"""Noun selection: reverse zero-shot classification of every noun into the
semantic centres (METHOD.md, counterpart construction step 2)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class NounSelection:
    """Nouns kept by reverse zero-shot selection.

    Attributes
    ----------
    indices : ndarray of shape (n_kept,), int64
        Rows of the noun bank, sorted by (centre, -confidence).
    centre : ndarray of shape (n_kept,), int64
        The centre each kept noun was assigned to.
    confidence : ndarray of shape (n_kept,), float32
        Softmax probability of that assignment.
    """

    indices: np.ndarray
    centre: np.ndarray
    confidence: np.ndarray



def select_nouns(
    centres: np.ndarray,
    noun_embeddings: np.ndarray,
    *,
    per_centre: int = 5,
    temperature: float = 1.0,
    block: int = 16384,
) -> NounSelection:
    """Reverse zero-shot: classify every noun into a centre, keep each centre's top nouns.

    Each noun j is softmax-classified over the L centres by cos(c_l, t_j) /
    ``temperature`` (the paper: no temperature, i.e. 1) and goes to its argmax
    centre with that probability as confidence; each centre keeps its
    ``per_centre`` most confident nouns.

    Parameters
    ----------
    centres : ndarray of shape (n_centres, d)
    noun_embeddings : ndarray of shape (n_nouns, d)
        Unit-norm rows. Processed in blocks of ``block`` nouns, so memory
        stays at ``block * n_centres`` floats.

    Returns
    -------
    NounSelection
    """
    c = torch.from_numpy(np.ascontiguousarray(centres, dtype=np.float32))
    n_nouns = noun_embeddings.shape[0]
    best = np.empty(n_nouns, dtype=np.int64)
    conf = np.empty(n_nouns, dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, n_nouns, block):
            # a copy of the block: the bank may be a read-only memmap, which torch will not wrap
            t = torch.from_numpy(np.array(noun_embeddings[start : start + block], dtype=np.float32, order="C"))
            p = torch.softmax((t @ c.T) / temperature, dim=1)
            top = p.max(dim=1)
            best[start : start + len(t)] = top.indices.numpy()
            conf[start : start + len(t)] = top.values.numpy()
    # Group by centre, most confident first (index as the final tie-break, so
    # the choice is deterministic), then keep the first `per_centre` of each group.
    order = np.lexsort((np.arange(n_nouns), -conf, best))
    grouped = best[order]
    rank = np.arange(n_nouns) - np.searchsorted(grouped, grouped, side="left")
    keep = order[rank < per_centre]
    return NounSelection(indices=keep.astype(np.int64), centre=best[keep], confidence=conf[keep])
