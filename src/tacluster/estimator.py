"""The public estimator: ``TextAidedClustering`` (scikit-learn style).

It validates the settings, resolves K, fits the text side for the methods that
use one, hands the rest to the method's fitter (:mod:`tacluster.methods`) and
keeps the fitted model it returns; ``predict`` is that model's ``assign``.
"""

from __future__ import annotations

import time
import warnings
from numbers import Integral, Real
from pathlib import Path
from typing import Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.exceptions import NotFittedError as _SklearnNotFittedError
from sklearn.utils import check_random_state
from sklearn.utils._available_if import available_if
from sklearn.utils._param_validation import Interval, InvalidParameterError, StrOptions
from sklearn.utils.validation import check_is_fitted

from tacluster._scale import LARGE_SCALE_MIN_SAMPLES, checked_images, use_large_scale  # noqa: F401 (re-exported)
from tacluster._validation import as_float_matrix, check_choice, check_n_clusters
from tacluster.cluster.model import Assignment, Fitted, image_view
from tacluster.counterparts.candidates import NOUN_POOL
from tacluster.counterparts.side import TextFit, check_text_inputs, fit_text_side
from tacluster.errors import CollapseWarning, InputError, NotFittedError, UnusedSettingWarning
from tacluster.methods import (
    CONSENSUS_METHODS,
    METHODS,
    TEXT_METHODS,
    call_with_settings,
    check_combinations,
    collapse_message,
    fit_method,
    unused_settings,
)

__all__ = ["METHODS", "TextAidedClustering"]


def _from_model(attr: str, default=None, *, text: bool = False, doc: str = "") -> property:
    """A fitted attribute read from the kept model (``text``: from its text side)."""
    def get(self):
        owner = getattr(self.model_, "text", None) if text else self.model_
        return getattr(owner, attr, default) if owner is not None else default

    return property(get, doc=doc)


def _legacy_noun_args(y, legacy: tuple, noun_embeddings, nouns):
    """``fit(X, noun_embeddings, nouns)``, the positional form before ``fit(X, y=None, ...)``,
    still read (a 2-D ``y`` is never a clusterer's labels), with a FutureWarning."""
    if y is None or np.ndim(y) != 2:
        if legacy:
            raise InputError("fit(X, y, ...) takes the noun bank by keyword: fit(X, noun_embeddings=..., nouns=...)")
        return noun_embeddings, nouns  # y: labels or None, ignored
    if noun_embeddings is not None or len(legacy) > 1:
        raise InputError("the noun bank was given twice (as y and as noun_embeddings); pass noun_embeddings= only")
    warnings.warn("fit(X, noun_embeddings, nouns) with the noun bank in y's place is deprecated; pass it by "
                  "keyword: fit(X, noun_embeddings=..., nouns=...)", FutureWarning, stacklevel=3)
    return y, (legacy[0] if legacy else nouns)


def _has_text_side(est: "TextAidedClustering") -> bool:
    """Whether the method fits a text side (``transform`` exists only then, as ``hasattr`` says)."""
    if est.method not in TEXT_METHODS:
        raise AttributeError(f"method={est.method!r} has no text side; transform needs 'tac' or 'no-train'")
    return True


class TextAidedClustering(ClusterMixin, BaseEstimator):
    """Text-Aided Clustering (TAC, Li et al., ICML 2024) on embedding arrays.

    Parameters
    ----------
    n_clusters : int or "auto", default=10
        K, the number of clusters; ``"auto"`` estimates it from the data
        (:func:`tacluster.choices.choose_k.estimate_n_clusters`, within ``k_range``).
    method : {"tac", "no-train", "kmeans", "spectral", "auto"}, default="tac"
        ``"tac"``: counterparts + cross-modal mutual distillation (the paper's
        TAC); ``"no-train"``: k-means on ``[u, text_weight * s]``;
        ``"kmeans"``: k-means on the image embeddings alone (baseline);
        ``"spectral"``: spectral clustering of the image kNN graph (image side
        only); ``"auto"``: the two candidates of
        :data:`tacluster.choices.choose_method.IMAGE_CANDIDATES` are fitted (spectral
        on the raw and power-normalised views side by side, refined by k-means;
        and k-means) and the graph one is kept unless k-means's partition follows
        the collection's kNN graph better (label-free,
        :func:`tacluster.choices.choose_method.choose_method`; the decision is
        ``choice_``, and a saved model is the chosen method's).
        ``"auto"`` is tacluster's default with the offline backbone.
    n_centres : int or None, default=None
        Semantic centres L for noun selection; None = ``max(N // 300, 3K)``
        capped at N // 2 (see :func:`tacluster.counterparts.retrieval.default_n_centres`).
    nouns_per_centre : int, default=5
        Nouns each centre keeps.
    noun_temperature : float, default=1.0
        Temperature of the noun-to-centre softmax (paper: none, i.e. 1).
    noun_pool : int, default=200
        With ``fit(..., exact_noun_embeddings=...)`` only: candidates per centre
        ranked with the cheap bank and then embedded exactly
        (:func:`tacluster.counterparts.candidates.select_from_candidates`).
    tau : float, default=0.005
        Retrieval softmax temperature.
    text_weight : float or "auto", default=1.0
        Weight of the counterpart in ``[u, w * s]`` for ``"no-train"``.
        ``"auto"``: chosen per collection, without labels, by
        :func:`tacluster.choices.text_weight.choose_text_weight` (0 = image-only k-means
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
    model_ : CentroidModel or HeadsModel
        The fitted model that ``predict`` assigns with
        (:class:`tacluster.cluster.model.CentroidModel`,
        :class:`tacluster.train.model.HeadsModel`); the attributes below that
        describe it (centroids, heads, kept nouns) are read from it.
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
    #: K needs the sample count (``check_n_clusters``, ``choose_k.search_range``); the rules
    #: between settings are :func:`tacluster.methods.check_combinations`.
    _parameter_constraints: dict = {
        "n_clusters": "no_validation",  # check_n_clusters: against the samples
        "method": [StrOptions(set(METHODS))],
        "k_range": "no_validation",  # choose_k checks it against the samples
        "n_centres": [Interval(Integral, 1, None, closed="left"), None],
        **{name: [Interval(Integral, 1, None, closed="left")] for name in (
            "nouns_per_centre", "noun_pool", "n_neighbors", "spectral_neighbors", "n_epochs", "batch_size",
            "kmeans_n_init", "kmeans_n_iter", "centres_n_init")},
        **{name: [Interval(Integral, 0, None, closed="left")] for name in ("min_steps", "consensus")},
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
        self, n_clusters: int | str = 10, method: str = "tac", *, k_range: tuple[int, int] = (2, 30),
        n_centres: int | None = None, nouns_per_centre: int = 5, noun_temperature: float = 1.0,
        noun_pool: int = NOUN_POOL, tau: float = 0.005, text_weight: float | str = 1.0, n_neighbors: int = 50,
        knn_method: str = "auto", spectral_neighbors: int = 20, spectral_views: Sequence[float] | None = None,
        spectral_refine: bool = False, large_scale: bool | str = "auto", n_epochs: int = 20, min_steps: int = 200,
        batch_size: int = 512, learning_rate: float = 1e-3, temperature: float = 0.5, balance_weight: float = 5.0,
        kmeans_n_init: int = 10, kmeans_n_iter: int = 300, centres_n_init: int = 3, consensus: int = 0,
        feature_power: float = 1.0, device: str = "cpu", random_state=0, verbose: bool = False,
    ):
        self.n_clusters, self.method, self.k_range = n_clusters, method, k_range
        self.n_centres, self.nouns_per_centre, self.noun_temperature = n_centres, nouns_per_centre, noun_temperature
        self.noun_pool, self.tau, self.text_weight = noun_pool, tau, text_weight
        self.n_neighbors, self.knn_method, self.spectral_neighbors = n_neighbors, knn_method, spectral_neighbors
        self.spectral_views, self.spectral_refine, self.large_scale = spectral_views, spectral_refine, large_scale
        self.n_epochs, self.min_steps, self.batch_size = n_epochs, min_steps, batch_size
        self.learning_rate, self.temperature, self.balance_weight = learning_rate, temperature, balance_weight
        self.kmeans_n_init, self.kmeans_n_iter, self.centres_n_init = kmeans_n_init, kmeans_n_iter, centres_n_init
        self.consensus, self.feature_power, self.device = consensus, feature_power, device
        self.random_state, self.verbose = random_state, verbose

    # ------------------------------------------------------------------ checks
    def validate_params(self) -> None:
        """Check every setting as ``fit`` does first, without data (raises :class:`InputError`)."""
        try:
            self._validate_params()
        except InvalidParameterError as exc:
            raise InputError(str(exc)) from None
        check_combinations(self.get_params())

    def _seed(self) -> int:
        if isinstance(self.random_state, (int, np.integer)):
            return int(self.random_state)
        return int(check_random_state(self.random_state).randint(0, 2**31 - 1))

    # ------------------------------------------------------------------- fit
    def fit(self, X, y=None, *legacy, noun_embeddings=None, nouns: Sequence[str] | None = None,
            joint_embeddings=None, exact_noun_embeddings=None) -> "TextAidedClustering":
        """Cluster the images.

        Parameters
        ----------
        X : array-like of shape (n_samples, d)
            Image-side features u (CLIP image embeddings); L2-normalised here.
        y : None
            Ignored (scikit-learn's convention for clusterers). The older form
            ``fit(X, noun_embeddings, nouns)`` is still read, with a FutureWarning.
        noun_embeddings : array-like of shape (n_nouns, d_joint), optional
            The noun bank t (required by ``"tac"`` and ``"no-train"``).
        nouns : sequence of str of length n_nouns, optional
            The words of the noun bank (for ``kept_nouns_`` and cluster names).
        joint_embeddings : array-like of shape (n_samples, d_joint), optional
            The images in the noun space; defaults to ``X`` (right for CLIP,
            where images and nouns share one space).
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
        noun_embeddings, nouns = _legacy_noun_args(y, legacy, noun_embeddings, nouns)
        self.validate_params()
        for line in unused_settings(self.get_params(), type(self)().get_params()):
            warnings.warn(line, UnusedSettingWarning, stacklevel=2)
        u_in = checked_images(X, self.large_scale)
        n, seed = u_in.shape[0], self._seed()
        large = self.large_scale_ = use_large_scale(n, self.large_scale)
        if large and self.consensus >= 2:
            raise InputError(f"consensus={self.consensus} is not used on the large-N path ({n} samples, "
                             f"large_scale={self.large_scale!r}): drop it, or pass large_scale=False")
        self.feature_power_ = 1.0 if self.method == "auto" else float(self.feature_power)
        u = image_view(u_in, self.feature_power_, lazy=large)  # large N: computed per block of rows, never whole
        timings: dict[str, float] = {}
        k = self.n_clusters_ = self._resolve_k(u, seed, timings)
        self.n_features_in_, self.choice_, self.trust_ = u.shape[1], None, None
        self.text_weight_ = None if self.text_weight == "auto" else float(self.text_weight)
        fixed: dict = {"large": large, "seed": seed, "timings": timings}
        if self.method == "auto":
            fitted = self._fit_auto(u_in, k, fixed)
        else:
            if self.method in TEXT_METHODS:
                fixed["text"] = self._fit_text(u, k, fixed, noun_embeddings, nouns, joint_embeddings,
                                               exact_noun_embeddings)
                fixed["text_weight"] = self._resolve_text_weight(u, fixed["text"].counterparts, k, seed, timings)
            fitted = fit_method(self.method, u, k, self.get_params(), **fixed)
        self._keep(fitted, fixed.get("text"))
        self.timings_ = timings
        self._warn_if_collapsed(k)
        return self

    def _resolve_k(self, u, seed: int, timings: dict) -> int:
        """K as given, or estimated (``n_clusters="auto"``, :mod:`tacluster.choices.choose_k`; its
        default criterion reads the image side only, so no text view is passed)."""
        self.auto_k_ = None
        if not isinstance(self.n_clusters, str):
            return check_n_clusters(self.n_clusters, u.shape[0])
        check_choice(self.n_clusters, "n_clusters", ("auto",))
        from tacluster.choices.choose_k import estimate_n_clusters, search_range

        tic = time.perf_counter()
        self.auto_k_ = estimate_n_clusters(u, k_range=search_range(u.shape[0], self.k_range), seed=seed)
        timings["auto_k"] = time.perf_counter() - tic
        return int(self.auto_k_.k)

    def _fit_text(self, u, k: int, fixed: dict, noun_embeddings, nouns, joint_embeddings, exact) -> TextFit:
        """The text side (METHOD.md stages 1-2) on the checked inputs."""
        joint, bank, words = check_text_inputs(u, joint_embeddings, noun_embeddings, nouns, k, self.method)
        return call_with_settings(fit_text_side, (joint, bank, words, k), self.get_params(),
                                  exact_noun_embeddings=exact, **fixed)

    def _resolve_text_weight(self, u, s, k: int, seed: int, timings: dict) -> float:
        """``text_weight``, or the label-free choice (:func:`tacluster.choices.text_weight.choose_text_weight`)."""
        if self.text_weight != "auto":
            return float(self.text_weight)
        from tacluster.choices.text_weight import choose_text_weight

        tic = time.perf_counter()
        self.trust_ = choose_text_weight(u, s, k, seed=seed)
        self.text_weight_ = self.trust_.text_weight
        timings["trust"] = time.perf_counter() - tic
        return self.text_weight_

    def _fit_auto(self, u_in, k: int, fixed: dict) -> Fitted:
        """Every candidate fitted with the estimator's own settings; the label-free choice keeps one."""
        from tacluster.choices.choose_method import choose_method

        tic, params = time.perf_counter(), self.get_params()

        def fit_candidate(candidate: dict) -> Fitted:
            p = {**params, **candidate}
            if p["method"] not in CONSENSUS_METHODS:
                p["consensus"] = 0  # e.g. the spectral candidates: no k-means of theirs to replace
            u = image_view(u_in, float(p["feature_power"]), lazy=fixed["large"])
            return fit_method(p["method"], u, k, p, **{**fixed, "timings": {}})

        self.choice_, chosen = choose_method(u_in, k, fit_candidate, seed=fixed["seed"], large_scale=self.large_scale)
        self.feature_power_ = float(chosen.model.feature_power)
        fixed["timings"]["choose_method"] = time.perf_counter() - tic
        return chosen

    def _keep(self, fitted: Fitted, text: TextFit | None) -> None:
        self.model_ = fitted.model
        self.labels_, self.confidence_, self.probabilities_ = fitted.assignment
        self.loss_history_ = fitted.info.get("loss_history", [])
        self.counterparts_ = None if text is None else text.counterparts
        self.semantic_centres_ = np.zeros((0, self.n_features_in_), np.float32) if text is None else text.centres
        self.kept_noun_confidence_ = np.zeros(0, np.float32) if text is None else text.noun_confidence
        self.noun_pool_ = None if text is None else text.pool

    def _warn_if_collapsed(self, k: int) -> None:
        """A :class:`CollapseWarning` when fewer than ``k`` clusters came out (``"tac"``: of either head)."""
        text = self.model_.head_sizes(self.counterparts_) if hasattr(self.model_, "head_sizes") else None
        method = self.method if self.choice_ is None else f"auto, chose {self.choice_.method}"
        why = collapse_message(int(np.unique(self.labels_).size), text, k, method, self.balance_weight)
        if why:
            warnings.warn(why, CollapseWarning, stacklevel=3)

    # ------------------------------------------------- what the model holds
    image_head_ = _from_model("image_head", doc="The trained image head (``\"tac\"``), else None.")
    text_head_ = _from_model("text_head", doc="The trained text head (``\"tac\"``), else None.")
    kept_nouns_ = _from_model("nouns", [], text=True, doc="Words kept by noun selection.")
    kept_noun_embeddings_ = _from_model("embeddings", text=True, doc="Their vectors, (n_kept, d_joint), or None.")
    kept_noun_indices_ = _from_model("indices", np.zeros(0, dtype=np.int64), text=True, doc="Their bank rows.")
    n_joint_features_ = _from_model("width", text=True, doc="Width of the noun space, or None.")

    @property
    def cluster_centers_(self) -> np.ndarray | None:
        """The centroids images are assigned to (not ``"tac"``); settable (``tacluster move --refit-centres``)."""
        return getattr(self.model_, "centroids", None)

    @cluster_centers_.setter
    def cluster_centers_(self, value: np.ndarray) -> None:
        if not hasattr(self.model_, "centroids"):
            raise InputError(f"a method={self.method!r} model has no centroids to set")
        self.model_.centroids = value

    # --------------------------------------------------------------- predict
    def _check_fitted(self) -> None:
        """scikit-learn's ``check_is_fitted``, raising tacluster's :class:`NotFittedError` (also sklearn's)."""
        try:
            check_is_fitted(self)
        except _SklearnNotFittedError:
            raise NotFittedError(
                "this TextAidedClustering is not fitted yet; call fit(...) or load a saved model first") from None

    def _inputs(self, X, joint_embeddings):
        """``(u, joint)`` of new images, checked against the model (``joint`` None unless its assignment reads it)."""
        self._check_fitted()
        u = checked_images(X, self.large_scale)
        if u.shape[1] != self.n_features_in_:
            raise InputError(f"X has {u.shape[1]} features, but TextAidedClustering is expecting "
                             f"{self.n_features_in_} features as input (the width it was fitted on); embed the "
                             "images with the same backbone as the model")
        if not self.model_.needs_joint:
            return u, None
        nj = self.n_joint_features_
        if joint_embeddings is None and u.shape[1] != nj:
            raise InputError(f"this method={self.method!r} model was fitted with joint_embeddings (the images in "
                             f"the noun space, width {nj}); pass them for the new images too: "
                             "predict(image_embeddings, joint_embeddings=...)")
        if joint_embeddings is None:
            return u, None
        joint = as_float_matrix(joint_embeddings, "joint_embeddings")
        if joint.shape != (u.shape[0], nj):
            raise InputError(f"joint_embeddings must have shape ({u.shape[0]}, {nj}); got {joint.shape}")
        return u, joint

    def assign(self, X, *, joint_embeddings=None, proba: bool = False) -> Assignment:
        """``(labels, confidence, probabilities)`` of new images, exactly as ``fit`` assigned its own
        (probabilities only with ``proba``; otherwise computed in blocks, without the (n, K) matrix)."""
        u, joint = self._inputs(X, joint_embeddings)
        return self.model_.assign(u, joint, proba=proba)

    def features(self, X, *, joint_embeddings=None) -> tuple[list, list[float]]:
        """``(parts, weights)``: the features the model's clusters live on for new images
        (``[u]`` after ``feature_power``; ``[u, s]`` weighted ``[1, text_weight]`` for ``"no-train"``)."""
        u, joint = self._inputs(X, joint_embeddings)
        return self.model_.features(image_view(u, self.model_.feature_power, lazy=True), joint)

    def predict_proba(self, X, *, joint_embeddings=None) -> np.ndarray:
        """Cluster probabilities of new images, shape (n_samples, n_clusters)."""
        return self.assign(X, joint_embeddings=joint_embeddings, proba=True).probabilities

    def predict(self, X, *, joint_embeddings=None) -> np.ndarray:
        """Cluster index of each new image, shape (n_samples,). For ``"tac"`` only the image
        embeddings are needed (argmax of the image head); the other methods assign exactly as
        ``fit`` did (:func:`tacluster.cluster.kmeans.assign`)."""
        return self.assign(X, joint_embeddings=joint_embeddings).labels

    def predict_with_confidence(self, X, *, joint_embeddings=None) -> tuple[np.ndarray, np.ndarray]:
        """``(labels, confidence)`` of new images: the argmax and max of :meth:`predict_proba`."""
        labels, confidence, _ = self.assign(X, joint_embeddings=joint_embeddings)
        return labels, confidence

    def fit_predict(self, X, y=None, *legacy, **fit_params) -> np.ndarray:
        """``fit(X, y, **fit_params)`` then return ``labels_``."""
        return self.fit(X, y, *legacy, **fit_params).labels_

    @available_if(_has_text_side)
    def transform(self, X, *, joint_embeddings=None) -> np.ndarray:
        """Text counterparts of new images, shape (n_samples, d_joint) (``"tac"`` and ``"no-train"``)."""
        self._check_fitted()
        joint = as_float_matrix(X if joint_embeddings is None else joint_embeddings, "joint_embeddings")
        if joint.shape[1] != self.n_joint_features_:
            raise InputError(f"embeddings have width {joint.shape[1]}, the noun space has width "
                             f"{self.n_joint_features_}; pass joint_embeddings from the same backbone")
        return self.model_.text.counterparts(joint)

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
