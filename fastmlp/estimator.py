"""FastMLP: the scikit-learn classifier. It validates and encodes labels; the epoch loop,
L-BFGS, prediction and model files are shared with the regressor (fastmlp/_base.py), and
all arithmetic on arrays happens in the backend's kernels."""

from __future__ import annotations

import numpy as np
from scipy.special import expit
from sklearn.base import ClassifierMixin
from sklearn.exceptions import DataConversionWarning
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets, type_of_target

from ._base import BaseMLP
from ._inputs import SPARSE_FORMATS, checked_X, input_dtypes, validated_fit_data, weights_or_none
from ._report import warn_user
from .backends.codes import IDENTITY, LOGISTIC, SOFTMAX, Target

_TINY = np.finfo(np.float64).tiny


class FastMLP(ClassifierMixin, BaseMLP):
    """Multi-layer perceptron classifier trained by compiled mini-batch kernels.

    Dense layers with one activation between them and a softmax output trained on the
    cross-entropy; for a 2-D 0/1 indicator ``y`` (multilabel), a logistic output per label
    trained on the binary cross-entropy. Adam, SGD or L-BFGS train it. The parameters are
    those of scikit-learn's ``MLPClassifier`` and mean what they mean there;
    ``class_weight``, ``backend``, ``dtype``, ``n_jobs``, ``input_scale`` and ``stream``
    are fastmlp's own.

    The defaults suit image-like data such as MNIST: one hidden layer of 128 ReLU units,
    mini-batches of 64 rows and Adam at a learning rate of 2e-3. Small batches give many
    updates per epoch (938 per MNIST epoch), so that a few epochs train the 784-128-10
    network well; 2e-3 was preferred to Adam's customary 1e-3 for its test accuracy on
    MNIST over several seeds (see :doc:`Performance, The reference task </performance>`).
    ``max_iter=200`` with ``tol`` and ``n_iter_no_change`` stops training once the loss
    has stopped improving, as in scikit-learn.

    Parameters
    ----------
    hidden_layer_sizes : int or tuple of int, default (128,)
        Width of each hidden layer, from the input side; an int is one layer, and ``()``
        gives no hidden layer (multinomial logistic regression).
    activation : {"relu", "tanh", "logistic", "identity", "leaky_relu"}, default "relu"
        Activation of the hidden layers; "leaky_relu" is ``z if z > 0 else 0.01 * z``.
    solver : {"adam", "sgd", "lbfgs", "lazy_adam", "adamw"}, default "adam"
        "lbfgs" minimises the loss over all rows at once with SciPy's L-BFGS-B (through
        the backend's ``loss_and_grad``), as scikit-learn recommends for small data
        sets; it has no ``partial_fit`` and ignores the mini-batch parameters.
        "lazy_adam" is a different optimizer for wide sparse inputs: Adam, except that a
        mini-batch steps only the rows of the first layer's weights whose input feature
        is non-zero in at least one of its rows (their moments and L2 term included);
        the other rows wait until their feature appears. Each step then costs in
        proportion to the features present, not to the width of the input (see the
        :doc:`user guide, Sparse input </guide/data>`).
        "adamw" is Adam with decoupled weight decay (Loshchilov and Hutter, "Decoupled
        Weight Decay Regularization", ICLR 2019): see ``weight_decay``.
    alpha : float, default 1e-4
        L2 penalty. Each mini-batch of n rows minimises
        ``mean cross-entropy + alpha / (2 n) * sum(W ** 2)``, as scikit-learn does.
    batch_size : int or "auto", default "auto"
        Rows per mini-batch; "auto" means ``min(64, n_samples)``. Explicit values larger
        than the data are clamped with a warning.
    learning_rate : {"constant", "invscaling", "adaptive", "cosine", "linear"}, \
default "constant"
        Schedule of the learning rate. "invscaling" and "adaptive" are SGD's, as in
        scikit-learn (Adam keeps a constant rate with them): after every epoch
        "invscaling" sets the rate to ``learning_rate_init / (t_ + 1) ** power_t``, and
        "adaptive" divides it by 5 whenever training would stop for lack of improvement,
        stopping only once it falls below 1e-6. "cosine" and "linear", fastmlp's own,
        decay the rate of Adam and SGD alike before every mini-batch, from
        ``learning_rate_init`` to 0 over the ``max_iter`` epochs of a fit:
        ``(1 + cos(pi * s)) / 2`` or ``1 - s`` of it, s being the fraction of the fit's
        samples seen.
    learning_rate_init : float, default 2e-3
        Initial step size of Adam and SGD.
    power_t : float, default 0.5
        Exponent of the inverse-scaling schedule.
    max_iter : int, default 200
        Maximum number of epochs (for "lbfgs": of L-BFGS iterations).
    shuffle : bool, default True
        Shuffle the rows before every epoch.
    random_state : int, RandomState or None, default None
        Seeds the initial weights, the shuffles and the validation split; an int makes
        a fit repeatable.
    tol : float, default 1e-4
        Smallest change that counts as an improvement: of the training loss, or with
        ``early_stopping`` of the validation score (see ``n_iter_no_change``). For
        "lbfgs", the largest entry of the projected gradient at which it stops.
    verbose : bool, default False
        Print one line per epoch, such as
        ``Epoch [1/5], Train Loss: 0.2858, Train Accuracy: 91.70%, Test Accuracy: 95.62%``,
        and, when stderr is a terminal, a progress bar during each epoch; "lbfgs" prints
        the loss of each iteration.
    warm_start : bool, default False
        Start ``fit`` from the weights of the previous fit. A network of another shape,
        dtype or output starts afresh.
    momentum : float, default 0.9
        SGD's momentum, in [0, 1].
    nesterovs_momentum : bool, default True
        Whether SGD uses Nesterov's momentum.
    early_stopping : bool or "eval_set", default False
        True: hold out a stratified ``validation_fraction`` of the data, stop when its
        score (accuracy, or ``scoring``) stops improving and keep the best epoch's
        weights. Data from which no such split can be made (a class of one member, a
        validation set of fewer than two rows) is a ValueError, and ``partial_fit``
        refuses it, as in scikit-learn. "eval_set": the same, on the ``eval_set`` given
        to ``fit`` instead of a split of X (all of X trains).
    validation_fraction : float, default 0.1
        Share of the rows held out by ``early_stopping``, in (0, 1).
    beta_1 : float, default 0.9
        Adam's decay rate of the first-moment estimates, in [0, 1).
    beta_2 : float, default 0.999
        Adam's decay rate of the second-moment estimates, in [0, 1).
    epsilon : float, default 1e-8
        Added to the denominator of Adam's step, for numerical stability.
    weight_decay : float, default 0.01
        "adamw" only: before each step every parameter (weights and biases, as PyTorch's
        and Keras's AdamW do by default) is multiplied by ``1 - lr * weight_decay``, at
        the batch's scheduled learning rate ``lr``. Unlike ``alpha``, the decay does not
        pass through Adam's moments, so every weight decays at the same relative rate.
    max_norm : float or None, default None
        For the stochastic solvers: after every step, each unit whose incoming weight
        vector (its column of the layer's weights, every layer, biases left out) is
        longer than ``max_norm`` is scaled back to that length, the max-norm constraint
        of Srivastava et al. (2014), often used with dropout. "lbfgs" refuses it.
    dropout : float, default 0.0
        For the stochastic solvers: the rate at which each hidden unit's output is
        dropped (set to 0) during training, the kept ones divided by ``1 - dropout``
        (inverted dropout); prediction uses every unit. The masks are drawn from a
        counter-based generator keyed by the fit's random state, the batch, the layer,
        the row and the unit, so they are the same on every backend and at any thread
        count. The input layer is not dropped. "lbfgs" refuses it.
    scoring : str, callable or None, default None
        The score of early stopping and of ``eval_set``: None is accuracy (``score``); a
        scikit-learn scorer name (``"f1_macro"``, ``"neg_log_loss"``, ...) or a callable
        ``scorer(estimator, X, y)``, greater being better. With weighted rows the split's
        scorer is given their ``sample_weight``.
    n_iter_no_change : int or np.inf, default 10
        Epochs without an improvement of at least ``tol`` before training stops (or, with
        the "adaptive" schedule, before the rate is lowered); ``np.inf`` never stops
        early.
    max_fun : int, default 15000
        "lbfgs" only: the largest number of loss evaluations.
    class_weight : None, "balanced" or dict, default None
        Weights of the classes: every row's weight (its ``sample_weight``, or 1) is
        multiplied by its class's. "balanced" gives class c the weight
        ``n_samples / (n_classes * count(c))`` over the y of ``fit`` (it is refused by
        ``partial_fit``, which sees one part of the data); a dict maps labels to weights,
        1 for labels it leaves out. Not for multilabel y.
    backend : str, default "auto"
        Kernel backend: "auto", or one of :func:`fastmlp.available_backends`. "auto"
        takes the fastest backend that is ready without compiling (see
        :func:`fastmlp.get_backend` and the :doc:`user guide, Backends </guide/backends>`);
        every backend computes the same function.
    dtype : {"float32", "float64"}, default "float32"
        Floating-point type of the weights and of the arithmetic.
    n_jobs : int or None, default None
        Threads for the kernels and BLAS; -1 uses every CPU the process may use (its
        affinity, capped by a cgroup CPU quota). None uses that many too, or fewer when
        ``OMP_NUM_THREADS``, a threadpoolctl limit on OpenMP (as joblib puts on its
        workers) or the Dask worker it runs in says so; ``fastmlp info`` shows the count
        and what set it (see the :doc:`user guide, Threads </guide/backends>`).
    input_scale : float or None, default None
        A constant factor applied to every input as X is prepared (None means 1): images
        stored as uint8 train as values in [0, 1] with ``input_scale=1/255``, without a
        float copy of X. Integer X (uint8 pixels, a ``np.memmap`` of them) is kept as it
        is stored and converted by blocks of rows where it is read; its values keep their
        meaning (a uint8 255 is 255.0 times ``input_scale``). Prediction applies the same
        factor. See the :doc:`user guide, Stored inputs </guide/data>`.
    stream : "auto" or bool, default "auto"
        How ``fit`` and ``partial_fit`` read a dense X. True streams it in blocks of rows:
        each epoch visits the blocks in a random order and the rows of each block in a
        random order of their own, and a background thread reads the next block while
        the current one trains. "auto" streams a memory-mapped file (``np.memmap``,
        ``np.load(..., mmap_mode="r")``) of at least 1 GiB, so data larger than memory
        trains in a few hundred MiB; any other integer X (uint8 pixels, in memory or a
        smaller map) it prepares a part of about 32 MiB at a time, in the order of the
        whole-X fit, so the model is the one a fit of X prepared whole gives, bit for
        bit, without holding the prepared form of all of X (for uint8 pixels, often
        larger than X itself). False prepares every X whole. Streaming in blocks changes
        the order rows are visited in (so the weights), not what an epoch computes;
        sparse X is always prepared whole. See the
        :doc:`user guide, Data larger than memory </guide/data>`.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels, sorted; for multilabel y, ``0 .. n_labels - 1``.
    coefs_ : list of ndarray
        Weight matrices, the i-th of shape ``(layer_sizes[i], layer_sizes[i + 1])``:
        views into one contiguous parameter vector.
    intercepts_ : list of ndarray
        Bias vectors, the i-th of shape ``(layer_sizes[i + 1],)``.
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of str
        Names of the features seen in ``fit``; only when X had column names that are
        all strings.
    n_iter_ : int
        Epochs run by the last call to ``fit`` or ``partial_fit`` (as in scikit-learn,
        each call counts from zero; ``t_`` and ``loss_curve_`` go on across calls). For
        "lbfgs", its iterations.
    t_ : int
        Training samples seen by the epochs, across calls.
    loss_ : float
        Mean loss of the last epoch (cross-entropy plus the L2 term; with weights, the
        weighted mean).
    loss_curve_ : list of float
        ``loss_`` of every epoch (for "lbfgs", of every iteration), across calls.
    train_scores_ : list of float
        Each epoch's training accuracy: the fraction of the epoch's rows the network
        classified correctly as it trained on them (the "Train Accuracy" of ``verbose``;
        for multilabel y, rows with every label right). Kept across calls, as
        ``loss_curve_``; not set by "lbfgs".
    eval_scores_ : list of float
        Score (accuracy, or ``scoring``) of the ``eval_set`` of ``fit`` after every epoch;
        only after a fit given one.
    best_loss_ : float or None
        Lowest ``loss_`` so far; None with ``early_stopping``.
    validation_scores_ : list of float or None
        Score (accuracy, or ``scoring``) of the held-out rows, or of the ``eval_set`` with
        ``early_stopping="eval_set"``, after every epoch; None without ``early_stopping``.
    best_validation_score_ : float or None
        Best of ``validation_scores_``, whose weights the model keeps; None without
        ``early_stopping``.
    n_layers_ : int
        Layers including input and output.
    n_outputs_ : int
        Output units: one per class (softmax output, binary problems included), or one
        per label (multilabel).
    out_activation_ : str
        "softmax", or "logistic" for multilabel y.
    backend_ : str
        Name of the backend that ran.
    n_parameters_ : int
        Number of trainable parameters (weights and biases).

    See Also
    --------
    FastMLPRegressor : The same network for regression.
    sklearn.neural_network.MLPClassifier : The scikit-learn classifier with these parameters.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.model_selection import train_test_split
    >>> from fastmlp import FastMLP
    >>> X, y = load_iris(return_X_y=True)
    >>> X_train, X_test, y_train, y_test = train_test_split(X, y, stratify=y,
    ...                                                     random_state=0)
    >>> clf = FastMLP(max_iter=500, random_state=0).fit(X_train, y_train)
    >>> clf.classes_
    array([0, 1, 2])
    >>> clf.predict(X_test[:4]).shape
    (4,)
    >>> clf.predict_proba(X_test[:4]).shape
    (4, 3)
    >>> clf.score(X_test, y_test) > 0.9
    True
    """

    def __init__(self, hidden_layer_sizes=(128,), activation="relu", *, solver="adam",
                 alpha=1e-4, batch_size="auto", learning_rate="constant", learning_rate_init=2e-3,
                 power_t=0.5, max_iter=200, shuffle=True, random_state=None, tol=1e-4,
                 verbose=False, warm_start=False, momentum=0.9, nesterovs_momentum=True,
                 early_stopping=False, validation_fraction=0.1, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-8, weight_decay=0.01, max_norm=None, dropout=0.0,
                 n_iter_no_change=10, max_fun=15000, scoring=None, class_weight=None,
                 backend="auto", dtype="float32", n_jobs=None, input_scale=None,
                 stream="auto"):
        super().__init__(
            hidden_layer_sizes=hidden_layer_sizes, activation=activation, solver=solver,
            alpha=alpha, batch_size=batch_size, learning_rate=learning_rate,
            learning_rate_init=learning_rate_init, power_t=power_t, max_iter=max_iter,
            shuffle=shuffle, random_state=random_state, tol=tol, verbose=verbose,
            warm_start=warm_start, momentum=momentum, nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping, validation_fraction=validation_fraction,
            beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, weight_decay=weight_decay,
            max_norm=max_norm, dropout=dropout,
            n_iter_no_change=n_iter_no_change,
            max_fun=max_fun, scoring=scoring, backend=backend, dtype=dtype, n_jobs=n_jobs,
            input_scale=input_scale, stream=stream)
        self.class_weight = class_weight

    # ------------------------------------------------------------------ fitting

    def fit(self, X, y, sample_weight=None, *, eval_set=None):
        """Train on (X, y), from fresh weights unless ``warm_start`` is set.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Training rows. Integer X (uint8 pixels, a memory map of them) is kept as it
            is stored (see ``input_scale`` and ``stream``); SciPy sparse X is taken as
            compressed sparse rows.
        y : array-like of shape (n_samples,) or (n_samples, n_labels)
            Class labels of any type, or a 0/1 indicator matrix (multilabel).
        sample_weight : array-like of shape (n_samples,), optional
            Each row's weight in the loss and its gradient (scikit-learn's definition:
            every mini-batch minimises its weighted mean loss); also weighs the
            validation score of early stopping.
        eval_set : tuple (X_eval, y_eval), optional
            Scored after every epoch; the accuracies are kept in ``eval_scores_`` and
            shown as "Test Accuracy" by ``verbose``.

        Returns
        -------
        FastMLP
            The fitted estimator, ``self``.
        """
        return self._fit(X, y, sample_weight, incremental=False, eval_set=eval_set)

    @available_if(BaseMLP._check_solver)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """Train one epoch over (X, y), continuing from the current weights.

        Only for the stochastic solvers ("adam", "sgd", "lazy_adam", "adamw"); it refuses
        ``early_stopping=True`` and ``class_weight="balanced"``.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Training rows, as for ``fit``.
        y : array-like of shape (n_samples,) or (n_samples, n_labels)
            Class labels, or a 0/1 indicator matrix (multilabel).
        sample_weight : array-like of shape (n_samples,), optional
            Each row's weight in the loss and its gradient.
        classes : array-like of shape (n_classes,), optional
            Every label that will ever be seen. Required on the first call, unless y is
            a multilabel indicator matrix; later calls may repeat it unchanged.

        Returns
        -------
        FastMLP
            The estimator, ``self``, trained one epoch further.

        Examples
        --------
        >>> import numpy as np
        >>> from fastmlp import FastMLP
        >>> rng = np.random.default_rng(0)
        >>> X = rng.random((100, 4))
        >>> y = (X[:, 0] > 0.5).astype(int)
        >>> clf = FastMLP(random_state=0)
        >>> for part in np.array_split(np.arange(100), 4):
        ...     _ = clf.partial_fit(X[part], y[part], classes=[0, 1])
        >>> clf.n_iter_, clf.t_
        (1, 100)
        """
        if self.early_stopping:
            # as in scikit-learn: a validation split of one batch means nothing, and
            # refusing before any work leaves the model as it was
            raise ValueError("partial_fit does not support early_stopping=True")
        if isinstance(self.class_weight, str) and self.class_weight == "balanced":
            raise ValueError("class_weight='balanced' is not supported by partial_fit, "
                             "which sees only part of the data: pass the weights as a dict "
                             "(compute_class_weight('balanced', ...) over all of y gives "
                             "them)")
        first_call = not hasattr(self, "classes_")
        multilabel = type_of_target(y) == "multilabel-indicator"
        if first_call and classes is None and not multilabel:
            raise ValueError("classes must be passed on the first call to partial_fit")
        if classes is not None:
            classes = np.unique(np.asarray(classes))
            if not first_call and not np.array_equal(classes, self.classes_):
                raise ValueError(f"classes={classes!r} differs from the classes of the first "
                                 f"call to partial_fit, {self.classes_!r}")
        return self._fit(X, y, sample_weight, incremental=True, classes=classes)

    def _encode_labels(self, y):
        """Class indices of y in classes_; labels outside classes_ are an error."""
        encoded = np.searchsorted(self.classes_, y)
        encoded = np.clip(encoded, 0, len(self.classes_) - 1)
        unseen = self.classes_[encoded] != y
        if np.any(unseen):
            raise ValueError(f"y contains labels not seen before: {np.unique(y[unseen])!r}; "
                             f"known classes are {self.classes_!r}")
        return encoded.astype(np.int64)

    def _targets(self, X, y, p, incremental, classes, reinitialise):
        """Validate X and y; set or check ``classes_``. Class labels train a softmax
        output; a 2-D 0/1 indicator y (multilabel) a logistic output per label."""
        dtype = p.dtype
        X, y = validated_fit_data(self, X, y, p.backend, reset=reinitialise,
                                  dtype=input_dtypes(dtype), order="C",
                                  accept_sparse=SPARSE_FORMATS, multi_output=True,
                                  y_numeric=False)
        X = checked_X(X)
        if y.ndim == 2 and y.shape[1] == 1 and type_of_target(y) != "multilabel-indicator":
            warn_user("A column-vector y was passed when a 1d array was expected. "
                          "Please change the shape of y to (n_samples,), for example using "
                          "ravel().", DataConversionWarning)
            y = y.ravel()
        if y.ndim == 2:
            return self._multilabel_targets(X, y, dtype, incremental, reinitialise)
        check_classification_targets(y)
        if reinitialise:
            self.classes_ = np.unique(y) if classes is None else classes
        elif not incremental and not np.array_equal(np.unique(y), self.classes_):
            # scikit-learn's wording, so that code matching its message keeps working
            raise ValueError("warm_start can only be used where `y` has the same classes as "
                             f"in the previous call to fit. Previously got {self.classes_}, "
                             f"`y` has {np.unique(y)}")
        elif getattr(self, "out_activation_", "softmax") != "softmax":
            raise ValueError("this model was fitted on multilabel y; it cannot continue on "
                             "1-D class labels")
        labels = self._encode_labels(y)
        n_out = len(self.classes_)
        target = Target(SOFTMAX, labels, np.empty((0, n_out), dtype=dtype),
                        np.empty(0, dtype=dtype))
        return X, target, "softmax", self._class_factors(y, labels)

    def _multilabel_targets(self, X, y, dtype, incremental, reinitialise):
        if type_of_target(y) != "multilabel-indicator":
            raise ValueError(f"a 2-D y must be a multilabel indicator matrix of 0s and 1s "
                             f"(one column per label); got {type_of_target(y)!r} targets, "
                             "which are not supported")
        if self.class_weight is not None:
            raise ValueError("class_weight is not supported for multilabel y; weigh the "
                             "rows with sample_weight")
        n_labels = y.shape[1]
        if reinitialise:
            self.classes_ = np.arange(n_labels)
        elif getattr(self, "out_activation_", None) != "logistic" or len(self.classes_) != n_labels:
            what = "warm_start" if not incremental else "partial_fit"
            raise ValueError(f"{what} needs y like the previous fit's: this model was "
                             f"fitted on {len(self.classes_)} "
                             + ("labels (multilabel)" if self.out_activation_ == "logistic"
                                else "classes (1-D labels)")
                             + f", and y is a {n_labels}-label indicator matrix")
        values = np.ascontiguousarray(y, dtype=dtype)
        target = Target(LOGISTIC, np.empty(0, dtype=np.int64), values, np.empty(0, dtype=dtype))
        return X, target, "logistic", None

    def _class_factors(self, y, labels):
        """Each row's class weight (class_weight, already checked against the table of
        fastmlp/_params.py), or None."""
        if self.class_weight is None:
            return None
        if isinstance(self.class_weight, dict):
            unknown = [k for k in self.class_weight if k not in set(self.classes_.tolist())]
            if unknown:
                raise ValueError(f"class_weight has labels that are not classes: {unknown!r}; "
                                 f"the classes are {self.classes_!r}")
            factors = np.ones(len(self.classes_))
            for i, label in enumerate(self.classes_):
                factors[i] = float(self.class_weight.get(label, 1.0))
            if not (np.isfinite(factors).all() and factors.min() >= 0):
                raise ValueError("class_weight values must be finite and non-negative")
        else:
            present = np.unique(labels)
            factors = np.ones(len(self.classes_))
            factors[present] = compute_class_weight("balanced", classes=self.classes_[present],
                                                    y=y)
        return factors[labels]

    def _stratify(self, target):
        return target.labels if target.output == SOFTMAX else None

    def _labels_of(self, target):
        if target.output == SOFTMAX:
            return self.classes_[target.labels]
        return (target.values > 0.5).astype(np.int64)

    def _score_target(self, backend, activation, X, target):
        """Accuracy (weighted by the rows' weights, if any): the arg-max is the label, or
        for multilabel, every label is on its side of 0.5."""
        logits = self._forward(backend, activation, X, IDENTITY)
        if target.output == SOFTMAX:
            right = np.argmax(logits, axis=1) == target.labels
        else:
            right = np.all((logits > 0) == (target.values > 0.5), axis=1)
        return float(np.average(right, weights=weights_or_none(target)))

    # ------------------------------------------------------------------ prediction

    def predict_proba(self, X):
        """Return the probability of each class for each row of X.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Rows to predict.

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
            Class probabilities, columns in ``classes_`` order, in the model's dtype.
            For multilabel, each label's probability (the rows need not sum to 1), in
            float64 and inside the open interval (0, 1), as probabilities of a logistic
            output are (a logit beyond about 37 would round to exactly 1).
        """
        if getattr(self, "out_activation_", None) == "logistic":
            proba = expit(self._predict_forward(X, IDENTITY).astype(np.float64))
            return np.clip(proba, _TINY, 1.0 - 2.0**-53, out=proba)
        return self._predict_forward(X)

    def predict_log_proba(self, X):
        """Return the logarithm of ``predict_proba``.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Rows to predict.

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
            Natural logarithm of each class's probability; a probability that rounds to
            0 gives ``-inf``.
        """
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X):
        """Return the most probable class of each row of X.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Rows to predict.

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, n_labels)
            Labels from ``classes_``; for multilabel, the 0/1 indicator matrix of the
            labels whose probability exceeds 0.5.
        """
        # the largest logit is the largest probability, and a positive one a probability
        # above 0.5: no output function needed
        logits = self._predict_forward(X, IDENTITY)
        if self.out_activation_ == "logistic":
            return (logits > 0).astype(np.int64)
        return self.classes_[logits.argmax(axis=1)]

    def score(self, X, y, sample_weight=None):
        """Return the accuracy of ``predict(X)`` against y.

        For multilabel y, a row counts as right only when every one of its labels is.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Rows to predict.
        y : array-like of shape (n_samples,) or (n_samples, n_labels)
            True labels.
        sample_weight : array-like of shape (n_samples,), optional
            Weights of the rows in the mean.

        Returns
        -------
        float
            Share of the rows predicted right (weighted by ``sample_weight``).
        """
        # ClassifierMixin's score, with fastmlp's docstring
        return super().score(X, y, sample_weight=sample_weight)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags
