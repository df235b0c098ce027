"""Spectral clustering of the image kNN graph: exact (scikit-learn's solver on
the sparse graph) and through landmarks (LSC-K, linear in N) for large
collections."""

from __future__ import annotations

import numpy as np

from tacluster.cluster import _faiss, neighbours


def spectral_cluster(
    features: np.ndarray, n_clusters: int, *, n_neighbors: int = 20, seed: int = 0, n_init: int = 10
) -> np.ndarray:
    """Spectral clustering of the symmetrised k-nearest-neighbour graph of ``features``.

    The graph comes from faiss (:func:`tacluster.cluster.neighbours.knn`, cosine on unit
    rows; each point joined to itself and its ``n_neighbors - 1`` nearest
    others, as scikit-learn's ``kneighbors_graph(include_self=True)``), the
    embedding and its k-means from scikit-learn's ``SpectralClustering``.

    Returns
    -------
    ndarray of shape (n_samples,), int64
    """
    from scipy import sparse
    from sklearn.cluster import SpectralClustering

    n = features.shape[0]
    if n_clusters >= n:
        # K = N: the only partition is one image per cluster (the spectral
        # embedding itself cannot be computed: it needs K < N eigenvectors).
        return np.arange(n, dtype=np.int64)
    k = max(1, min(n_neighbors - 1, n - 1))
    nn = neighbours.knn(features, k, seed=seed)
    rows = np.repeat(np.arange(n), k + 1)
    cols = np.hstack([np.arange(n)[:, None], nn]).ravel()
    conn = sparse.csr_matrix((np.ones(rows.size, dtype=np.float64), (rows, cols)), shape=(n, n))
    affinity = _bridge_components(0.5 * (conn + conn.T), features)
    model = SpectralClustering(
        n_clusters, affinity="precomputed", random_state=seed, n_init=n_init, assign_labels="kmeans"
    )
    return model.fit_predict(affinity).astype(np.int64)


def _bridge_components(affinity, features: np.ndarray):
    """The kNN graph made connected along the minimum spanning tree of its components.

    A graph in several pieces (a tight group whose neighbours all lie inside
    it) has one zero Laplacian eigenvalue per piece: the spectral embedding is
    then any basis of that space, so the labels followed the solver's last
    bits (another scipy / BLAS build gave another partition of the same
    data) and scikit-learn warned "Graph is not fully connected". Here each
    piece is represented by its normalised mean; the minimum spanning tree of
    those means (cosine distance) says which pieces lie next to each other,
    and each tree edge joins, with one kNN edge's weight (0.5), the member of
    either piece closest to the other piece's mean. A connected graph is
    returned unchanged.
    """
    from scipy import sparse
    from scipy.sparse.csgraph import connected_components, minimum_spanning_tree

    n_parts, part = connected_components(affinity, directed=False)
    if n_parts == 1:
        return affinity
    x = np.asarray(features, dtype=np.float32)
    member = sparse.csr_matrix((np.ones(len(part), dtype=np.float32), (part, np.arange(len(part)))),
                               shape=(n_parts, len(part)))
    centres = np.asarray(member @ x, dtype=np.float32)
    centres /= np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
    # Cosine distance, floored above zero: the tree routine reads 0 as "no edge".
    dist = np.maximum(1.0 - centres.astype(np.float64) @ centres.T.astype(np.float64), 1e-9)
    tree = minimum_spanning_tree(np.triu(dist, 1)).tocoo()
    order = np.argsort(part, kind="stable")
    starts = np.searchsorted(part[order], np.arange(n_parts + 1))

    def closest(a: int, b: int) -> int:  # the member of piece a closest to piece b's mean
        members = order[starts[a]:starts[a + 1]]
        return int(members[np.argmax(x[members] @ centres[b])])

    ends = np.array([(closest(a, b), closest(b, a)) for a, b in zip(tree.row, tree.col)], dtype=np.int64)
    bridges = sparse.csr_matrix((np.full(2 * len(ends), 0.5), (np.r_[ends[:, 0], ends[:, 1]], np.r_[ends[:, 1], ends[:, 0]])),
                                shape=affinity.shape)
    return (affinity + bridges).tocsr()


def landmark_spectral_cluster(
    features: np.ndarray,
    n_clusters: int,
    *,
    n_landmarks: int | None = None,
    n_nearest: int = 5,
    seed: int = 0,
    n_init: int = 10,
    n_iter: int = 300,
    block: int = 65_536,
) -> np.ndarray:
    """Spectral clustering through landmarks (LSC-K, Chen & Cai 2011): linear in N.

    ``p`` landmarks are spherical k-means centroids of a sample; each point is
    joined to its ``n_nearest`` landmarks with Gaussian weights (bandwidth:
    the mean distance to the farthest of them), rows normalised; the spectral
    embedding is the top ``n_clusters`` left singular vectors of that sparse
    (N x p) matrix with its columns degree-normalised, found from the (p x p)
    eigenproblem, and k-means on its rows, scaled to unit length, gives the
    labels. Time O(N p d) for the landmark search, memory O(N (n_nearest + K)):
    the exact graph's eigensolver grows much faster with N and K
    (docs/scaling.md).

    Parameters
    ----------
    features : ndarray of shape (n_samples, d), unit rows; may be memory-mapped or
        a :class:`tacluster._blocks.PowerRows` view (only sampled rows and blocks are read)
    n_landmarks : default ``max(1000, 3 * n_clusters)``, capped at N / 4
    n_init, n_iter : restarts and iteration cap of the k-means on the embedding
    """
    x = features  # an array, a memmap or a PowerRows view: read by sampled rows and blocks only
    n = x.shape[0]
    if n_clusters >= n:
        return np.arange(n, dtype=np.int64)
    p = n_landmarks or max(1000, 3 * n_clusters)
    p = int(max(n_clusters + 1, min(p, n // 4 if n >= 4 * (n_clusters + 1) else n)))
    rng = np.random.default_rng(seed)
    landmarks = _landmarks(x, p, rng, seed)
    z = _landmark_graph(x, landmarks, min(n_nearest, p), block)
    projection = _spectral_projection(z, n_clusters)

    def embedding(rows) -> np.ndarray:  # rows of the (N, K) spectral embedding, float32, unit rows
        # Rows scaled to unit length before their k-means (Ng, Jordan & Weiss
        # 2002): a point's position on the embedding's sphere says which
        # cluster, its length only how strongly it is tied to the landmarks.
        # 100k points, K = 50 (seeds 1-3, docs/scaling.md): reassigned ACC
        # 89.3 vs 84.2 without; K = 10 unchanged.
        e = np.asarray(z[rows] @ projection, dtype=np.float32)
        return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)

    # The k-means on the embedding: on all rows up to 256 points per cluster
    # (as cluster.kmeans.sampled_kmeans), else on that many sampled rows; then
    # every row goes to its nearest centroid, block by block, so the (N, K)
    # embedding is never held whole (1.28 M x 1000 would be 5 GB, 10 in float64).
    fit_rows = np.arange(n) if n <= 256 * n_clusters else np.sort(rng.choice(n, 256 * n_clusters, replace=False))
    fit = _faiss.kmeans(embedding(fit_rows), n_clusters, n_init=n_init, n_iter=n_iter, seed=seed)
    if len(fit_rows) == n:
        return fit.labels.astype(np.int64)
    labels = np.empty(n, dtype=np.int64)
    for start in range(0, n, block):
        labels[start:start + block] = _faiss.assign(embedding(slice(start, start + block)), fit.centroids)
    return labels


def _landmarks(x, p: int, rng: np.random.Generator, seed: int) -> np.ndarray:
    """(p, d) unit landmarks: spherical k-means centroids of ``20 p`` rows of ``x`` drawn from ``rng``."""
    n = x.shape[0]
    sample = np.ascontiguousarray(x[np.sort(rng.choice(n, size=min(n, 20 * p), replace=False))], dtype=np.float32)
    landmarks = _faiss.kmeans(sample, p, n_iter=10, n_init=1, seed=seed, spherical=True).centroids
    del sample
    return landmarks / np.maximum(np.linalg.norm(landmarks, axis=1, keepdims=True), 1e-12)


def _landmark_graph(x, landmarks: np.ndarray, r: int, block: int):
    """The sparse (N, p) graph joining each row of ``x`` to its ``r`` nearest landmarks with
    Gaussian weights (bandwidth: the mean distance to the farthest of them; each row summing to 1),
    its columns then degree-normalised."""
    import faiss
    from scipy import sparse

    n, d = x.shape
    p = landmarks.shape[0]
    index = faiss.IndexFlatIP(d)
    index.add(np.ascontiguousarray(landmarks, dtype=np.float32))
    sims = np.empty((n, r), dtype=np.float32)
    idx = np.empty((n, r), dtype=np.int64)
    for start in range(0, n, block):
        rows = np.ascontiguousarray(x[start:start + block], dtype=np.float32)
        sims[start:start + block], idx[start:start + block] = index.search(rows, r)
    dist = np.sqrt(np.maximum(2.0 - 2.0 * sims.astype(np.float64), 0.0))
    del sims
    sigma = max(float(dist[:, -1].mean()), 1e-6)
    w = np.exp(-(dist ** 2) / (2 * sigma ** 2))
    w /= np.maximum(w.sum(axis=1, keepdims=True), 1e-300)
    z = sparse.csr_matrix((w.ravel(), (np.repeat(np.arange(n), r), idx.ravel())), shape=(n, p))
    del w, dist, idx
    col = np.asarray(z.sum(axis=0)).ravel()
    return z @ sparse.diags(1.0 / np.sqrt(np.maximum(col, 1e-12)))


def _spectral_projection(z, n_clusters: int) -> np.ndarray:
    """The (p, K) map taking rows of the landmark graph ``z`` to its top ``n_clusters`` left singular
    vectors, found from the (p x p) eigenproblem."""
    gram = (z.T @ z).toarray()
    values, vectors = np.linalg.eigh(gram)  # ascending
    top = np.argsort(values)[::-1][:n_clusters]
    sv = np.sqrt(np.maximum(values[top], 1e-12))
    return vectors[:, top] / sv
