"""Derivatives of a model's output with respect to its input, by autodiff.

`input_derivatives(model, x, order)` answers the question that nested
`GradientTape`s answer with `None`: the second derivative of a network whose
first derivative does not depend on the input (a linear network) is zero,
and fdlayers returns zeros. `input_partials(model, x, indices)` gives mixed
and high-order partials of a model of several input features, and
`input_laplacian(model, x)` the sum of its pure second partials: the terms
of a differential equation's residual. `input_operator(model, x, terms)`
gives a whole linear residual, such as `u_t − ν·u_xx`, at once.

All four are differentiable with respect to the model's weights on every
backend, so that a loss built from them trains the model (see
fdlayers/partials.py for how each backend computes them).
"""

import math
import numbers

import keras

from fdlayers import partials as _partials
from fdlayers.dispatch import static_python

_BACKENDS = ("tensorflow", "jax", "torch")


def input_derivatives(model, x, order=2, feature=None):
    """`[dy/dx, d²y/dx², ..., dⁿy/dxⁿ]` of `y = model(x)`, per sample.

    Every sample `x[i]` is a point and `y[i] = model(x)[i]` its output; the
    model must treat samples independently (Dense, convolution and
    recurrent stacks do; `BatchNormalization` in training mode does not, and
    the model is called with `training=False`). With `x` of shape
    `(batch, d)` (any rank ≥ 2: the non-batch elements are the sample's
    `d` features), the `k`-th entry is shaped like `y`:

    - `d == 1` (the `(N, 1)` case), or `feature=j`: the pure partial
      derivative `∂ᵏ y[i, ...] / ∂ x[i, j]ᵏ` of every output element with
      respect to the sample's feature `j` (0 when `d == 1`);
    - otherwise `y` must have `x`'s shape, and the entry is elementwise:
      `∂ᵏ y[i, j] / ∂ x[i, j]ᵏ`, the pure partial of each output element
      with respect to the input element at the same place (no mixed
      partials). Any other shape is a `ValueError` asking for `feature`.

    Where the true derivative is zero, so is the result, never `None`: the
    gradients are taken with respect to the input tensor only, with
    unconnected gradients as zeros (TensorFlow issue 116636, where
    `UnconnectedGradients.ZERO` fails for Keras 3 variables, concerns
    variables as sources and does not arise).

    TensorFlow: nested `GradientTape`s (reverse mode, one gradient per
    output element and order). JAX: nested `jax.jvp` (forward mode), and
    Taylor mode for `feature=j` from order 3 on. PyTorch: nested
    `torch.autograd.grad` with `create_graph=True`. With `feature=j`, a
    chain of `Dense` layers gets Taylor mode on every backend (see
    fdlayers/partials.py). The results are differentiable with respect to
    the model's weights on every backend (see `input_partials`).

    Args:
        model: a Keras model or layer, or any callable on tensors of the
            current backend.
        x: the input points, an array or tensor of rank ≥ 2 with the batch
            first. Integers are cast to `keras.config.floatx()`.
        order: the highest derivative order, an integer ≥ 1.
        feature: the input feature to differentiate with respect to, an
            integer index into the flattened non-batch elements of `x`, or
            None (see above).

    Returns:
        A list of `order` tensors, each shaped like `model(x)`, in its dtype.

    Raises:
        TypeError, ValueError: for an invalid `order`, `feature` or `x`, or
            an output whose shape does not match the rule above.
    """
    if isinstance(order, bool) or not isinstance(order, numbers.Integral) \
            or order < 1:
        raise ValueError(
            f"`order` must be an integer ≥ 1. Received: order={order!r}")
    backend = _backend("input_derivatives")
    x, features = _points(x)
    if feature is not None:
        feature = _feature("feature", feature, features)
    elif features == 1:
        feature = 0
    call = _caller(model)
    if feature is not None:
        values = _partials.partials(
            call, x, [(feature,) * k for k in range(1, order + 1)], backend,
            model)
        return [values[(feature,) * k] for k in range(1, order + 1)]
    elementwise = {"tensorflow": _tensorflow, "jax": _jax, "torch": _torch}
    return elementwise[backend](call, x, order, features)


def input_partials(model, x, indices):
    """Partial derivatives of `y = model(x)` given by multi-indices, per sample.

    A multi-index `(j₁, ..., jₖ)` names the partial derivative

        ∂ᵏ y[i, ...] / ∂x[i, j₁] ... ∂x[i, jₖ]

    of every output element with respect to features `j₁, ..., jₖ` of the
    same sample `i` (`x` of shape `(batch, d)`, or any rank ≥ 2 with the
    non-batch elements flattened into `d` features): `(0,)` is ∂y/∂x₀,
    `(0, 0)` is ∂²y/∂x₀², `(0, 1)` is ∂²y/∂x₀∂x₁ and `(1, 1, 1, 1)` is
    ∂⁴y/∂x₁⁴. The order of the features in a multi-index does not matter
    (partial derivatives of a smooth function commute), and lower
    derivatives shared by several multi-indices are computed once: a whole
    Hessian costs what its rows do. The model must treat samples
    independently, as `input_derivatives` requires; it is called with
    `training=False`.

    Where the true derivative is zero, so is the result, never `None`. The
    results are differentiable with respect to the model's weights on every
    backend (inside a `GradientTape`, `jax.grad` or a Keras `train_step`),
    so a loss built from them trains the model.

    Args:
        model: a Keras model or layer, or any callable on tensors of the
            current backend.
        x: the input points, an array or tensor of rank ≥ 2 with the batch
            first. Integers are cast to `keras.config.floatx()`.
        indices: a list of multi-indices, each a non-empty tuple of integer
            feature indices in `[-d, d)`.

    Returns:
        A list with one tensor per multi-index, in the order of `indices`,
        each shaped like `model(x)`, in its dtype.

    Raises:
        ValueError: for an invalid `x` or `indices`.

    Example:

    ```python
    import numpy as np, keras, fdlayers

    model = keras.Sequential([keras.Input((2,)),
                              keras.layers.Dense(16, activation="tanh"),
                              keras.layers.Dense(1)])
    xt = np.random.uniform(-1, 1, (8, 2)).astype("float32")
    u_x, u_xx, u_xt = fdlayers.input_partials(model, xt, [(0,), (0, 0), (0, 1)])
    print(u_xt.shape)  # (8, 1)
    ```
    """
    backend = _backend("input_partials")
    x, features = _points(x)
    if isinstance(indices, (str, bytes)) or not isinstance(indices, (list, tuple)) \
            or not indices:
        raise ValueError(
            "`indices` must be a non-empty list of multi-indices, tuples of "
            "feature indices such as [(0,), (0, 1)]. Received: "
            f"indices={indices!r}")
    wanted = []
    for position, index in enumerate(indices):
        if isinstance(index, (str, bytes)) or not isinstance(index, (list, tuple)) \
                or not index:
            raise ValueError(
                "`indices` must be a list of multi-indices, each a non-empty "
                "tuple of feature indices: (0,) for ∂/∂x0, (0, 1) for "
                "∂²/∂x0∂x1 (wrap a single multi-index in a list: [(0, 1)]). "
                f"Received: indices[{position}]={index!r}")
        wanted.append(tuple(sorted(
            _feature(f"indices[{position}]", j, features) for j in index)))
    values = _partials.partials(_caller(model), x, dict.fromkeys(wanted),
                                backend, model)
    return [values[index] for index in wanted]


def input_laplacian(model, x, features=None):
    """`Σⱼ ∂²y/∂x[:, j]²` of `y = model(x)` over `features`, per sample.

    The Laplacian of every output element with respect to the sample's
    features `features` (all of them by default), shaped like `model(x)`:
    the sum of the pure second partials that `input_partials` gives for
    `[(j, j) for j in features]` (`input_operator` with a coefficient of 1
    for each: for a chain of `Dense` layers, one pass that carries the
    sum). Same contract as `input_partials`: per sample, zeros where the
    truth is zero, differentiable with respect to the model's weights.

    Args:
        model: a Keras model or layer, or any callable on tensors of the
            current backend.
        x: the input points, an array or tensor of rank ≥ 2 with the batch
            first. Integers are cast to `keras.config.floatx()`.
        features: None (every feature), or a non-empty list of distinct
            integer feature indices in `[-d, d)` (the space variables, for
            instance, without time).

    Returns:
        A tensor shaped like `model(x)`, in its dtype.

    Raises:
        ValueError: for an invalid `x` or `features`.

    Example:

    ```python
    import numpy as np, keras, fdlayers

    square = keras.layers.Lambda(
        lambda v: keras.ops.sum(v ** 2, axis=1, keepdims=True))
    points = np.random.uniform(-1, 1, (4, 3)).astype("float32")
    print(fdlayers.input_laplacian(square, points))  # 6 at every point
    ```
    """
    backend = _backend("input_laplacian")
    x, count = _points(x)
    if features is None:
        chosen = list(range(count))
    else:
        if isinstance(features, (str, bytes)) \
                or not isinstance(features, (list, tuple)) or not features:
            raise ValueError(
                "`features` must be None or a non-empty list of feature "
                f"indices in [{-count}, {count}). Received: "
                f"features={features!r}")
        chosen = [_feature(f"features[{position}]", j, count)
                  for position, j in enumerate(features)]
        if len(set(chosen)) != len(chosen):
            raise ValueError(
                "`features` must not name a feature twice (x has "
                f"{count} features per sample). Received: features={features!r}")
    return _partials.operator(_caller(model), x,
                              {(j, j): 1.0 for j in chosen}, backend, model)


def input_operator(model, x, terms):
    """`Σ c_α ∂^α y` of `y = model(x)` over `terms`, per sample.

    A linear differential operator applied to the model: `terms` maps
    multi-indices, as `input_partials` takes them, to their coefficients,
    and the empty multi-index `()` stands for `y` itself. The heat
    equation's residual `u_t − ν·u_xx`, with `x = (x, t)`, is
    `{(1,): 1.0, (0, 0): -nu}`; the Helmholtz operator `Δu + k²u` in two
    features `{(0, 0): 1.0, (1, 1): 1.0, (): k ** 2}`. A multi-index's
    features may come in any order, and terms naming the same partial add
    up.

    The result equals `Σ c · input_partials(model, x, list(terms))`, with
    the same contract: per sample, zeros where the truth is zero,
    differentiable with respect to the model's weights and to tensor
    coefficients (a trainable ν of an inverse problem). But where every
    term is of order ≤ 2 and the model is a chain of `Dense` layers, the
    combination is computed in one forward pass that carries it whole
    rather than each term: `u_t − u_xx` takes 3 matrix products a layer,
    against 4 for its terms one by one.

    Args:
        model: a Keras model or layer, or any callable on tensors of the
            current backend.
        x: the input points, an array or tensor of rank ≥ 2 with the batch
            first. Integers are cast to `keras.config.floatx()`.
        terms: a non-empty dict from multi-indices (tuples of integer
            feature indices in `[-d, d)`, `()` for `y`) to coefficients:
            finite real numbers, or tensors or Keras variables of shape
            `()` (one for all samples) or `(batch, 1)` (one per sample).

    Returns:
        A tensor shaped like `model(x)`, in its dtype.

    Raises:
        ValueError: for an invalid `x` or `terms`.

    Example:

    ```python
    import numpy as np, keras, fdlayers

    model = keras.Sequential([keras.Input((2,)),
                              keras.layers.Dense(16, activation="tanh"),
                              keras.layers.Dense(1)])
    xt = np.random.uniform(-1, 1, (8, 2)).astype("float32")
    residual = fdlayers.input_operator(model, xt, {(1,): 1.0, (0, 0): -0.1})
    print(residual.shape)  # (8, 1)
    ```
    """
    backend = _backend("input_operator")
    x, features = _points(x)
    if not isinstance(terms, dict) or not terms:
        raise ValueError(
            "`terms` must be a non-empty dict from multi-indices to "
            "coefficients, e.g. {(1,): 1.0, (0, 0): -0.1} for u_t − 0.1·u_xx. "
            f"Received: terms={terms!r}")
    combined = {}
    for key, c in terms.items():
        if isinstance(key, (str, bytes)) or not isinstance(key, (list, tuple)):
            raise ValueError(
                "`terms` must map multi-indices, tuples of feature indices "
                "such as (0,) for ∂/∂x0, (0, 1) for ∂²/∂x0∂x1 or () for the "
                f"output itself, to coefficients. Received: the key {key!r}")
        name = f"terms[{tuple(key)!r}]"
        index = tuple(sorted(_feature(name, j, features) for j in key))
        c = _coefficient(name, c, x)
        combined[index] = (c if index not in combined
                           else _partials._plus(combined[index], c, 1.0))
    return _partials.operator(_caller(model), x, combined, backend, model)


# The helpers below never call the model: AutoGraph need not convert them
# (`static_python`), which a user's own tf.function would otherwise do on
# its first trace (Keras' `fit` runs its train step unconverted). The
# functions that do call it stay convertible, so that a model whose `call`
# relies on AutoGraph still traces.
@static_python
def _backend(name):
    backend = keras.backend.backend()
    if backend not in _BACKENDS:
        raise NotImplementedError(
            f"{name} runs on the TensorFlow, JAX and PyTorch backends. "
            f"Received: the {backend!r} backend")
    return backend


@static_python
def _points(x):
    """`x` as a float tensor of rank ≥ 2, and its features per sample."""
    x = keras.ops.convert_to_tensor(x)
    if not keras.backend.standardize_dtype(x.dtype).startswith(("float", "bfloat")):
        x = keras.ops.cast(x, keras.config.floatx())
    if len(x.shape) < 2:
        raise ValueError(
            "`x` must have a batch axis and the features of each sample, "
            f"e.g. shape (N, 1). Received: x of shape {tuple(x.shape)}")
    return x, math.prod(x.shape[1:])


@static_python
def _feature(name, value, features):
    """A feature index in [-features, features) as one in [0, features)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
            or not -features <= value < features:
        argument, _, _ = name.partition("[")
        what = "hold integers" if argument != name else "be an integer"
        raise ValueError(
            f"`{argument}` must {what} in [{-features}, {features}): x has "
            f"{features} features per sample. Received: {name}={value!r}")
    return int(value) % features


@static_python
def _coefficient(name, c, x):
    """A coefficient of `input_operator` as a float, or as a tensor of
    `x`'s dtype and shape `()` or `(batch, 1)` (a Keras variable's value,
    which its gradient reaches)."""
    if isinstance(c, numbers.Real) and not isinstance(c, bool):
        if not math.isfinite(c):
            raise ValueError(
                f"`{name}`, a coefficient, must be finite. Received: {c!r}")
        return float(c)
    if isinstance(c, (bool, str, bytes)) or not hasattr(c, "shape") \
            or not hasattr(c, "dtype"):
        raise ValueError(
            f"`{name}`, a coefficient, must be a real number or a tensor of "
            f"shape () or (batch, 1). Received: {c!r}")
    shape = tuple(c.shape)
    batch = x.shape[0]
    if shape != () and not (len(shape) == 2 and shape[1] == 1 and (
            shape[0] is None or batch is None or shape[0] == batch)):
        raise ValueError(
            f"`{name}`, a coefficient, must have shape () (one for every "
            f"sample) or (batch, 1) (one per sample), here batch = {batch}. "
            f"Received: a coefficient of shape {shape}")
    kind = keras.backend.standardize_dtype(c.dtype)
    if not kind.startswith(("float", "bfloat", "int", "uint")):
        raise ValueError(
            f"`{name}`, a coefficient, must be real. Received: a coefficient "
            f"of dtype {kind}")
    if isinstance(c, keras.Variable):
        c = c.value
    return keras.ops.cast(c, keras.backend.standardize_dtype(x.dtype))


def _caller(model):
    def call(v):
        if isinstance(model, keras.layers.Layer):
            return model(v, training=False)
        return model(v)
    return call


@static_python
def _check_elementwise(y, x):
    if tuple(y.shape) != tuple(x.shape):
        raise ValueError(
            "With several input features and no `feature`, the output must "
            "have the input's shape (elementwise derivatives ∂y[i, j]/∂x[i, j])"
            f". Received: x of shape {tuple(x.shape)}, output of shape "
            f"{tuple(y.shape)}; pass feature=j for ∂y/∂x[:, j]")


# The elementwise derivatives ∂ᵏy[i, j]/∂x[i, j]ᵏ: the diagonal of each
# order's Jacobian, one gradient (or jvp) per output element and order,
# where fdlayers.partials would take every row of every Jacobian.

def _tensorflow(call, x, order, features):
    with _partials.nested_tapes(order, x) as leaving:
        current = call(x)
        _check_elementwise(current, x)
        results = []
        for tape in leaving():
            current = _tape_diagonal(tape, current, x, features)
            results.append(current)
    return results


@static_python
def _tape_diagonal(tape, y, x, features):
    """∂y[:, j]/∂x[:, j] for every j, shaped like `y`, with `tape`."""
    import tensorflow as tf

    batch = tf.shape(y)[0]
    columns = []
    for element in range(features):
        # The gradient of Σ_i y[i, element]: per sample, as samples are
        # independent. One-hot output gradients avoid slicing y outside the
        # tape that recorded it.
        pick = tf.reshape(tf.one_hot(element, features, dtype=y.dtype),
                          [1] + list(y.shape[1:]))
        grad = tape.gradient(y, x, output_gradients=tf.broadcast_to(
            pick, tf.shape(y)), unconnected_gradients=tf.UnconnectedGradients.ZERO)
        columns.append(tf.reshape(grad, [batch, features])[:, element])
    return _partials.like(tf.reshape(tf.stack(columns, axis=1), tf.shape(y)),
                          y)


def _jax(call, x, order, features):
    import jax
    import jax.numpy as jnp

    _check_elementwise(call(x), x)

    def derivatives(column):
        tangent = jnp.zeros(x.shape[1:], x.dtype).reshape(-1).at[column].set(1)
        tangent = jnp.broadcast_to(tangent.reshape(x.shape[1:]), x.shape)
        fns = [call]
        for _ in range(order):
            inner = fns[-1]
            fns.append(lambda v, inner=inner: jax.jvp(inner, (v,), (tangent,))[1])
        return [fn(x) for fn in fns[1:]]

    # Direction j gives ∂y/∂x_j; keep output element j.
    per_column = [derivatives(j) for j in range(features)]
    picks = jnp.eye(features, dtype=bool)
    return [
        sum(jnp.where(picks[j].reshape(x.shape[1:]), per_column[j][k], 0)
            for j in range(features))
        for k in range(order)
    ]


def _torch(call, x, order, features):
    import torch

    # As in fdlayers.partials: a graph to the weights whenever autograd is
    # on, and autograd on for the derivatives themselves.
    keep_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        if not x.requires_grad:
            x = x.detach().requires_grad_(True)
        current = call(x)
        _check_elementwise(current, x)
        results = []
        for level in range(order):
            if not current.requires_grad:  # constant in x: the rest are zeros
                current = torch.zeros_like(current)
                results.append(current)
                continue
            flat = current.reshape(current.shape[0], features)
            columns = []
            for element in range(features):
                grad, = torch.autograd.grad(
                    flat[:, element].sum(), x, allow_unused=True,
                    create_graph=keep_graph or level + 1 < order)
                if grad is None:  # unconnected: the derivative is zero
                    grad = torch.zeros_like(x)
                columns.append(grad.reshape(x.shape[0], features)[:, element])
            current = _partials.like(
                torch.stack(columns, dim=1).reshape(current.shape), current)
            results.append(current)
    return results
