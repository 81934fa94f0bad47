"""`derivative()`: apply a finite-difference plan to a tensor with `keras.ops`.

This module turns a stencil plan (from `fdlayers.stencils`) into tensor
operations. It runs on every Keras backend; backend-specific code (such as
TensorFlow's run-time length check) is confined to this module.
"""

import functools
import math
import numbers

import keras
import numpy as np
from keras import ops

from fdlayers import kernels, stencils

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
    if padding.lower() not in stencils.PADDINGS:
        raise ValueError(
            f"`padding` must be one of {', '.join(map(repr, stencils.PADDINGS))}. "
            f"Received: padding={padding!r}"
        )
    padding = padding.lower()
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
    y = _kernel(x, order, accuracy, padding, spacing ** -order, axis)
    return ops.cast(y, dtype) if dtype in _HALF_DTYPES else y


# Below this many elements an eager call runs op by op: the whole call takes
# well under a millisecond that way, less than compiling a fused kernel for a
# new shape (≈ 0.1 s, see benchmarks/README.md).
_EAGER_FUSION_MIN_SIZE = 1 << 20


def _kernel(x, order, accuracy, padding, scale, axis):
    """Apply the plan where the backend runs it fastest.

    Shifted slices read and write the whole tensor once per stencil term when
    their ops run one by one (≈ 3-6× an elementwise `x * 2.0`), but XLA fuses
    them into a single pass (≈ 1.0-1.3×), whereas a depthwise convolution is
    ≈ 3-5× without XLA and ≈ 30-90× with it on CPU. So TensorFlow and JAX run
    the slices through XLA in every mode: eagerly, inside `tf.function` or
    `jax.jit`, and nested in an outer XLA program (where the inner function
    is simply inlined). PyTorch runs them op by op.
    """
    backend = keras.backend.backend()
    # Unknown trailing sizes count as channels; the choice is only for speed.
    channels = any(dim != 1 for dim in x.shape[axis + 1:])
    key = (order, accuracy, padding, scale, axis, channels)
    if backend == "tensorflow":
        import tensorflow as tf

        fused = not (tf.executing_eagerly()
                     and _static_size(x) < _EAGER_FUSION_MIN_SIZE)
        forward, transpose = _tensorflow_pair(*key, len(x.shape), fused)
        return _with_transpose_gradient(x, forward, transpose)
    if backend == "jax":
        return _jax_forward(*key)(x)
    return _linear_stencil(*key).forward(x)


def _static_size(x):
    size = 1
    for dim in x.shape:
        if dim is None:
            return math.inf
        size *= dim
    return size


@functools.lru_cache(maxsize=256)
def _linear_stencil(order, accuracy, padding, scale, axis, channels):
    return kernels.LinearStencil(stencils.plan(order, accuracy, padding),
                                 scale, axis, channels)


@functools.lru_cache(maxsize=256)
def _tensorflow_pair(order, accuracy, padding, scale, axis, channels, rank,
                     fused):
    """(forward, transpose) of a stencil as TensorFlow callables.

    Fused: XLA-compiled functions; reduce_retracing lets one trace of the
    forward map serve every length (XLA still compiles once per concrete
    shape and caches it), and there is one pair per rank because a function traced for two ranks
    generalises to an unknown rank. The callables are partials, not the bound
    methods: TensorFlow pools retracing statistics by code object, and every
    stencil would share the methods' code and warn of "excessive retracing".
    """
    import tensorflow as tf

    stencil = _linear_stencil(order, accuracy, padding, scale, axis, channels)
    forward = functools.partial(stencil.forward)
    transpose = functools.partial(stencil.transpose)
    if not fused:
        return forward, transpose
    return (
        tf.function(forward, jit_compile=True, reduce_retracing=True,
                    autograph=False),
        # Traced per shape: the transpose is faster where it knows the length
        # (LinearStencil.transpose), and XLA compiles per shape regardless.
        tf.function(transpose, jit_compile=True, autograph=False),
    )


def _with_transpose_gradient(x, forward, transpose):
    """`forward(x)` whose gradient is `transpose`, to any order.

    XLA's in-place update has no registered TensorFlow gradient, and the
    transpose is also a single fused pass, where autodiff of the forward
    slices would add one pass per stencil term. The gradient of the transpose
    is the forward map again, so higher derivatives work too.
    """
    import tensorflow as tf

    @tf.custom_gradient
    def apply(x):
        # stop_gradient: a watching tape would otherwise ask TensorFlow to
        # differentiate the compiled function itself, in-place update and all.
        y = forward(tf.stop_gradient(x))
        return y, lambda g: _with_transpose_gradient(g, transpose, forward)

    return apply(x)


@functools.lru_cache(maxsize=256)
def _jax_forward(order, accuracy, padding, scale, axis, channels):
    import jax

    # JAX differentiates the in-place update itself.
    return jax.jit(_linear_stencil(order, accuracy, padding, scale, axis,
                                   channels).forward)
