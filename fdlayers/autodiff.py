"""Derivatives of a model's output with respect to its input, by autodiff.

`input_derivatives(model, x, order)` answers the question that nested
`GradientTape`s answer with `None`: the second derivative of a network whose
first derivative does not depend on the input (a linear network) is zero,
and fdlayers returns zeros.
"""

import math
import numbers

import keras


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
    output element and order). JAX: nested `jax.jvp` (forward mode, one
    pass per order and input direction). PyTorch: nested
    `torch.autograd.grad` with `create_graph=True`.

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
    x = keras.ops.convert_to_tensor(x)
    if not keras.backend.standardize_dtype(x.dtype).startswith(("float", "bfloat")):
        x = keras.ops.cast(x, keras.config.floatx())
    if len(x.shape) < 2:
        raise ValueError(
            "`x` must have a batch axis and the features of each sample, "
            f"e.g. shape (N, 1). Received: x of shape {tuple(x.shape)}")
    features = math.prod(x.shape[1:])
    if feature is not None:
        if isinstance(feature, bool) or not isinstance(feature, numbers.Integral) \
                or not -features <= feature < features:
            raise ValueError(
                f"`feature` must be an integer in [{-features}, {features}): "
                f"x has {features} features per sample. Received: "
                f"feature={feature!r}")
        feature = int(feature) % features
    elif features == 1:
        feature = 0

    def call(v):
        if isinstance(model, keras.layers.Layer):
            return model(v, training=False)
        return model(v)

    backend = keras.backend.backend()
    derivatives = {"tensorflow": _tensorflow, "jax": _jax, "torch": _torch}
    if backend not in derivatives:
        raise NotImplementedError(
            "input_derivatives runs on the TensorFlow, JAX and PyTorch "
            f"backends. Received: the {backend!r} backend")
    return derivatives[backend](call, x, order, feature, features)


def _check_elementwise(y, x):
    if tuple(y.shape) != tuple(x.shape):
        raise ValueError(
            "With several input features and no `feature`, the output must "
            "have the input's shape (elementwise derivatives ∂y[i, j]/∂x[i, j])"
            f". Received: x of shape {tuple(x.shape)}, output of shape "
            f"{tuple(y.shape)}; pass feature=j for ∂y/∂x[:, j]")


def _columns(feature, outputs):
    """The input feature that each flattened output element is taken against."""
    return [feature] * outputs if feature is not None else list(range(outputs))


def _tensorflow(call, x, order, feature, features):
    import tensorflow as tf

    # Tape k records everything up to the (k-1)-th derivative; the innermost
    # (tapes[0]) records the model itself.
    tapes = [tf.GradientTape(persistent=True) for _ in range(order)]
    entered = []
    try:
        for tape in reversed(tapes):
            tape.__enter__()
            entered.append(tape)
            tape.watch(x)
        current = call(x)
        if feature is None:
            _check_elementwise(current, x)
        results = []
        for tape in tapes:
            entered.remove(tape)
            tape.__exit__(None, None, None)
            current = _tape_derivative(tape, current, x, feature, features)
            results.append(current)
        return results
    finally:
        for tape in reversed(entered):
            tape.__exit__(None, None, None)


def _tape_derivative(tape, y, x, feature, features):
    """∂y/∂x per sample, shaped like `y`, with `tape` (which recorded `y`)."""
    import tensorflow as tf

    batch = tf.shape(y)[0]
    outputs = math.prod(y.shape[1:])
    columns = []
    for element, column in enumerate(_columns(feature, outputs)):
        # The gradient of Σ_i y[i, element]: per sample, as samples are
        # independent. One-hot output gradients avoid slicing y outside the
        # tape that recorded it.
        pick = tf.reshape(tf.one_hot(element, outputs, dtype=y.dtype),
                          [1] + list(y.shape[1:]))
        grad = tape.gradient(y, x, output_gradients=tf.broadcast_to(
            pick, tf.shape(y)), unconnected_gradients=tf.UnconnectedGradients.ZERO)
        columns.append(tf.reshape(grad, [batch, features])[:, column])
    return tf.reshape(tf.stack(columns, axis=1), tf.shape(y))


def _jax(call, x, order, feature, features):
    import jax
    import jax.numpy as jnp

    y = call(x)
    if feature is None:
        _check_elementwise(y, x)

    def derivatives(column):
        tangent = jnp.zeros(x.shape[1:], x.dtype).reshape(-1).at[column].set(1)
        tangent = jnp.broadcast_to(tangent.reshape(x.shape[1:]), x.shape)
        fns = [call]
        for _ in range(order):
            inner = fns[-1]
            fns.append(lambda v, inner=inner: jax.jvp(inner, (v,), (tangent,))[1])
        return [fn(x) for fn in fns[1:]]

    if feature is not None:
        return derivatives(feature)
    # Elementwise: direction j gives ∂y/∂x_j; keep output element j.
    per_column = [derivatives(j) for j in range(features)]
    picks = jnp.eye(features, dtype=bool)
    return [
        sum(jnp.where(picks[j].reshape(x.shape[1:]), per_column[j][k], 0)
            for j in range(features))
        for k in range(order)
    ]


def _torch(call, x, order, feature, features):
    import torch

    x = x.detach().clone().requires_grad_(True)
    current = call(x)
    if feature is None:
        _check_elementwise(current, x)
    results = []
    for _ in range(order):
        if not current.requires_grad:  # constant in x: the rest are zeros
            current = torch.zeros_like(current)
            results.append(current)
            continue
        outputs = math.prod(current.shape[1:])
        flat = current.reshape(current.shape[0], outputs)
        columns = []
        for element, column in enumerate(_columns(feature, outputs)):
            grad, = torch.autograd.grad(flat[:, element].sum(), x,
                                        create_graph=True, allow_unused=True)
            if grad is None:  # unconnected: the derivative is zero
                grad = torch.zeros_like(x)
            columns.append(grad.reshape(x.shape[0], features)[:, column])
        current = torch.stack(columns, dim=1).reshape(current.shape)
        results.append(current)
    return [r.detach() for r in results]
