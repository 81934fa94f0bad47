"""Partial derivatives of fields: `partial()` and the vector-calculus operators.

A field is a tensor `(batch, *spatial, channels)` (`"channels_last"`) or
`(batch, channels, *spatial)` (`"channels_first"`) with 1 to 3 spatial axes.
Every operator here is a sum of *terms*, each a partial derivative
`∂^(o_0 + o_1 + ...)/∂s_0^o_0 ∂s_1^o_1 ...` of one component of the input,
taken as the composition of the 1-D operators of `fdlayers.ops.derivative`
along each differentiated axis. Composing keeps each axis's edge stencils, so
a mixed partial at a corner has the formal accuracy too: the 1-D operator
along axis 1 is exact on polynomials of degree < `o_1 + accuracy` in s_1,
whatever the other variables, and so is the composition on the product
space (and a sum of such terms on polynomials of the total degree that
each term's bound allows).

Where the stencils run: op by op through `derivative` (small inputs,
coordinate grids, PyTorch), or, for uniform spacings on large inputs in
TensorFlow (where `fdlayers.dispatch.placement` picks XLA) and on JAX, the
whole operator as one compiled function, which XLA fuses into one pass over
the field (benchmarks/README.md, section 13) instead of one per term.

Channel layout (DESIGN.md, "Fields"): component j of an input with
`n·C` channels is channels `j·C .. j·C + C - 1`; `Gradient` writes
component k (`∂/∂s_k`) of each field c to channel `k·C + c`.
"""

import functools
import math
import numbers
import reprlib

import keras
import numpy as np
from keras import ops

from fdlayers import dispatch, kernels, stencils
from fdlayers import ops as fd_ops

DATA_FORMATS = ("channels_last", "channels_first")
MAX_SPATIAL_AXES = 3


# Arguments -------------------------------------------------------------------

def check_data_format(data_format):
    """`data_format` as `"channels_last"` or `"channels_first"`; None gives
    `keras.config.image_data_format()`."""
    if data_format is None:
        data_format = keras.config.image_data_format()
    if not isinstance(data_format, str) or data_format.lower() not in DATA_FORMATS:
        raise ValueError(
            "`data_format` must be 'channels_last', 'channels_first' or None "
            f"(keras.config.image_data_format()). Received: "
            f"data_format={data_format!r}")
    return data_format.lower()


def check_orders(orders):
    """`orders` as a tuple of non-negative ints, 1 to 3 of them, not all 0."""
    if isinstance(orders, (list, tuple)) or (
            isinstance(orders, np.ndarray) and orders.ndim == 1):
        values = list(orders)
    else:
        raise TypeError(
            "`orders` must be a tuple of non-negative integers, one per "
            "spatial axis, e.g. (1, 1) for ∂²/∂s₀∂s₁ on a 2-D field. "
            f"Received: orders={orders!r}")
    if not 1 <= len(values) <= MAX_SPATIAL_AXES:
        raise ValueError(
            "`orders` must have one entry per spatial axis, 1 to "
            f"{MAX_SPATIAL_AXES} of them. Received: orders={orders!r}")
    for value in values:
        if isinstance(value, (bool, np.bool_)) or not isinstance(
                value, numbers.Integral):
            raise TypeError(
                "`orders` must hold non-negative integers. Received: "
                f"orders={orders!r}")
        if value < 0:
            raise ValueError(
                "`orders` must hold non-negative integers. Received: "
                f"orders={orders!r}")
    if not any(values):
        raise ValueError(
            "`orders` must differentiate along at least one axis (not all "
            f"0). Received: orders={orders!r}")
    return tuple(int(v) for v in values)


def check_padding(padding):
    """`padding` as a lowercase string, or a tuple of them (one per axis)."""
    def one(value, name):
        if not isinstance(value, str) or value.lower() not in stencils.PADDINGS:
            raise ValueError(
                f"`{name}` must be one of "
                f"{', '.join(map(repr, stencils.PADDINGS))}. "
                f"Received: {name}={value!r}")
        return value.lower()

    if isinstance(padding, (list, tuple)):
        if not 1 <= len(padding) <= MAX_SPATIAL_AXES:
            raise ValueError(
                "`padding` must be one string for every axis or a tuple of "
                f"one per spatial axis (1 to {MAX_SPATIAL_AXES}). Received: "
                f"padding={padding!r}")
        return tuple(one(p, f"padding[{k}]") for k, p in enumerate(padding))
    return one(padding, "padding")


def check_spacing(spacing):
    """`spacing` as one float for every axis, or a tuple with one entry per
    spatial axis, each a float or a float64 coordinate vector.

    A list, tuple or 1-D array at the top level holds one entry per axis
    (a coordinate vector goes inside it: `spacing=(x_coordinates, dy)`).
    """
    spacing = fd_ops.as_number(spacing)
    if isinstance(spacing, numbers.Real) and not isinstance(spacing, bool):
        return _positive(spacing, "spacing")
    if ops.is_tensor(spacing) and not isinstance(spacing, np.ndarray):
        raise TypeError(
            "`spacing` of a field must be a number or a tuple of numbers or "
            "1-D coordinate arrays, one per spatial axis; per-sample "
            "coordinates (tensors) are not supported. Received: spacing of "
            f"type {type(spacing).__name__}")
    if not isinstance(spacing, (list, tuple, np.ndarray)) or fd_ops._ndim(
            spacing) == 0:
        raise TypeError(
            "`spacing` must be a positive number, or a tuple with one entry "
            "per spatial axis (a positive number or that axis's 1-D "
            f"coordinates). Received: spacing={reprlib.repr(spacing)}")
    if not 1 <= len(spacing) <= MAX_SPATIAL_AXES:
        raise ValueError(
            "`spacing` must be one number for every axis or a tuple with one "
            f"entry per spatial axis (1 to {MAX_SPATIAL_AXES}); a coordinate "
            "vector goes inside the tuple, e.g. spacing=(x, 0.1). Received: "
            f"spacing with {len(spacing)} entries")
    entries = []
    for k, entry in enumerate(spacing):
        name = f"spacing[{k}]"
        entry = fd_ops.as_number(entry)
        if isinstance(entry, numbers.Real) and not isinstance(entry, bool):
            entries.append(_positive(entry, name))
            continue
        if fd_ops._ndim(entry) != 1 or (ops.is_tensor(entry) and not
                                        isinstance(entry, np.ndarray)):
            raise TypeError(
                f"`{name}` must be a positive number or a 1-D array of that "
                f"axis's coordinates. Received: {name}={reprlib.repr(entry)}")
        try:
            entries.append(stencils.check_coordinates(entry))
        except (TypeError, ValueError) as error:
            raise type(error)(
                str(error).replace("spacing[", f"{name}[").replace(
                    "`spacing`", f"`{name}`").replace("spacing=", f"{name}=")
            ) from None
    return tuple(entries)


def _positive(value, name):
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not (math.isfinite(number) and number > 0):
        raise ValueError(
            f"`{name}` must be a positive finite number. Received: "
            f"{name}={reprlib.repr(value)}")
    return number


def check_accuracy(accuracy):
    """`accuracy` as an int ≥ 1 (evenness is checked per axis, by padding)."""
    return stencils.check_positive_int("accuracy", accuracy)


def per_axis(value, ndim, name):
    """`value` (one for every axis, or a tuple of one per axis) as a tuple
    of `ndim` entries."""
    if not isinstance(value, tuple):
        return (value,) * ndim
    if len(value) != ndim:
        raise ValueError(
            f"`{name}` has {len(value)} entries but the field has {ndim} "
            f"spatial axes: give one value for every axis or one per spatial "
            f"axis. Received: {name}={_short(value)}")
    return value


def _short(value):
    if isinstance(value, tuple):
        return "(" + ", ".join(
            f"<{len(v)} coordinates>" if isinstance(v, np.ndarray) else repr(v)
            for v in value) + ")"
    return repr(value)


def check_terms(blocks, ndim, spacing, accuracy, padding):
    """Check that each differentiated axis's order, accuracy, padding and
    spacing go together; return `(spacing, padding)` as tuples of `ndim`.

    `blocks`: the operator's terms (see `Operator`). Accuracy must be even
    along every axis differentiated with a central padding (`same`, `valid`,
    `periodic`), as for `FiniteDifference1D`; a coordinate vector refuses
    `periodic` on its axis.
    """
    spacing = per_axis(spacing, ndim, "spacing")
    padding = per_axis(padding, ndim, "padding")
    for k in range(ndim):
        orders = {term[2][k] for block in blocks for term in block} - {0}
        for order in sorted(orders):
            stencils.check_order_accuracy(
                order, accuracy, padding[k] in stencils.CENTRAL_PADDINGS)
        if orders and isinstance(spacing[k], np.ndarray):
            if padding[k] == "periodic":
                raise ValueError(
                    f"`padding` 'periodic' is not defined on the coordinate "
                    f"grid `spacing[{k}]` (a coordinate vector gives no "
                    f"period): give a number for spacing[{k}] or another "
                    f"padding for axis {k}.")
            minimum = max(stencils.windows(o, accuracy, padding[k]).min_length
                          for o in orders)
            if len(spacing[k]) < minimum:
                raise ValueError(
                    f"`spacing[{k}]` has {len(spacing[k])} coordinates; this "
                    f"order and accuracy need at least {minimum} steps.")
    return spacing, padding


# Operators -------------------------------------------------------------------

def _unit(k, ndim, order=1):
    return tuple(order if j == k else 0 for j in range(ndim))


@functools.lru_cache(maxsize=None)
def operator_terms(name, ndim, orders=None):
    """`(components, blocks)` of the operator `name` on `ndim` axes.

    The input holds `components·C` channels; the output holds `len(blocks)·C`,
    block b being `Σ sign · ∂^orders x[component]` over its terms
    `(sign, component, orders)`, for each field c.
    """
    if name == "partial":
        return 1, (((1, 0, orders),),)
    if name == "gradient":
        return 1, tuple(((1, 0, _unit(k, ndim)),) for k in range(ndim))
    if name == "divergence":
        return ndim, (tuple((1, k, _unit(k, ndim)) for k in range(ndim)),)
    if name == "laplacian":
        return 1, (tuple((1, 0, _unit(k, ndim, 2)) for k in range(ndim)),)
    if name == "curl":
        if ndim == 2:  # ∂v₁/∂s₀ − ∂v₀/∂s₁
            return 2, (((1, 1, _unit(0, 2)), (-1, 0, _unit(1, 2))),)
        if ndim == 3:
            return 3, tuple(
                ((1, (i + 2) % 3, _unit((i + 1) % 3, 3)),
                 (-1, (i + 1) % 3, _unit((i + 2) % 3, 3)))
                for i in range(3))
        raise ValueError(
            "`Curl` needs a field with 2 or 3 spatial axes (the 2-D scalar "
            f"vorticity or the 3-D vector). Received: {ndim} spatial axis")
    raise ValueError(f"Unknown field operator {name!r}")


def spatial_axes(rank, data_format):
    """`(axes, channel_axis)`: the input axis of each spatial axis, and the
    channel axis, for an input of `rank` (3 to 5)."""
    if data_format == "channels_first":
        return tuple(range(2, rank)), 1
    return tuple(range(1, rank - 1)), rank - 1


def check_rank(input_shape, ndim=None):
    """The number of spatial axes of an input of `input_shape`: its rank
    minus 2 (batch and channels), 1 to 3, and `ndim` where that is given."""
    rank = len(input_shape)
    if not 3 <= rank <= MAX_SPATIAL_AXES + 2:
        raise ValueError(
            "A field must have rank 3 to 5: (batch, *spatial, channels) with "
            "1 to 3 spatial axes (channels first for data_format="
            f"'channels_first'). Received: input of shape {tuple(input_shape)}")
    if ndim is not None and rank - 2 != ndim:
        raise ValueError(
            f"`orders` has {ndim} entries but the input has {rank - 2} "
            f"spatial axes: one order per spatial axis. Received: input of "
            f"shape {tuple(input_shape)}")
    return rank - 2


def output_shape(input_shape, name, spacing=1.0, accuracy=2, padding="same",
                 data_format="channels_last", orders=None):
    """Shape of the operator `name` ("partial", "gradient", "divergence",
    "curl", "laplacian") on an input of `input_shape` (None = unknown),
    after checking the rank, the channels, the lengths and the coordinates.
    """
    input_shape = tuple(input_shape)
    ndim = check_rank(input_shape, None if orders is None else len(orders))
    components, blocks = operator_terms(name, ndim, orders)
    spacing, padding = check_terms(blocks, ndim, spacing, accuracy, padding)
    axes, channel_axis = spatial_axes(len(input_shape), data_format)
    channels = dispatch.static_length(input_shape[channel_axis])
    if components > 1:
        if channels is None:
            raise ValueError(
                f"`{_NAMES[name]}` needs the number of channels of its input "
                f"({components}·C: {components} components of C fields each) "
                f"to be known. Received: input of shape {input_shape}")
        if channels % components:
            raise ValueError(
                f"`{_NAMES[name]}` on a field with {ndim} spatial axes takes "
                f"{components}·C channels ({components} vector components of "
                f"C fields each, component j in channels j·C .. j·C + C - 1)."
                f" Received: {channels} channels, input of shape "
                f"{input_shape}")
    shape = list(input_shape)
    if channels is not None:
        shape[channel_axis] = channels // components * len(blocks)
    for k, axis in enumerate(axes):
        length = dispatch.static_length(input_shape[axis])
        used = sorted({term[2][k] for block in blocks for term in block} - {0})
        if isinstance(spacing[k], np.ndarray) and used and length is not None \
                and length != len(spacing[k]):
            raise ValueError(
                f"The input has {length} steps along spatial axis {k} (input "
                f"axis {axis}) but `spacing[{k}]` has {len(spacing[k])} "
                "coordinates: one coordinate per step.")
        for order in used:
            layout = (stencils.windows(order, accuracy, padding[k])
                      if isinstance(spacing[k], np.ndarray)
                      else stencils.plan(order, accuracy, padding[k]))
            if length is not None and length < layout.min_length:
                raise ValueError(
                    f"The input is too short along spatial axis {k} (input "
                    f"axis {axis}): padding={padding[k]!r} needs at least "
                    f"{layout.min_length} steps for this stencil. Received: "
                    f"{length} steps")
        cut = _axis_cut(blocks, k, accuracy, padding[k])
        shape[axis] = None if shape[axis] is None else shape[axis] - max(cut)
    return tuple(shape)


_NAMES = {"partial": "partial", "gradient": "Gradient",
          "divergence": "Divergence", "curl": "Curl", "laplacian": "Laplacian"}


def _axis_cut(blocks, k, accuracy, padding):
    """How much shorter each term makes axis k, in term order (flattened)."""
    if padding != "valid":
        return [0 for block in blocks for term in block]
    return [stencils.plan(term[2][k], accuracy, "valid").width - 1
            if term[2][k] else 0 for block in blocks for term in block]


# The tensor op ---------------------------------------------------------------

@dispatch.static_python
def partial(x, orders, spacing=1.0, accuracy=2, padding="same",
            data_format=None):
    """A partial derivative of a field, mixed ones included.

    `partial(x, (o_0, ..., o_{n-1}))` estimates
    `∂^(o_0 + ... + o_{n-1}) f / ∂s_0^o_0 ... ∂s_{n-1}^o_{n-1}` at every
    grid point, for `x[b, i_0, ..., i_{n-1}, c] = f_bc(s_0, ..., s_{n-1})`
    sampled on a grid (`channels_last`). It is the composition of the 1-D
    operators of `fdlayers.derivative` along each axis with a nonzero order,
    each with that axis's spacing and padding, so the edge semantics are
    those of `FiniteDifference1D` along each axis, and at the corners their
    product: the result is exact (to rounding) for polynomials of degree
    < `o_k + accuracy` in each s_k that is differentiated (any degree in
    the others), and its error is `O(h**accuracy)` at every point, corners
    included, on smooth fields.

    Args:
        x: a field of rank 3 to 5: `(batch, *spatial, channels)`, or
            `(batch, channels, *spatial)` for `"channels_first"`. Integer
            inputs are cast to `keras.config.floatx()`; float16 and bfloat16
            inputs are differentiated in float32 and cast back.
        orders: a tuple of non-negative integers, one per spatial axis, not
            all 0: `(1, 1)` is ∂²/∂s₀∂s₁, `(0, 2)` is ∂²/∂s₁².
        spacing: the grid spacing of every axis, a positive number; or a
            tuple with one entry per spatial axis, each a positive number or
            that axis's 1-D array of strictly increasing coordinates (then
            its weights come from `order + accuracy` samples, as for
            `FiniteDifference1D`, and `"periodic"` is refused on that axis).
        accuracy: the formal order of accuracy, an integer ≥ 1; even along
            every axis differentiated with a central padding.
        padding: `"same"`, `"valid"`, `"periodic"` or `"causal"` for every
            axis, or a tuple with one per spatial axis. An axis with order 0
            is not differentiated and keeps its length whatever its padding.
        data_format: `"channels_last"`, `"channels_first"`, or None for
            `keras.config.image_data_format()`.

    Returns:
        A tensor of `x`'s float dtype and shape, but shorter by the stencil
        width − 1 along each differentiated axis with padding `"valid"`.

    Raises:
        TypeError, ValueError: for invalid arguments (each named), an input
            of the wrong rank or too short for a stencil, or a coordinate
            vector whose length is not its axis's.
    """
    orders = check_orders(orders)
    return apply_operator(x, "partial", spacing, accuracy, padding,
                          data_format, orders)


def apply_operator(x, name, spacing=1.0, accuracy=2, padding="same",
                   data_format=None, orders=None):
    """The operator `name` (see `operator_terms`) on the field `x`."""
    data_format = check_data_format(data_format)
    x, dtype = fd_ops._float_input(x)
    arguments = (tuple(x.shape), name, spacing, accuracy, padding,
                 data_format, orders)
    try:
        spacing, accuracy, padding = _checked_cached(*arguments)
    except TypeError as error:  # unhashable: coordinate vectors
        if "unhashable" not in str(error):
            raise
        spacing, accuracy, padding = _checked(*arguments)
    if dtype in fd_ops._HALF_DTYPES:
        x = ops.cast(x, "float32")
    key = (name, len(x.shape) - 2, orders, spacing, accuracy, padding,
           data_format)
    if _fusable(x, spacing, accuracy, padding, name, orders):
        y = _fused(x, key) if _shape_is_warm(x, key) else _any_size(x, key)
    else:
        y = _composed(x, key, _derivative)
    return ops.cast(y, dtype) if dtype in fd_ops._HALF_DTYPES else y


def _checked(shape, name, spacing, accuracy, padding, data_format, orders):
    """The arguments checked against each other and the input's shape:
    `(spacing, accuracy, padding)`, spacing and padding one per axis."""
    spacing = check_spacing(spacing)
    accuracy = check_accuracy(accuracy)
    padding = check_padding(padding)
    output_shape(shape, name, spacing, accuracy, padding, data_format, orders)
    ndim = len(shape) - 2
    return (per_axis(spacing, ndim, "spacing"), accuracy,
            per_axis(padding, ndim, "padding"))


# An eager call on a field of a few thousand points takes a few hundred µs;
# the checks, run once per distinct call, would be most of it. (Types are
# part of the key: 1 == 1.0 == True hash alike.)
@dispatch.plain_python
def _checked_cached(shape, name, spacing, accuracy, padding, data_format,
                    orders):
    return _checked_typed(_typed(spacing), _typed(accuracy), _typed(padding),
                          shape, name, data_format, orders)


def _typed(value):
    if isinstance(value, (list, tuple)):
        return (type(value),) + tuple(_typed(v) for v in value)
    return (type(value), value)


def _untyped(value):
    if isinstance(value[0], type) and issubclass(value[0], (list, tuple)):
        return value[0](_untyped(v) for v in value[1:])
    return value[1]


@functools.lru_cache(maxsize=256)
def _checked_typed(spacing, accuracy, padding, shape, name, data_format,
                   orders):
    return _checked(shape, name, _untyped(spacing), _untyped(accuracy),
                    _untyped(padding), data_format, orders)


def _derivative(x, order, spacing, accuracy, padding, axis):
    return fd_ops.derivative(x, order, spacing, accuracy, padding, axis)


def _composed(x, key, derivative):
    """The operator as a sum of compositions of 1-D derivatives, each taken
    by `derivative(x, order, spacing, accuracy, padding, axis)`."""
    name, ndim, orders, spacing, accuracy, padding, data_format = key
    components, blocks = operator_terms(name, ndim, orders)
    axes, channel_axis = spatial_axes(len(x.shape), data_format)
    channels = x.shape[channel_axis]
    if components > 1:
        channels //= components
        parts = [kernels.take(x, channel_axis, j * channels,
                              (j + 1) * channels) for j in range(components)]
    else:
        parts = [x]
    cuts = [_axis_cut(blocks, k, accuracy, padding[k]) for k in range(ndim)]
    # On PyTorch, where no gradient is recorded, the terms are summed into
    # the first one in place: every new tensor of a field's size costs its
    # first touch of fresh memory (a 512² field of 16 float32 images: the
    # Laplacian's two derivatives ≈ 1-2 ms each, their sum 13 ms more in
    # new tensors).
    in_place = _sums_in_place(x)
    outputs, index = [], 0
    for block in blocks:
        total = None
        for sign, component, term_orders in block:
            y = parts[component]
            for k, axis in enumerate(axes):
                if term_orders[k]:
                    y = derivative(y, term_orders[k], spacing[k], accuracy,
                                   padding[k], axis)
            for k, axis in enumerate(axes):  # to the common valid region
                extra = (max(cuts[k]) - cuts[k][index]) // 2
                if extra:
                    y = kernels.take(y, axis, extra, -extra)
            if total is None:
                total = y if sign > 0 else -y
                # (a term without a derivative is the input itself)
                owned = in_place and (sign < 0 or any(term_orders))
            elif owned:
                total = total.add_(y) if sign > 0 else total.sub_(y)
            else:
                total = total + y if sign > 0 else total - y
            index += 1
        outputs.append(total)
    return outputs[0] if len(outputs) == 1 else ops.concatenate(
        outputs, axis=channel_axis)


def _sums_in_place(x):
    return kernels._torch_mode(x) == "direct"


# One compiled pass -----------------------------------------------------------

def _fusable(x, spacing, accuracy, padding, name, orders):
    """Whether the operator runs as one compiled function: uniform spacings
    whose `spacing**-order` folds into the weights, static shapes, and
    TensorFlow where `placement` picks XLA, or JAX."""
    if any(isinstance(s, np.ndarray) for s in spacing):
        return False
    if any(dim is None or dispatch.is_symbolic(dim) for dim in x.shape):
        return False
    backend = keras.backend.backend()
    if backend == "torch":
        return False
    if backend == "tensorflow" and dispatch.placement(x) != "xla":
        return False
    dtype = keras.backend.standardize_dtype(x.dtype)
    ndim = len(x.shape) - 2
    for block in operator_terms(name, ndim, orders)[1]:
        for _, _, term_orders in block:
            for k, order in enumerate(term_orders):
                if order and _scale(order, accuracy, padding[k], spacing[k],
                                    dtype)[1]:
                    return False
    return True


# Eagerly on TensorFlow, the operator is compiled for a field's shape from
# this many calls at that shape on; before, it runs through kernels
# compiled for padded sizes (`_any_size`), which every size shares. A
# compile costs ≈ 0.3 s and ≈ 15 MB per shape on (1, 1024, 1024, 1) and
# saves ≈ 4 ms a call there (benchmarks/README.md, section 13c): fields come
# in many sizes, and one seen a few times only is not worth its kernel.
_FUSE_FROM_CALL = 16
_calls = {}


def _shape_is_warm(x, key):
    """Whether an eager TensorFlow call of the operator `key` on `x` runs
    the kernel compiled for x's shape: from its `_FUSE_FROM_CALL`-th call
    at that shape (always in graphs and on JAX, which compile per shape
    anyway)."""
    if keras.backend.backend() != "tensorflow":
        return True
    import tensorflow as tf

    if not tf.executing_eagerly():
        return True
    index = (key, tuple(x.shape), x.dtype)
    count = _calls.get(index, 0)
    if count >= _FUSE_FROM_CALL:
        return True
    if len(_calls) >= 4096:  # a bound on the counts kept
        _calls.clear()
    _calls[index] = count + 1
    return count + 1 >= _FUSE_FROM_CALL


def _any_size(x, key):
    """The operator `key` on an eager TensorFlow field through one graph of
    any batch and spatial size: its 1-D operators run through XLA kernels
    compiled for padded sizes (`fdlayers.dispatch._bucketed_kernel`)."""
    channel_axis = spatial_axes(len(x.shape), key[6])[1]
    return _any_size_fn(key, len(x.shape), x.shape[channel_axis],
                        x.dtype)(x)


@functools.lru_cache(maxsize=64)
def _any_size_fn(key, rank, channels, dtype):
    import tensorflow as tf

    shape = [None] * rank
    shape[spatial_axes(rank, key[6])[1]] = channels

    def forward(x):
        return _composed(x, key, _derivative)

    return tf.function(forward, input_signature=[tf.TensorSpec(shape, dtype)],
                       autograph=False)


def _scale(order, accuracy, padding, spacing, dtype):
    return fd_ops._scaling(("difference", order, accuracy, padding), spacing,
                           order, dtype)


def _fused(x, key):
    dtype = keras.backend.standardize_dtype(x.dtype)
    forward = _fused_fn(key, tuple(x.shape), dtype)
    if keras.backend.backend() == "jax":  # JAX differentiates it itself
        return forward(x)
    import tensorflow as tf

    if tf.executing_eagerly() and not dispatch._recording():
        return forward(x)  # no tape to attach a gradient to: save its cost
    # TensorFlow has no gradient for XLA's in-place update: the gradient is
    # the transposed operator, itself one compiled function, whose gradient
    # is the operator again (`dispatch._with_transpose_gradient`).
    return dispatch._with_transpose_gradient(
        x, forward, _transpose_fn(key, tuple(x.shape), dtype))


def _stencil_fn(dtype):
    """`derivative`'s 1-D operator for compiled functions: the interior's
    shifted slices joined to the edge rows by concatenation."""
    def stencil(y, order, spacing, accuracy, padding, axis):
        spec = ("difference", order, accuracy, padding)
        scale, _ = fd_ops._scaling(spec, spacing, order, dtype)
        channels = any(dim != 1 for dim in y.shape[axis + 1:])
        return kernels.LinearStencil(dispatch.plan_of(spec), scale, axis,
                                     channels, in_place=False).forward(y)

    return stencil


@functools.lru_cache(maxsize=128)
def _transpose_fn(key, shape, dtype):
    """The adjoint of the operator `key` on inputs of `shape`, compiled:
    autodiff of its slices and concatenations (a linear map, so the
    gradient at zeros, whose forward pass XLA prunes)."""
    import tensorflow as tf

    stencil = _stencil_fn(dtype)

    def transpose(g):
        x = tf.zeros(shape, dtype)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = _composed(x, key, stencil)
        return tape.gradient(y, x, output_gradients=g)

    return tf.function(transpose, jit_compile=True, autograph=False)


@dispatch.plain_python
@functools.lru_cache(maxsize=128)
def _fused_fn(key, shape, dtype):
    """The operator `key` on inputs of `shape` as one XLA function.

    Each 1-D operator is the interior's shifted slices joined to its edge
    rows by concatenation (no in-place update, which XLA would run as a pass
    of its own), so XLA fuses the whole sum of terms, edges and corners
    included, into one loop over the output. Its gradient is autodiff of the
    same slices (the transposed stencils), compiled too.
    """
    stencil = _stencil_fn(dtype)
    operator = (_interior_and_strips
                if all(p in ("same", "valid") for p in key[5]) else _composed)

    # A function of x alone: TensorFlow would otherwise match the key's
    # nested tuples against its traces at every call (≈ 0.5 ms).
    def forward(x):
        return operator(x, key, stencil)

    compiled = dispatch.through_xla(forward, True)
    if keras.backend.backend() != "tensorflow":
        return compiled
    import tensorflow as tf

    # The concrete function of this shape: an eager call skips matching
    # its arguments against the traces (≈ 0.1 ms, 20-40 % of a Laplacian
    # of 2**20 points).
    return compiled.get_concrete_function(tf.TensorSpec(shape, dtype))


def _interior_and_strips(x, key, stencil):
    """The operator `key` as its interior and its edge strips.

    The interior (every point whose stencils along every `"same"` axis are
    central) is one branch-free pass of shifted slices over a merged kernel
    (`_interior`). Along each `"same"` axis k, the `r` points nearest each
    edge come from the operator on the thin block of the edge's first
    samples (the edge rows read only those). Along the last such axis the
    strips are joined by concatenation; along the others the interior is
    zero-padded and the strips written over it in place. (Measured on
    (16, 512, 512, 1) under XLA, CPU time: 1.14× the floor; writing every
    strip in place, 1.8×; concatenating every strip, 2.1×, XLA then fusing
    the strips' own arithmetic into the interior's loop. See
    benchmarks/README.md, section 13.)
    """
    name, ndim, orders, spacing, accuracy, padding = key[:6]
    blocks = operator_terms(name, ndim, orders)[1]
    axes, _ = spatial_axes(len(x.shape), key[6])
    radii = _radii(blocks, ndim, accuracy)
    edged = [k for k in range(ndim) if padding[k] == "same" and radii[k]]
    if not edged:
        return _interior(x, key)
    last = edged[-1]

    def strips(k):
        axis, radius = axes[k], radii[k]
        used = sorted({t[2][k] for b in blocks for t in b} - {0})
        block = max(o + accuracy for o in used) + radius
        length = x.shape[axis]
        head = kernels.take(_composed(kernels.take(x, axis, 0, block), key,
                                      stencil), axis, 0, radius)
        tail = kernels.take(_composed(kernels.take(x, axis, length - block,
                                                   None), key, stencil),
                            axis, block - radius, None)
        if k != last:  # the last axis is joined after: its interior only
            head = kernels.take(head, axes[last], radii[last], -radii[last])
            tail = kernels.take(tail, axes[last], radii[last], -radii[last])
        return head, tail

    widths = [(0, 0)] * len(x.shape)
    for k in edged[:-1]:
        widths[axes[k]] = (radii[k], radii[k])
    y = ops.pad(_interior(x, key), widths)
    for k in edged[:-1]:
        head, tail = strips(k)
        origin = [0] * len(x.shape)
        y = ops.slice_update(y, origin, head)
        origin[axes[k]] = x.shape[axes[k]] - radii[k]
        # A strip spans the padded interior along the other axes: points
        # near two edges are written twice, with the same value.
        y = ops.slice_update(y, origin, tail)
    head, tail = strips(last)
    return ops.concatenate([head, y, tail], axis=axes[last])


def _radii(blocks, ndim, accuracy):
    """The radius of the widest central stencil along each axis."""
    return [max(stencils.plan(t[2][k], accuracy, "valid").width // 2
                if t[2][k] else 0 for b in blocks for t in b)
            for k in range(ndim)]


def _block_kernel(block, ndim, spacing, accuracy, dtype):
    """The interior of one output block as one kernel: `{(component,
    offsets): weight}`, the outer products of each term's 1-D central
    stencils (scaled by spacing**-order), merged over the terms."""
    kernel = {}
    for sign, component, term_orders in block:
        taps = {(): float(sign)}
        for k in range(ndim):
            if not term_orders[k]:
                taps = {o + (0,): w for o, w in taps.items()}
                continue
            spec = ("difference", term_orders[k], accuracy, "valid")
            scale, _ = fd_ops._scaling(spec, spacing[k], term_orders[k],
                                       dtype)
            plan = dispatch.plan_of(spec)
            taps = {o + (int(d),): w * float(c) * scale
                    for o, w in taps.items()
                    for d, c in zip(plan.offsets, plan.weights) if c}
        for offsets, weight in taps.items():
            index = (component, offsets)
            kernel[index] = kernel.get(index, 0.0) + weight
    return {index: weight for index, weight in sorted(kernel.items())
            if weight != 0.0}


def _interior(x, key):
    """The operator `key` at the points where every stencil is central (its
    `"valid"` output): per output block, Σ w · shifted x over the merged
    kernel of its terms (cross-shaped; box-shaped for mixed partials)."""
    name, ndim, orders, spacing, accuracy, padding, data_format = key
    components, blocks = operator_terms(name, ndim, orders)
    axes, channel_axis = spatial_axes(len(x.shape), data_format)
    dtype = keras.backend.standardize_dtype(x.dtype)
    channels = x.shape[channel_axis] // components
    radius = _radii(blocks, ndim, accuracy)
    outputs = []
    for block in blocks:
        total = None
        for (component, offsets), weight in _block_kernel(
                block, ndim, spacing, accuracy, dtype).items():
            index = [slice(None)] * len(x.shape)
            index[channel_axis] = slice(component * channels,
                                        (component + 1) * channels)
            for k, axis in enumerate(axes):
                start = radius[k] + offsets[k]
                stop = start - 2 * radius[k]
                index[axis] = slice(start, stop or None)
            term = x[tuple(index)] * weight  # a Python float: x's dtype
            total = term if total is None else total + term
        outputs.append(total)
    return outputs[0] if len(outputs) == 1 else ops.concatenate(
        outputs, axis=channel_axis)
