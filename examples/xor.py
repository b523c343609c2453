"""What a hidden layer is for: XOR is not linearly separable.

Without a hidden layer (multinomial logistic regression) no line separates the classes,
so at most 3 of the 4 points can be right; one small hidden layer solves it exactly.

    python examples/xor.py
"""

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from fastmlp import FastMLP

X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
y = np.array([0, 1, 1, 0])

warnings.simplefilter("ignore", ConvergenceWarning)
common = dict(max_iter=500, learning_rate_init=0.05, batch_size=4, random_state=0, tol=0,
              n_iter_no_change=1000)
linear = FastMLP(hidden_layer_sizes=(), **common).fit(X, y)
hidden = FastMLP(hidden_layer_sizes=(8,), activation="tanh", **common).fit(X, y)

print(f"no hidden layer:       accuracy {linear.score(X, y):.2f}, predictions {linear.predict(X)}")
print(f"one hidden layer of 8: accuracy {hidden.score(X, y):.2f}, predictions {hidden.predict(X)}")
