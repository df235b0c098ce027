import numpy as np

from tacluster.evaluate.naming import broader_scores, name_clusters, noun_zscores


def test_zscores_match_the_direct_computation(easy_world):
    w = easy_world
    x, t = w.image_embeddings, w.noun_embeddings[:50]
    labels = w.labels
    z = noun_zscores(x, labels, 5, t)
    sims = x.astype(np.float64) @ t.T.astype(np.float64)
    direct = np.stack([(sims[labels == c].mean(0) - sims.mean(0)) / sims.std(0, ddof=1) for c in range(5)])
    np.testing.assert_allclose(z, direct, rtol=1e-4, atol=1e-4)


def test_clusters_are_named_by_their_class_noun(style_world):
    w = style_world
    names = name_clusters(w.image_embeddings, w.labels, 5, w.noun_embeddings, w.nouns)
    for c in range(5):
        assert names.names[c].startswith(f"class{c}"), names.names
        assert names.top_nouns[c][0][1] > 1.0
    assert len(set(names.names)) == 5


def test_a_generic_noun_close_to_everything_is_not_a_name(easy_world):
    w = easy_world
    mean_dir = w.image_embeddings.mean(0)
    mean_dir /= np.linalg.norm(mean_dir)
    bank = np.vstack([w.noun_embeddings, mean_dir[None]]).astype(np.float32)
    nouns = list(w.nouns) + ["entity"]
    # "entity" has the highest mean similarity to the collection of any noun...
    assert (w.image_embeddings @ bank.T).mean(0).argmax() == len(nouns) - 1
    # ...but it names no cluster and scores far below every name
    names = name_clusters(w.image_embeddings, w.labels, 5, bank, nouns)
    assert "entity" not in names.names
    z = noun_zscores(w.image_embeddings, w.labels, 5, bank)
    assert z[:, -1].max() < min(t[0][1] for t in names.top_nouns)


def test_synonyms_with_one_vector_prefer_the_everyday_word(style_world):
    w = style_world
    c0 = w.noun_embeddings[w.class_nouns[0]]
    bank = np.vstack([c0, c0, w.noun_embeddings[w.class_nouns[1:]]]).astype(np.float32)
    nouns = ["Aramus pictus", "limpkin"] + [f"class{k}" for k in range(1, 5)]
    names = name_clusters(w.image_embeddings, w.labels, 5, bank, nouns)
    assert names.names[0] == "limpkin"
    # one meaning is listed once: the synonym does not take the second place
    listed = [n for n, _ in names.top_nouns[0]]
    assert listed[0] == "limpkin" and "Aramus pictus" not in listed
    assert len(listed) == len(set(listed)) == 5


def test_no_two_clusters_get_the_same_name_even_with_fewer_nouns_than_clusters(easy_world):
    w = easy_world
    names = name_clusters(w.image_embeddings, w.labels, 5, w.noun_embeddings[:3], w.nouns[:3]).names
    assert len(set(names)) == 5, names
    assert all(any(n.startswith(word) for word in w.nouns[:3]) for n in names), names


def _old_noun_zscores(joint_embeddings, labels, n_clusters, noun_embeddings, *, block=16384):
    """The implementation before blockwise statistics (float64 copies of the whole matrix): the reference."""
    x = np.asarray(joint_embeddings, dtype=np.float64)
    mu = x.mean(axis=0)
    xc = x - mu
    cov = xc.T @ xc / max(len(x) - 1, 1)
    means = np.zeros((n_clusters, x.shape[1]))
    counts = np.bincount(labels, minlength=n_clusters).astype(np.float64)
    np.add.at(means, labels, x)
    means = means / np.maximum(counts, 1)[:, None] - mu
    out = np.empty((n_clusters, noun_embeddings.shape[0]), dtype=np.float32)
    for start in range(0, noun_embeddings.shape[0], block):
        t = np.asarray(noun_embeddings[start : start + block], dtype=np.float64)
        std = np.sqrt(np.maximum(np.einsum("jd,de,je->j", t, cov, t, optimize=True), 1e-12))
        out[:, start : start + len(t)] = (means @ t.T) / std
    out[counts == 0] = 0.0
    return out


def test_blockwise_zscores_and_names_equal_the_full_matrix_implementation(style_world, monkeypatch):
    """Blockwise float32 statistics (blocks smaller than n, an empty cluster, float16 input)
    give the old implementation's z-scores to float32 precision and exactly its names."""
    import tacluster.evaluate.naming as naming
    from tacluster.synthetic import make_world

    w = make_world(n_samples=3000, n_classes=12, dim=48, n_nouns=600, noise=0.9, seed=7)
    labels = w.labels.copy()
    labels[labels == 11] = 10  # cluster 11 empty
    for x in (w.image_embeddings, w.image_embeddings.astype(np.float16)):
        new = naming.noun_zscores(x, labels, 12, w.noun_embeddings, row_block=700)
        old = _old_noun_zscores(x, labels, 12, w.noun_embeddings)
        np.testing.assert_allclose(new, old, rtol=1e-5, atol=2e-5)
        got = naming.name_clusters(x, labels, 12, w.noun_embeddings, w.nouns)
        monkeypatch.setattr(naming, "noun_zscores", _old_noun_zscores)
        ref = naming.name_clusters(x, labels, 12, w.noun_embeddings, w.nouns)
        monkeypatch.undo()
        assert got.names == ref.names
        assert [[n for n, _ in t] for t in got.top_nouns] == [[n for n, _ in t] for t in ref.top_nouns]
    ws = style_world
    got = naming.name_clusters(ws.image_embeddings, ws.labels, 5, ws.noun_embeddings, ws.nouns)
    monkeypatch.setattr(naming, "noun_zscores", _old_noun_zscores)
    assert naming.name_clusters(ws.image_embeddings, ws.labels, 5, ws.noun_embeddings, ws.nouns).names == got.names


def _flower_world(seed=0, n_per=60):
    """Flower photos in a six-class probability space (classes 0-2 flowers, 3-5 vehicles).

    The bank is class-indicator rows (lite's hierarchy side): one noun per
    class, "flower" over 0-2, "vehicle" over 3-5, "entity" over all six, and
    flower-or-vehicle pairs. Every image is a flower, so "flower" sets no cluster
    apart (z near 0) but is what each cluster is.
    """
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), n_per)
    logits = rng.normal(0, 0.5, (len(labels), 6))
    logits[np.arange(len(labels)), labels] += 1.5
    logits[:, :3] += 2.0
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    joint = np.sqrt(probs) / np.linalg.norm(np.sqrt(probs), axis=1, keepdims=True)
    pairs = [[1 if k in (i, j) else 0 for k in range(6)] for i in range(3) for j in range(3, 6)]
    member = np.vstack([np.eye(6), [1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1], np.ones(6), pairs])
    bank = (member / np.linalg.norm(member, axis=1, keepdims=True)).astype(np.float32)
    nouns = ["daisy", "tulip", "rose", "car", "bus", "tram", "flower", "vehicle", "entity"]
    nouns += [f"{nouns[i]} or {nouns[j]}" for i in range(3) for j in range(3, 6)]
    return joint.astype(np.float32), probs.astype(np.float32), labels, bank, nouns


def test_broader_nouns_say_what_a_cluster_is():
    joint, probs, labels, bank, nouns = _flower_world()
    plain = name_clusters(joint, labels, 3, bank, nouns)
    named = name_clusters(joint, labels, 3, bank, nouns, class_probs=probs)
    assert named.names == plain.names == nouns[:3]  # names still come from the z-score
    for c in range(3):
        listed = [n for n, _ in named.top_nouns[c]]
        # the group noun follows the two z-score nouns; the root and the vehicles never come in
        assert listed[:2] == [n for n, _ in plain.top_nouns[c][:2]]
        assert "flower" in listed[2:4] and not {"entity", "vehicle"} & set(listed), listed
        assert len(listed) == len(set(listed)) == 5
        # by z-score alone (it sets no flower cluster apart) "flower" is not among the first four
        assert "flower" not in [n for n, _ in plain.top_nouns[c][:4]]


def test_broader_nouns_only_for_a_class_indicator_bank():
    joint, probs, labels, bank, nouns = _flower_world()
    plain = name_clusters(joint, labels, 3, bank, nouns)
    assert name_clusters(joint, labels, 3, bank, nouns, class_probs=probs).top_nouns != plain.top_nouns
    signed = bank - 0.01  # a CLIP-like bank: negative entries, not class indicators
    assert name_clusters(joint, labels, 3, signed, nouns, class_probs=probs).top_nouns == \
        name_clusters(joint, labels, 3, signed, nouns).top_nouns
    wrong_width = probs[:, :5]
    assert name_clusters(joint, labels, 3, bank, nouns, class_probs=wrong_width).top_nouns == plain.top_nouns
    assert name_clusters(joint, labels, 3, bank, nouns, class_probs=probs, n_broader=0).top_nouns == plain.top_nouns


def test_broader_scores_match_the_direct_computation():
    _, probs, labels, bank, _ = _flower_world(seed=1)
    got = broader_scores(probs, labels, 3, bank, block=4, row_block=50)
    member = (bank > 0).astype(np.float64)
    mass = np.stack([probs[labels == c].astype(np.float64).mean(0) for c in range(3)]) @ member.T
    direct = mass * np.log(mass / (member.sum(1) / 6))
    np.testing.assert_allclose(got, direct, rtol=1e-5, atol=1e-7)
    assert np.allclose(got[:, 8], 0, atol=1e-6)  # the root holds all the mass and all the classes: score 0
