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
