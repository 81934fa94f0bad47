"""`derivative()`: apply a finite-difference plan to a tensor with `keras.ops`.

This module turns a stencil plan (from `fdlayers.stencils`) into tensor
operations. It runs on every Keras backend; backend-specific code (such as
TensorFlow's run-time length check) is confined to this module.
"""

import math
import numbers

import keras
import numpy as np
from keras import ops

from fdlayers import stencils

# Half-precision inputs are differentiated in float32: the weights of a wide
# or high-order stencil, scaled by spacing**-order, can exceed float16's range
# (65504), and the cancellation in Σ w_k x_k loses every significant digit in
# an 8-bit (bfloat16) or 11-bit (float16) mantissa.
_HALF_DTYPES = ("float16", "bfloat16")


def check_arguments(order, spacing, accuracy, padding):
    """Validate and normalise the arguments shared by `derivative` and layers.

    Returns:
        `(order, spacing, accuracy, padding)` as `(int, float, int, str)`.
    """
    if not isinstance(padding, str):
        raise TypeError(
            "`padding` must be a string, one of "
            f"{', '.join(map(repr, stencils.PADDINGS))}. "
            f"Received: padding={padding!r}"
        )
    padding = padding.lower()
    if padding not in stencils.PADDINGS:
        raise ValueError(
            f"`padding` must be one of {', '.join(map(repr, stencils.PADDINGS))}. "
            f"Received: padding={padding!r}"
        )
    order, accuracy = stencils.check_order_accuracy(
        order, accuracy, padding in stencils.CENTRAL_PADDINGS
    )
    if isinstance(spacing, bool) or not isinstance(spacing, numbers.Real):
        if np.ndim(spacing) >= 1:
            raise ValueError(
                "`spacing` must be a positive number; coordinate arrays "
                "(non-uniform grids) are not supported yet. Received: "
                f"spacing of shape {np.shape(spacing)}"
            )
        raise TypeError(
            "`spacing` must be a positive finite number. "
            f"Received: spacing={spacing!r} of type {type(spacing).__name__}"
        )
    spacing = float(spacing)
    if not (math.isfinite(spacing) and spacing > 0):
        raise ValueError(
            f"`spacing` must be a positive finite number. Received: spacing={spacing}"
        )
    return order, spacing, accuracy, padding


def check_axis(axis, rank=None):
    """Return `axis` as an int (non-negative for a known `rank`), else raise."""
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(
            f"`axis` must be an integer. Received: axis={axis!r} "
            f"of type {type(axis).__name__}"
        )
    if rank is None:
        return int(axis)
    if not -rank <= axis < rank:
        raise ValueError(
            f"`axis` must be in [{-rank}, {rank}) for an input of rank {rank}. "
            f"Received: axis={axis}"
        )
    return int(axis) % rank


def output_shape(input_shape, order=1, accuracy=2, padding="same", axis=1):
    """Shape of `derivative(x, ...)` for `x` of `input_shape` (None = unknown).

    Checks the rank (≥ 2), the axis, and, where it is known, that the length
    along `axis` is at least the plan's minimum length.
    """
    input_shape = tuple(input_shape)
    rank = len(input_shape)
    if rank < 2:
        raise ValueError(
            "The input must have rank ≥ 2, e.g. (batch, steps) or "
            f"(batch, steps, channels). Received: input of shape {input_shape}"
        )
    axis = check_axis(axis, rank)
    plan = stencils.plan(order, accuracy, padding)
    length = input_shape[axis]
    if length is not None and length < plan.min_length:
        raise ValueError(_too_short_message(plan, padding, axis, length))
    shape = list(input_shape)
    shape[axis] = plan.output_length(length)
    return tuple(shape)


def _too_short_message(plan, padding, axis, length=None):
    received = (f"Received: {length} steps" if length is not None
                else "Received: a shorter sequence (its length follows)")
    return (
        f"The input is too short along axis {axis}: padding={padding!r} "
        f"needs at least {plan.min_length} steps for this order and accuracy. "
        + received
    )


def _take(x, axis, start, stop):
    """x[start:stop] along `axis` (Python slice semantics)."""
    index = [slice(None)] * len(x.shape)
    index[axis] = slice(start, stop)
    return x[tuple(index)]


def _check_length(x, plan, padding, axis):
    """Fail at run time when the length is only known then (TensorFlow graphs).

    JAX and PyTorch always trace with concrete shapes, where `output_shape`
    has already checked the length.
    """
    if x.shape[axis] is not None or keras.backend.backend() != "tensorflow":
        return x
    import tensorflow as tf

    check = tf.debugging.assert_greater_equal(
        tf.shape(x)[axis],
        plan.min_length,
        message=_too_short_message(plan, padding, axis),
    )
    with tf.control_dependencies([check]):
        return tf.identity(x)


def _edge(x, rows, axis):
    """`rows @ x[...]` along `axis`, the result's new axis put back at `axis`."""
    y = ops.tensordot(x, ops.convert_to_tensor(rows.T, dtype=x.dtype),
                      axes=[[axis], [0]])
    return ops.moveaxis(y, -1, axis)


def _apply(x, plan, scale, axis):
    """Apply `plan` to a float tensor `x` along `axis` (weights × `scale`)."""
    offsets = plan.offsets
    span = int(offsets[-1] - offsets[0])
    if plan.periodic:
        radius = span // 2
        x_in = ops.concatenate(
            [_take(x, axis, -radius, None), x, _take(x, axis, None, radius)],
            axis=axis,
        )
    else:
        x_in = x

    # Σ_k w_k · x[i + o_k] as shifted slices of the whole sequence; the k-th
    # slice starts at o_k - o_0 and leaves span - (o_k - o_0) samples after.
    interior = None
    for offset, weight in zip(offsets, plan.weights * scale):
        if weight == 0.0:
            continue
        start = int(offset - offsets[0])
        term = _take(x_in, axis, start, (start - span) or None)
        # A Python float keeps float64 weights exact and adopts x's dtype.
        term = term * float(weight)
        interior = term if interior is None else interior + term

    parts = []
    if plan.head.shape[0]:
        parts.append(_edge(_take(x, axis, None, plan.head.shape[1]),
                           plan.head * scale, axis))
    parts.append(interior)
    if plan.tail.shape[0]:
        parts.append(_edge(_take(x, axis, -plan.tail.shape[1], None),
                           plan.tail * scale, axis))
    return parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=axis)


def derivative(x, order=1, spacing=1.0, accuracy=2, padding="same", axis=1):
    """The `order`-th derivative of `x` along `axis` by finite differences.

    `x` holds samples `x[..., i, ...] = f(t0 + i·spacing)` along `axis`; the
    result estimates `f^(order)` at the same points with truncation error
    `O(spacing**accuracy)` at every point (see `fdlayers.stencils.plan` for the
    stencil each point uses under each `padding`).

    Args:
        x: tensor of rank ≥ 2. Integer tensors are cast to `keras.config.floatx()`.
            float16 and bfloat16 inputs are differentiated in float32 and the
            result is cast back.
        order: derivative order, integer ≥ 1.
        spacing: grid spacing `h`, a positive finite number.
        accuracy: formal order of accuracy, integer ≥ 1; even unless
            `padding="causal"`.
        padding: "same", "valid", "periodic" or "causal".
        axis: the axis to differentiate along (default 1, the steps axis).

    Returns:
        A tensor of `x`'s float dtype, of `x`'s shape except along `axis`
        for `padding="valid"` (shorter by the stencil width − 1).

    Raises:
        TypeError, ValueError: for invalid arguments or an input too short
            for the stencil (at run time in a TensorFlow graph whose length is
            only known then).
    """
    order, spacing, accuracy, padding = check_arguments(
        order, spacing, accuracy, padding
    )
    x = ops.convert_to_tensor(x)
    dtype = keras.backend.standardize_dtype(x.dtype)
    if not dtype.startswith(("float", "bfloat")):
        x = ops.cast(x, keras.config.floatx())
        dtype = keras.config.floatx()
    output_shape(x.shape, order, accuracy, padding, axis)
    axis = check_axis(axis, len(x.shape))
    plan = stencils.plan(order, accuracy, padding)
    x = _check_length(x, plan, padding, axis)
    if dtype in _HALF_DTYPES:
        x = ops.cast(x, "float32")
    y = _apply(x, plan, spacing ** -order, axis)
    return ops.cast(y, dtype) if dtype in _HALF_DTYPES else y
