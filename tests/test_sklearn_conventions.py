"""scikit-learn's conventions (issue 28): check_estimator for the image-only methods,
``fit(X, y=None, ...)`` with the noun bank as keyword fit parameters (Pipeline,
clone, GridSearchCV), ``check_is_fitted`` and scikit-learn's NotFittedError."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import check_estimator
from sklearn.utils.validation import check_is_fitted

from tacluster.errors import InputError
from tacluster.estimator import TextAidedClustering
from tacluster.synthetic import make_world

_K_BELOW_2 = ("sets n_clusters=1; tacluster refuses K < 2 with a one-line InputError (one cluster says "
              "nothing about a collection, and the CLI's --k has the same rule)")
#: The checks that cannot apply, with the reason (everything else must pass).
NOT_APPLICABLE = {
    "check_dont_overwrite_parameters": _K_BELOW_2,
    "check_methods_subset_invariance": _K_BELOW_2,
    "check_fit2d_1sample": _K_BELOW_2,
    "check_fit2d_1feature": _K_BELOW_2,
    "check_fit2d_predict1d": _K_BELOW_2,
    "check_estimators_dtypes": ("its integer data holds all-zero rows, which have no direction: cosine "
                                "clustering refuses them (InputError naming the row)"),
    "check_dtype_object": ("a non-numeric entry is tacluster's InputError (a ValueError, the one error class "
                           "for bad input), not the TypeError numpy raises"),
}


@pytest.mark.slow
@pytest.mark.parametrize("method", ["kmeans", "spectral", "auto"])
def test_check_estimator_passes_for_the_image_only_methods(method):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the checks' own data makes collapse warnings
        results = check_estimator(TextAidedClustering(3, method, random_state=0),
                                  expected_failed_checks=NOT_APPLICABLE, on_fail=None)
    failed = {r["check_name"]: str(r["exception"])[:200] for r in results if r["status"] == "failed"}
    assert not failed, failed
    ran = {r["check_name"] for r in results if r["status"] == "passed"}
    assert {"check_clustering", "check_estimators_nan_inf", "check_n_features_in_after_fitting",
            "check_estimator_sparse_array", "check_complex_data", "check_fit_idempotent"} <= ran


@pytest.fixture(scope="module")
def world():
    return make_world(n_samples=240, n_classes=3, dim=16, n_nouns=60, noise=0.6, seed=3)


def test_the_noun_bank_goes_through_a_pipeline_as_keyword_fit_parameters(world):
    pipe = Pipeline([("same", FunctionTransformer()), ("tac", TextAidedClustering(3, "no-train", random_state=0))])
    labels = pipe.fit(world.image_embeddings, tac__noun_embeddings=world.noun_embeddings,
                      tac__nouns=world.nouns).predict(world.image_embeddings)
    direct = TextAidedClustering(3, "no-train", random_state=0).fit(
        world.image_embeddings, noun_embeddings=world.noun_embeddings, nouns=world.nouns)
    np.testing.assert_array_equal(labels, direct.labels_)
    assert pipe.named_steps["tac"].kept_nouns_ == direct.kept_nouns_


def test_clone_and_grid_search_over_an_image_only_method(world):
    est = TextAidedClustering(3, "kmeans", kmeans_n_init=2, random_state=0)
    assert clone(est).get_params() == est.get_params()
    search = GridSearchCV(est, {"kmeans_n_init": [1, 3]}, scoring="adjusted_rand_score", cv=2)
    search.fit(world.image_embeddings, world.labels)  # y: the labels the score reads; fit ignores them
    assert search.best_params_["kmeans_n_init"] in (1, 3) and search.best_score_ > 0.5


def test_the_older_positional_noun_bank_still_works_with_a_future_warning(world):
    new = TextAidedClustering(3, "no-train", random_state=0).fit(
        world.image_embeddings, noun_embeddings=world.noun_embeddings, nouns=world.nouns)
    with pytest.warns(FutureWarning, match="noun_embeddings=..., nouns=..."):
        old = TextAidedClustering(3, "no-train", random_state=0).fit(
            world.image_embeddings, world.noun_embeddings, world.nouns)
    np.testing.assert_array_equal(old.labels_, new.labels_)
    with pytest.raises(InputError, match="given twice"):
        TextAidedClustering(3, "no-train").fit(world.image_embeddings, world.noun_embeddings,
                                               noun_embeddings=world.noun_embeddings)


def test_labels_as_y_are_ignored_and_never_taken_for_a_noun_bank(world):
    a = TextAidedClustering(3, "kmeans", random_state=0).fit(world.image_embeddings, world.labels)
    b = TextAidedClustering(3, "kmeans", random_state=0).fit(world.image_embeddings)
    np.testing.assert_array_equal(a.labels_, b.labels_)
    with pytest.raises(InputError, match="needs noun_embeddings"):
        TextAidedClustering(3, "no-train").fit(world.image_embeddings, world.labels)


def test_check_is_fitted_and_scikit_learns_not_fitted_error(world, tmp_path):
    est = TextAidedClustering(3, "kmeans", random_state=0)
    with pytest.raises(SklearnNotFittedError):
        check_is_fitted(est)
    with pytest.raises(SklearnNotFittedError, match="not fitted yet"):
        est.predict(world.image_embeddings)
    check_is_fitted(est.fit(world.image_embeddings))
    check_is_fitted(TextAidedClustering.load(est.save(tmp_path / "m")))
