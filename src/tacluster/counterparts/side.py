"""The text side of a fitted model (METHOD.md stages 1-2): the nouns kept for a
collection, and the retrieval that gives any image, fitted or new, its text
counterpart. ``fit_text_side`` builds it; ``"no-train"`` assigns on it and
``"tac"`` keeps it for ``transform``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from tacluster._validation import as_float_matrix
from tacluster.counterparts.candidates import CandidateSelection, select_from_candidates
from tacluster.counterparts.centres import CENTRE_N_ITER, CENTRE_POINTS_PER_CENTRE, default_n_centres, semantic_centres
from tacluster.counterparts.retrieval import RETRIEVAL_TOP, retrieve_counterparts
from tacluster.counterparts.selection import select_nouns
from tacluster.errors import InputError, ModelFileError


@dataclass
class TextSide:
    """The kept nouns and how images are matched to them.

    Attributes
    ----------
    embeddings : ndarray of shape (n_kept, d_joint)
        The kept nouns' vectors.
    nouns : list of str
    indices : ndarray of shape (n_kept,)
        Their rows in the noun bank.
    tau : float
        Retrieval temperature.
    top : int or None
        Each image's retrieval reads only its ``top`` best nouns (the large-N
        path, :data:`RETRIEVAL_TOP`); None: all of them.
    """

    embeddings: np.ndarray
    nouns: list[str]
    indices: np.ndarray
    tau: float
    top: int | None = None

    @property
    def width(self) -> int:
        return int(self.embeddings.shape[1])

    def counterparts(self, joint) -> np.ndarray:
        """Text counterparts s of images given in the noun space, shape (n, d_joint)."""
        return retrieve_counterparts(joint, self.embeddings, tau=self.tau, top=self.top)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"kept_noun_embeddings": self.embeddings, "kept_noun_indices": self.indices}

    def config(self) -> dict:
        return {"kept_nouns": list(self.nouns), "n_joint_features": self.width}

    @classmethod
    def from_saved(cls, config: dict, arrays: dict[str, np.ndarray], tau: float) -> "TextSide":
        e = arrays.get("kept_noun_embeddings")
        nouns = list(config.get("kept_nouns", []))
        nj = config.get("n_joint_features")
        if e is None or e.ndim != 2 or nj is None or e.shape[1] != int(nj) or len(nouns) != e.shape[0]:
            raise ModelFileError("kept noun embeddings missing or inconsistent with config.json")
        top = RETRIEVAL_TOP if config.get("large_scale_used", False) else None  # before it: the exact path
        return cls(e, nouns, arrays.get("kept_noun_indices", np.zeros(0, dtype=np.int64)), float(tau), top)


@dataclass
class TextFit:
    """What fitting the text side gave: the side itself and what the fit alone sees."""

    side: TextSide
    counterparts: np.ndarray  # s of the fitted images
    centres: np.ndarray
    noun_confidence: np.ndarray
    pool: CandidateSelection | None = None


def check_text_inputs(u, joint_embeddings, noun_embeddings, nouns, k: int, method: str):
    """``(joint, bank, words)`` checked against the images and K, each mistake a one-line :class:`InputError`."""
    if noun_embeddings is None:
        raise InputError(f"method={method!r} needs noun_embeddings (the noun bank); pass them (fit(X, "
                         "noun_embeddings=..., nouns=...)), or use method='kmeans' for image-only clustering")
    joint = u if joint_embeddings is None else as_float_matrix(joint_embeddings, "joint_embeddings")
    if joint.shape[0] != u.shape[0]:
        raise InputError(f"joint_embeddings has {joint.shape[0]} rows but image_embeddings has {u.shape[0]}; "
                         "give one row per image in both")
    bank = as_float_matrix(noun_embeddings, "noun_embeddings")
    if bank.shape[1] != joint.shape[1]:
        what = "image_embeddings" if joint_embeddings is None else "joint_embeddings"
        raise InputError(f"noun_embeddings have width {bank.shape[1]} but {what} have width {joint.shape[1]}; "
                         "nouns and images must come from the same vision-language model")
    if bank.shape[0] < k:
        raise InputError(f"the vocabulary has {bank.shape[0]} nouns, fewer than n_clusters={k}; "
                         "use a larger vocabulary (e.g. WordNet nouns) or method='kmeans'")
    if nouns is None:
        return joint, bank, [f"noun{i}" for i in range(bank.shape[0])]
    words = [str(w) for w in nouns]
    if len(words) != bank.shape[0]:
        raise InputError(f"got {len(words)} nouns for {bank.shape[0]} noun embeddings; give one word per row")
    return joint, bank, words


def fit_text_side(
    joint: np.ndarray,
    bank: np.ndarray,
    words: Sequence[str],
    k: int,
    *,
    n_centres: int | None,
    nouns_per_centre: int,
    noun_temperature: float,
    noun_pool: int,
    tau: float,
    kmeans_n_iter: int,
    centres_n_init: int,
    large: bool,
    seed: int,
    exact_noun_embeddings: Callable[[np.ndarray], np.ndarray] | None = None,
    timings: dict | None = None,
) -> TextFit:
    """Semantic centres, noun selection and retrieval on checked inputs (:func:`check_text_inputs`).

    The large-N path fits the centres on a sample with capped iterations and
    retrieves over each image's top :data:`RETRIEVAL_TOP` nouns.
    ``exact_noun_embeddings``: ``bank`` only ranks, and each centre's
    ``noun_pool`` best candidates are embedded exactly (:func:`select_from_candidates`).
    Seconds per step go into ``timings`` (centres, noun_selection, retrieval).
    """
    timings = {} if timings is None else timings
    n = joint.shape[0]
    n_centres = n_centres if n_centres is not None else default_n_centres(n, k)
    if n_centres > n:
        raise InputError(f"n_centres={n_centres} is larger than the {n} samples; use n_centres <= {n}")
    tic = time.perf_counter()
    if large:
        centres = semantic_centres(joint, n_centres, points_per_centre=CENTRE_POINTS_PER_CENTRE,
                                   n_iter=min(kmeans_n_iter, CENTRE_N_ITER), n_init=1, seed=seed)
    else:
        centres = semantic_centres(joint, n_centres, seed=seed, n_iter=kmeans_n_iter, n_init=centres_n_init)
    timings["centres"] = time.perf_counter() - tic

    tic = time.perf_counter()
    pool = None
    if exact_noun_embeddings is None:
        sel = select_nouns(centres, bank, per_centre=nouns_per_centre, temperature=noun_temperature)
        kept = np.ascontiguousarray(bank[sel.indices])
    else:
        pool = select_from_candidates(centres, bank, exact_noun_embeddings, pool=noun_pool,
                                      per_centre=nouns_per_centre, temperature=noun_temperature)
        sel, kept = pool.selection, pool.kept_embeddings
    timings["noun_selection"] = time.perf_counter() - tic
    side = TextSide(kept, [words[i] for i in sel.indices], sel.indices, float(tau), RETRIEVAL_TOP if large else None)

    tic = time.perf_counter()
    s = side.counterparts(joint)
    timings["retrieval"] = time.perf_counter() - tic
    return TextFit(side, s, centres, sel.confidence, pool)
