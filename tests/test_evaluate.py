import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from tacluster.errors import InputError
from tacluster.evaluate.metrics import cluster_accuracy, confusion, evaluate_clustering, hungarian_mapping


def test_acc_is_invariant_to_relabelling():
    y = np.array([0, 0, 1, 1, 2, 2])
    assert cluster_accuracy(y, np.array([2, 2, 0, 0, 1, 1])) == 1.0


def test_acc_hand_computed_example():
    y = ["cat", "cat", "cat", "dog", "dog", "bird"]
    p = [1, 1, 0, 0, 0, 0]
    # best map: 1->cat (2), 0->dog (2): 4 of 6
    assert cluster_accuracy(y, p) == pytest.approx(4 / 6)
    assert hungarian_mapping(y, p) == {1: "cat", 0: "dog"}
    m, clusters, classes = confusion(y, p)
    assert m.sum() == 6 and list(classes) == ["bird", "cat", "dog"]


def test_nmi_ari_match_sklearn():
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 5, 300), rng.integers(0, 4, 300)
    r = evaluate_clustering(y, p)
    assert r["nmi"] == pytest.approx(100 * normalized_mutual_info_score(y, p))
    assert r["ari"] == pytest.approx(100 * adjusted_rand_score(y, p))
    assert r["n"] == 300


def test_mismatched_lengths_raise():
    with pytest.raises(InputError, match="must match"):
        evaluate_clustering([0, 1], [0])
