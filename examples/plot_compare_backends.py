"""
Comparing the backends
======================

fastmlp runs the same training on interchangeable kernel backends: ``numba``
(compiled at run time, parallel), ``cython`` (a compiled extension built at install
time) and ``numpy`` (plain NumPy, the reference every other backend is tested
against). ``backend="auto"``, the default, takes the fastest one that is ready.

This example times a small fit on each backend available here and draws the
seconds as a bar chart. The figure shows the machine that built this page; run the
example on yours to see its own. A few short fits per backend are a rough measure,
easily moved by other work on the machine: for a careful comparison, kernel by
kernel, at several batch sizes and thread counts and against scikit-learn's
``MLPClassifier``, run::

    fastmlp compare --quick --plot compare.png
"""

# %%
# Size of the run
# ---------------
# One epoch of 784-128-10 over ``N_ROWS`` MNIST training rows (of 60,000), batch 64,
# Adam; each backend's time is the best of ``REPEATS`` fits.

N_ROWS = 30_000
EPOCHS = 1
REPEATS = 3

# %%
# Which backends can run
# ----------------------
# :func:`fastmlp.available_backends` lists the backends that load on this machine
# (``cython`` is missing when the extension was not built). numba compiles its
# kernels the first time they are used, which takes a minute or two; ``auto`` does
# not use it until that is done, in a background process or by ``fastmlp warmup``.
# ``fastmlp.backends.auto_may_use`` says whether a backend's kernels for a dtype are
# ready, so the example leaves out a backend that would compile during its fit.

import time
import warnings

import matplotlib.pyplot as plt
from sklearn.exceptions import ConvergenceWarning

from fastmlp import FastMLP, available_backends, load_mnist
from fastmlp.backends import auto_may_use

backends = []
for name in available_backends():
    if auto_may_use(name, "float32"):
        backends.append(name)
    else:
        print(f"note: {name} is left out: its float32 kernels are not compiled yet, and "
              f"compiling them takes a minute or two (`fastmlp warmup` does it once)")
print("backends timed:", ", ".join(backends))

# %%
# Timing the fits
# ---------------
# A first, tiny fit loads each backend's kernels (numba's from its cache) so that the
# timed fits measure training alone. Every fit starts from the same weights
# (``random_state=0``) and sees the rows in the same order.

(X_train, y_train), (X_test, y_test) = load_mnist()
X_train, y_train = X_train[:N_ROWS], y_train[:N_ROWS]


def make_model(backend, epochs):
    return FastMLP(hidden_layer_sizes=(128,), max_iter=epochs, random_state=0,
                   backend=backend)


seconds, accuracy = {}, {}
with warnings.catch_warnings():
    # a fixed number of epochs: the loss is still falling when the fit stops
    warnings.simplefilter("ignore", ConvergenceWarning)
    for name in backends:
        make_model(name, 1).fit(X_train[:640], y_train[:640])
        times = []
        for _ in range(REPEATS):
            model = make_model(name, EPOCHS)
            start = time.perf_counter()
            model.fit(X_train, y_train)
            times.append(time.perf_counter() - start)
        seconds[name] = min(times)
        accuracy[name] = model.score(X_test, y_test)
        print(f"{name:>6}: {seconds[name]:.2f} s, test accuracy {accuracy[name]:.2%}")

# %%
# The chart
# ---------
# Each bar is the shortest wall-clock time of a backend's fits, with the test accuracy
# written at its end. The backends train the same network with the same optimizer on
# the same batches, so their accuracies agree up to rounding: what differs is how fast
# the kernels run.

fig, ax = plt.subplots(figsize=(6.5, 0.6 + 0.7 * len(seconds)))
names = list(seconds)
ax.barh(names, [seconds[n] for n in names], color="tab:blue")
for i, name in enumerate(names):
    ax.text(seconds[name], i, f" {accuracy[name]:.2%}", va="center")
ax.set_xlabel(f"seconds, best of {REPEATS} fits")
ax.set_title(f"MNIST 784-128-10, {N_ROWS:,} rows, {EPOCHS} epoch{'s' * (EPOCHS > 1)}")
ax.invert_yaxis()
ax.set_xlim(0, 1.2 * max(seconds.values()))
fig.tight_layout()
plt.show()
