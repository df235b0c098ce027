"""A synthetic vision-language world with known ground truth (tests, benchmarks).

Generator (documented so benchmark numbers can be reproduced):

* ``n_classes`` class-noun directions ``t_k``: random unit vectors in R^dim.
* The noun bank: the class nouns, ``synonyms_per_class`` nouns per class near
  ``t_k`` (``normalise(t_k + 0.5 g)``, g Gaussian of norm ~1), and random unit
  "distractor" nouns up to ``n_nouns``. Nouns are named ``class3``,
  ``class3_syn1``, ``noise17``.
* Image i of class y_i and nuisance style z_i (uniform over ``n_styles``, independent
  of the class): ``u_i = normalise(class_strength * t_{y_i}
  + style_strength * r_{z_i} + noise * g_i)`` with style directions r random
  unit vectors (nearly orthogonal to every noun in high dimension) and g_i a
  Gaussian vector of norm ~1.

With ``style_strength > class_strength`` plain k-means on u groups by style,
while the text counterparts (which only see the noun directions) recover the
class: the situation in which TAC's external guidance pays off.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SyntheticWorld:
    image_embeddings: np.ndarray  # (n_samples, dim) float32, unit rows
    labels: np.ndarray  # (n_samples,) int64 class
    styles: np.ndarray  # (n_samples,) int64 nuisance style
    noun_embeddings: np.ndarray  # (n_nouns, dim) float32, unit rows
    nouns: list[str]
    class_nouns: np.ndarray  # (n_classes,) row of each class noun in the bank


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def make_world(
    n_samples: int = 2000,
    n_classes: int = 10,
    dim: int = 128,
    n_nouns: int = 1000,
    *,
    synonyms_per_class: int = 3,
    class_strength: float = 1.0,
    style_strength: float = 0.0,
    n_styles: int = 0,
    noise: float = 1.0,
    seed: int = 0,
) -> SyntheticWorld:
    """Draw a synthetic world (see the module docstring for the generator)."""
    rng = np.random.default_rng(seed)
    n_named = n_classes * (1 + synonyms_per_class)
    if n_nouns < n_named:
        raise ValueError(f"n_nouns={n_nouns} must be >= {n_named} (class nouns and synonyms)")
    t_class = _unit(rng.standard_normal((n_classes, dim)))
    syn = _unit(
        np.repeat(t_class, synonyms_per_class, axis=0)
        + 0.5 * rng.standard_normal((n_classes * synonyms_per_class, dim)) / np.sqrt(dim)
    )
    distract = _unit(rng.standard_normal((n_nouns - n_named, dim)))
    nouns_emb = np.vstack([t_class, syn, distract]).astype(np.float32)
    nouns = (
        [f"class{k}" for k in range(n_classes)]
        + [f"class{k}_syn{j}" for k in range(n_classes) for j in range(synonyms_per_class)]
        + [f"noise{j}" for j in range(n_nouns - n_named)]
    )
    labels = rng.integers(0, n_classes, n_samples)
    u = class_strength * t_class[labels] + noise * rng.standard_normal((n_samples, dim)) / np.sqrt(dim)
    styles = np.zeros(n_samples, dtype=np.int64)
    if n_styles > 0 and style_strength > 0:
        r_style = _unit(rng.standard_normal((n_styles, dim)))
        styles = rng.integers(0, n_styles, n_samples)
        u = u + style_strength * r_style[styles]
    return SyntheticWorld(
        image_embeddings=_unit(u).astype(np.float32),
        labels=labels.astype(np.int64),
        styles=styles.astype(np.int64),
        noun_embeddings=nouns_emb,
        nouns=nouns,
        class_nouns=np.arange(n_classes),
    )


def make_burst_world(
    n_classes: int = 5,
    bursts_per_class: int = 8,
    burst_size: int = 25,
    dim: int = 64,
    *,
    spread: float = 0.8,
    tightness: float = 0.16,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Images in bursts (near-duplicates), several bursts around each class direction.

    Burst centre ``normalise(t_k + spread * r)`` (r a random unit vector),
    members ``normalise(centre + tightness * g / sqrt(dim))``. With the
    defaults every burst is its own component of a 20-nearest-neighbour
    graph; with a wide ``spread`` (about 2) a burst's nearest bursts often
    belong to other classes, so a graph method chains across classes while the
    class means stay apart: k-means recovers the classes better than spectral
    clustering (``tests/test_choose_method.py``). Returns ``(image embeddings,
    labels)``.
    """
    rng = np.random.default_rng(seed)
    t = _unit(rng.standard_normal((n_classes, dim)))
    labels = np.repeat(np.arange(n_classes), bursts_per_class * burst_size)
    centres = _unit(np.repeat(t, bursts_per_class, axis=0)
                    + spread * _unit(rng.standard_normal((n_classes * bursts_per_class, dim))))
    u = np.repeat(centres, burst_size, axis=0) + tightness * rng.standard_normal((labels.size, dim)) / np.sqrt(dim)
    return _unit(u).astype(np.float32), labels.astype(np.int64)


def make_lines_world(
    n_samples: int = 800,
    n_classes: int = 4,
    dim: int = 32,
    *,
    length: float = 4.0,
    gap: float = 3.0,
    noise: float = 0.05,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Each class a long thin line, the lines parallel and ``gap`` apart (``gap`` < ``length``).

    Points ``(t, gap * y, 0, ...) + noise * g`` with t uniform in
    [-length, length], rotated at random and moved far from the origin before
    the L2 normalisation (so the sphere keeps the local geometry). k-means cuts
    every line across (a slab holds pieces of all lines); the neighbour graph
    follows each line, so spectral clustering recovers the classes. Returns
    ``(image embeddings, labels)``.
    """
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    labels = rng.integers(0, n_classes, n_samples)
    x = np.zeros((n_samples, dim))
    x[:, 0] = rng.uniform(-length, length, n_samples)
    x[:, 1] = gap * labels
    x += noise * rng.standard_normal((n_samples, dim))
    x = x @ q.T + 20.0 * q[:, 2]
    return _unit(x).astype(np.float32), labels.astype(np.int64)
