"""Stage 1: centres, noun selection and retrieval do what the paper says."""

import numpy as np

from tacluster.counterparts import (
    default_n_centres,
    retrieval_weights,
    retrieve_counterparts,
    select_nouns,
    semantic_centres,
)


def test_default_n_centres_matches_paper_settings():
    assert default_n_centres(50_000, 10) == 166  # paper: 167 = N/300 rounded
    assert default_n_centres(1_281_167, 1000) == 4270
    assert default_n_centres(3_760, 47) == 141  # DTD: 3 x classes
    assert default_n_centres(20, 10) == 10  # capped at N // 2


def test_semantic_centres_are_unit_means_of_members(easy_world):
    u = easy_world.image_embeddings
    c = semantic_centres(u, 10, seed=0)
    assert c.shape == (10, u.shape[1])
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0, atol=1e-5)
    # every member is closest to its own centre
    members = (u @ c.T).argmax(1)
    assert len(np.unique(members)) == 10


def test_noun_selection_keeps_the_class_nouns(easy_world):
    w = easy_world
    centres = semantic_centres(w.image_embeddings, 15, seed=0)
    sel = select_nouns(centres, w.noun_embeddings, per_centre=5)
    kept = {w.nouns[i] for i in sel.indices}
    assert {f"class{k}" for k in range(5)} <= kept
    # at most 5 per centre, grouped by centre, most confident first
    _, counts = np.unique(sel.centre, return_counts=True)
    assert counts.max() <= 5
    for c in np.unique(sel.centre):
        conf = sel.confidence[sel.centre == c]
        assert np.all(np.diff(conf) <= 0)


def test_noun_selection_is_a_softmax_over_centres():
    centres = np.eye(3, dtype=np.float32)
    nouns = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 0, 1]], dtype=np.float32)
    nouns /= np.linalg.norm(nouns, axis=1, keepdims=True)
    sel = select_nouns(centres, nouns, per_centre=1)
    # centre 0 gets two candidates and keeps the most confident (noun 0), centre 2 keeps noun 2
    assert sel.indices.tolist() == [0, 2]
    expected = np.exp(1) / (np.exp(1) + 2)
    np.testing.assert_allclose(sel.confidence[0], expected, rtol=1e-5)
    # a lower temperature sharpens the confidence
    sharp = select_nouns(centres, nouns, per_centre=1, temperature=0.1)
    assert sharp.confidence[0] > sel.confidence[0]


def test_counterparts_land_nearest_their_class_noun(style_world):
    w = style_world
    centres = semantic_centres(w.image_embeddings, 20, seed=0)
    sel = select_nouns(centres, w.noun_embeddings, per_centre=5)
    s = retrieve_counterparts(w.image_embeddings, w.noun_embeddings[sel.indices], tau=0.005)
    np.testing.assert_allclose(np.linalg.norm(s, axis=1), 1.0, atol=1e-5)
    nearest_class = (s @ w.noun_embeddings[w.class_nouns].T).argmax(1)
    assert (nearest_class == w.labels).mean() > 0.95
    # and the style that dominates the images is gone from the counterparts:
    # two images of one class but different styles have near-identical counterparts
    same_class = (w.labels[:, None] == w.labels[None, :]) & (w.styles[:, None] != w.styles[None, :])
    cos_s = (s @ s.T)[same_class].mean()
    cos_u = (w.image_embeddings @ w.image_embeddings.T)[same_class].mean()
    assert cos_s > 0.8 and cos_s > cos_u + 0.3


def test_retrieval_is_the_weighted_sum_of_nouns():
    rng = np.random.default_rng(0)
    t = rng.standard_normal((7, 5)).astype(np.float32)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    u = rng.standard_normal((4, 5)).astype(np.float32)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    s = retrieve_counterparts(u, t, tau=0.5)
    w = np.exp(u @ t.T / 0.5)
    w /= w.sum(1, keepdims=True)
    manual = w @ t
    manual /= np.linalg.norm(manual, axis=1, keepdims=True)
    np.testing.assert_allclose(s, manual, atol=1e-5)
    np.testing.assert_allclose(retrieval_weights(u, t, tau=0.5), w, atol=1e-5)
    # tau -> 0 retrieves the single nearest noun
    sharp = retrieve_counterparts(u, t, tau=1e-6)
    np.testing.assert_allclose(sharp, t[(u @ t.T).argmax(1)], atol=1e-4)


def test_retrieval_leaves_no_denormals(easy_world):
    w = easy_world
    s = retrieve_counterparts(w.image_embeddings, w.noun_embeddings, tau=0.005)
    tiny = (s != 0) & (np.abs(s) < np.finfo(np.float32).tiny)
    assert not tiny.any()
