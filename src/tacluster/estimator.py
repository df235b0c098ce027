"""The public estimator: ``TextAidedClustering`` (scikit-learn style)."""

from __future__ import annotations

import time
import warnings
from numbers import Integral, Real
from pathlib import Path
from typing import Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.utils import check_random_state
from sklearn.exceptions import NotFittedError as _SklearnNotFittedError
from sklearn.utils._param_validation import Interval, InvalidParameterError, StrOptions
from sklearn.utils.validation import check_is_fitted

from tacluster._blocks import PowerRows, ViewsRows, concatenated_views, iter_blocks, power_normalise
from tacluster._scale import LARGE_SCALE_MIN_SAMPLES, checked_images, use_large_scale  # noqa: F401 (re-exported)
from tacluster._validation import (
    as_float_matrix,
    check_choice,
    check_n_clusters,
)
from tacluster.cluster import neighbours
from tacluster.cluster.kmeans import (
    KMEANS_N_ITER,
    KMEANS_POINTS_PER_CLUSTER,
    assign,
    consensus_kmeans,
    joint_features,
    kmeans_cluster,
    normalised_means,
    refined_kmeans,
    sampled_kmeans,
)
from tacluster.cluster.spectral import landmark_spectral_cluster, spectral_cluster
from tacluster.counterparts import (
    CENTRE_N_ITER,
    CENTRE_POINTS_PER_CENTRE,
    RETRIEVAL_TOP,
    default_n_centres,
    retrieve_counterparts,
    select_nouns,
    semantic_centres,
)
from tacluster.counterparts.candidates import NOUN_POOL, select_from_candidates
from tacluster.errors import CollapseWarning, InputError, NotFittedError

METHODS = ("tac", "no-train", "kmeans", "spectral", "auto")
#: The methods whose final k-means ``consensus`` replaces (``"auto"``: its k-means candidate).
CONSENSUS_METHODS = ("kmeans", "no-train", "auto")
#: Settings ``method="auto"`` does not hand its candidates: K is resolved, the seed is
#: the fit's, and the candidates set their own method and feature power.
_NOT_FORWARDED = ("n_clusters", "method", "random_state", "k_range", "feature_power", "spectral_views",
                  "spectral_refine")

#: Above this many clusters ``"spectral"`` goes through landmarks at any N: the
#: exact graph's eigensolver needs K eigenvectors, and its time grows steeply
#: with K (20k images: K = 300 took 111 s, K = 1000 did not finish in 18 min on
#: 2 cores; docs/scaling.md).
SPECTRAL_EXACT_MAX_CLUSTERS = 300


class TextAidedClustering(ClusterMixin, BaseEstimator):
    """Text-Aided Clustering (TAC, Li et al., ICML 2024) on embedding arrays.

    Parameters
    ----------
    n_clusters : int or "auto", default=10
        K, the number of clusters; ``"auto"`` estimates it from the data
        (:func:`tacluster.cluster.choose_k.estimate_n_clusters`, within ``k_range``).
    method : {"tac", "no-train", "kmeans", "spectral", "auto"}, default="tac"
        ``"tac"``: counterparts + cross-modal mutual distillation (the paper's
        TAC); ``"no-train"``: k-means on ``[u, text_weight * s]``;
        ``"kmeans"``: k-means on the image embeddings alone (baseline);
        ``"spectral"``: spectral clustering of the image kNN graph (image side
        only); ``"auto"``: the two candidates of
        :data:`tacluster.cluster.choose_method.IMAGE_CANDIDATES` are fitted (spectral
        on the raw and power-normalised views side by side, refined by k-means;
        and k-means) and the graph one is kept unless k-means's partition follows
        the collection's kNN graph better (label-free,
        :func:`tacluster.cluster.choose_method.choose_method`; the decision is
        ``choice_``, and a saved model is the chosen method's).
        ``"auto"`` is tacluster's default with the offline backbone.
    n_centres : int or None, default=None
        Semantic centres L for noun selection; None = ``max(N // 300, 3K)``
        capped at N // 2 (see :func:`tacluster.counterparts.retrieval.default_n_centres`).
    nouns_per_centre : int, default=5
        Nouns each centre keeps.
    noun_temperature : float, default=1.0
        Temperature of the noun-to-centre softmax (paper: none, i.e. 1).
    noun_pool : int, default=80
        With ``fit(..., exact_noun_embeddings=...)`` only: candidates per centre
        ranked with the cheap bank and then embedded exactly
        (:func:`tacluster.counterparts.candidates.select_from_candidates`).
    tau : float, default=0.005
        Retrieval softmax temperature.
    text_weight : float or "auto", default=1.0
        Weight of the counterpart in ``[u, w * s]`` for ``"no-train"``.
        ``"auto"``: chosen per collection, without labels, by
        :func:`tacluster.cluster.text_weight.choose_text_weight` (0 = image-only k-means
        when the text side is weak); the value used is ``text_weight_``.
    n_neighbors : int, default=50
        Neighbours per sample for the distillation (capped at N - 1).
    knn_method : {"auto", "exact", "hnsw", "ivf"}, default="auto"
        Neighbour search: exact up to 100,000 samples, a faiss HNSW graph
        above (see :func:`tacluster.cluster.neighbours.knn`).
    large_scale : {"auto", True, False}, default="auto"
        Each stage's large-collection setting from
        :data:`LARGE_SCALE_MIN_SAMPLES` (100,000) samples: centres and
        k-means fitted on subsamples with capped iterations (1 restart) and
        every point assigned in blocks, retrieval over each image's top 64
        kept nouns, HNSW neighbours, ``"spectral"`` through landmarks
        (:func:`tacluster.cluster.spectral.landmark_spectral_cluster`, linear
        in N; also on the small path above
        :data:`SPECTRAL_EXACT_MAX_CLUSTERS` clusters), the power view of
        ``feature_power`` computed per block, ``"auto"``'s partitions scored
        on 30,000 sampled images; ``probabilities_`` is not kept (it would be
        N x K floats). ``True``/``False`` force either path.
    spectral_neighbors : int, default=20
        Neighbours per image in the graph of ``"spectral"`` (20 chosen on the
        fit parts of 15-Scene and CIFAR-10, ``docs/tuning.md``).
    spectral_views : sequence of float or None, default=None
        ``"spectral"`` only: feature powers whose views, side by side
        (:func:`tacluster._blocks.concatenated_views`), give the graph that is
        cut, e.g. ``(1.0, 0.5)``: raw and signed-root features, so that
        neither view alone decides. None: the features (at ``feature_power``).
    spectral_refine : bool, default=False
        ``"spectral"`` only: after the graph cut, spherical k-means on the
        features started from its clusters
        (:func:`tacluster.cluster.kmeans.refined_kmeans`). ``"auto"``'s graph
        candidate uses both (``docs/tuning.md`` §8).
    n_epochs, min_steps, batch_size, learning_rate, temperature, balance_weight
        Head training (paper: 20 epochs, batch 512, Adam 1e-3, T = 0.5, w = 5);
        ``min_steps`` (200) lengthens training on small collections.
    kmeans_n_init : int, default=10
        k-means restarts (paper: 20 for the final clustering).
    kmeans_n_iter : int, default=300
        k-means iteration cap (faiss stops once the objective settles).
    centres_n_init : int, default=3
        Restarts of the semantic-centre k-means (paper: 10).
    feature_power : float, default=1.0
        Power normalisation of the image features before anything else, in
        ``fit`` and ``predict`` alike: ``sign(u) * |u| ** feature_power``,
        then L2. 1 leaves them as they are; 0.5 (signed square root) damps the
        few large activations that dominate pooled CNN features. On the
        offline backbone, spectral clustering with 0.5 gained 10-16 ACC on
        blood cells and hand signs but lost 2-4 on clothing, CIFAR-10 and
        15-Scene (``docs/tuning.md`` §6), so ``"auto"`` uses it beside the raw
        features (``spectral_views``) rather than as a default.
    consensus : int, default=0
        ``"kmeans"`` and ``"no-train"`` only: 0 keeps the best of
        ``kmeans_n_init`` restarts; ``n >= 2`` clusters the co-association
        of ``n`` single-restart partitions instead
        (:func:`tacluster.cluster.kmeans.consensus_kmeans`), steadier where the
        k-means objective is flat (``docs/stability.md``); under ``"auto"``
        its k-means candidate does. Refused with ``"tac"``, ``"spectral"`` and on
        the large-N path, which make no such k-means.
    device : {"cpu", "cuda", "auto"}, default="cpu"
        Where the heads train.
    random_state : int, RandomState or None, default=0
        One seed for k-means, sampling and training.
    verbose : bool, default=False
        Show a progress bar while training.

    Attributes
    ----------
    labels_ : ndarray of shape (n_samples,)
    confidence_ : ndarray of shape (n_samples,)
        Probability of the assigned cluster.
    n_clusters_ : int
        The K used (``n_clusters``, or the estimate when it is ``"auto"``).
    auto_k_ : AutoKResult or None
        The K search (candidates and scores) when ``n_clusters="auto"``.
    probabilities_ : ndarray of shape (n_samples, n_clusters) or None
        None on the large-N path (``large_scale``).
    counterparts_ : ndarray of shape (n_samples, d_joint)
        Text counterparts s (not for ``"kmeans"``).
    kept_noun_indices_ : ndarray of shape (n_kept,)
        Rows of the noun bank kept by noun selection.
    kept_nouns_ : list of str
    kept_noun_embeddings_ : ndarray of shape (n_kept, d_joint)
    noun_pool_ : CandidateSelection or None
        The candidates and their exact vectors when ``fit`` was given
        ``exact_noun_embeddings`` (None otherwise).
    cluster_centers_ : ndarray of shape (n_clusters, n_features) or None
        k-means centroids (``"kmeans"``, ``"no-train"``).
    image_head_, text_head_ : ClusterHead or None
        The trained heads (``"tac"``).
    loss_history_ : list of dict
        Mean loss terms per epoch (``"tac"``).
    text_weight_ : float
        The text weight used by ``"no-train"`` (resolved when ``"auto"``).
    trust_ : TrustDecision or None
        Why ``"auto"`` chose ``text_weight_`` (None otherwise).
    choice_ : MethodChoice or None
        For ``method="auto"``: the candidate kept, every candidate's score and
        why (None otherwise).
    feature_power_ : float
        The ``feature_power`` in use (the chosen candidate's for ``"auto"``).
    timings_ : dict
        Seconds per stage of the last ``fit``.
    """

    #: Each setting's rule alone, checked once in ``fit`` (scikit-learn's ``_validate_params``);
    #: K needs the sample count (``check_n_clusters``, ``choose_k.search_range``), and the rules
    #: between settings (consensus with a method, feature_power under "auto") are in ``_check_params``.
    _parameter_constraints: dict = {
        "n_clusters": "no_validation",
        "method": [StrOptions(set(METHODS))],
        "k_range": "no_validation",  # choose_k checks it against the samples
        "n_centres": [Interval(Integral, 1, None, closed="left"), None],
        **{name: [Interval(Integral, 1, None, closed="left")] for name in (
            "nouns_per_centre", "noun_pool", "n_neighbors", "spectral_neighbors", "n_epochs", "batch_size",
            "kmeans_n_init",
            "kmeans_n_iter", "centres_n_init")},
        "min_steps": [Interval(Integral, 0, None, closed="left")],
        "consensus": [Interval(Integral, 0, None, closed="left")],
        **{name: [Interval(Real, 0, None, closed="neither")] for name in (
            "noun_temperature", "tau", "learning_rate", "temperature", "feature_power")},
        "text_weight": [Interval(Real, 0, None, closed="left"), StrOptions({"auto"})],
        "balance_weight": [Interval(Real, 0, None, closed="left")],
        "knn_method": [StrOptions({"auto", "exact", "hnsw", "ivf"})],
        "large_scale": [StrOptions({"auto"}), "boolean"],
        "spectral_views": ["array-like", None],
        "spectral_refine": ["boolean"],
        "device": [StrOptions({"cpu", "cuda", "auto"})],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        n_clusters: int | str = 10,
        method: str = "tac",
        *,
        k_range: tuple[int, int] = (2, 30),
        n_centres: int | None = None,
        nouns_per_centre: int = 5,
        noun_temperature: float = 1.0,
        noun_pool: int = NOUN_POOL,
        tau: float = 0.005,
        text_weight: float = 1.0,
        n_neighbors: int = 50,
        knn_method: str = "auto",
        spectral_neighbors: int = 20,
        spectral_views: Sequence[float] | None = None,
        spectral_refine: bool = False,
        large_scale="auto",
        n_epochs: int = 20,
        min_steps: int = 200,
        batch_size: int = 512,
        learning_rate: float = 1e-3,
        temperature: float = 0.5,
        balance_weight: float = 5.0,
        kmeans_n_init: int = 10,
        kmeans_n_iter: int = 300,
        centres_n_init: int = 3,
        consensus: int = 0,
        feature_power: float = 1.0,
        device: str = "cpu",
        random_state=0,
        verbose: bool = False,
    ):
        self.n_clusters = n_clusters
        self.k_range = k_range
        self.method = method
        self.n_centres = n_centres
        self.nouns_per_centre = nouns_per_centre
        self.noun_temperature = noun_temperature
        self.noun_pool = noun_pool
        self.tau = tau
        self.text_weight = text_weight
        self.n_neighbors = n_neighbors
        self.knn_method = knn_method
        self.spectral_neighbors = spectral_neighbors
        self.spectral_views = spectral_views
        self.spectral_refine = spectral_refine
        self.large_scale = large_scale
        self.n_epochs = n_epochs
        self.min_steps = min_steps
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.temperature = temperature
        self.balance_weight = balance_weight
        self.kmeans_n_init = kmeans_n_init
        self.kmeans_n_iter = kmeans_n_iter
        self.centres_n_init = centres_n_init
        self.consensus = consensus
        self.feature_power = feature_power
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ checks
    def validate_params(self) -> None:
        """Check every setting as ``fit`` does first, without data (raises :class:`InputError`)."""
        self._check_params()

    def _check_params(self) -> None:
        # one table (_parameter_constraints) for each setting alone; the rules between settings below
        try:
            self._validate_params()
        except InvalidParameterError as exc:
            raise InputError(str(exc)) from None
        if self.noun_pool < self.nouns_per_centre:
            raise InputError(f"noun_pool={self.noun_pool} must be >= nouns_per_centre={self.nouns_per_centre}")
        if self.consensus == 1:
            raise InputError("consensus=1 combines nothing; use 0 (best of the restarts) or >= 2 partitions, e.g. 20")
        if self.consensus >= 2 and self.method not in CONSENSUS_METHODS:
            raise InputError(f"consensus={self.consensus} combines k-means runs, which method={self.method!r} does "
                             f"not make; use it with method {' / '.join(map(repr, CONSENSUS_METHODS))}, or drop it")
        if self.spectral_views is not None:
            views = np.asarray(self.spectral_views, dtype=object).ravel()
            if not len(views) or not all(isinstance(p, (int, float, np.number)) and not isinstance(p, bool)
                                         and p > 0 for p in views):
                raise InputError(f"spectral_views={self.spectral_views!r} must be a non-empty list of positive "
                                 "feature powers, e.g. [1.0, 0.5]")
        for name in ("spectral_views", "spectral_refine"):
            if getattr(self, name) not in (None, False) and self.method != "spectral":
                why = ("is chosen by method='auto' (its graph candidate uses views [1, 0.5], refined)"
                       if self.method == "auto" else f"shapes the graph cut of method='spectral', which "
                       f"method={self.method!r} does not make")
                raise InputError(f"{name}={getattr(self, name)!r} {why}; drop it, or use method='spectral'")
        if self.method == "auto" and self.feature_power != 1.0:
            raise InputError(f"feature_power={self.feature_power} is chosen by method='auto' (its candidates use 1 "
                             "and 0.5); drop it, or give a method such as 'spectral'")
        if self.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise InputError("device='cuda' was asked for but no CUDA GPU is available; use 'cpu' or 'auto'")

    def _seed(self) -> int:
        return int(check_random_state(self.random_state).randint(0, 2**31 - 1)) if not isinstance(
            self.random_state, (int, np.integer)
        ) else int(self.random_state)

    # ------------------------------------------------------------------- fit
    def fit(
        self,
        image_embeddings,
        noun_embeddings=None,
        nouns: Sequence[str] | None = None,
        *,
        joint_embeddings=None,
        exact_noun_embeddings=None,
    ) -> "TextAidedClustering":
        """Cluster the images.

        Parameters
        ----------
        image_embeddings : array-like of shape (n_samples, d)
            Image-side features u (CLIP image embeddings); L2-normalised here.
        noun_embeddings : array-like of shape (n_nouns, d_joint), optional
            The noun bank t (required unless ``method="kmeans"``).
        nouns : sequence of str of length n_nouns, optional
            The words of the noun bank (for ``kept_nouns_`` and cluster names).
        joint_embeddings : array-like of shape (n_samples, d_joint), optional
            The images in the noun space; defaults to ``image_embeddings``
            (right for CLIP, where images and nouns share one space).
        exact_noun_embeddings : callable, optional
            Maps sorted rows (int64) of ``noun_embeddings`` to their exact
            vectors, shape (m, d_joint). When given, ``noun_embeddings`` is a
            cheap bank that only ranks the nouns: each semantic centre's
            ``noun_pool`` best candidates are embedded exactly and the
            selection runs on them; ``kept_noun_embeddings_`` are exact.

        Returns
        -------
        self

        Warns
        -----
        CollapseWarning
            When fewer distinct clusters than ``n_clusters`` come out, or (``"tac"``)
            either trained head puts the samples in fewer clusters than that.
        """
        self._check_params()
        timings: dict[str, float] = {}
        u_in = checked_images(image_embeddings, self.large_scale)
        self.choice_ = None
        self.feature_power_ = 1.0 if self.method == "auto" else float(self.feature_power)
        n, seed = u_in.shape[0], self._seed()
        large = self.large_scale_ = use_large_scale(n, self.large_scale)
        if large and self.consensus >= 2:
            raise InputError(f"consensus={self.consensus} is not used on the large-N path ({n} samples, "
                             f"large_scale={self.large_scale!r}): drop it, or pass large_scale=False")
        # On the large-N path the power view is computed per block of rows, never whole.
        u = self._image_view(u_in, lazy=large)
        k = self.n_clusters_ = self._resolve_k(u, seed, timings)
        self._reset_fitted(u)
        if self.method == "auto":
            self._fit_auto(u_in, k, seed, timings)
        elif self.method == "kmeans":
            self._fit_kmeans(u, k, large, seed, timings)
        elif self.method == "spectral":
            self._fit_spectral(u, k, large, seed, timings)
        else:
            s = self._fit_text_side(u, joint_embeddings, noun_embeddings, nouns, k, large, seed, timings,
                                    exact_noun_embeddings)
            if self.method == "no-train":
                self._fit_no_train(u, s, k, large, seed, timings)
            else:
                self._fit_tac(u, s, k, large, seed, timings)
        self._warn_if_collapsed(k)
        self.timings_ = timings
        return self

    def _warn_if_collapsed(self, k: int) -> None:
        """A :class:`CollapseWarning` when fewer than ``k`` clusters came out (``"tac"``: of either head)."""
        found = int(np.unique(self.labels_).size)
        if self.method == "tac":
            from tacluster.train.loop import head_probabilities

            used = np.zeros(k, dtype=bool)
            for sl in iter_blocks(self.counterparts_.shape[0]):  # the text head's argmax on s, per block
                used[head_probabilities(self.text_head_, self.counterparts_[sl]).argmax(1)] = True
            text = int(used.sum())
            if found < k or text < k:
                warnings.warn(
                    f"the trained heads collapsed: the image head puts the images in {found} and the text head "
                    f"in {text} of the n_clusters={k} clusters asked for; try a larger balance_weight (now "
                    f"{self.balance_weight:g}), more epochs, or fewer clusters", CollapseWarning, stacklevel=3)
        elif found < k:
            method = self.method if self.choice_ is None else f"auto, chose {self.choice_.method}"
            warnings.warn(
                f"the fit produced {found} distinct clusters of the n_clusters={k} asked for (method={method!r}); "
                "the data holds fewer distinct groups than that: ask for fewer clusters", CollapseWarning,
                stacklevel=3)

    # ------------------------------------------------------------ fit stages
    def _resolve_k(self, u: np.ndarray, seed: int, timings: dict) -> int:
        """K as given, or estimated (``n_clusters="auto"``, :mod:`tacluster.cluster.choose_k`; its
        default criterion reads the image side only, so no text view is passed)."""
        n = u.shape[0]
        self.auto_k_ = None
        if not isinstance(self.n_clusters, str):
            return check_n_clusters(self.n_clusters, n)
        check_choice(self.n_clusters, "n_clusters", ("auto",))
        from tacluster.cluster.choose_k import estimate_n_clusters, search_range

        tic = time.perf_counter()
        self.auto_k_ = estimate_n_clusters(u, k_range=search_range(n, self.k_range), seed=seed)
        timings["auto_k"] = time.perf_counter() - tic
        return int(self.auto_k_.k)

    def _reset_fitted(self, u: np.ndarray) -> None:
        self.n_features_in_ = u.shape[1]
        self.cluster_centers_ = None
        self.image_head_ = self.text_head_ = None
        self.loss_history_ = []
        self.counterparts_ = None
        self.kept_noun_indices_ = np.zeros(0, dtype=np.int64)
        self.kept_nouns_ = []
        self.kept_noun_embeddings_ = None
        self.noun_pool_ = None
        self.n_joint_features_ = None
        self.trust_ = None
        self.text_weight_ = None if self.text_weight == "auto" else float(self.text_weight)

    def _kmeans_iter(self, large: bool) -> int:
        return min(self.kmeans_n_iter, KMEANS_N_ITER) if large else self.kmeans_n_iter

    def _fit_auto(self, u_in: np.ndarray, k: int, seed: int, timings: dict) -> None:
        from tacluster.cluster.choose_method import choose_method

        tic = time.perf_counter()
        # every setting a candidate takes (consensus, spectral_neighbors, ...), as the method itself would get it
        shared = {name: v for name, v in self.get_params().items() if name not in _NOT_FORWARDED}

        def fit_candidate(params: dict) -> "TextAidedClustering":
            p = {**shared, **params, "random_state": seed}
            if p["method"] not in CONSENSUS_METHODS:
                p["consensus"] = 0  # e.g. the spectral candidates: no k-means of theirs to replace
            with warnings.catch_warnings():  # a candidate's collapse is the chosen one's only if it is chosen
                warnings.simplefilter("ignore", CollapseWarning)
                return TextAidedClustering(k, **p).fit(u_in)

        self.choice_, chosen = choose_method(u_in, k, fit_candidate, seed=seed, large_scale=self.large_scale)
        self.feature_power_ = float(chosen.feature_power_)
        self.cluster_centers_ = chosen.cluster_centers_
        self.probabilities_ = chosen.probabilities_
        self.labels_, self.confidence_ = chosen.labels_, chosen.confidence_
        timings["choose_method"] = time.perf_counter() - tic

    def _fit_kmeans(self, u: np.ndarray, k: int, large: bool, seed: int, timings: dict) -> None:
        tic = time.perf_counter()
        if large:
            res, conf = sampled_kmeans([u], k, n_iter=self._kmeans_iter(large), seed=seed + 1)
            self.cluster_centers_ = res.centroids
            self._set_labels(res.labels, conf)
        else:
            res = self._final_kmeans(u, k, seed + 1)
            self.cluster_centers_ = res.centroids
            self._set_assignment(*assign([u], res.centroids, proba=True))
        timings["kmeans"] = time.perf_counter() - tic

    def _fit_spectral(self, u: np.ndarray, k: int, large: bool, seed: int, timings: dict) -> None:
        tic = time.perf_counter()
        graph_u = u
        if self.spectral_views is not None:
            powers = [float(p) for p in np.asarray(self.spectral_views, dtype=np.float64).ravel()]
            graph_u = ViewsRows(u, powers) if large else concatenated_views(u, powers)
        if large or k > SPECTRAL_EXACT_MAX_CLUSTERS:  # the exact eigensolver cannot finish (docs/scaling.md)
            # Restarts of the embedding's k-means cost n_init x 256 K x K^2: all of
            # them up to 100 clusters (100k images, K = 50: ACC 85.0 with 10, 77.7
            # with 1, before the embedding's rows were scaled to unit length; 88.1
            # now), one above (K = 1000: 10 TFLOP per restart).
            restarts = self.kmeans_n_init if (not large or k <= 100) else 1
            labels = landmark_spectral_cluster(graph_u, k, seed=seed + 1, n_init=restarts,
                                               n_iter=self._kmeans_iter(large))
        else:
            labels = spectral_cluster(graph_u, k, n_neighbors=self.spectral_neighbors, seed=seed + 1,
                                      n_init=self.kmeans_n_init)
        if self.spectral_refine:
            labels = refined_kmeans(u, labels, k, n_iter=self._kmeans_iter(large), seed=seed + 1,
                                    points_per_cluster=KMEANS_POINTS_PER_CLUSTER if large else None)
        # Every image, fitted or new, goes to the nearest normalised mean of
        # the graph's clusters, so `predict` agrees with `labels_`. That one
        # reassignment also scored higher than the graph's own labels
        # (transductive ACC, 3 seeds: 15-Scene 85.7 vs 84.8, CIFAR-10 3k
        # 49.8 vs 48.5).
        self.cluster_centers_ = normalised_means(u, labels, k)
        timings["spectral"] = time.perf_counter() - tic
        if large:  # no N x K probability matrix
            self._set_labels(*assign([u], self.cluster_centers_))
        else:
            self._set_assignment(*assign([u], self.cluster_centers_, proba=True))

    def _fit_text_side(self, u, joint_embeddings, noun_embeddings, nouns, k, large, seed, timings,
                       exact_noun_embeddings=None) -> np.ndarray:
        """Semantic centres, noun selection and retrieval (METHOD.md stages 1-2); returns s."""
        n = u.shape[0]
        joint, bank, words = self._check_text_inputs(u, joint_embeddings, noun_embeddings, nouns, k)
        self.n_joint_features_ = joint.shape[1]
        tic = time.perf_counter()
        n_centres = self.n_centres if self.n_centres is not None else default_n_centres(n, k)
        if n_centres > n:
            raise InputError(f"n_centres={n_centres} is larger than the {n} samples; use n_centres <= {n}")
        if large:
            centres = semantic_centres(joint, n_centres, points_per_centre=CENTRE_POINTS_PER_CENTRE,
                                       n_iter=min(self.kmeans_n_iter, CENTRE_N_ITER), n_init=1, seed=seed)
        else:
            centres = semantic_centres(joint, n_centres, seed=seed, n_iter=self.kmeans_n_iter,
                                       n_init=self.centres_n_init)
        timings["centres"] = time.perf_counter() - tic

        tic = time.perf_counter()
        if exact_noun_embeddings is None:
            sel = select_nouns(centres, bank, per_centre=self.nouns_per_centre, temperature=self.noun_temperature)
            kept = np.ascontiguousarray(bank[sel.indices])
        else:
            self.noun_pool_ = cand = select_from_candidates(
                centres, bank, exact_noun_embeddings, pool=self.noun_pool, per_centre=self.nouns_per_centre,
                temperature=self.noun_temperature)
            sel, kept = cand.selection, cand.kept_embeddings
        timings["noun_selection"] = time.perf_counter() - tic
        self.semantic_centres_ = centres
        self.kept_noun_indices_ = sel.indices
        self.kept_noun_confidence_ = sel.confidence
        self.kept_nouns_ = [words[i] for i in sel.indices]
        self.kept_noun_embeddings_ = kept

        tic = time.perf_counter()
        s = self.counterparts_ = self._counterparts(joint)
        timings["retrieval"] = time.perf_counter() - tic
        return s

    def _fit_no_train(self, u, s, k, large, seed, timings) -> None:
        """k-means on ``[u, w s]`` (TAC without training)."""
        if self.text_weight == "auto":
            from tacluster.cluster.text_weight import choose_text_weight

            tic = time.perf_counter()
            self.trust_ = choose_text_weight(u, s, k, seed=seed)
            self.text_weight_ = self.trust_.text_weight
            timings["trust"] = time.perf_counter() - tic
        tic = time.perf_counter()
        w = self.text_weight_
        if large:
            res, conf = sampled_kmeans([u, s], k, weights=[1.0, w], n_iter=self._kmeans_iter(large),
                                             seed=seed + 1)
            self.cluster_centers_ = res.centroids
            self._set_labels(res.labels, conf)
        else:
            res = self._final_kmeans(joint_features(u, s, w), k, seed + 1)
            self.cluster_centers_ = res.centroids
            self._set_assignment(*assign([u, s], res.centroids, weights=[1.0, w], proba=True))
        timings["kmeans"] = time.perf_counter() - tic

    def _fit_tac(self, u, s, k, large, seed, timings) -> None:
        """Neighbours of both views, then the two heads by cross-modal mutual distillation."""
        from tacluster._device import resolve_device
        from tacluster.train.loop import TrainSettings, head_probabilities, train_heads  # torch-heavy; "tac" only

        n = u.shape[0]
        u = np.asarray(u, dtype=np.float32)  # a row view made whole: the neighbour search and training read all rows
        tic = time.perf_counter()
        n_nb = min(self.n_neighbors, n - 1)
        if resolve_device(self.device).startswith("cuda") and self.knn_method in ("auto", "exact"):
            # exact on the GPU: at 50k x 512 on an H200 far faster than faiss-cpu
            nn_u = neighbours.knn_torch(u, n_nb, device="cuda")
            nn_s = neighbours.knn_torch(s, n_nb, device="cuda")
        else:
            nn_u = neighbours.knn(u, n_nb, method=self.knn_method, seed=seed)
            nn_s = neighbours.knn(s, n_nb, method=self.knn_method, seed=seed)
        timings["knn"] = time.perf_counter() - tic
        tic = time.perf_counter()
        settings = TrainSettings(**{f: getattr(self, f) for f in TrainSettings.__dataclass_fields__})
        result = train_heads(u, s, nn_u, nn_s, k, settings, seed=seed + 2, device=self.device, progress=self.verbose)
        timings["train"] = time.perf_counter() - tic
        self.image_head_, self.text_head_ = result.image_head, result.text_head
        self.loss_history_ = result.history
        if large:  # argmax and max per block; the full N x K matrix is not kept
            labels = np.empty(n, dtype=np.int64)
            conf = np.empty(n, dtype=np.float32)
            for sl in iter_blocks(n):
                p = head_probabilities(self.image_head_, u[sl])
                labels[sl], conf[sl] = p.argmax(1), p.max(1)
            self._set_labels(labels, conf)
        else:
            self._set_outputs(head_probabilities(self.image_head_, u))

    def _final_kmeans(self, x: np.ndarray, k: int, seed: int):
        if self.consensus >= 2:
            return consensus_kmeans(x, k, n_partitions=self.consensus, seed=seed, n_iter=self.kmeans_n_iter)
        return kmeans_cluster(x, k, seed=seed, n_iter=self.kmeans_n_iter, n_init=self.kmeans_n_init)

    def _check_text_inputs(self, u, joint_embeddings, noun_embeddings, nouns, k):
        if noun_embeddings is None:
            raise InputError(
                f"method={self.method!r} needs noun_embeddings (the noun bank); "
                "pass them, or use method='kmeans' for image-only clustering"
            )
        joint = u if joint_embeddings is None else as_float_matrix(joint_embeddings, "joint_embeddings")
        if joint.shape[0] != u.shape[0]:
            raise InputError(
                f"joint_embeddings has {joint.shape[0]} rows but image_embeddings has {u.shape[0]}; "
                "give one row per image in both"
            )
        bank = as_float_matrix(noun_embeddings, "noun_embeddings")
        if bank.shape[1] != joint.shape[1]:
            what = "image_embeddings" if joint_embeddings is None else "joint_embeddings"
            raise InputError(
                f"noun_embeddings have width {bank.shape[1]} but {what} have width {joint.shape[1]}; "
                "nouns and images must come from the same vision-language model"
            )
        if bank.shape[0] < k:
            raise InputError(
                f"the vocabulary has {bank.shape[0]} nouns, fewer than n_clusters={k}; "
                "use a larger vocabulary (e.g. WordNet nouns) or method='kmeans'"
            )
        if nouns is None:
            words = [f"noun{i}" for i in range(bank.shape[0])]
        else:
            words = [str(w) for w in nouns]
            if len(words) != bank.shape[0]:
                raise InputError(
                    f"got {len(words)} nouns for {bank.shape[0]} noun embeddings; give one word per row"
                )
        return joint, bank, words

    def _set_labels(self, labels: np.ndarray, confidence: np.ndarray) -> None:
        self.probabilities_ = None
        self.labels_ = np.asarray(labels, dtype=np.int64)
        self.confidence_ = np.asarray(confidence, dtype=np.float32)

    def _set_assignment(self, labels: np.ndarray, confidence: np.ndarray, proba: np.ndarray) -> None:
        self.probabilities_ = proba
        self.labels_ = labels
        self.confidence_ = confidence

    def _counterparts(self, joint: np.ndarray) -> np.ndarray:
        """Text counterparts by the retrieval ``fit`` used (top-k on the large-N path)."""
        top = RETRIEVAL_TOP if getattr(self, "large_scale_", False) else None
        return retrieve_counterparts(joint, self.kept_noun_embeddings_, tau=self.tau, top=top)

    def _assign_new(self, u: np.ndarray, joint: np.ndarray, proba: bool):
        """:func:`tacluster.cluster.kmeans.assign` of new rows, exactly as ``fit`` assigned its own."""
        if self.method in ("kmeans", "spectral", "auto"):
            return assign([u], self.cluster_centers_, proba=proba)
        s = self._counterparts(joint)
        return assign([u, s], self.cluster_centers_, weights=[1.0, self.text_weight_], proba=proba)

    def _set_outputs(self, proba: np.ndarray) -> None:
        self.probabilities_ = proba
        self.labels_ = proba.argmax(axis=1).astype(np.int64)
        self.confidence_ = proba.max(axis=1).astype(np.float32)

    # --------------------------------------------------------------- predict
    def __sklearn_is_fitted__(self) -> bool:
        """What :func:`sklearn.utils.validation.check_is_fitted` asks."""
        return hasattr(self, "labels_") or hasattr(self, "_loaded")

    def _check_fitted(self) -> None:
        """scikit-learn's ``check_is_fitted``, raising tacluster's :class:`NotFittedError` (also sklearn's)."""
        try:
            check_is_fitted(self)
        except _SklearnNotFittedError:
            raise NotFittedError(
                "this TextAidedClustering is not fitted yet; call fit(...) or load a saved model first"
            ) from None

    def _image_view(self, u: np.ndarray, *, lazy: bool = False):
        """``u`` after the ``feature_power`` normalisation (``u`` itself at 1);
        ``lazy``: a :class:`tacluster._blocks.PowerRows` view (same values, computed per block)."""
        p = float(getattr(self, "feature_power_", self.feature_power))
        if p == 1.0:
            return u
        return PowerRows(u, p) if lazy else power_normalise(u, p)

    def _inputs_for_predict(self, image_embeddings, joint_embeddings):
        # Only blocked passes (assign, the head) read u here: the power view is never materialised.
        u = self._image_view(checked_images(image_embeddings, self.large_scale), lazy=True)
        if u.shape[1] != self.n_features_in_:
            raise InputError(
                f"image_embeddings have width {u.shape[1]} but the model was fitted on width "
                f"{self.n_features_in_}; embed the images with the same backbone as the model"
            )
        joint = None
        if self.method == "no-train":
            if joint_embeddings is None and u.shape[1] != self.n_joint_features_:
                raise InputError(
                    f"this method='no-train' model was fitted with joint_embeddings (the images in the noun "
                    f"space, width {self.n_joint_features_}); pass them for the new images too: "
                    "predict(image_embeddings, joint_embeddings=...)"
                )
            joint = u if joint_embeddings is None else as_float_matrix(joint_embeddings, "joint_embeddings")
            if joint.shape[1] != self.n_joint_features_ or joint.shape[0] != u.shape[0]:
                raise InputError(
                    f"joint_embeddings must have shape ({u.shape[0]}, {self.n_joint_features_}); "
                    f"got {joint.shape}"
                )
        return u, joint

    def predict_proba(self, image_embeddings, *, joint_embeddings=None) -> np.ndarray:
        """Cluster probabilities of new images, shape (n_samples, n_clusters)."""
        self._check_fitted()
        u, joint = self._inputs_for_predict(image_embeddings, joint_embeddings)
        if self.method != "tac":
            return self._assign_new(u, joint, proba=True)[2]
        from tacluster.train.loop import head_probabilities

        return head_probabilities(self.image_head_, u)

    def predict(self, image_embeddings, *, joint_embeddings=None) -> np.ndarray:
        """Cluster index of each new image, shape (n_samples,). For ``"tac"``
        only the image embeddings are needed (argmax of the image head); the
        other methods assign exactly as ``fit`` did (:func:`tacluster.cluster.kmeans.assign`)."""
        if self.method == "tac":
            return self.predict_proba(image_embeddings, joint_embeddings=joint_embeddings).argmax(axis=1)
        self._check_fitted()
        u, joint = self._inputs_for_predict(image_embeddings, joint_embeddings)
        return self._assign_new(u, joint, proba=False)[0]

    def predict_with_confidence(self, image_embeddings, *, joint_embeddings=None) -> tuple[np.ndarray, np.ndarray]:
        """``(labels, confidence)`` of new images, each of shape (n_samples,): the argmax and
        max of :meth:`predict_proba` (what ``confidence_`` is for the fitted rows), computed
        in blocks without the (n_samples, n_clusters) matrix."""
        self._check_fitted()
        u, joint = self._inputs_for_predict(image_embeddings, joint_embeddings)
        if self.method != "tac":
            return self._assign_new(u, joint, proba=False)
        from tacluster.train.loop import head_probabilities

        labels = np.empty(u.shape[0], dtype=np.int64)
        conf = np.empty(u.shape[0], dtype=np.float32)
        for sl in iter_blocks(u.shape[0]):
            p = head_probabilities(self.image_head_, u[sl])
            labels[sl], conf[sl] = p.argmax(1), p.max(1)
        return labels, conf

    def fit_predict(self, image_embeddings, noun_embeddings=None, nouns=None, *, joint_embeddings=None,
                    exact_noun_embeddings=None):
        """``fit`` then return ``labels_``."""
        return self.fit(image_embeddings, noun_embeddings, nouns, joint_embeddings=joint_embeddings,
                        exact_noun_embeddings=exact_noun_embeddings).labels_

    def transform(self, image_embeddings, *, joint_embeddings=None) -> np.ndarray:
        """Text counterparts of new images, shape (n_samples, d_joint)."""
        self._check_fitted()
        if self.kept_noun_embeddings_ is None:
            raise NotFittedError(f"method={self.method!r} has no text side; transform needs 'tac' or 'no-train'")
        joint = as_float_matrix(image_embeddings if joint_embeddings is None else joint_embeddings, "joint_embeddings")
        if joint.shape[1] != self.kept_noun_embeddings_.shape[1]:
            raise InputError(
                f"embeddings have width {joint.shape[1]}, the noun space has width "
                f"{self.kept_noun_embeddings_.shape[1]}; pass joint_embeddings from the same backbone"
            )
        return self._counterparts(joint)

    # ------------------------------------------------------------ save/load
    def save(self, path, *, metadata: dict | None = None) -> Path:
        """Save what ``predict`` needs to directory ``path``: ``config.json`` +
        ``arrays.safetensors`` (no pickle). ``metadata`` (e.g. the backbone name
        and fingerprint) is stored in the config and returned by :meth:`load`
        as ``metadata_``. Returns the directory."""
        from tacluster.persistence import save_model

        return save_model(self, path, metadata=metadata)

    @classmethod
    def load(cls, path) -> "TextAidedClustering":
        """Rebuild a saved model from ``config.json`` + ``arrays.safetensors``.

        Never unpickles or executes anything from the directory. Raises
        :class:`ModelFileError` when files are missing, corrupted or
        inconsistent.
        """
        from tacluster.persistence import load_model

        return load_model(cls, path)
