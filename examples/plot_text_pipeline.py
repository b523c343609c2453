"""
Text classification with sparse input
=====================================

:class:`fastmlp.FastMLP` takes SciPy sparse matrices in ``fit``, ``predict`` and
``score``, so it sits behind a text vectorizer in a scikit-learn
:class:`~sklearn.pipeline.Pipeline` like any other classifier. The TF-IDF matrix
goes into the network as a CSR matrix and is never made dense: the compiled backends
read its own arrays, converting their types at most once.

The documents here are synthetic. A real corpus such as 20 Newsgroups has to be
downloaded, and the documentation is built without a network, so the example makes
its own: a few topics, each with words of its own, mixed into a larger body of words
that every topic uses. The same seed gives the same corpus on every machine.
"""

# %%
# A synthetic corpus
# ------------------
# Every document has a topic. Most of its words come from a vocabulary shared by all
# topics (placeholders ``w0000`` to ``w2999``), drawn with Zipf-like frequencies so
# that a few words are everywhere and most are rare; a small share comes from its
# topic's own words, and a few from the words of another topic, so that the classes
# overlap and the problem is not trivial.

import warnings

import matplotlib.pyplot as plt
import numpy as np
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import ConfusionMatrixDisplay
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline

from fastmlp import FastMLP

N_DOCS = 6_000  # documents, split 75 % / 25 % into training and test sets
EPOCHS = 5

TOPICS = {
    "astronomy": "orbit telescope galaxy planet comet nebula star lunar solar eclipse "
                 "asteroid redshift quasar meteor satellite cosmic supernova crater "
                 "spectrum observatory",
    "cooking": "recipe oven flour garlic simmer butter roast sauce onion bake pepper "
               "skillet broth knead salt dough saucepan marinade spice dessert",
    "football": "goal striker referee penalty league midfield keeper tackle offside "
                "stadium coach season match corner defender transfer derby pitch "
                "trophy halftime",
    "computing": "compiler kernel server thread memory cache binary network debug "
                 "linux software cpu python database packet boot disk driver script "
                 "router",
    "music": "guitar chord melody rhythm tempo concert album drummer violin chorus "
             "lyrics harmony orchestra piano verse studio tune bass singer band",
}
SHARED_WORDS = 3_000  # size of the common vocabulary
TOPIC_SHARE = 0.10  # share of a document's words taken from its topic
CROSS_SHARE = 0.03  # share taken from another topic, chosen at random per document

rng = np.random.default_rng(0)
names = list(TOPICS)
topic_words = [TOPICS[name].split() for name in names]
shared = np.array([f"w{i:04d}" for i in range(SHARED_WORDS)])
frequency = 1.0 / np.arange(1, SHARED_WORDS + 1)
frequency /= frequency.sum()


def make_document(topic):
    length = rng.integers(20, 80)
    other = rng.choice([t for t in range(len(names)) if t != topic])
    source = rng.choice(3, size=length, p=[1 - TOPIC_SHARE - CROSS_SHARE, TOPIC_SHARE,
                                          CROSS_SHARE])
    words = rng.choice(shared, size=length, p=frequency).astype(object)
    for i in np.flatnonzero(source == 1):
        words[i] = rng.choice(topic_words[topic])
    for i in np.flatnonzero(source == 2):
        words[i] = rng.choice(topic_words[other])
    return " ".join(words)


labels = rng.integers(len(names), size=N_DOCS)
docs = [make_document(topic) for topic in labels]
y = np.array(names)[labels]
docs_train, docs_test, y_train, y_test = train_test_split(
    docs, y, test_size=0.25, random_state=0, stratify=y)
print(f"{len(docs_train):,} training and {len(docs_test):,} test documents, "
      f"{len(names)} topics")
print("a document about", y_train[0], "begins:", " ".join(docs_train[0].split()[:12]), "...")

# %%
# The features are sparse
# -----------------------
# :class:`~sklearn.feature_extraction.text.TfidfVectorizer` turns the documents into a
# CSR matrix with one column per word. Each row holds the few words its document
# uses, so almost every entry is zero. In the pipeline below, this is the matrix the
# network's ``fit`` receives.

vectorizer = TfidfVectorizer(sublinear_tf=True)
X_train = vectorizer.fit_transform(docs_train)
assert sp.issparse(X_train) and X_train.format == "csr"
print(f"X_train: {type(X_train).__name__} of shape {X_train.shape}, {X_train.nnz:,} stored "
      f"values ({X_train.nnz / np.prod(X_train.shape):.2%} of the entries)")

# %%
# The pipeline
# ------------
# The vectorizer and the network in one :class:`~sklearn.pipeline.Pipeline`: ``fit``
# learns the vocabulary and the IDF weights from the training documents and trains
# the network on their matrix; ``score`` transforms the test documents with the same
# vocabulary.
#
# ``solver="lazy_adam"`` suits wide sparse inputs: each mini-batch updates only the
# first-layer weights of the words that occur in its documents, with their Adam
# moments, instead of all of them. Words absent from a batch keep their weights for
# that batch, so rare words are updated less often than by Adam; the other layers
# take Adam's full step. On dense inputs with no zeros it is Adam exactly.

pipe = Pipeline([
    ("tfidf", TfidfVectorizer(sublinear_tf=True)),
    ("mlp", FastMLP(hidden_layer_sizes=(64,), solver="lazy_adam", max_iter=EPOCHS,
                    learning_rate_init=2e-3, random_state=0)),
])
with warnings.catch_warnings():
    # a fixed number of epochs: the loss may still be falling at the end
    warnings.simplefilter("ignore", ConvergenceWarning)
    pipe.fit(docs_train, y_train)
print(f"lazy_adam: test accuracy {pipe.score(docs_test, y_test):.2%} "
      f"(backend {pipe['mlp'].backend_})")

# %%
# The same pipeline with exact Adam, for reference: on this problem the two optimizers
# reach about the same accuracy.

adam = clone(pipe).set_params(mlp__solver="adam")
with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)
    adam.fit(docs_train, y_train)
print(f"adam:      test accuracy {adam.score(docs_test, y_test):.2%}")

# %%
# Which topics are confused
# -------------------------
# Rows are the true topics of the test documents, columns the predicted ones. The
# errors are documents with few topic words, where the words borrowed from another
# topic weigh as much as their own.

fig, ax = plt.subplots(figsize=(5.5, 4.8))
ConfusionMatrixDisplay.from_estimator(pipe, docs_test, y_test, labels=names, ax=ax,
                                      colorbar=False, xticks_rotation=30)
ax.set_title("lazy_adam, test documents")
fig.tight_layout()
plt.show()
