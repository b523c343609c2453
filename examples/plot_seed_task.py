"""
The seed task: MNIST 784-128-10
===============================

fastmlp's reference task trains a network with one hidden layer of 128 ReLU units on
MNIST's 28 x 28 digits: Adam, batches of 64, a learning rate of 4e-3 decayed to zero
by a cosine schedule over the fit. It is what ``fastmlp train`` runs, and the task the
defaults and the performance work are measured on.

MNIST ships inside the package, so this example needs no download. The documentation
builds it on a subset of the training rows; set ``N_TRAIN = None`` below to run the
full task (all 60,000 rows, 5 epochs), which reaches about 98 % test accuracy.
"""

# %%
# Size of the run
# ---------------
# ``N_TRAIN`` rows of the training set are used, ``None`` for all 60,000. The cosine
# schedule spans ``EPOCHS`` epochs, so the rate reaches zero at the end of the last
# one whatever their number.

N_TRAIN = 10_000  # None: the full task (60,000 rows), about 98 % test accuracy
EPOCHS = 5

# %%
# Data
# ----
# :func:`fastmlp.load_mnist` returns float32 pixels scaled to [0, 1], one row per
# image, and int64 labels.

import warnings

import matplotlib.pyplot as plt
from sklearn.exceptions import ConvergenceWarning

from fastmlp import FastMLP, load_mnist

(X_train, y_train), (X_test, y_test) = load_mnist()
if N_TRAIN is not None:
    X_train, y_train = X_train[:N_TRAIN], y_train[:N_TRAIN]
print(f"training on {X_train.shape[0]:,} rows of {X_train.shape[1]} pixels, "
      f"testing on {X_test.shape[0]:,}")

# %%
# Training
# --------
# ``eval_set`` scores the test rows after every epoch, so the fit records a test
# accuracy per epoch beside its training loss and training accuracy. Scoring them
# does not change the training. A schedule that decays to zero fixes the number of
# epochs in advance, so the ``ConvergenceWarning`` a fit raises when it stops at
# ``max_iter`` says nothing here, and is silenced.

clf = FastMLP(hidden_layer_sizes=(128,), max_iter=EPOCHS, learning_rate="cosine",
              learning_rate_init=4e-3, random_state=0)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)
    clf.fit(X_train, y_train, eval_set=(X_test, y_test))
clf.summary()
print(f"backend: {clf.backend_}")
print(f"final test accuracy: {clf.score(X_test, y_test):.2%}")

# %%
# Curves
# ------
# ``loss_curve_`` holds each epoch's mean training loss (cross-entropy plus the L2
# term), ``train_scores_`` the share of each epoch's rows classified correctly as they
# were trained on, and ``eval_scores_`` the accuracy on ``eval_set`` after each epoch.
# The training accuracy is counted while the weights still move, so in the first
# epoch it lies below the test accuracy measured at the epoch's end.

epochs = range(1, clf.n_iter_ + 1)
fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.6))
ax_loss.plot(epochs, clf.loss_curve_, marker="o")
ax_loss.set(xlabel="epoch", ylabel="training loss", title="Loss")
ax_acc.plot(epochs, [100 * s for s in clf.train_scores_], marker="o", label="train")
ax_acc.plot(epochs, [100 * s for s in clf.eval_scores_], marker="o", label="test")
ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
ax_acc.legend()
for ax in (ax_loss, ax_acc):
    ax.grid(alpha=0.3)
    ax.xaxis.get_major_locator().set_params(integer=True)
fig.tight_layout()
plt.show()
