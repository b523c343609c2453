"""Train the 784-128-10 network on MNIST and report test accuracy.

    python examples/mnist_quickstart.py
"""

import time

from fastmlp import FastMLP, load_mnist

(X_train, y_train), (X_test, y_test) = load_mnist()

clf = FastMLP(hidden_layer_sizes=(128,), max_iter=5, n_iter_no_change=10, random_state=0,
              verbose=True)
start = time.perf_counter()
clf.fit(X_train, y_train, eval_set=(X_test, y_test))
print(f"fit in {time.perf_counter() - start:.2f} s on the {clf.backend_} backend")
clf.summary()
print(f"test accuracy: {clf.score(X_test, y_test):.4f}")
