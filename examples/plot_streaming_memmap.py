"""
Training from a memory-mapped file
==================================

A training set larger than memory can stay on disk: save it as a ``.npy`` file, open
it with ``np.load(path, mmap_mode="r")`` and pass the memory map to ``fit``. With
``stream=True`` the fit reads it in blocks of rows, one sequential read per block, the
next block while the current one trains, so memory holds a few blocks rather than
the data set. ``stream="auto"``, the default, does this by itself for a memory map
of 1 GiB or more.

Images stored as uint8 pixels train without a float copy: ``input_scale=1/255``
scales every value as it is read, in ``fit`` and in ``predict`` alike.

MNIST's 47 MB of training pixels fit in memory, of course; the example streams them
to show the mechanism, and compares the result with the same rows trained in memory.
"""

# %%
# Size of the run
# ---------------

N_TRAIN = 60_000  # rows written to the file (all of MNIST's training set)
EPOCHS = 3

# %%
# Write the pixels to a file
# --------------------------
# ``load_mnist(raw=True)`` gives the images as they are stored: uint8, of shape
# (n, 28, 28). The file goes to a temporary folder, removed at the end.

import os
import shutil
import tempfile
import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.exceptions import ConvergenceWarning

from fastmlp import FastMLP, load_mnist

(images, y_train), (test_images, y_test) = load_mnist(raw=True)
images, y_train = images[:N_TRAIN], y_train[:N_TRAIN]
X_test = test_images.reshape(len(test_images), -1)  # uint8 too: input_scale applies

folder = tempfile.mkdtemp(prefix="fastmlp-example-")
path = os.path.join(folder, "train-pixels.npy")
np.save(path, images)
print(f"wrote {images.shape} {images.dtype} to a file of {os.path.getsize(path) / 1e6:.1f} MB")

# %%
# Open it as a memory map
# -----------------------
# ``np.load`` with ``mmap_mode="r"`` reads nothing yet: the array's pages come from the
# file when they are touched. Reshaping to one row per image is a view of the same
# map.

X_map = np.load(path, mmap_mode="r")
X_map = X_map.reshape(len(X_map), -1)
print(f"X_map: {type(X_map).__name__}, {X_map.dtype}, shape {X_map.shape}")

# %%
# Streamed fit
# ------------
# ``stream=True`` reads the map in blocks of about 32 MiB, at most an eighth of X, a
# whole number of mini-batches each. An epoch visits the blocks in a random order and
# the rows of each block in a random order of their own, so the rows are seen in
# another order than in memory; the training is otherwise the same. ``eval_set`` (uint8
# as well) records the test accuracy after every epoch.


def make_model(stream):
    return FastMLP(hidden_layer_sizes=(128,), max_iter=EPOCHS, learning_rate="cosine",
                   learning_rate_init=4e-3, random_state=0, input_scale=1 / 255,
                   stream=stream)


with warnings.catch_warnings():
    # a fixed number of epochs: the loss is still falling when the fit stops
    warnings.simplefilter("ignore", ConvergenceWarning)
    streamed = make_model(stream=True).fit(X_map, y_train, eval_set=(X_test, y_test))
print(f"streamed from the file: test accuracy {streamed.score(X_test, y_test):.2%}")

# %%
# In-memory fit on the same rows
# ------------------------------
# The same pixels as an ordinary array. Even in memory, a uint8 X is not converted
# whole: ``stream="auto"`` converts it a part at a time, visiting the rows in the order
# a fit of the whole converted X would, so no float copy of X is made.

X_memory = images.reshape(len(images), -1)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)
    in_memory = make_model(stream="auto").fit(X_memory, y_train, eval_set=(X_test, y_test))
print(f"in memory:              test accuracy {in_memory.score(X_test, y_test):.2%}")

# %%
# A memory map under 1 GiB is not streamed by default: with ``stream="auto"`` it is
# read in the order of the in-memory fit, which gives the same model bit for bit.

with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)
    mapped_auto = make_model(stream="auto").fit(X_map, y_train)
same = all(np.array_equal(a, b) for a, b in zip(mapped_auto.coefs_, in_memory.coefs_))
print(f"memory map with stream='auto' gives the in-memory weights exactly: {same}")

# %%
# The curves
# ----------
# Streamed and in-memory fits differ only in the order the rows are visited, so their
# losses and test accuracies follow each other closely.

epochs = np.arange(1, EPOCHS + 1)
fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.6))
for model, label in ((in_memory, "in memory"), (streamed, "streamed from the file")):
    ax_loss.plot(epochs, model.loss_curve_, marker="o", label=label)
    ax_acc.plot(epochs, [100 * s for s in model.eval_scores_], marker="o", label=label)
ax_loss.set(xlabel="epoch", ylabel="training loss", title="Loss")
ax_acc.set(xlabel="epoch", ylabel="test accuracy (%)", title="Test accuracy")
for ax in (ax_loss, ax_acc):
    ax.legend()
    ax.grid(alpha=0.3)
    ax.set_xticks(epochs)
fig.tight_layout()
plt.show()

# %%
# Clean up
# --------
# Drop the memory map before removing its file.

del X_map
shutil.rmtree(folder)
