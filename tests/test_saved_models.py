"""Model directories written before the fitter/model split (issue 28) still load and predict as they did.

``tests/data/models-05fbabb`` holds four small models saved by tacluster at commit 05fbabb (kmeans,
auto, no-train, tac on ``make_world(n_samples=200, n_classes=4, dim=16, n_nouns=80, noise=0.8,
seed=5)``, random_state 0; tac with n_epochs=2, min_steps=10) and the digest of their predict
labels and the sum of their confidences on those images, taken by that code.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from tacluster.estimator import TextAidedClustering
from tacluster.synthetic import make_world

MODELS = Path(__file__).resolve().parent / "data" / "models-05fbabb"
EXPECTED = json.loads((MODELS / "expected.json").read_text())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_model_saved_by_the_code_before_loads_and_predicts_as_it_did(name):
    w = make_world(n_samples=200, n_classes=4, dim=16, n_nouns=80, noise=0.8, seed=5)
    est = TextAidedClustering.load(MODELS / name)
    labels, conf = est.predict_with_confidence(w.image_embeddings)
    assert hashlib.sha256(labels.astype(np.int64).tobytes()).hexdigest()[:16] == EXPECTED[name]["labels"]
    assert float(conf.astype(np.float64).sum()) == pytest.approx(EXPECTED[name]["confidence_sum"], abs=1e-4)
    np.testing.assert_array_equal(est.predict(w.image_embeddings), labels)
    assert est.metadata_["made_by"] == "tacluster at 05fbabb"
    assert est.model_.kind == ("heads" if name == "tac" else "centroids")
    if name in ("tac", "no-train"):
        assert est.transform(w.image_embeddings[:3]).shape == (3, 16)
