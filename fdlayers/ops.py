"""`derivative()` and `savitzky_golay()`: argument checks, shapes, masks, and
which stencil each input gets.

Where each backend runs a stencil (NumPy, op by op, XLA; compiled functions,
their gradients, lengths known only to a compiler) is `fdlayers.dispatch`;
the tensor operations themselves live in `fdlayers.kernels` (and, for masked
sequences, `fdlayers.masking`); the weights in `fdlayers.stencils` and
`fdlayers.savgol`. TensorFlow's run-time checks stay here.
"""

import contextlib
import functools
import itertools
import math
import numbers
import reprlib

import keras
import numpy as np
from keras import ops

from fdlayers import caches, dispatch, kernels, masking, savgol, stencils

# Half-precision inputs are differentiated in float32: the weights of a wide
# or high-order stencil, scaled by spacing**-order, can exceed float16's range
# (65504), and the cancellation in Σ w_k x_k loses every significant digit in
# an 8-bit (bfloat16) or 11-bit (float16) mantissa.
_HALF_DTYPES = ("float16", "bfloat16")


def check_arguments(order, spacing, accuracy, padding):
    """Validate and normalise the arguments shared by `derivative` and layers.

    Plain Python arguments are checked once per distinct value (a small
    eager call costs tens of µs, and the checks were several of them).

    `spacing` is a positive number (a uniform grid) or a 1-D array of
    strictly increasing sample coordinates (a non-uniform grid, returned as a
    float64 ndarray; not with padding 'periodic').

    Returns:
        `(order, spacing, accuracy, padding)` as `(int, float or ndarray,
        int, str)`.
    """
    if (type(order) is int and type(accuracy) is int
            and type(padding) is str and type(spacing) in (int, float)):
        return _check_plain_arguments(order, spacing, accuracy, padding)
    return _check_arguments(order, as_number(spacing), accuracy, padding)


def as_number(spacing):
    """`spacing` as a Python number where it is a 0-d array or tensor of
    real numbers (as `numpy.gradient` takes them); anything else as it is.

    A 0-d tensor must hold its value (eager), not stand for one in a graph
    being traced: a TypeError names `spacing` then.
    """
    if isinstance(spacing, (numbers.Real, list, tuple)) or _ndim(spacing) != 0:
        return spacing
    try:
        value = np.asarray(ops.convert_to_numpy(spacing))
    except Exception as error:  # a symbolic tensor, whatever the backend
        raise TypeError(
            "`spacing` must be a positive finite number; a 0-d tensor is "
            "taken as one only where it holds its value (eagerly), not in a "
            "graph being traced. Received: spacing of type "
            f"{type(spacing).__name__}") from error
    if value.dtype.kind not in "iuf":
        return spacing  # refused by name downstream
    return value.item()


@dispatch.plain_python  # TorchDynamo would trace past the cache, and warn
@functools.lru_cache(maxsize=256)
def _check_plain_arguments(order, spacing, accuracy, padding):
    return _check_arguments(order, spacing, accuracy, padding)


def _check_arguments(order, spacing, accuracy, padding):
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
        if _ndim(spacing) >= 1 and not ops.is_tensor(spacing):
            # Coordinates of a non-uniform grid: windows() refuses 'periodic'.
            layout = _layout(order, accuracy, padding, True)
            coordinates = stencils.check_coordinates(spacing, layout.min_length)
            return order, coordinates, accuracy, padding
        raise TypeError(
            "`spacing` must be a positive finite number or a 1-D array of "
            f"sample coordinates. Received: spacing={spacing!r} of type "
            f"{type(spacing).__name__}"
        )
    return order, check_spacing(spacing), accuracy, padding


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


def output_shape(input_shape, order=1, accuracy=2, padding="same", axis=1,
                 coordinates=None, times_shape=None):
    """Shape of `derivative(x, ...)` for `x` of `input_shape` (None = unknown).

    Checks the rank (≥ 2), the axis, and, where it is known, that the length
    along `axis` is at least the plan's minimum length. With static
    `coordinates` (a 1-D array) the length must equal theirs; with per-sample
    coordinates of shape `times_shape` (`(steps,)` or `(batch, steps)`),
    their steps must match the input's where both are known.
    """
    irregular = coordinates is not None or times_shape is not None
    return _output_shape(input_shape, _layout(order, accuracy, padding, irregular),
                         padding, axis, coordinates, times_shape)


def _output_shape(input_shape, plan, padding, axis, coordinates=None,
                  times_shape=None):
    input_shape = tuple(input_shape)
    rank = len(input_shape)
    if rank < 2:
        raise ValueError(
            "The input must have rank ≥ 2, e.g. (batch, steps) or "
            f"(batch, steps, channels). Received: input of shape {input_shape}"
        )
    axis = check_axis(axis, rank)
    length = dispatch.static_length(input_shape[axis])
    if length is not None and length < plan.min_length:
        raise ValueError(_too_short_message(plan, padding, axis, length))
    if coordinates is not None and length is not None and length != len(coordinates):
        raise ValueError(
            f"The input has {length} steps along axis {axis} but `spacing` "
            f"has {len(coordinates)} coordinates: one coordinate per step."
        )
    if times_shape is not None:
        _check_times_shape(tuple(times_shape), input_shape, axis)
    shape = list(input_shape)
    shape[axis] = plan.output_length(input_shape[axis])
    return tuple(shape)


@dispatch.plain_python
def _layout(order, accuracy, padding, irregular):
    if irregular:
        return stencils.windows(order, accuracy, padding)
    return stencils.plan(order, accuracy, padding)


# Per-sample coordinates arrive as a layer's second input or as the
# `spacing` of `derivative`: errors name both.
_TIMES = ("Per-sample coordinates (`t` in a layer's `[x, t]`, `spacing` of "
          "derivative())")


def _check_times_shape(times_shape, input_shape, axis):
    if len(times_shape) not in (1, 2):
        raise ValueError(
            f"{_TIMES} must have shape (steps,) or (batch, steps). "
            f"Received: coordinates of shape {times_shape}"
        )
    if len(times_shape) == 2:
        if axis != 1:
            raise ValueError(
                f"{_TIMES} of shape (batch, steps) need axis=1 "
                f"(the steps axis). Received: axis={axis}"
            )
        batch = tuple(map(dispatch.static_length,
                          (times_shape[0], input_shape[0])))
        if None not in batch and batch[0] != batch[1] and batch[0] != 1:
            raise ValueError(
                f"{_TIMES} have a batch of {batch[0]} but the input "
                f"has {batch[1]}. Received: coordinates of shape {times_shape}"
                f", input of shape {input_shape}"
            )
    steps = tuple(map(dispatch.static_length,
                      (times_shape[-1], input_shape[axis])))
    if None not in steps and steps[0] != steps[1]:
        raise ValueError(
            f"{_TIMES} have {steps[0]} steps but the input has "
            f"{steps[1]} along axis {axis}: one coordinate per step. Received: "
            f"coordinates of shape {times_shape}, input of shape {input_shape}"
        )


def _too_short_message(plan, padding, axis, length=None):
    received = (f"Received: {length} steps" if length is not None
                else "Received: a shorter sequence (its length follows)")
    return (
        f"The input is too short along axis {axis}: padding={padding!r} "
        f"needs at least {plan.min_length} steps for this stencil. "
        + received
    )


def _check_length(x, plan, padding, axis, coordinates=None):
    """Fail at run time when the length is only known then (TensorFlow graphs).

    JAX and PyTorch trace with concrete shapes, where `output_shape` has
    already checked the length; but for JAX's symbolic lengths (in
    `model.export`), where `_symbolic_length_guard` gives NaN instead.
    """
    if x.shape[axis] is not None or keras.backend.backend() != "tensorflow":
        return x
    import tensorflow as tf

    if coordinates is not None:
        check = tf.debugging.assert_equal(
            tf.shape(x)[axis], len(coordinates),
            message=f"The input's length along axis {axis} must equal the "
                    f"number of coordinates in `spacing`, {len(coordinates)}.")
    else:
        check = tf.debugging.assert_greater_equal(
            tf.shape(x)[axis],
            plan.min_length,
            message=_too_short_message(plan, padding, axis),
        )
    with tf.control_dependencies([check]):
        return tf.identity(x)


_TIMES_MESSAGE = (
    f"{_TIMES} must be finite and strictly increasing along the "
    "steps axis, with one coordinate per step (a repeated time stamp would "
    "divide by zero)."
)


def _check_times(t, x, axis):
    """Check per-sample coordinates where the values can be seen.

    Eagerly (every backend) a `ValueError`; in a TensorFlow graph an
    assertion that fails at run time (`InvalidArgumentError`), dropped by
    XLA when the graph is compiled as a whole (`jit_compile=True`); under
    `jax.jit` no check: a repeated time stamp then gives inf or NaN at every
    output whose window holds both samples.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        if isinstance(t, jax.core.Tracer):
            return t
    if backend == "torch" and t.device.type == "meta":  # symbolic shapes
        return t
    # On the host (each eager JAX op compiles per shape) unless the time
    # stamps are large and on an accelerator: there the check runs on the
    # device, not through a copy of them to the host
    # (`dispatch.bucketed_on_host`).
    if backend == "jax" and dispatch.bucketed_on_host(t):
        values = np.asarray(t)
        if not (np.isfinite(values).all()
                and (np.diff(values, axis=-1) > 0).all()):
            raise ValueError(_TIMES_MESSAGE)
        return t
    ok = _times_in_order(t)
    if backend == "tensorflow":
        import tensorflow as tf

        if not tf.executing_eagerly():
            lengths = tf.debugging.assert_equal(
                tf.shape(t)[-1], tf.shape(x)[axis], message=_TIMES_MESSAGE)
            values = tf.debugging.Assert(ok, [_TIMES_MESSAGE])
            with tf.control_dependencies([lengths, values]):
                return tf.identity(t)
    if not bool(ops.convert_to_numpy(ok)):
        raise ValueError(_TIMES_MESSAGE)
    return t


def _times_in_order(t):
    """Whether `t` is finite and strictly increasing along its last axis,
    as a boolean scalar tensor. Its differences and tests are arrays of
    its size: on long stamps they are taken a chunk at a time (as
    `_in_chunks` does), which three more input sizes would cost otherwise."""
    points = dispatch.static_length(t.shape[-1])
    batch = math.prod(dispatch.static_length(n) or 0 for n in t.shape[:-1])
    looped = _graph_not_compiled()
    size = SMALL_CHUNK_POINTS if looped else CHUNK_POINTS
    if looped and (points is None or None in t.shape[:-1]):
        # (A few operations: the loop only where it has chunks to run.)
        import tensorflow as tf

        return tf.cond(tf.size(t, "int64") < 4 * size, lambda: _in_order(t),
                       lambda: _looped_in_order(t, None, None))
    if not points or not batch or batch * points < 4 * size:
        chunks = [(0, points or None)]
    elif looped:
        return _looped_in_order(t, points, max(2, size // batch))
    else:
        step = max(2, size // batch)
        chunks = [(start, min(start + step + 1, points))
                  for start in range(0, points - 1, step)]
    ok = None
    for start, stop in chunks:
        with _after(ok):
            here = _in_order(kernels.take(t, -1, start, stop))
        ok = here if ok is None else ops.logical_and(ok, here)
    return ok


def _in_order(t):
    """`_times_in_order` of one piece of stamps, at once."""
    steps = kernels.take(t, -1, 1, None) - kernels.take(t, -1, 0, -1)
    return ops.logical_and(ops.all(ops.isfinite(t)), ops.all(steps > 0))


def _looped_in_order(t, points, step):
    """`_times_in_order` in a TensorFlow graph: a loop over chunks of `step`
    intervals, one at a time; `points` and `step` None where the stamps'
    sizes are known at run time only (chunks of about `SMALL_CHUNK_POINTS`
    then, and one where there are fewer)."""
    import tensorflow as tf

    if points is None:
        shape = tf.shape(t)
        points = shape[-1]
        step = tf.maximum(2, SMALL_CHUNK_POINTS // tf.maximum(
            tf.reduce_prod(shape[:-1]), 1))
        count = tf.maximum(-(-(points - 1) // step), 1)  # 1 stamp: finite?
    else:
        count = -(-(points - 1) // step)

    def body(i, ok):
        begin = [0] * (len(t.shape) - 1)
        start = i * step
        part = tf.slice(t, tf.stack(begin + [start]),
                        tf.stack([-1] * len(begin)
                                 + [tf.minimum(step + 1, points - start)]))
        return i + 1, tf.logical_and(ok, _in_order(part))

    return tf.while_loop(lambda i, _: i < count, body,
                         (tf.constant(0), tf.constant(True)),
                         parallel_iterations=1)[1]


@dispatch.static_python
def derivative(x, order=1, spacing=1.0, accuracy=2, padding="same", axis=1,
               mask=None):
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
        spacing: grid spacing `h`, a positive finite number (a 0-d
            array or eager 0-d tensor counts as one); or the sample
            coordinates: a 1-D array (NumPy or list) of strictly increasing
            positions, one per step, whose weights are computed once in
            float64; or a tensor of shape `(steps,)` or `(batch, steps)`
            (then `axis` must be 1), whose weights are computed in the graph
            in `x`'s float dtype (see `_per_sample`). Coordinates use
            windows of `order + accuracy` samples
            (`fdlayers.stencils.windows`) and refuse `padding="periodic"`.
        accuracy: formal order of accuracy, integer ≥ 1; even unless
            `padding="causal"`.
        padding: "same", "valid", "periodic" or "causal".
        axis: the axis to differentiate along (default 1, the steps axis).
        mask: optional boolean Keras mask of shape `(batch, steps)`, True
            where axis 1 holds data. No masked step is read: along axis 1,
            each unmasked run is differentiated as a sequence of its own
            (`fdlayers.masking`); masked outputs are 0. `derivative_mask`
            gives the output's mask.

    Returns:
        A tensor of `x`'s float dtype, of `x`'s shape except along `axis`
        for `padding="valid"` (shorter by the stencil width − 1).

    Raises:
        TypeError, ValueError: for invalid arguments or an input too short
            for the stencil (at run time in a TensorFlow graph whose length is
            only known then).
    """
    times = None
    # (A number first: `is_tensor` alone costs a small eager call ≈ 10 µs.)
    if not isinstance(spacing, numbers.Real):
        spacing = as_number(spacing)
    if not isinstance(spacing, numbers.Real) and (
            ops.is_tensor(spacing) or _ndim(spacing) >= 2):
        times, spacing = spacing, 1.0  # per-sample coordinates, in the graph
    order, spacing, accuracy, padding = check_arguments(
        order, spacing, accuracy, padding
    )
    coordinates = spacing if isinstance(spacing, np.ndarray) else None
    x, dtype = _float_input(x)
    if times is None and coordinates is None:
        return _uniform(x, dtype, ("difference", order, accuracy, padding),
                        spacing, order, axis, mask)
    return _irregular(x, dtype, ("difference", order, accuracy, padding),
                      times, coordinates, axis, mask)


def _irregular(x, dtype, spec, times, coordinates, axis, mask):
    """The stencil `spec` (see `_windows_of`) on per-sample coordinates
    `times` (a tensor) or static `coordinates` (a float64 vector) along
    `axis` of a float tensor `x` of `dtype`: shape checks, half precision
    in float32, masks, the weights and their windows."""
    compute_dtype = "float32" if dtype in _HALF_DTYPES else dtype
    padding = spec[-1]
    if times is not None:
        times = ops.cast(real_tensor(times, "spacing"), compute_dtype)
    plan = _windows_of(spec)
    _output_shape(x.shape, plan, padding, axis, coordinates,
                  None if times is None else times.shape)
    axis = check_axis(axis, len(x.shape))
    x = _check_length(x, plan, padding, axis, coordinates)
    x = ops.cast(x, compute_dtype)
    if mask is None and _moved_for_chunks(x, axis, times, coordinates):
        # Chunks run along axis 1, where the points of the weights are:
        # the steps axis moved there and back (a copy each way), where a
        # long series differentiated whole would hold dozens of its size.
        y = _irregular(ops.moveaxis(x, axis, 1), compute_dtype, spec, times,
                       coordinates, 1, None)
        return ops.cast(ops.moveaxis(y, 1, axis), dtype)
    if mask is not None:
        mask = _check_mask(mask, x)
    if mask is not None and axis == 1 and padding in ("same", "causal"):
        t = times if times is not None else dispatch.captured(
            coordinates.astype(compute_dtype))
        t = _check_times(t, x, axis)
        def masked(x, mask, t):
            where = dispatch.placement(
                x, 0 if _gathered(spec) else plan.width)
            return dispatch.run_stencil(
                _masked_windows_body, x, (mask, t), plan, axis, where,
                _masked_windows_padded, spec=spec)
        y = _in_chunks(masked, x, plan, padding,
                       [(mask, 1), (t, len(t.shape) - 1)],
                       key=("masked windows", spec, axis),
                       share=_chunk_share(spec))
        return ops.cast(y, dtype)
    if mask is not None:
        x = masking.zero_masked(x, mask)
    if times is not None:
        t = _check_times(times, x, axis)
        def per_sample(spec):
            return (functools.partial(_per_sample, spec=spec, axis=axis),
                    ("per sample", spec, axis))

        fn, key = per_sample(spec)
        y = _in_chunks(fn, x, plan,
                       padding if axis == 1 else "along another axis",
                       [(t, len(t.shape) - 1)], key=key,
                       share=_chunk_share(spec),
                       same=per_sample(_as_same(spec)))
    elif _long_grid(x, coordinates, padding, axis):
        y = _static_in_chunks(x, coordinates, spec, plan)
    else:
        y = _static_coordinates(x, coordinates, spec, axis)
    return ops.cast(_mask_output(y, mask, plan, padding, axis), dtype)


def _moved_for_chunks(x, axis, times, coordinates):
    """Whether a stencil on coordinates along `axis` (not the steps axis) of
    `x` runs with that axis moved to the steps: where its points, along
    that axis and the batch, are enough for chunks (`_in_chunks`; a static
    grid: `_long_grid`), or, in a TensorFlow graph, sizes known at run time
    only, where the loop over chunks finds them then."""
    if axis == 1:
        return False
    batch = dispatch.static_length(x.shape[0])
    steps = dispatch.static_length(x.shape[axis])
    if coordinates is not None:
        return (len(coordinates) >= 4 * CHUNK_POINTS
                and (bool(batch) or _graph_not_compiled()))
    if batch and steps:
        return batch * steps >= 4 * SMALL_CHUNK_POINTS
    return _graph_not_compiled()


def _long_grid(x, coordinates, padding, axis):
    """Whether a static grid is long enough that its weights, a window per
    point, would be several times the input (`_static_in_chunks`), on the
    steps axis of an input of a static batch (or, in a TensorFlow graph,
    one known at run time: `_looped_any_size`), where chunks apply."""
    batch = dispatch.static_length(x.shape[0])
    return (axis == 1 and padding in ("same", "causal", "valid")
            and (bool(batch) or (batch is None and _graph_not_compiled()))
            and len(coordinates) >= 4 * CHUNK_POINTS)


def _static_in_chunks(x, coordinates, spec, plan):
    """The stencil `spec` on a long static grid, as on time stamps: weights
    computed in the graph, chunk by chunk (`_in_chunks`), never held for
    the whole grid. The grid's own float64 weights (`_static_fn`) would be
    a window of float64 per point, kept for the grid, and a graph's and an
    XLA program's constants besides: 27× a float64 input's size eagerly and
    92× in a `tf.function` at 2**24 points (benchmarks/README.md, 15a).

    Precision as on the short grids: the weights are computed in float64
    (each chunk cast to float64 and back), on the coordinates in units of
    a power of two near the mean spacing, scaled back at the end, exactly.
    """
    unit = _grid_unit(coordinates)
    exponent = -unit * spec[1]
    # 2**-unit in two factors: alone, it may overflow a float.
    half = -unit // 2
    factors = (2.0 ** half, 2.0 ** (-unit - half))

    def chunk(spec):
        def fn(x, t):
            # Each chunk's coordinates their own tensor, captured by a graph
            # (not its constant): slices of one tensor of the whole grid
            # were folded into copies of it in a tf.function (16.5× the
            # input's size at 2**24 points), and constants 14.4×. Scaled
            # chunk by chunk, not as a copy of the whole grid (exactly:
            # by a power of two, which `_grid_unit` checked).
            t = (t * factors[0] * factors[1] if ops.is_tensor(t)
                 else dispatch.captured(np.ldexp(t, -unit)))
            y = _per_sample(ops.cast(x, "float64"), t, spec, 1)
            return ops.cast(_times_power_of_two(y, exponent), x.dtype)
        return fn, None

    fn, _ = chunk(spec)
    return _in_chunks(fn, x, plan, spec[-1], [(coordinates, 0)],
                      share=_chunk_share(spec), same=chunk(_as_same(spec)))


def _as_same(spec):
    """The stencil `spec` (see `_windows_of`) with padding "same", whose
    interior outputs are those of padding "valid" (`_in_chunks`)."""
    return spec[:-1] + ("same",)


def _grid_units(coordinates):
    """`(unit, coordinates · 2**-unit)`, `2**unit` a power of two near the
    grid's mean spacing, or `(0, coordinates)` where spacings too unequal
    would not survive the rescaling. Weights scale as spacing**-order, so,
    as on a uniform grid (`_scaling`), they may leave the dtype's range,
    and Fornberg's products of offsets even float64's: computed on the
    rescaled grid (exactly: every step of the recurrence commutes with the
    scaling) and scaled back, they stay in range as far as the result
    allows."""
    unit = _grid_unit(coordinates)
    return unit, (np.ldexp(coordinates, -unit) if unit else coordinates)


def _grid_unit(coordinates):
    """`_grid_units`' unit alone, its check made block by block: no copy
    of the whole grid."""
    unit = math.frexp((coordinates[-1] - coordinates[0])
                      / (len(coordinates) - 1))[1]
    for start in range(0, len(coordinates) - 1, CHUNK_POINTS):
        scaled = np.ldexp(coordinates[start:start + CHUNK_POINTS + 1], -unit)
        if not np.all(scaled[1:] > scaled[:-1]):  # (no array of differences)
            return 0
    return unit


# Long inputs whose weights are computed per call (time stamps, masks) run
# in chunks of about this many points (batch × steps) along the steps, so
# that a call's working memory (≈ 30 arrays of the points it works on, for
# the weights and their windows) does not scale with the input: the pieces
# of the result and their concatenation, two input sizes, are what remains.
CHUNK_POINTS = 1 << 20
# Where a chunk costs little more than its points, smaller chunks, less
# working memory, and from shorter inputs on: in a TensorFlow graph that
# XLA does not compile, the chunks run in a loop (`_looped`), whose size
# does not grow with their number (a call on 2**24 float64 time stamps
# takes 2.6× the input's size, about 4.9× in chunks of CHUNK_POINTS);
# eagerly, each chunk runs through XLA, one kernel for all of them
# (`dispatch.chunks_placed`).
SMALL_CHUNK_POINTS = 1 << 16
# The chunks' sizes above were measured on narrow stencils, whose weights
# hold about this many values a point at once (order 2, accuracy 4 on time
# stamps: 8.7 float64 a point, 2**21 points eagerly). Wider windows hold
# more: Fornberg's recurrence as a loop (more than
# `kernels.UNROLLED_MAX_WIDTH` nodes) and the least-squares fits hold a
# few arrays of (points, width, order + 1) at once, 6-9 values a point for
# each of width × (order + 1) (polyorder + 1 for Savitzky–Golay), measured
# eagerly on (1, 32768, 1) float64. Their chunks get proportionally fewer
# points: in one piece, (1, 2**17, 1) time stamps took 1790× the input's
# size at order 2, accuracy 62, and 8516× (8.9 GB for a 1 MB input) at
# order 30, accuracy 2.
CHUNK_VALUES = 10


def _chunk_share(spec):
    """How many times `CHUNK_VALUES` a point of the weights of `spec` (see
    `_windows_of`) holds at once, at least 1: a chunk's points are divided
    by it. Difference stencils up to `kernels.UNROLLED_MAX_WIDTH` nodes are
    those the chunks were sized for."""
    width = _windows_of(spec).width
    if spec[0] == "difference" and width <= kernels.UNROLLED_MAX_WIDTH:
        return 1
    depth = spec[1] + 1 if spec[0] == "difference" else spec[3] + 1
    return max(1, -(-8 * width * depth // CHUNK_VALUES))


def _chunk_points(small, share):
    """A chunk's points: `SMALL_CHUNK_POINTS` where `small` (see
    `_in_chunks`) for the narrow stencils, else `CHUNK_POINTS`, divided by
    `share` (`_chunk_share`). Wider stencils' small chunks would be a few
    windows, each a pass of the loop with the window's overlap on either
    side, which took 1.3× as long as chunks of `CHUNK_POINTS // share`."""
    if share == 1:
        return SMALL_CHUNK_POINTS if small else CHUNK_POINTS
    return max(1, CHUNK_POINTS // share)


def _chunk_route(x, plan, padding, key, share, weights=True):
    """How `_in_chunks` runs a stencil of `plan` with `padding` on `x`:
    "whole", "loop" (`_shared_loop`), or in chunks of a static size,
    `(how, compiled, steps, step, width)`: `step` outputs each, from
    `width` samples more on either side; `how` "graph" (a TensorFlow
    graph's loop, `_looped`), "program" (a loop in a program compiled
    whole, `_program_loop`), "eager" (TensorFlow, each chunk through XLA)
    or "calls" (one call a chunk). `weights`: whether each chunk computes
    weights per point (see `_in_chunks`)."""
    # The weights and the masks' bookkeeping are per point (batch, step),
    # shared by the channels.
    # (A length known only to a compiler, JAX's symbolic dimensions in an
    # export included, is not static.)
    batch, steps = map(dispatch.static_length, x.shape[:2])
    looped = _graph_not_compiled()
    # (A uniform masked stencil's chunks, light, ran unrolled in
    # TensorFlow's XLA: 8.5× the input's size at 2**24 points, 1.8× in
    # the loop, whose pieces are written in place, at 1.0-1.3× the time;
    # under `jax.jit`, unrolled, they took up to 131 s to compile.)
    program = _compiled_whole(x)
    eager = (not looped and keras.backend.backend() == "tensorflow"
             and dispatch.executing_eagerly()
             and plan.width <= dispatch.FUSED_WEIGHTS_MAX_WIDTH)
    # (Compiled whole, one piece of 2**20 points took 132× its size under
    # `jax.jit`, and 2**21 points 33× with TensorFlow's XLA: there too,
    # small chunks from 2**18 points on.)
    # Chunks with weights per point called one by one on the host's memory
    # (PyTorch and JAX eagerly) are small too: on (1, 2**24, 1) float64
    # time stamps and static grids they ran 1.2-2× faster in 2**16 points
    # than in 2**20, each holding a few dozen arrays of its size at once.
    # (A uniform masked stencil's ran 1.5-1.8× slower in small chunks; on
    # an accelerator each chunk is many launches, and memory less scarce.)
    calls = weights and not (looped or program) and dispatch.on_host(x)
    points = _chunk_points(looped or eager or program or calls, share)
    # Chunks of windows up to `dispatch.FUSED_WEIGHTS_MAX_WIDTH` compile,
    # as eagerly; wider ones are placed by their size (time stamps' wider
    # weights never compile).
    compiled = plan.width <= dispatch.FUSED_WEIGHTS_MAX_WIDTH
    if looped and padding in ("same", "causal") and batch is None:
        # In a graph of a static length and any batch (`predict` on a
        # model of fixed length, a static grid's), a long series runs in
        # chunks of `points` steps, each compiled for the batch it gets;
        # otherwise the chunks are found when the graph runs.
        if steps is None or steps < 4 * points or not compiled:
            return "loop"
    elif looped and padding in ("same", "causal") and steps is None:
        return "loop"
    if (padding not in ("same", "causal") or steps is None
            or (batch is None and not looped)
            or (batch or 1) * steps < 4 * points):
        return "whole"
    if (share > 1 and key is not None and not looped and not eager
            and keras.backend.backend() == "tensorflow"
            and dispatch.executing_eagerly()):
        # Wider windows' chunks, whose weights never compile, run in the
        # graph of the shared loop: op by op, eagerly, each chunk's few
        # thousand operations cost more than their arithmetic (order 30,
        # accuracy 2 on (1, 24000, 1) float32: 8.2 s in chunks, 4.0 s in one
        # piece of 555 MB; in the loop 4.5 s, its trace included, and
        # 90 MB).
        return "loop"
    width = plan.width + plan.min_length
    step = max(4 * width, points // (batch or 1))
    if step + 2 * width >= steps:
        return "whole"  # one chunk would be the whole input
    how = ("graph" if looped else "program" if program
           else "eager" if eager else "calls")
    return how, compiled, steps, step, width


def _in_chunks(fn, x, plan, padding, parts, key=None, share=1, same=None,
               weights=True):
    """`fn(x, *parts)` for a stencil of `plan` along axis 1 of `x`; in
    chunks along that axis where `x` has a static number of points of
    several chunks, or, in a TensorFlow graph, sizes known at run time
    only (`_looped_any_size`), and `padding` is "same" or "causal" (where
    each output depends on the samples within a window of it, and on the
    edges within that window only). Each chunk of outputs is computed from
    its samples
    and at least `width` more on each side (a window's width and a minimum
    length: a window's reach, the edges' one-sided windows and what makes a
    masked run too short are within it, so every output kept is the one
    the whole input gives), all chunks from inputs of one size, and the
    pieces are joined (concatenated; in graphs and programs compiled whole,
    each written where it goes in the output). `parts` are `(value,
    axis)`: what comes with `x` (time stamps, a mask), cut along their
    `axis` alike.

    Chunks of `CHUNK_POINTS`, or of `SMALL_CHUNK_POINTS` where each runs
    as one compiled kernel or one iteration of a graph's loop (`_looped`).
    `key`, where given, is hashable and names what `fn` computes, with
    the dtypes and ranks of its inputs: graphs then share one traced loop
    (`_shared_loop`). Chunks have `share` times fewer points where each
    point costs that much more working memory (`_chunk_share`).

    `same`, for padding "valid": `(fn, key)` of the stencil with padding
    "same", whose outputs at the interior are valid's, each from the same
    window. Where chunks apply, it runs in them and its interior is kept
    (its few edge rows are extra work); whole, `fn` runs.

    `weights`: whether `fn` computes weights per point (time stamps, a
    static grid), many buffers of a chunk's size, which chunks called one
    by one on the host run small; a uniform masked stencil's are few.
    """
    if padding == "valid" and same is not None:
        if _chunk_route(x, plan, "same", key, share, weights) == "whole":
            return fn(x, *(value for value, _ in parts))
        y = _in_chunks(same[0], x, plan, "same", parts, same[1], share,
                       weights=weights)
        # The interior: the outputs from `left` to `width - 1 - left`
        # steps before the end.
        stop = plan.width - 1 - plan.left
        return y[:, plan.left:(-stop or None)]
    route = _chunk_route(x, plan, padding, key, share, weights)
    if route == "whole":
        return fn(x, *(value for value, _ in parts))
    if route == "loop":
        return _shared_loop(fn, x, plan, parts, key, share)
    how, compiled, steps, step, width = route
    parts = [(x, 1)] + list(parts)
    if how == "graph":
        return _looped(fn, parts, step, step + 2 * width, -(-steps // step),
                       compiled)
    bounds = []
    start = 0
    while start < steps:
        stop = min(start + step, steps)
        if steps - stop < width:  # no last chunk shorter than a window
            stop = steps
        bounds.append((start, stop))
        start = stop
    # Every chunk's input of one size, flush with the edges at the ends.
    size = step + 2 * width
    lows = [min(max(0, start - width), steps - size) for start, _ in bounds]
    unrolled = functools.partial(_unrolled, fn, bounds=bounds, lows=lows,
                                 size=size, eager=how == "eager")
    if how == "program":
        return _program_loop(fn, parts, steps, step, width, unrolled)
    return unrolled(parts)


def _unrolled(fn, parts, bounds, lows, size, eager):
    """`_in_chunks`'s chunks, one call each, from inputs `size` long from
    `lows`, their outputs `bounds` kept and concatenated; `eager`: on
    TensorFlow, eagerly, each through XLA."""
    pieces = []
    out = None
    with (dispatch.chunks_placed("xla") if eager
          else contextlib.nullcontext()):
        for (start, stop), low in zip(bounds, lows):
            with _after(pieces[-1] if pieces else None):
                y = fn(*(kernels.take(value, axis, low, low + size)
                         for value, axis in parts))
                piece = kernels.take(y, 1, start - low, stop - low)
            if out is None and kernels._torch_mode(piece) is not None:
                # PyTorch writes each piece into the result as it comes:
                # the pieces and their concatenation would be two sizes
                # of it (autograd records the writes).
                out = piece.new_empty((piece.shape[0], bounds[-1][1])
                                      + tuple(piece.shape[2:]))
            if out is None:
                pieces.append(piece)
            else:
                out[:, start:stop] = piece
    return out if out is not None else ops.concatenate(pieces, 1)


def _compiled_whole(x):
    """Whether `x` is traced into a program that XLA compiles whole: under
    a JAX transformation (`jax.jit`, `jax.grad`, ...) or in a TensorFlow
    graph compiled with `jit_compile=True`."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return isinstance(x, jax.core.Tracer)
    return (backend == "tensorflow" and not dispatch.executing_eagerly()
            and dispatch._in_xla_program())


def _program_loop(fn, parts, steps, step, width, unrolled):
    """`_in_chunks`'s chunks in a program compiled whole (`_compiled_whole`),
    in a loop, one chunk at a time. Unrolled into one program, the chunks
    are independent, and XLA held every chunk's buffers at once and took
    long to compile them all: one call on `(1, 2**22, 1)` float64 time
    stamps (order 2, accuracy 4) took 148× the input's size and 15 s
    under `jax.jit` (masked: 55 s), and 33× with TensorFlow's
    `jit_compile=True`. On a CPU the loop runs slower than the unrolled
    chunks did (benchmarks/README.md, section 15).

    Chunk `i` computes the outputs `start = min(i·step, steps - step)` to
    `start + step` from the `step + 2·width` samples from `low = clip(start
    - width, 0, steps - step - 2·width)`: all chunks of one shape, the last
    flush with the end, overlapping the one before it, whose outputs it
    gives again (each output is its window's, whichever chunk it is in).
    `parts`, `(value, axis)`, begin with `x` (axis 1), whose dtype and
    shape the stencil's output has (padding "same" or "causal").

    TensorFlow cannot differentiate such a loop in XLA (a concatenation's
    gradient in it needs sizes that its loop makes unknown): there the
    gradient is that of `unrolled(parts)`, the chunks unrolled, as before
    the loop; its own gradient is autodiff of that."""
    if keras.backend.backend() == "jax":
        return _jax_loop(fn, parts, steps, step, width)
    import tensorflow as tf

    x = parts[0][0]
    parts = [(value if ops.is_tensor(value) else dispatch.captured(value),
              axis) for value, axis in parts[1:]]

    @tf.custom_gradient
    def apply(x):
        def gradient(upstream):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = unrolled([(x, 1)] + parts)
            return tape.gradient(y, x, output_gradients=upstream)

        return _xla_loop(fn, [(x, 1)] + parts, steps, step, width), gradient

    return apply(x)


def _chunk_start(i, steps, step, width, minimum, clip):
    """Chunk `i`'s first output and first sample (`_program_loop`), with
    the backend's `minimum` and `clip`."""
    start = minimum(i * step, steps - step)
    return start, clip(start - width, 0, steps - step - 2 * width)


def _jax_loop(fn, parts, steps, step, width):
    """`_program_loop` under a JAX trace: `jax.lax.fori_loop`, each piece
    written into the output where it goes."""
    import jax
    import jax.numpy as jnp

    x = parts[0][0]
    parts = [(jnp.asarray(value), axis) for value, axis in parts]

    def body(i, out):
        start, low = _chunk_start(i, steps, step, width, jnp.minimum,
                                  jnp.clip)
        y = fn(*(jax.lax.dynamic_slice_in_dim(value, low, step + 2 * width,
                                              axis)
                 for value, axis in parts))
        piece = jax.lax.dynamic_slice_in_dim(y, start - low, step, 1)
        return jax.lax.dynamic_update_slice_in_dim(out, piece, start, 1)

    return jax.lax.fori_loop(0, -(-steps // step), body,
                             jnp.zeros(x.shape, x.dtype))


def _xla_loop(fn, parts, steps, step, width):
    """`_program_loop` in a TensorFlow graph that XLA compiles: a
    `tf.while_loop`, each piece scattered into the output where it goes,
    which XLA updates in place. (Pieces in a `TensorArray`, stacked and
    joined, were two more sizes of the output: time stamps on `(1, 2**24,
    1)` float64 took 3.4× the input.)"""
    import tensorflow as tf

    count = -(-steps // step)
    x = parts[0][0]

    def cut(value, axis, low, length):
        # Every size given: XLA pads an input to twice its size along any
        # axis whose size is "the rest" from a begin it does not know.
        begin = [0] * len(value.shape)
        begin[axis] = low
        shape = list(value.shape)
        shape[axis] = length
        return tf.slice(value, tf.stack(begin), shape)

    # (batch, step, 2): where each of a piece's (series, step) goes.
    series = tf.broadcast_to(tf.range(x.shape[0])[:, None], (x.shape[0], step))

    def body(i, out):
        start, low = _chunk_start(i, steps, step, width, tf.minimum,
                                  tf.clip_by_value)
        y = fn(*(cut(value, axis, low, step + 2 * width)
                 for value, axis in parts))
        where = tf.stack([series, tf.broadcast_to(
            start + tf.range(step), (x.shape[0], step))], -1)
        # (The last piece, flush with the end, gives again outputs of the
        # one before it: the same values.)
        return i + 1, tf.tensor_scatter_nd_update(
            out, where, cut(y, 1, start - low, step))

    _, out = tf.while_loop(lambda i, _: i < count, body,
                           (tf.constant(0), tf.zeros(x.shape, x.dtype)),
                           parallel_iterations=1)
    return out


def _graph_not_compiled():
    """Whether a TensorFlow graph is being traced that XLA does not
    compile whole."""
    return (keras.backend.backend() == "tensorflow"
            and not dispatch.executing_eagerly()
            and not dispatch._in_xla_program())


def _looped(fn, parts, step, size, count, compiled):
    """`_in_chunks`'s pieces in a TensorFlow graph, in a loop, one at a time
    (`parallel_iterations=1`). Unrolled, a graph's chunks cost more memory
    the more there are (6.0× the input's size in 16 chunks, 7.0× in 64, on
    2**24 float64 time stamps), and its size and its first run's
    optimisation grow with them (in 64: 10.6 s, looped 1.2 s).

    Chunk `i` gives the outputs from `start = i·step` to `min(start + step,
    steps)`, from the `size` samples from `low = clip(start - width, 0,
    steps - size)`, `width = (size - step) // 2` (the last chunk flush with
    the end). Each piece is written where it goes in one buffer of `count ·
    step` outputs per series (`_write_rows`); a series is its first
    `steps`. (Pieces gathered in a `TensorArray` and concatenated were two
    sizes of the output at once: time stamps on `(1, 2**24, 1)` float64 in
    a `tf.function` took 3.5× the input, 2.5× so.) `step`, `size` and
    `count` are Python ints, or (for lengths known at run time only) int64
    tensors. Where `compiled` and `size` is an int, each chunk runs
    through XLA (`dispatch.chunks_placed`): one kernel for every chunk,
    1.7-3.4× faster than op by op (masks and time stamps on `(64, 65536,
    4)` and `(1, 2**21, 1)`); a size known at run time only runs op by op.
    """
    import tensorflow as tf

    parts = [(value if ops.is_tensor(value) else dispatch.captured(value),
              axis) for value, axis in parts]
    static_size = size if isinstance(size, int) else None
    step, size, count = (tf.cast(value, "int32")
                         for value in (step, size, count))
    width = (size - step) // 2
    # (Every stencil here gives x's dtype and shape: "same" or "causal".)
    x = parts[0][0]
    shape = tf.shape(x, out_type="int32")
    batch, steps = shape[0], shape[1]
    trailing = shape[2:]

    def cut(value, axis, low):
        begin = [0] * len(value.shape)
        begin[axis] = low
        sizes = [-1] * len(value.shape)
        sizes[axis] = size
        shape = list(value.shape)
        shape[axis] = static_size
        return tf.ensure_shape(
            tf.slice(value, tf.stack(begin), tf.stack(sizes)), shape)

    def body(i, out):
        start = i * step
        low = tf.minimum(tf.maximum(start - width, 0), steps - size)
        where = ("ops" if static_size is None else "xla" if compiled
                 else None)
        with (dispatch.chunks_placed(where) if where
              else contextlib.nullcontext()):
            y = fn(*(cut(value, axis, low) for value, axis in parts))
        begin = [0] * len(y.shape)
        begin[1] = start - low
        sizes = [-1] * len(y.shape)
        length = tf.minimum(step, steps - start)
        sizes[1] = length
        piece = tf.slice(y, tf.stack(begin), tf.stack(sizes))
        # The last piece padded to `step` (what the buffer holds past the
        # series' end is never read).
        padding = [[0, 0]] * len(y.shape)
        padding[1] = [0, step - length]
        piece = tf.pad(piece, padding)
        rows = tf.range(batch) * count + i
        return i + 1, _write_rows(out, rows, tf.reshape(piece, [batch, -1]))

    # Row `b · count + i` holds series b's piece i: the buffer is the
    # outputs, `count · step` per series.
    out = tf.raw_ops.Empty(
        shape=tf.stack([batch * count, step * tf.reduce_prod(trailing)]),
        dtype=x.dtype, init=False)
    _, out = tf.while_loop(lambda i, _: i < count, body, (tf.constant(0), out),
                           parallel_iterations=1)
    padded = tf.reshape(out, tf.concat([[batch, count * step], trailing], 0))

    def shared():
        # A series' outputs, the front of the buffer as a vector: where
        # they end on 64 bytes (or fill it), TensorFlow's slice shares the
        # buffer's memory; elsewhere it copies them.
        return tf.reshape(tf.slice(tf.reshape(out, [-1]), [0], tf.reshape(
            steps * tf.reduce_prod(trailing), [1])), shape)

    def copied():
        return padded[:, :steps]

    batch_size = dispatch.static_length(x.shape[0])
    if batch_size is not None:
        y = shared() if batch_size == 1 else copied()
    else:
        y = tf.cond(batch == 1, shared, copied)
    y.set_shape(x.shape)
    return y


def _write_rows(out, rows, values):
    """`out` with its rows `rows` (along axis 0) set to `values`, written
    into `out`'s own memory, which no one else holds (`_looped`'s
    `Empty`: stateful, so never folded into a constant or shared). Its
    gradient passes the upstream gradient to `out` whole, and its rows to
    `values`: `_looped`'s pieces never share a row, so the rows a later
    piece wrote hold no gradient of an earlier one's."""
    import tensorflow as tf

    @tf.custom_gradient
    def write(out, values, rows):
        def gradient(upstream):
            return upstream, tf.gather(upstream, rows), None

        return tf.raw_ops.InplaceUpdate(x=out, i=rows, v=values), gradient

    return write(out, values, rows)


def _shared_loop(fn, x, plan, parts, key, share=1):
    """`_looped_any_size(fn, x, plan, parts, share)`, through one function per
    `key` (see `_in_chunks`) and inputs' dtypes and ranks, traced once for
    inputs of any batch and length: a graph that calls it holds one call.
    Tracing the loop and the stencil in it took ≈ 0.1 s, paid at every
    trace of every model otherwise, and a first `fit` traces its step
    twice (once where the optimizer may create its variables)."""
    if key is None:
        return _looped_any_size(fn, x, plan, parts, share)
    parts = [(value if ops.is_tensor(value) else dispatch.captured(value),
              axis) for value, axis in parts]
    signature = ((x.dtype, tuple(x.shape[2:])),) + tuple(
        (value.dtype, len(value.shape), axis) for value, axis in parts)
    # The chunks' size and the placement's threshold are read where the
    # loop is traced.
    holder, traced = _loop_function(
        key, signature, _chunk_points(True, share),
        dispatch._FUSION_MIN_SIZE)
    # Any `fn` of this key computes the same: the latest one is traced
    # wherever the function is (TensorFlow may trace it again in a new
    # context, a device's or a strategy's).
    holder[:] = [fn, plan, share]
    y = traced(x, *(value for value, _ in parts))
    y.set_shape(x.shape)
    return y


@functools.lru_cache(maxsize=64)
def _loop_function(key, signature, points, threshold):
    """`_shared_loop`'s function for one `key` and `signature`, and the
    list through which it gets `fn` and the plan."""
    import tensorflow as tf

    holder = []
    (dtype, trailing), parts = signature[0], signature[1:]

    def run(x, *values):
        fn, plan, share = holder
        return _looped_any_size(
            fn, x, plan,
            [(value, axis) for value, (_, _, axis) in zip(values, parts)],
            share)

    specs = [tf.TensorSpec((None, None) + trailing, dtype)] + [
        tf.TensorSpec((None,) * rank, part_dtype)
        for part_dtype, rank, _ in parts]
    return holder, tf.function(run, input_signature=specs, autograph=False)


def _looped_any_size(fn, x, plan, parts, share=1):
    """`_in_chunks` in a TensorFlow graph where the batch or the length is
    known at run time only (`predict`, a model of `None` lengths, a served
    SavedModel): the chunks' bounds are computed when the graph runs, by
    `_in_chunks`'s rules, and an input too short for several chunks is one
    chunk. Before, such an input ran whole at any length: a masked call on
    `(1, 10**6, 1)` float64 took 49× the input's size (a copy per offset
    of the stencil, gathered), 5.2× in chunks.

    One loop either way, not a conditional between the loop and the whole
    input: that put the stencil, and its gradient, twice in every graph,
    and a first `fit` epoch on masked batches took 1.3× as long.
    """
    import tensorflow as tf

    shape = tf.shape(x, out_type="int64")
    batch, steps = shape[0], shape[1]
    width = tf.constant(plan.width + plan.min_length, "int64")
    points = _chunk_points(True, share)
    step = tf.maximum(4 * width, points // tf.maximum(batch, 1))
    size = step + 2 * width
    chunked = tf.logical_and(batch * steps >= 4 * points, size < steps)
    # Chunks of `step` outputs from every `step`-th; one of the whole input
    # where there are too few points for several.
    step = tf.where(chunked, step, steps)
    count = tf.where(chunked, -(-steps // tf.maximum(step, 1)), 1)
    y = _looped(fn, [(x, 1)] + list(parts), step,
                tf.where(chunked, size, steps), count, compiled=False)
    y.set_shape(x.shape)
    return y


def _after(previous):
    """A context in which a TensorFlow graph's operations run after
    `previous`: chunks are independent, and a graph would cut them all
    at once and run them in any order, with the memory of all of them
    (a chunk's samples, time stamps and mask are copies)."""
    if (previous is None or keras.backend.backend() != "tensorflow"
            or dispatch.executing_eagerly()):
        return contextlib.nullcontext()
    import tensorflow as tf

    return tf.control_dependencies([previous])


@dispatch.plain_python
@functools.lru_cache(maxsize=256)
def _windows_of(spec):
    """The `stencils.Windows` of a stencil on coordinates, named by `spec`:
    `("difference", order, accuracy, padding)` (Fornberg's weights) or
    `("savgol", order, window, polyorder, padding)` (least squares)."""
    if spec[0] == "difference":
        return stencils.windows(*spec[1:])
    return savgol.windows(spec[2], spec[-1])


def _gathered(spec):
    """Whether the stencil `spec` reads its windows gathered
    (`kernels.apply_rows`, `masking.masked_gathered`): a graph of a few
    operations whatever the width, which XLA compiles quickly."""
    return (spec[0] == "savgol"
            and _windows_of(spec).width >= kernels.GATHERED_MIN_WIDTH)


@dispatch.plain_python
@functools.lru_cache(maxsize=256)
def _fit_of(spec):
    """`fit(order, offsets)` for `kernels.time_weights` of `spec` (None:
    Fornberg's weights)."""
    if spec[0] == "difference":
        return None
    return functools.partial(kernels.savgol_scaled, polyorder=spec[3])


@dispatch.static_python
def savitzky_golay(x, order=1, window=5, polyorder=2, spacing=1.0,
                   padding="same", axis=1, mask=None):
    """The `order`-th derivative of a Savitzky–Golay fit, along `axis`.

    Each output is the `order`-th derivative, at its point, of the
    polynomial of degree `polyorder` fitted by least squares to the `window`
    samples around it (order 0 smooths); see `fdlayers.savgol.plan` for the
    edges under each `padding` ("same": scipy's `savgol_filter(...,
    mode="interp")`; "valid"; "periodic"). Dtypes, `axis` and `mask` as in
    `derivative`.

    `spacing` may also be the sample coordinates, as for `derivative`: a
    1-D array, one strictly increasing position per step, whose weights are
    computed once in float64 (`fdlayers.savgol.window_weights`), or a
    tensor of shape `(steps,)` or `(batch, steps)` (then `axis` must be 1),
    whose weights are computed in the graph in `x`'s float dtype
    (`fdlayers.kernels.savgol_loop`). Each point then fits the polynomial
    to its window's coordinates and takes its derivative at its own
    coordinate, edges as for "same" (`fdlayers.savgol.windows`); "periodic"
    is refused.
    """
    order, window, polyorder = savgol.check_arguments(order, window, polyorder)
    padding = check_savgol_padding(padding)
    times = None
    if not isinstance(spacing, numbers.Real):
        spacing = as_number(spacing)
    if not isinstance(spacing, numbers.Real) and (
            ops.is_tensor(spacing) or _ndim(spacing) >= 2):
        times = spacing  # per-sample coordinates, in the graph
        savgol.windows(window, padding)  # refuses 'periodic', by name
    else:
        spacing = check_savgol_spacing(spacing, window, padding)
    x, dtype = _float_input(x)
    spec = ("savgol", order, window, polyorder, padding)
    if times is None and not isinstance(spacing, np.ndarray):
        return _uniform(x, dtype, spec, spacing, order, axis, mask)
    return _irregular(x, dtype, spec, times,
                      spacing if times is None else None, axis, mask)


def check_savgol_padding(padding):
    """A Savitzky–Golay padding, lower case; else a ValueError naming it."""
    if not isinstance(padding, str) or padding.lower() not in savgol.PADDINGS:
        raise ValueError(
            f"`padding` must be one of {', '.join(map(repr, savgol.PADDINGS))} "
            f"for a Savitzky–Golay filter. Received: padding={padding!r}")
    return padding.lower()


def check_savgol_spacing(spacing, window, padding):
    """A Savitzky–Golay `spacing`: a positive finite number (a float), or
    static coordinates, a 1-D array of at least `window` strictly
    increasing finite positions (a float64 ndarray; not with 'periodic')."""
    spacing = as_number(spacing)
    if (isinstance(spacing, bool) or isinstance(spacing, numbers.Real)
            or _ndim(spacing) == 0 or ops.is_tensor(spacing)):
        return check_spacing(spacing)
    savgol.windows(window, padding)  # refuses 'periodic', by name
    coordinates = stencils.check_coordinates(spacing)
    if len(coordinates) < window:
        raise ValueError(
            f"`spacing` has {len(coordinates)} coordinates; a window of "
            f"{window} samples needs at least {window}. Received: "
            f"spacing of length {len(coordinates)}, window={window}")
    return coordinates


def savitzky_golay_shape(input_shape, order=1, window=5, polyorder=2,
                         padding="same", axis=1, coordinates=None,
                         times_shape=None):
    """Shape of `savitzky_golay(x, ...)` for `x` of `input_shape`, checked
    as `output_shape` checks a derivative's (static `coordinates` and
    per-sample coordinates of `times_shape` too)."""
    irregular = coordinates is not None or times_shape is not None
    plan = (_windows_of(("savgol", order, window, polyorder, padding))
            if irregular else savgol.plan(order, window, polyorder, padding))
    return _output_shape(input_shape, plan, padding, axis, coordinates,
                         times_shape)


def check_spacing(spacing):
    """A uniform spacing: a positive finite number (or a 0-d array or
    tensor of one), as a float."""
    spacing = as_number(spacing)
    if isinstance(spacing, bool) or not isinstance(spacing, numbers.Real):
        raise TypeError(
            "`spacing` must be a positive finite number. Received: "
            f"spacing={spacing!r} of type {type(spacing).__name__}")
    try:
        value = float(spacing)
    except OverflowError:  # an integer or Fraction beyond float64's range
        value = math.inf
    if not (math.isfinite(value) and value > 0):
        raise ValueError(
            "`spacing` must be a positive finite number. Received: "
            f"spacing={reprlib.repr(spacing)}"
        )
    return value


def _ndim(value):
    """`np.ndim(value)`, with 1 for a ragged sequence (refused later, by name)."""
    try:
        return np.ndim(value)
    except ValueError:
        return 1


def real_tensor(value, name):
    """`value` as a tensor of real numbers (float, integer or bool).

    Anything else is a TypeError naming `name`: what no backend converts, and
    strings and complex numbers, which casting to a float would fail on
    (TensorFlow) or silently cut to their real part. A sparse tensor is
    made dense (its implicit zeros are samples); a ragged one is refused,
    since densifying it would append zeros that are not samples.
    """
    if _is_ragged(value):
        raise TypeError(
            f"`{name}` must be a dense tensor, not a RaggedTensor: pad the "
            f"sequences (`{name}.to_tensor()`) and pass a mask "
            "(`keras.layers.Masking`, or `mask=` to the layer) so that the "
            f"padding is not differentiated. Received: {name} of type "
            f"{type(value).__name__}")
    try:
        tensor = (value if _is_dense_backend_tensor(value)
                  else ops.convert_to_tensor(value, sparse=False))
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"`{name}` must be a tensor or array of real numbers. Received: "
            f"{name}={reprlib.repr(value)}") from error
    dtype = keras.backend.standardize_dtype(tensor.dtype)
    if not dtype.startswith(("float", "bfloat", "int", "uint", "bool")):
        raise TypeError(
            f"`{name}` must hold real numbers (float, integer or bool). "
            f"Received: {name} of dtype {dtype}")
    return tensor


def _is_dense_backend_tensor(value):
    """Whether `value` is already a dense TensorFlow tensor, which needs no
    conversion (a shortcut for small eager calls; other backends convert)."""
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return isinstance(value, tf.Tensor)


def _is_ragged(value):
    """Whether `value` is a TensorFlow RaggedTensor (no other backend has one)."""
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf
    return isinstance(value, tf.RaggedTensor)


def _float_input(x):
    """`x` as a float tensor (integers to floatx), and its dtype."""
    x = real_tensor(x, "x")
    dtype = keras.backend.standardize_dtype(x.dtype)
    if not dtype.startswith(("float", "bfloat")):
        x = ops.cast(x, keras.config.floatx())
        dtype = keras.config.floatx()
    return x, dtype


def _uniform(x, dtype, spec, spacing, order, axis, mask):
    """The plan `spec` scaled by `spacing**-order` along `axis` of a float
    tensor `x`: shape checks, half precision in float32, masks, the kernel."""
    plan, padding = dispatch.plan_of(spec), spec[-1]
    _output_shape(x.shape, plan, padding, axis)
    axis = check_axis(axis, len(x.shape))
    x = _check_length(x, plan, padding, axis)
    if dtype in _HALF_DTYPES:
        x = ops.cast(x, "float32")
    scale, exponent = _scaling(spec, spacing, order,
                               keras.backend.standardize_dtype(x.dtype))
    if mask is not None:
        mask = _check_mask(mask, x)
    if mask is not None and axis == 1 and padding in ("same", "causal"):
        def masked(x, mask):
            # (Placed by the size of the chunk, where there are chunks: a
            # graph's loop over small ones compiles no kernel for them.)
            where = dispatch.placement(x)
            return dispatch.run_stencil(
                _masked_body, x, (mask,), plan, axis, where, _masked_padded,
                (_masked_transpose_body, _masked_transpose_padded),
                spec=spec, scale=scale)
        y = _in_chunks(masked, x, plan, padding, [(mask, 1)],
                       key=("masked", spec, scale, axis), weights=False)
    else:
        if mask is not None:
            # Masked samples are never read (here: they become 0), and
            # outputs whose stencil would need one are masked.
            x = masking.zero_masked(x, mask)
        y = _mask_output(dispatch.uniform_kernel(x, spec, scale, axis, plan),
                         mask, plan, padding, axis)
    y = _times_power_of_two(y, exponent)
    return ops.cast(y, dtype) if dtype in _HALF_DTYPES else y


@dispatch.plain_python
@functools.lru_cache(maxsize=256)
def _scaling(spec, spacing, order, dtype):
    """`(scale, exponent)` with `spacing**-order = scale · 2**exponent`:
    `scale` is folded into the plan's weights, and the sum is multiplied by
    the power of two, exactly (`_times_power_of_two`).

    Folding all of `spacing**-order` costs nothing and is done wherever the
    scaled weights are normal numbers of the compute `dtype`, as they are
    for any sensible spacing. Far from 1 they are not, although the
    derivative may well be: with spacing 1e-30 and order 2 they exceed
    float32's range (inf weights, and NaN from 0·inf), with spacing 1e30
    they round to 0, and below spacing ≈ 1e-77 (order 4) `spacing**-order`
    overflows even float64. Then as much of it is folded as keeps the
    weights normal, and the rest is one power of two. A sum that overflows
    (underflows) with those weights gives a result larger (smaller) still,
    so the result is right wherever it and its rounding scale
    `Σ|w·x|/spacing**order` are normal numbers.
    """
    plan = dispatch.plan_of(spec)
    weights = np.abs(np.concatenate([plan.weights.ravel(), plan.head.ravel(),
                                     plan.tail.ravel()]))
    weights = weights[weights > 0]
    info = np.finfo(dtype)
    try:
        scale = spacing ** -order
    except OverflowError:
        scale = math.inf
    if (info.tiny <= weights.min() * scale
            and weights.max() * scale <= info.max):
        return scale, 0
    mantissa, exponent = math.frexp(spacing)
    return _fold(weights, mantissa ** -order, -exponent * order, dtype)


def _fold(weights, scale, exponent, dtype, extremes=None):
    """`(folded, rest)` with `folded · 2**rest = scale · 2**exponent`, where
    `folded = scale · 2**k` with `k` as close to `exponent` as keeps every
    nonzero finite |weight|·folded a normal number of `dtype`. `extremes`:
    `_extremes(weights)`, where already known."""
    largest, smallest = extremes or _extremes(weights)
    # One binade of margin each side for the rounding of log2; the folded
    # factor itself is a float64.
    high, low = math.inf, -math.inf
    for info, largest, smallest in (
            (np.finfo(dtype), largest * scale, smallest * scale),
            (np.finfo(np.float64), scale, scale)):
        high = min(high, math.floor(math.log2(info.max)
                                    - math.log2(largest)) - 1)
        low = max(low, math.ceil(math.log2(info.tiny)
                                 - math.log2(smallest)) + 1)
    folded = max(low, min(high, exponent))
    return math.ldexp(scale, folded), exponent - folded


def _extremes(weights):
    """The largest and the smallest nonzero finite |weight| of an array or
    of a list of arrays, (1, 1) if none; a block at a time: a static
    grid's weights are a window per point, whose copies would be several
    times a long input's size."""
    largest, smallest = _nonzero_extremes(weights)
    return (largest, smallest) if largest else (1.0, 1.0)


def _nonzero_extremes(weights):
    """`_extremes`, but (0, inf) where no weight is nonzero and finite."""
    if not isinstance(weights, list):
        weights = [weights]
    largest, smallest = 0.0, math.inf
    for array in weights:
        flat = np.ravel(np.asarray(array, dtype=np.float64))
        for start in range(0, flat.size, 1 << 16):
            block = np.abs(flat[start:start + (1 << 16)])
            block = block[np.isfinite(block) & (block > 0)]
            if block.size:
                largest = max(largest, float(block.max()))
                smallest = min(smallest, float(block.min()))
    return largest, smallest


def _times_power_of_two(y, exponent):
    """`y · 2**exponent`, exact unless the result overflows or underflows.

    One multiplication, by a normal number of y's dtype (an XLA program may
    fold consecutive constant factors into one, which could overflow): a
    larger exponent would overflow or flush any sum that `_scaling`'s
    weights give, so it is capped.
    """
    if not exponent:
        return y
    step = -np.finfo(keras.backend.standardize_dtype(y.dtype)).minexp
    return y * (2.0 ** max(-step, min(step, exponent)))


def _mask_output(y, mask, plan, padding, axis):
    if mask is None:
        return y
    return masking.zero_masked(
        y, mask if axis != 1 else _output_mask(mask, plan, padding))


def _output_mask(mask, plan, padding):
    """`masking.output_mask`, for symbolic lengths too (all False where the
    sequence is too short: see `_symbolic_length_guard`)."""
    if padding == "same":
        output_mask = _long_runs(plan.min_length)
    else:
        output_mask = functools.partial(masking.output_mask, layout=plan,
                                        padding=padding)
    return dispatch.any_length(output_mask, plan, 1)(mask)


@dispatch.plain_python
@functools.lru_cache(maxsize=64)
def _long_runs(length):
    # In TensorFlow graphs, traced once: Keras computes a layer's output
    # mask at every trace of a model, and `fit` traces twice.
    return dispatch.shared_through_xla(
        functools.partial(masking.long_runs, length=length), False)


def derivative_mask(mask, rank, order=1, accuracy=2, padding="same", axis=1,
                    irregular=False):
    """The Keras mask of `derivative(x, ..., mask=mask)` for `x` of `rank`.

    Along axis 1 (the axis Keras masks): the input mask for `causal`; for
    `same`, without the runs shorter than the minimum length; for `valid`
    and `periodic`, the steps whose whole stencil is unmasked (see
    `fdlayers.masking`). Along any other axis, the input mask. `irregular`:
    whether the derivative uses coordinates (`stencils.windows`).
    """
    return _derivative_mask(mask, rank, _layout(order, accuracy, padding,
                                                irregular), padding, axis)


def savitzky_golay_mask(mask, rank, order=1, window=5, polyorder=2,
                        padding="same", axis=1, irregular=False):
    """The Keras mask of `savitzky_golay(x, ..., mask=mask)`, as
    `derivative_mask` gives for `derivative`."""
    plan = (_windows_of(("savgol", order, window, polyorder, padding))
            if irregular else savgol.plan(order, window, polyorder, padding))
    return _derivative_mask(mask, rank, plan, padding, axis)


def _derivative_mask(mask, rank, plan, padding, axis):
    if mask is None:
        return None
    if check_axis(axis, rank) != 1:
        return mask
    return _output_mask(mask, plan, padding)


def _check_mask(mask, x):
    mask = real_tensor(mask, "mask")
    shape, expected = tuple(mask.shape), tuple(x.shape[:2])
    pairs = [tuple(map(dispatch.static_length, pair))
             for pair in zip(shape, expected)]
    if len(shape) != 2 or any(None not in pair and pair[0] != pair[1]
                              for pair in pairs):
        raise ValueError(
            "`mask` must have the shape (batch, steps) of the input's first "
            f"two axes, {expected}. Received: mask of shape {shape}"
        )
    return ops.cast(mask, "bool")


# One function per rank, as in `_tensorflow_pair`, and per mode: op by op,
# each step's samples are gathered (`masking.masked_forward`). Its
# transpose is the gradient in TensorFlow graphs (`dispatch.run_stencil`).
@dispatch.plain_python
@functools.lru_cache(maxsize=64)
def _masked_stencil(spec, scale, rank, compiled, transposed):
    rows = masking.stencil_rows(dispatch.plan_of(spec), scale)
    fn = masking.masked_transpose if transposed else masking.masked_forward
    return functools.partial(fn, rows=rows, gathered=not compiled)


@dispatch.plain_python
@functools.lru_cache(maxsize=64)
def _masked_fn(spec, scale, rank, compiled, transposed=False):
    return dispatch.through_xla(
        _masked_stencil(spec, scale, rank, compiled, transposed), compiled)


@dispatch.plain_python
@functools.lru_cache(maxsize=64)
def _masked_windows_stencil(spec, rank):
    layout = _windows_of(spec)
    if _gathered(spec):
        windows = functools.partial(masking.masked_gathered, layout=layout,
                                    order=spec[1], polyorder=spec[3])
    else:
        windows = functools.partial(masking.masked_windows, layout=layout,
                                    order=spec[1], fit=_fit_of(spec))
    # (x, mask, t): the mask and the coordinates have their steps last.
    return dispatch.any_length(windows, layout, 1)


@dispatch.plain_python
@functools.lru_cache(maxsize=64)
def _masked_windows_fn(spec, rank, compiled):
    return dispatch.shared_through_xla(_masked_windows_stencil(spec, rank),
                                       compiled)


def _masked_body(x, mask, compiled, spec, scale):
    return _masked_fn(spec, scale, len(x.shape), compiled)(x, mask)


def _masked_padded(x, mask, spec, scale):
    return dispatch.padded_call(_masked_fn(spec, scale, len(x.shape), True),
                                x, mask)


def _masked_transpose_body(g, mask, compiled, spec, scale):
    return _masked_fn(spec, scale, len(g.shape), compiled, True)(g, mask)


def _masked_transpose_padded(g, mask, spec, scale):
    return dispatch.padded_call(
        _masked_fn(spec, scale, len(g.shape), True, True), g, mask)


def _masked_windows_body(x, mask, t, compiled, spec):
    return _masked_windows_fn(spec, len(x.shape), compiled)(x, mask, t)


def _masked_windows_padded(x, mask, t, spec):
    return dispatch.padded_call(
        _masked_windows_fn(spec, len(x.shape), True), x, mask, t)


def _per_sample(x, t, spec, axis):
    """The stencil `spec` on per-sample coordinates `t`, weights computed
    in the graph.

    Precision: offsets `t[j] - t[i]` and the weights' recurrence (Fornberg's,
    or the least-squares fit's) run in `x`'s float dtype (float32 for
    half-precision inputs), so in float32 the weights carry a relative
    error of a few units of 2⁻²⁴ times the ratio of |t| to the local
    spacing: give time stamps relative to the series start.
    """
    layout = _windows_of(spec)
    return dispatch.run_stencil(
        _per_sample_body, x, (t,), layout, axis,
        dispatch.placement(x, 0 if _gathered(spec) else layout.width),
        _per_sample_padded if axis == 1 else None, spec=spec, axis=axis)


def _per_sample_body(x, t, compiled, spec, axis):
    return _per_sample_fn(spec, axis, len(x.shape), len(t.shape),
                          compiled)(x, t)


def _per_sample_padded(x, t, spec, axis):
    layout = _windows_of(spec)
    if spec[-1] == "valid":
        return dispatch.padded_call(
            _per_sample_fn(spec, axis, len(x.shape), len(t.shape), True),
            x, t=t, change=1 - layout.width)
    # Masked windows stop each run at its last sample, as the unmasked
    # layout stops at the last step: here the true length.
    return dispatch.padded_call(
        _masked_windows_fn(spec, len(x.shape), True), x,
        ops.ones(ops.shape(x)[:2], "bool"), t)


def _broadcast_along(weight, rank, axis):
    """`weight`, whose last axis runs along the steps, against an input of `rank`."""
    if isinstance(weight, float):
        return weight
    for _ in range(rank - axis - 1):
        weight = ops.expand_dims(weight, -1)
    return weight


def _apply_per_sample(x, t, layout, order, axis, fit=None, polyorder=None):
    # The coordinates are data, not parameters: without this, autodiff of
    # the unrolled recurrence (hundreds of ops for wide windows) is built and
    # compiled along with every gradient with respect to x.
    t = ops.stop_gradient(t)
    if polyorder is not None and layout.width >= kernels.GATHERED_MIN_WIDTH:
        # (`_gathered`)
        weights, starts, inverse = kernels.savgol_rows(t, layout, order,
                                                       polyorder)
        return kernels.apply_rows(x, weights, starts, axis, inverse, order)
    (head, interior, tail), (head_scales, interior_scale, tail_scales) = (
        kernels.time_weights(t, layout, order, fit))
    rank = len(x.shape)

    def fit(row):
        fitted = [_broadcast_along(w, rank, axis) for w in row]
        if isinstance(row, kernels.ReadingGroup):
            return kernels.ReadingGroup(fitted, row.reads)
        return fitted

    def fit_scale(scale):
        return None if scale is None else _broadcast_along(scale, rank, axis)

    return kernels.apply_windows(
        x, layout, axis, [fit(r) for r in head], fit(interior),
        [fit(r) for r in tail],
        scales=([fit_scale(s) for s in head_scales], fit_scale(interior_scale),
                [fit_scale(s) for s in tail_scales]), order=order)


@dispatch.plain_python
@functools.lru_cache(maxsize=256)
def _per_sample_fn(spec, axis, rank, times_rank, compiled):
    layout = _windows_of(spec)
    apply = functools.partial(
        _apply_per_sample, layout=layout, order=spec[1], axis=axis,
        fit=_fit_of(spec), polyorder=spec[3] if spec[0] == "savgol" else None)
    return dispatch.through_xla(dispatch.any_length(apply, layout, axis),
                                compiled)


def _static_coordinates(x, coordinates, spec, axis):
    """The stencil `spec` on a static non-uniform grid: float64 weights, once."""
    where = dispatch.placement(x)
    shared = _shared_static(x, coordinates, spec, axis, where)
    if shared is not None:
        arrays, config = shared
        return dispatch.run_stencil(_static_arrays_body, x, arrays,
                                    _windows_of(spec), axis, where, **config)
    return dispatch.run_stencil(
        _static_body, x, (), _windows_of(spec), axis, where,
        spec=spec, axis=axis, coordinates=coordinates.tobytes())


def _shared_static(x, coordinates, spec, axis, where):
    """`(arrays, config)` for a TensorFlow graph: the grid's weights as
    arguments of the stencil's functions (`dispatch.run_stencil`), which
    every grid of the same configuration then shares, traced once, where
    a grid's own constants would have its own functions traced (a new
    length is a new grid: 1.9× a `Conv1D`'s cost in `predict` with them
    traced anew, benchmarks/README.md, section 10). Through XLA too,
    eagerly included: the weights are its program's arguments, not its
    constants, which an XLA program and a graph copy several times (93×
    a float64 input's size in all at 2**21 points). None on the other
    backends, where nothing is traced per grid anyway; causal edges are
    numbers, one per weight, and Savitzky–Golay's widest windows gather
    their rows.
    """
    if keras.backend.backend() != "tensorflow" or where not in (
            "ops", "any", "xla"):
        return None
    if spec[-1] not in ("same", "valid") or (
            spec[0] == "savgol" and
            _windows_of(spec).width >= kernels.GATHERED_MIN_WIDTH):
        return None
    dtype = keras.backend.standardize_dtype(x.dtype)
    layout, exponent, rows, starts = _static_rows(spec, dtype,
                                                  coordinates.tobytes())
    return (rows, starts), dict(
        layout=layout, axis=axis, exponent=exponent,
        edges=(len(layout.head), len(layout.tail)))


def _static_arrays_body(x, rows, starts, compiled, layout, axis, exponent,
                        edges):
    """The windows' stencil with its weights given (`_shared_static`):
    `rows`, each output's window of weights, and `starts`, where each
    window starts. Op by op, every window is gathered (`kernels.apply_rows`):
    a few operations, which TensorFlow optimises in every new graph (a new
    length on a static grid is a new graph), where a product and a sum per
    weight are dozens. Compiled, the weights' columns are slices of `rows`
    against slices of `x` (`kernels.apply_windows`), which XLA fuses into
    one pass, where it would hold every gathered window.
    """
    return _times_power_of_two(
        _static_arrays_fn(layout, axis, len(x.shape), edges, compiled)(
            x, rows, starts), exponent)


@functools.lru_cache(maxsize=64)
def _static_arrays_fn(layout, axis, rank, edges, compiled):
    """`_static_arrays_body`'s function, for every grid of its windows and
    inputs of `rank` (a function that has seen two ranks is retraced for
    any): an eager call through XLA compiles it once per shape."""
    def apply(x, rows, starts):
        # (The traced function knows neither of rows' sizes: all grids
        # share it.)
        rows = ops.reshape(rows, (-1, layout.width))
        if not compiled:
            return kernels.apply_rows(x, rows, starts, axis)
        heads, tails = edges
        trailing = (1,) * (rank - axis - 1)

        def columns(block):
            return [ops.reshape(block[:, j], (-1,) + trailing)
                    for j in range(layout.width)]

        interior = columns(rows[heads:-tails or None])
        head = [columns(rows[:heads])] if heads else []
        tail = [columns(rows[-tails:])] if tails else []
        return kernels.apply_windows(x, layout, axis, head, interior, tail)

    return dispatch.through_xla(apply, compiled)


def _static_body(x, compiled, spec, axis, coordinates):
    dtype = keras.backend.standardize_dtype(x.dtype)
    return _static_fn(spec, axis, len(x.shape), dtype, coordinates,
                      compiled)(x)


def _apply_static(x, layout, weights, axis, exponent):
    head, interior, tail = weights
    # Constants made here, in the graph being traced, not in the cache.
    def constant(weights):
        return [ops.convert_to_tensor(w) if isinstance(w, np.ndarray) else w
                for w in weights]

    head = [constant(group) for group in head]
    tail = [constant(group) for group in tail]
    interior = constant(interior)
    return _times_power_of_two(
        kernels.apply_windows(x, layout, axis, head, interior, tail), exponent)


def _apply_static_rows(x, rows, starts, axis, exponent):
    # Constants made here, in the graph being traced, not in the cache.
    return _times_power_of_two(kernels.apply_rows(
        x, ops.convert_to_tensor(rows), ops.convert_to_tensor(starts), axis),
        exponent)


def _static_bytes(spec, axis, rank, dtype, coordinates, compiled):
    """What a `_static_fn` keeps alive, about: its weights (a window of
    float64 per point, cast to `dtype`) and the constants that a traced
    graph and an XLA program hold of them."""
    width = (stencils.windows(*spec[1:]).width if spec[0] == "difference"
             else spec[2])
    return len(coordinates) * (width + 1) * 3


@dispatch.plain_python
@caches.bytes_cache(lambda: dispatch.STATIC_CACHE_BYTES, _static_bytes)
def _static_fn(spec, axis, rank, dtype, coordinates, compiled):
    padding = spec[-1]
    layout, head, interior, tail, exponent = _folded_weights(
        spec, dtype, coordinates)
    steps = len(coordinates) // 8  # bytes of float64
    if spec[0] == "savgol" and layout.width >= kernels.GATHERED_MIN_WIDTH:
        rows = np.concatenate([np.reshape(head, (-1, layout.width)), interior,
                               tail]).astype(dtype)
        m = layout.width
        starts = (np.clip(np.arange(steps) - layout.left, 0, steps - m)
                  if padding == "same" else np.arange(steps - m + 1)
                  ).astype("int32")
        apply = functools.partial(_apply_static_rows, rows=rows,
                                  starts=starts, axis=axis, exponent=exponent)
        return dispatch.through_xla(
            dispatch.any_length(apply, layout, axis, steps), compiled)
    if padding == "causal":  # one row per group
        interior = _columns(interior, axis, rank, dtype)
        head = [[float(w) for w in row] for row in head]
        tail = []
    else:
        head, interior, tail = _grouped(padding, layout, head, interior,
                                        tail, axis, rank, dtype)
    apply = functools.partial(_apply_static, layout=layout,
                              weights=(head, interior, tail), axis=axis,
                              exponent=exponent)
    return dispatch.through_xla(
        dispatch.any_length(apply, layout, axis, steps), compiled)


def _folded_weights(spec, dtype, coordinates):
    """`(layout, head, interior, tail, exponent)`: the float64 weights of
    the stencil `spec` on the grid `coordinates` (bytes of float64), with
    `spacing**-order` folded in but for `2**exponent` (see `_fold`)."""
    coordinates = np.frombuffer(coordinates, dtype=np.float64)
    # Scaled back, as far as the dtype allows, by a power of two.
    unit, scaled = _grid_units(coordinates)
    weights = (stencils.window_weights if spec[0] == "difference"
               else savgol.window_weights)
    layout, head, interior, tail = weights(scaled, *spec[1:])
    factor, exponent = _fold([interior, tail] + list(head), 1.0,
                             -unit * spec[1], dtype)
    interior *= factor  # (in place: a window per point)
    return (layout, [np.asarray(row) * factor for row in head],
            interior, tail * factor, exponent)


def _columns(weights, axis, rank, dtype):
    """The columns of `weights` (points × window), each shaped to
    broadcast along `axis` of an input of `rank`, in `dtype`."""
    trailing = (1,) * (rank - axis - 1)
    return [column.reshape(column.shape + trailing).astype(dtype)
            for column in weights.T]


def _grouped(padding, layout, head, interior, tail, axis, rank, dtype):
    """`(head, interior, tail)` as `kernels.apply_windows` takes them, for
    `padding` "same" (one group of rows at each edge) or "valid" (none)."""
    interior = _columns(interior, axis, rank, dtype)
    if padding != "same":
        return [], interior, []
    head = ([_columns(np.array(head).reshape(-1, len(interior)), axis, rank,
                      dtype)] if len(layout.head) else [])
    return head, interior, [_columns(tail, axis, rank, dtype)]


def _rows_in_place(spec, dtype, coordinates):
    """`(layout, exponent, rows)` of a difference stencil on the grid
    `coordinates` (bytes of float64), as `_folded_weights` gives them, each
    output's window a row of `rows`, in `dtype`, in memory that a tensor can
    share (`dispatch.captured`): each block of rows written there as it is
    computed, not a float64 array of them all and its copy (the rows of a
    long grid are a window per point: 2**21 points took 15.4× a float64
    input's size at a first call, 23.5× a float32 one's, that way). Cast
    before it is scaled, which gives the same numbers where every weight is
    a normal number of `dtype` (rounding commutes with a power of two
    there); None otherwise, and for Savitzky–Golay."""
    if (spec[0] != "difference" or spec[-1] not in ("same", "valid")
            or dtype not in ("float32", "float64")):
        return None
    grid = np.frombuffer(coordinates, dtype=np.float64)
    unit, scaled = _grid_units(grid)
    layout, head, blocks, tail = stencils.window_weight_blocks(scaled,
                                                               *spec[1:])
    width = layout.width
    head = np.reshape(head, (-1, width))
    rows = dispatch.aligned_empty(
        (len(head) + blocks.rows + len(tail), width), np.dtype(dtype))
    info = np.finfo(dtype)
    high, low = float(info.max), float(info.tiny)
    largest, smallest = 0.0, math.inf
    # (Computed block by block: not a list of every block. The edge rows
    # first: where weights leave the dtype's range, they do at once, and
    # the float64 array is computed with little work lost.)
    for start, block in itertools.chain([(-len(head), head),
                                         (blocks.rows, tail)], blocks):
        block_largest, block_smallest = _nonzero_extremes(block)
        if block_largest > high or block_smallest < low:
            return None  # not all normal numbers of `dtype`
        largest = max(largest, block_largest)
        smallest = min(smallest, block_smallest)
        rows[len(head) + start:len(head) + start + len(block)] = block
    if not largest:
        largest = smallest = 1.0  # (as `_extremes`)
    factor, exponent = _fold(None, 1.0, -unit * spec[1], dtype,
                             (largest, smallest))
    rows *= factor  # (a power of two: exact)
    return layout, exponent, rows


@dispatch.plain_python
@caches.bytes_cache(lambda: dispatch.STATIC_CACHE_BYTES,
                    lambda spec, dtype, coordinates:
                    _static_bytes(spec, 1, 1, dtype, coordinates, False))
def _static_rows(spec, dtype, coordinates):
    """`(layout, exponent, rows, starts)` for `_shared_static`, as tensors
    (`dispatch.captured`): each output's window of weights, `(outputs,
    width)` in `dtype`, and the step where its window starts (padding
    "same": flush with the edges; "valid")."""
    rows = _rows_in_place(spec, dtype, coordinates)
    if rows is None:
        layout, head, interior, tail, exponent = _folded_weights(
            spec, dtype, coordinates)
        rows = dispatch.captured(*(np.reshape(part, (-1, layout.width))
                                   for part in (head, interior, tail)),
                                 dtype=dtype, shared=True)
    else:
        layout, exponent, rows = rows
        rows = dispatch.captured(rows, shared=True)
    width = layout.width
    steps = len(coordinates) // 8  # bytes of float64
    # (int32 from the start: a point's index, not arrays of int64.)
    if spec[-1] == "same":
        starts = np.arange(-layout.left, steps - layout.left, dtype=np.int32)
        np.clip(starts, 0, steps - width, out=starts)
    else:
        starts = np.arange(steps - width + 1, dtype=np.int32)
    return layout, exponent, rows, dispatch.captured(starts)
