import numpy as np

from tacluster.naming import name_clusters, noun_zscores


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
    assert [n for n, _ in names.top_nouns[0][:2]] == ["limpkin", "Aramus pictus"]


def test_no_two_clusters_get_the_same_name_even_with_fewer_nouns_than_clusters(easy_world):
    w = easy_world
    names = name_clusters(w.image_embeddings, w.labels, 5, w.noun_embeddings[:3], w.nouns[:3]).names
    assert len(set(names)) == 5, names
    assert all(any(n.startswith(word) for word in w.nouns[:3]) for n in names), names
