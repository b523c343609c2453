"""The data sets fastmlp offers: IDX files and the bundled MNIST (read by ``_idx``),
deformed MNIST digits at any scale (``deformed``), and a synthetic text problem shaped
like 20 Newsgroups (here).
"""

from __future__ import annotations

import numpy as np

from ._idx import MNIST_FILES, bundled_data_dir, load_idx, load_mnist
from .deformed import load_deformed_mnist, write_deformed_mnist

__all__ = ["load_idx", "load_mnist", "make_text_classification", "MNIST_FILES",
           "bundled_data_dir", "write_deformed_mnist", "load_deformed_mnist"]


def make_text_classification(n_train=11_000, n_test=7_500, *, n_classes=20,
                             n_terms=100_000, terms_per_doc=120, topic_terms=3_000,
                             topic_pool=8_000, topic_share=0.095, group_overlap=0.8,
                             zipf=1.1, random_state=0):
    """A deterministic text-classification problem shaped like 20 Newsgroups, as TF-IDF.

    Every document draws its words from a vocabulary of ``n_terms`` terms whose
    frequencies follow a Zipf law; a share ``topic_share`` of its words comes instead
    from its class's own ``topic_terms`` terms, picked from a pool of ``topic_pool``
    terms that the classes share, so that topics overlap. Words are drawn until the
    document has about ``terms_per_doc`` distinct terms. Features are (1 + log count)
    times the smoothed IDF of the training documents, as
    ``TfidfVectorizer(sublinear_tf=True)`` computes them, with rows of unit L2 norm.
    The same arguments give the same matrices on every machine, with no download.

    Parameters
    ----------
    n_train, n_test : int, default 11000 and 7500
        Training and test documents.
    n_classes : int, default 20
        Classes (topics).
    n_terms : int, default 100000
        Vocabulary size: the number of columns.
    terms_per_doc : int, default 120
        Distinct terms a document holds, about.
    topic_terms : int, default 3000
        Terms of each class's own topic (at most ``topic_pool``).
    topic_pool : int, default 8000
        Terms the topics are drawn from (at most ``n_terms``).
    topic_share : float, default 0.095
        Share of a document's words drawn from its topic.
    group_overlap : float, default 0.8
        Classes come in groups of four (as the comp.* or rec.* newsgroups do): this share
        of each class's topic terms is that of its group's first class.
    zipf : float, default 1.1
        Exponent of the Zipf law of term frequencies.
    random_state : int, default 0
        Seed.

    Returns
    -------
    (X_train, y_train), (X_test, y_test)
        X float32 SciPy CSR matrices of shape (n_documents, n_terms); y int64 labels in
        [0, n_classes).

    Examples
    --------
    >>> from fastmlp.datasets import make_text_classification
    >>> (X, y), (X_test, y_test) = make_text_classification(
    ...     n_train=200, n_test=50, n_classes=4, n_terms=2000)
    >>> X.format, X.shape, X_test.shape, sorted(set(y.tolist()))
    ('csr', (200, 2000), (50, 2000), [0, 1, 2, 3])
    """
    import scipy.sparse as sp

    if min(n_train, n_test, n_classes, n_terms, terms_per_doc, topic_terms) < 1:
        raise ValueError("make_text_classification needs at least one training and one "
                         "test document, class, term, term a document and topic term")
    # a small vocabulary holds smaller topics
    topic_pool = min(topic_pool, n_terms)
    topic_terms = min(topic_terms, topic_pool)
    rng = np.random.default_rng(random_state)
    n_docs = n_train + n_test
    ranks = np.arange(1, n_terms + 1, dtype=np.float64)
    # the vocabulary's term ids in order of frequency, and each class's topic terms
    global_cdf = np.cumsum(ranks ** -zipf)
    global_cdf /= global_cdf[-1]
    order = rng.permutation(n_terms)
    pool = rng.choice(n_terms, topic_pool, replace=False)
    topics = np.stack([rng.choice(pool, topic_terms, replace=False)
                       for _ in range(n_classes)])
    # classes in groups of four share most of their topic (as comp.* or rec.* do)
    for c in range(n_classes):
        lead = topics[c - c % 4]
        shared = rng.random(topic_terms) < group_overlap
        topics[c, shared] = lead[shared]
    topic_cdf = np.cumsum(ranks[:topic_terms] ** -zipf)
    topic_cdf /= topic_cdf[-1]
    y = rng.integers(0, n_classes, n_docs)
    # Zipf draws repeat frequent terms: draw enough words for about terms_per_doc
    # distinct ones, then keep the first terms_per_doc distinct terms of each document
    n_words = int(terms_per_doc * 2.5)
    from_topic = rng.random((n_docs, n_words)) < topic_share
    general = order[np.minimum(np.searchsorted(global_cdf, rng.random((n_docs, n_words))),
                               n_terms - 1)]
    topical = topics[y[:, None], np.minimum(
        np.searchsorted(topic_cdf, rng.random((n_docs, n_words))), topic_terms - 1)]
    words = np.where(from_topic, topical, general)
    rows = np.repeat(np.arange(n_docs), n_words)
    counts = sp.csr_matrix((np.ones(rows.size, dtype=np.float64), (rows, words.ravel())),
                           shape=(n_docs, n_terms))
    counts.sum_duplicates()
    # keep each document's terms_per_doc most frequent terms (ties by term id)
    keep = np.zeros(counts.nnz, dtype=bool)
    for r in range(n_docs):
        a, b = counts.indptr[r], counts.indptr[r + 1]
        top = np.argsort(-counts.data[a:b], kind="stable")[:terms_per_doc]
        keep[a + top] = True
    counts.data[~keep] = 0
    counts.eliminate_zeros()
    tf = counts.copy()
    tf.data = 1.0 + np.log(tf.data)
    df = np.bincount(counts[:n_train].indices, minlength=n_terms)
    idf = np.log((1.0 + n_train) / (1.0 + df)) + 1.0
    X = tf.multiply(idf[None, :]).tocsr()
    norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
    X = sp.diags(1.0 / np.maximum(norms, 1e-12)) @ X
    X = sp.csr_matrix(X, dtype=np.float32)
    X.sort_indices()
    return (X[:n_train], y[:n_train]), (X[n_train:], y[n_train:])

