"""A stencil plan as a linear map on tensors, and its transpose, in `keras.ops`.

`forward(x)` applies a `fdlayers.stencils.Plan` along one axis; `transpose(g)`
applies its adjoint, which is the gradient of `forward`. Both read their
input once and write their output once when XLA fuses them;
`fdlayers.dispatch` decides where they run. The same code runs on NumPy
arrays (`NUMPY`), for the small eager calls where one backend op costs more
than the whole stencil does in NumPy, and on a zero-padded input whose true
length is a run-time value (`forward(x, length)`), so that one compiled
kernel serves every length up to the padded one.
"""

import functools
import math

import keras
import numpy as np
from keras import ops

from fdlayers import stencils


def plain_python(fn):
    """`fn`, which builds a stencil's plan or weights, as `torch.compile` must
    call it: as plain Python, behind a graph break; unchanged elsewhere.

    The stencil arithmetic (NumPy and exact rationals) runs once per
    configuration behind functools caches. TorchDynamo ignores those caches
    and traces NumPy calls as tensor operations, on which
    `stencils.coefficients` fails (the offsets' count turns symbolic), and
    `_columns` on the bytes of its cache key.
    """
    if keras.backend.backend() != "torch":
        return fn
    import torch

    return torch.compiler.disable(fn)


class _NumPyOps:
    """The `keras.ops` functions the op-by-op stencil (and the spectral
    multipliers) use, in NumPy."""

    convert_to_tensor = staticmethod(np.asarray)
    where = staticmethod(np.where)
    zeros_like = staticmethod(np.zeros_like)
    concatenate = staticmethod(np.concatenate)
    pad = staticmethod(np.pad)
    arange = staticmethod(np.arange)
    not_equal = staticmethod(np.not_equal)
    less_equal = staticmethod(np.less_equal)
    logical_and = staticmethod(np.logical_and)

    @staticmethod
    def cast(x, dtype):
        return np.asarray(x).astype(dtype)


#: The namespace `LinearStencil(..., xp=NUMPY)` computes with.
NUMPY = _NumPyOps()


def take(x, axis, start, stop):
    """x[start:stop] along `axis` (Python slice semantics)."""
    # (An index as short as it can be, from ready-made tuples: a small
    # eager stencil takes a dozen slices, and building each index costs
    # about as much as the slice itself.)
    if axis < 0:
        return x[(Ellipsis, slice(start, stop)) + _whole_axes(-axis - 1)]
    return x[_whole_axes(axis) + (slice(start, stop),)]


def _whole_axes(count):
    # A tuple of tuples, not a cache: TorchDynamo warns of caches it traces.
    return (_WHOLE_AXES[count] if count < len(_WHOLE_AXES)
            else (slice(None),) * count)


_WHOLE_AXES = tuple((slice(None),) * count for count in range(16))


def lookup(table, index):
    """`table[index]`: the rows of a NumPy array `table` at the entries of
    `index`, a tensor of integers in `[0, len(table))`."""
    table = ops.convert_to_tensor(table)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        # `ops.take` also wraps negative indices: six more operations, in
        # graphs that are traced and optimised at every first `fit` step.
        return tf.gather(table, index)
    return ops.take(table, index, axis=0)


def take_at(x, axis, start, size):
    """x[start:start + size] along `axis`, for a `start` known at run time
    only (a scalar tensor) and a static `size`."""
    # A gather, not a slice: TensorFlow compiles a slice's start into an
    # XLA kernel as a constant, one kernel for each of its values.
    return ops.take(x, start + ops.arange(size, dtype="int32"), axis=axis)


def place_at(y, axis, start, rows, count):
    """`y` with `rows`, `count` of them, written to y[start:start + count]
    along `axis`, `start` a run-time scalar: a gather and a select, which
    every backend differentiates (an in-place update has no TensorFlow
    gradient)."""
    shift = ops.arange(ops.shape(y)[axis], dtype="int32") - start
    index = ops.clip(shift, 0, count - 1)
    inside = ops.logical_and(shift >= 0, shift < count)
    for _ in range(len(y.shape) - axis - 1):
        inside = ops.expand_dims(inside, -1)
    return ops.where(inside, ops.take(rows, index, axis=axis), y)


def _rows_times(x, rows, axis, xp=ops):
    """`rows @ x` along `axis`: output i is Σ_k rows[i, k]·x[k], over the
    row's nonzero weights in column order.

    One broadcast product per column, the column's weights (one per row,
    along `axis`) times the single step x[k], so that r rows of c columns
    cost c operations, not r·c (a 255-sample Savitzky–Golay window has 127
    edge rows of 255 weights). Not a matrix product: a zero weight must not
    meet its sample, so that a NaN or Inf reaches only the outputs whose
    stencil uses it (a causal edge row must not see the future even as
    0 · inf); a column with zeros keeps them out with `where`. (A matrix
    product might also run in reduced precision, as TF32 on GPUs.)
    """
    count = rows.shape[0]
    total = None
    # (A NumPy dtype is its own cache key: its `.name` costs ≈ 2 µs a call.)
    dtype = (x.dtype if xp is NUMPY
             else keras.backend.standardize_dtype(x.dtype))
    columns = _columns(rows.tobytes(), rows.shape, len(x.shape) - axis - 1,
                       dtype)
    for column, weights, nonzero in columns:
        step = take(x, axis, column, column + 1)
        if count == 1:
            term = step * weights
        else:
            term = step * xp.convert_to_tensor(weights)
            if nonzero is not None:
                term = xp.where(nonzero, term, xp.zeros_like(term))
        total = term if total is None else total + term
    if total is None:
        zeros = xp.zeros_like(take(x, axis, 0, 1))
        total = zeros if count == 1 else xp.concatenate([zeros] * count, axis)
    return total


#: Up to this many edge weights (rows × columns) `LinearStencil(compact=True)`
#: takes `_rows_sum`, whose products hold rows × columns values for every
#: `columns` input steps: at most 22 times the input here (a 45-point
#: Savitzky–Golay window on a sequence of 45 steps; far less on longer ones),
#: where a 255-point window's would be 127 times.
_COMPACT_MAX_WEIGHTS = 1024


def _rows_sum(x, rows, axis):
    """`_rows_times` in a few operations, whatever the number of rows and
    columns: every product of the edge window at once (rows × columns of
    them, a small tensor), zero weights kept out by `where`, summed over the
    columns. For graphs, whose every new trace TensorFlow optimises op by op
    before its first run: a 41-point window's edges are 4 operations, not
    300. The sum's order is not `_rows_times`' column order, so the result
    may differ from it by rounding.
    """
    count, width = rows.shape
    trailing = len(x.shape) - axis - 1
    dtype = keras.backend.standardize_dtype(x.dtype)
    weights = rows.reshape((count, width) + (1,) * trailing)
    products = ops.expand_dims(x, axis) * ops.convert_to_tensor(
        weights.astype(dtype))
    if not (rows != 0).all():
        products = ops.where(weights != 0, products,
                             ops.zeros_like(products))
    return ops.sum(products, axis=axis + 1)


@plain_python
@functools.lru_cache(maxsize=1024)
def _columns(rows, shape, trailing, dtype):
    """`_rows_times`' terms for the float64 `rows` (their bytes and shape):
    `(column, weights, nonzero)` for each column with a nonzero weight,
    `weights` a float for a single row, else an array of `dtype` with one
    entry per row along the axis and `trailing` axes of size 1 after it,
    and `nonzero` that shape's mask, None where no weight is 0."""
    rows = np.frombuffer(rows).reshape(shape)
    broadcast = (shape[0],) + (1,) * trailing
    columns = []
    for column in range(shape[1]):
        weights = rows[:, column]
        nonzero = weights != 0.0
        if not nonzero.any():
            continue
        if shape[0] == 1:
            columns.append((column, float(weights[0]), None))
            continue
        columns.append((column, weights.reshape(broadcast).astype(dtype),
                        None if nonzero.all() else nonzero.reshape(broadcast)))
    return tuple(columns)


def _correlate(x, weights, axis):
    """Σ_k weights[k] · x[i + k] along `axis`, for every i with a full window."""
    span = len(weights) - 1
    total = None
    for k, weight in enumerate(weights):
        if weight == 0.0:
            continue
        # A Python float keeps the float64 weight and adopts x's dtype.
        term = take(x, axis, k, (k - span) or None) * float(weight)
        total = term if total is None else total + term
    return total


#: From this many nonzero weights on, `LinearStencil(compact=True)`
#: correlates through depthwise convolutions where it can
#: (`_convolved`). Measured on `(8, n, 3)` float32 in a `tf.function`, a
#: 41-point window: 1.2 against 4.4 ms a call at n = 10 000 and 0.28
#: against 0.29 ms at 1000, and a new length's first run 3× quicker
#: (benchmarks/README.md, section 10); 5 points: within noise.
_CONVOLVED_MIN_TERMS = 6
#: ... and up to this many elements after the axis: the filter holds the
#: weights once per element there, and a graph traced for inputs of any
#: length holds it even where larger inputs take another branch.
_CONVOLVED_MAX_CHANNELS = 256


def _convolved(x, weights, axis):
    """`_correlate(x, weights, axis)` as one depthwise convolution per run
    of consecutive nonzero weights, or None where that does not apply.

    For TensorFlow graphs run op by op (`LinearStencil(compact=True)`),
    where a new length's graph is optimised before its first run at a cost
    that grows with its operations: a wide window's interior is then a few
    operations, not a slice, a product and a sum per weight, and it runs
    faster too (TensorFlow's CPU depthwise kernel is vectorised over
    channels). Only for float32 (float64 convolutions are slower than the
    slices), with the sizes after `axis` known while tracing (the filter
    has one column per element there, up to `_CONVOLVED_MAX_CHANNELS`),
    on a machine without GPUs (where a float32 convolution may run in
    TF32, with a 10-bit mantissa). Zero weights stay out, as in
    `_correlate`: a non-finite sample reaches only the outputs whose
    stencil weighs it.
    """
    terms = int(np.count_nonzero(weights))
    if terms < _CONVOLVED_MIN_TERMS or keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    trailing = x.shape[axis + 1:]
    if (x.dtype != tf.float32 or tf.executing_eagerly()
            or any(dim is None for dim in trailing) or _gpus_visible()):
        return None
    channels = math.prod(trailing)
    if channels > _CONVOLVED_MAX_CHANNELS:
        return None
    span = len(weights) - 1
    shape = tf.shape(x)
    # (lead, 1, steps, channels): NHWC with one row, the steps as columns.
    rows = tf.reshape(x, tf.stack([-1, 1, shape[axis], channels]))
    total = None
    for start, stop in _nonzero_runs(weights):
        part = rows[:, :, start:(stop - 1 - span) or None]
        if stop - start == 1:
            term = part * float(weights[start])
        else:
            kernel = np.broadcast_to(
                np.asarray(weights[start:stop], np.float32)[None, :, None, None],
                (1, stop - start, channels, 1))
            term = tf.nn.depthwise_conv2d(part, tf.constant(kernel),
                                          [1, 1, 1, 1], "VALID")
        total = term if total is None else total + term
    out_shape = tf.concat([shape[:axis], [shape[axis] - span],
                           shape[axis + 1:]], 0)
    return tf.reshape(total, out_shape)


def _nonzero_runs(weights):
    """`(start, stop)` of each run of consecutive nonzero `weights`."""
    runs, start = [], None
    for k, weight in enumerate(list(weights) + [0.0]):
        if weight != 0.0 and start is None:
            start = k
        elif weight == 0.0 and start is not None:
            runs.append((start, k))
            start = None
    return runs


@functools.cache
def _gpus_visible():
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))


def pad(x, axis, before, after, xp=ops):
    """`x` with `before` and `after` zeros along `axis`."""
    widths = [(0, 0)] * len(x.shape)
    widths[axis] = (before, after)
    return xp.pad(x, widths)


def _assemble(head, body, tail, axis, rows, channels, in_place=True, xp=ops):
    """head ++ body ++ tail along `axis`; `rows`: their lengths (0 for None);
    `channels`: whether more than one element follows each step;
    `in_place`: whether an in-place update may be used (see `LinearStencil`).

    Measured with XLA on CPU (benchmarks/README.md): with channels after the
    sequence axis and ends of two or more rows, a concatenation runs at
    ≈ 1.1× a copy where padding the body and updating the ends in place takes
    ≈ 2×; on a single long series it is the reverse (the pad fuses into the
    body's pass and the ends are written in place, where concatenating costs
    ≈ 2-3× a copy); for one row at each end, padding wins in both cases.
    """
    if not in_place or (max(rows) > 1 and channels):
        return xp.concatenate([p for p in (head, body, tail) if p is not None],
                              axis=axis)
    y = pad(body, axis, *rows)
    origin = [0] * len(body.shape)
    if head is not None:
        y = ops.slice_update(y, origin, head)
    if tail is not None:
        origin[axis] = ops.shape(y)[axis] - rows[1]
        y = ops.slice_update(y, origin, tail)
    return y


def _add_at(x, axis, start, part, size, in_place=True, xp=ops):
    """`x` with `part` (`size` long) added to x[start:start + size] along `axis`."""
    if not in_place:
        stop = (start + size) or None
        pieces = [take(x, axis, 0, start) if start else None,
                  take(x, axis, start, stop) + part,
                  take(x, axis, stop, None) if stop is not None else None]
        return xp.concatenate([p for p in pieces if p is not None], axis)
    if start < 0:
        start = ops.shape(x)[axis] + start
    origin = [0] * len(x.shape)
    origin[axis] = start
    return ops.slice_update(x, origin, take(x, axis, start, start + size) + part)


def _torch():
    import torch

    return torch


def _torch_mode(x):
    """How a PyTorch tensor's stencil is written into one output tensor in
    place (`LinearStencil._forward_into`): "direct" where no gradient is
    recorded for `x`; "recorded" where one is, through an autograd
    function whose gradient is the transposed stencil (`torch_linear`);
    None where no tensor may be written in place, on another backend, or
    where a compiler traces `x` (TorchDynamo, or a `torch.func` transform,
    which sees a tensor of its own): op by op there."""
    if keras.backend.backend() != "torch":
        return None
    torch = _torch()
    if torch.compiler.is_compiling() or x.device.type == "meta":
        return None
    wrapped = getattr(getattr(torch._C, "_functorch", None),
                      "is_functorch_wrapped_tensor", None)
    if wrapped is not None and wrapped(x):
        return None
    return "recorded" if torch.is_grad_enabled() and x.requires_grad else "direct"


@functools.lru_cache(maxsize=None)
def torch_linear(forward, transpose):
    """`apply(x, *args)`: the linear map `forward(x, *args)` as a
    `torch.autograd.Function`, whose gradient is `transpose(g, *args)`,
    itself such a function, whose gradient is the map again: derivatives
    of any order, each computed by the two given functions (which may
    write in place: autograd records neither's operations)."""
    torch = _torch()

    class Forward(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, *args):
            ctx.args = args
            return forward(x, *args)

        @staticmethod
        def backward(ctx, g):
            return (Transposed.apply(g, *ctx.args),) + (None,) * len(ctx.args)

    class Transposed(torch.autograd.Function):
        @staticmethod
        def forward(ctx, g, *args):
            ctx.args = args
            return transpose(g, *args)

        @staticmethod
        def backward(ctx, g):
            return (Forward.apply(g, *ctx.args),) + (None,) * len(ctx.args)

    return Forward.apply


def _stencil_into(x, stencil):
    return stencil._forward_into(x)


def _transpose_into(g, stencil):
    return stencil._transpose_into(g)


class LinearStencil:
    """`plan` scaled by `scale`, along `axis`, as a pair of linear maps.

    The output is the interior `Σ_k w_k · x[i + o_k]` for every point with a
    full stencil, joined with the edge rows: `head @ head_window(x)` before
    and `tail @ tail_window(x)` after. An edge window is a concatenation of
    segments of `x`; see `segments`. `channels` says whether more than one
    element follows each step along `axis`; it picks the faster way to join
    the edges to the interior (`_assemble`). `in_place=False` joins them by
    concatenation only: TensorFlow runs an eager in-place update as an XLA
    kernel compiled for each new shape (≈ 25 ms, against ≈ 1 ms for the whole
    stencil op by op). `xp=NUMPY` computes on NumPy arrays (op by op).
    """

    def __init__(self, plan, scale, axis, channels=True, in_place=True,
                 xp=ops, compact=False):
        self.plan, self.axis, self.channels = plan, axis, channels
        self.in_place = in_place and xp is ops
        self.xp = xp
        self.compact = compact
        self.weights = plan.weights * scale
        self.head = plan.head * scale
        self.tail = plan.tail * scale
        self.span = int(plan.offsets[-1] - plan.offsets[0])

    def segments(self):
        """`(head, tail)`: each a list of `(start, size)` slices of `x`.

        An edge window is the concatenation of its slices, in order; a
        negative start counts from the end, Python style.
        """
        plan = self.plan
        head_cols, tail_cols = plan.head.shape[1], plan.tail.shape[1]
        if not plan.periodic:
            return ([(0, head_cols)] if head_cols else [],
                    [(-tail_cols, tail_cols)] if tail_cols else [])
        # The wrapped windows x[n-r:] ++ x[:cols-r] and x[n-cols+r:] ++ x[:r].
        radius = plan.head.shape[0]
        return ([(-radius, radius), (0, head_cols - radius)],
                [(radius - tail_cols, tail_cols - radius), (0, radius)])

    def _window(self, x, segments, length=None):
        """The concatenated `segments` of `x`; a negative start counts back
        from `length` where that is given (a padded input), else from the
        end of `x`."""
        parts = [take(x, self.axis, start, (start + size) or None)
                 if length is None or start >= 0
                 else take_at(x, self.axis, length + start, size)
                 for start, size in segments]
        return (parts[0] if len(parts) == 1
                else self.xp.concatenate(parts, self.axis))

    def _edge(self, window, rows):
        """`rows @ window` along the axis. A periodic edge is the interior
        stencil over its wrapped window: a correlation of `width` terms,
        where its band has 3r columns."""
        if self.plan.periodic:
            return _correlate(window, self.weights, self.axis)
        if self.compact and rows.size <= _COMPACT_MAX_WEIGHTS:
            return _rows_sum(window, rows, self.axis)
        return _rows_times(window, rows, self.axis, self.xp)

    def forward(self, x, length=None):
        """The plan applied to `x`; with `length`, a scalar tensor, to the
        first `length` steps of `x`, the rest being zeros that only pad it
        to a fixed size: the result then has the output length of `x`'s
        padded length, of which the first `plan.output_length(length)`
        steps are the derivative and the rest is to be cut off."""
        axis = self.axis
        if length is None and self.xp is NUMPY and not self.plan.periodic:
            return self._forward_into(x)
        if length is None and self.xp is ops:
            mode = _torch_mode(x)
            if mode == "direct":
                return self._forward_into(x)
            if mode == "recorded":
                return torch_linear(_stencil_into, _transpose_into)(x, self)
        interior = _convolved(x, self.weights, axis) if self.compact else None
        if interior is None:
            interior = _correlate(x, self.weights, axis)
        head_rows, tail_rows = self.head.shape[0], self.tail.shape[0]
        if not head_rows + tail_rows:
            return interior
        head_segments, tail_segments = self.segments()
        head = tail = None
        if head_rows:
            head = self._edge(self._window(x, head_segments, length),
                              self.head)
        if tail_rows:
            tail = self._edge(self._window(x, tail_segments, length),
                              self.tail)
        if length is None or tail is None:
            return _assemble(head, interior, tail, axis,
                             (head_rows, tail_rows), self.channels,
                             self.in_place, self.xp)
        # The tail rows belong just before `length`: written there over the
        # padded interior, whose last steps read the zero padding.
        y = _assemble(head, interior, ops.zeros_like(tail), axis,
                      (head_rows, tail_rows), self.channels, False)
        return place_at(y, axis, length - tail_rows, tail, tail_rows)

    def _forward_into(self, x):
        """`forward` into one output array, without the temporaries and
        the concatenation of op by op, which cost as much as the
        arithmetic: on a NumPy array (a small eager TensorFlow series), the
        same products and sums in the same order as op by op (so the same
        result); on a PyTorch tensor (`_torch_mode`), each further term
        added in place in one pass, `y += w·x` (on a 2-core CPU, 1.2-5.3×
        an `x * 2.0` for 2 to 21 terms, against 6-45× op by op:
        benchmarks/README.md, section 16).
        """
        axis, span = self.axis, self.span
        numpy = self.xp is NUMPY
        head_rows, tail_rows = self.head.shape[0], self.tail.shape[0]
        inner = x.shape[axis] - span
        shape = list(x.shape)
        shape[axis] = head_rows + inner + tail_rows
        y = np.empty(shape, x.dtype) if numpy else x.new_empty(shape)
        body = take(y, axis, head_rows, head_rows + inner)
        terms = [(k, float(w)) for k, w in enumerate(self.weights) if w != 0.0]
        if not terms:
            body[...] = 0
        # A Python float adopts x's dtype, as in `_correlate`.
        for i, (k, weight) in enumerate(terms):
            term = take(x, axis, k, k + inner)
            if i == 0:
                (np.multiply if numpy else _torch().mul)(term, weight, out=body)
            elif numpy:
                if i == 1:
                    scratch = np.empty_like(body)
                np.multiply(term, weight, out=scratch)
                np.add(body, scratch, out=body)
            else:
                body.add_(term, alpha=weight)
        head, tail = self.segments()
        if head_rows:
            take(y, axis, 0, head_rows)[...] = self._edge(
                self._window(x, head), self.head)
        if tail_rows:
            take(y, axis, head_rows + inner, None)[...] = self._edge(
                self._window(x, tail), self.tail)
        return y

    def _transpose_into(self, g):
        """`transpose` of a PyTorch tensor, into one tensor of the input's
        length: zeros, to which each weight's share of the interior, then
        each edge row's, is added in place."""
        axis, span = self.axis, self.span
        head_rows, tail_rows = self.head.shape[0], self.tail.shape[0]
        inner = g.shape[axis] - head_rows - tail_rows
        shape = list(g.shape)
        shape[axis] = inner + span
        x = g.new_zeros(shape)
        interior = take(g, axis, head_rows, head_rows + inner)
        for k, weight in enumerate(self.weights):
            if weight != 0.0:
                take(x, axis, k, k + inner).add_(interior, alpha=float(weight))
        head_segments, tail_segments = self.segments()
        for rows, first, segments in (
                (self.head, 0, head_segments),
                (self.tail, head_rows + inner, tail_segments)):
            if not rows.shape[0]:
                continue
            upstream = take(g, axis, first, first + rows.shape[0])
            window = _rows_times(upstream, rows.T, axis)
            offset = 0
            for start, size in segments:
                start %= inner + span  # from the end, where negative
                take(x, axis, start, start + size).add_(
                    take(window, axis, offset, offset + size))
                offset += size
        return x

    def transpose(self, g):
        """The adjoint of `forward`: its gradient, for an upstream `g`.

        x[j] met weight w_k in output i = j - k, so the interior's share is a
        correlation of the upstream interior with the reversed weights, over
        that interior padded by `span` zeros each side. Where the length is
        known, the pad is kept to the two ends (a bounds check on every read
        of the long middle costs ≈ 2× a copy); the edge rows' shares are added
        to those ends.
        """
        axis, span = self.axis, self.span
        head_rows, tail_rows = self.head.shape[0], self.tail.shape[0]
        interior = take(g, axis, head_rows, -tail_rows or None)
        reverse = self.weights[::-1]
        head_segments, tail_segments = self.segments()
        # The ends: long enough for the zero padding and for every edge window.
        left = max([span] + [start + size for start, size in
                             head_segments + tail_segments if start >= 0])
        right = max([span] + [-start for start, _ in
                              head_segments + tail_segments if start < 0])
        length = interior.shape[axis]
        if length is None or length + span - left - right < 1:
            ends = [_correlate(pad(interior, axis, span, span, self.xp),
                               reverse, axis)]
        else:
            ends = [
                _correlate(pad(take(interior, axis, 0, left), axis, span, 0,
                               self.xp), reverse, axis),
                _correlate(take(interior, axis, left - span,
                                 length - (right - span)), reverse, axis),
                _correlate(pad(take(interior, axis, length - right, None),
                                axis, 0, span, self.xp), reverse, axis),
            ]
        for rows, count, first, segments in (
            (self.head, head_rows, 0, head_segments),
            (self.tail, tail_rows, -tail_rows, tail_segments),
        ):
            if not count:
                continue
            upstream = take(g, axis, first, (first + count) or None)
            window = (_rows_sum(upstream, rows.T, axis)
                      if self.compact and rows.size <= _COMPACT_MAX_WEIGHTS
                      else _rows_times(upstream, rows.T, axis, self.xp))
            offset = 0
            for start, size in segments:
                # Into the left end, or the right end (the last part).
                end = 0 if start >= 0 else -1
                ends[end] = _add_at(ends[end], axis, start,
                                    take(window, axis, offset, offset + size),
                                    size, self.in_place, self.xp)
                offset += size
        if len(ends) == 1:
            return ends[0]
        return _assemble(ends[0], ends[1], ends[2], axis, (left, right),
                         self.channels, self.in_place, self.xp)


def apply_windows(x, layout, axis, head, interior, tail, scales=None,
                  order=0):
    """A position-dependent stencil along `axis`: `y[i] = Σ_k W[i, k] · x[start(i) + k]`.

    `layout` is a `fdlayers.stencils.Windows`. Each weight is a number or a
    tensor that broadcasts against a slice of `x` along `axis`:

    - `interior`: `width` weights, each against the interior slice
      `x[k : k + n - width + 1]` (one weight per interior point: shifted
      slices, like the uniform stencil, which XLA fuses into one pass);
    - `head`: groups of leading rows, in order; a group is the list of
      weights of the window `x[0:size]`, weight `k` against the single step
      `x[k]`, with one entry per row of the group along `axis` (a number for
      a group of one row; an empty group is one row of zeros);
    - `tail`: groups of trailing rows against the window `x[n-width:]`.

    `scales`, if given, is `(head, interior, tail)` alike: one tensor per
    group (None for an empty group) that multiplies the group's sums
    `order` times (see `stencils.fornberg_scaled`).

    Only slices, products, sums and one concatenation: every backend
    differentiates it. On PyTorch the interior is written into the output
    in place (`_apply_windows_into`); where a gradient is recorded for `x`
    and not for the weights, through an autograd function whose gradient
    is the transpose, written in place too (`_windows_transpose`).
    """
    width = layout.width
    span = width - 1
    if scales is None:
        scales = ([None] * len(head), None, [None] * len(tail))
    if _windows_recordable(x, axis, head, interior, tail, scales, span):
        return torch_linear(_windows_forward, _windows_transpose)(
            x, _Windows(tuple(x.shape), layout, axis, head, interior, tail,
                        scales, order))

    heads = [_head_part(x, axis, g, s, order) for g, s in zip(head, scales[0])]
    tails = [_tail_part(x, axis, width, g, s, order)
             for g, s in zip(tail, scales[2])]
    if _interior_writable(x, axis, interior, scales[1], span):
        return _apply_windows_into(x, axis, span, heads, interior, scales[1],
                                   order, tails)
    parts = heads + [_scaled(sum_terms([take(x, axis, k, (k - span) or None) * w
                                        for k, w in enumerate(interior)]),
                             scales[1], order)] + tails
    return parts[0] if len(parts) == 1 else ops.concatenate(parts, axis)


def _scaled(part, scale, order):
    for _ in range(order if scale is not None else 0):
        part = part * scale
    return part


def _head_part(x, axis, group, scale, order):
    """A head group's rows of `apply_windows`, from the window x[0:size]."""
    terms = [take(x, axis, k, k + 1) * w for k, w in enumerate(group)]
    if isinstance(group, ReadingGroup):
        terms = [_where_read(term, reads, axis)
                 for term, reads in zip(terms, group.reads) if reads.any()]
    return (_scaled(sum_terms(terms), scale, order) if terms
            else ops.zeros_like(take(x, axis, 0, 1)))


def _tail_part(x, axis, width, group, scale, order):
    """A tail group's rows of `apply_windows`, from the window x[n-width:]."""
    span = width - 1
    return _scaled(sum_terms([take(x, axis, k - width, (k - span) or None) * w
                              for k, w in enumerate(group)]), scale, order)


class _Windows:
    """`apply_windows`' arguments for `x` of `shape`: what `torch_linear`
    passes to its map and its transpose."""

    def __init__(self, shape, layout, axis, head, interior, tail, scales,
                 order):
        self.shape, self.layout, self.axis = shape, layout, axis
        self.head, self.interior, self.tail = head, interior, tail
        self.scales, self.order = scales, order


def _windows_tensors(head, interior, tail, scales):
    torch = _torch()
    values = [w for group in list(head) + [interior] + list(tail)
              for w in group]
    values += list(scales[0]) + [scales[1]] + list(scales[2])
    return [w for w in values if isinstance(w, torch.Tensor)]


def _windows_recordable(x, axis, head, interior, tail, scales, span):
    """Whether `apply_windows` runs on PyTorch as one autograd function
    whose gradient is its transpose, both written in place
    (`_windows_forward`, `_windows_transpose`): where a gradient is
    recorded for `x` and for none of the weights (a static grid's, or
    time stamps' that are not differentiated), and the interior weights
    fit the interior slice."""
    if _torch_mode(x) != "recorded":
        return False
    if any(w.requires_grad
           for w in _windows_tensors(head, interior, tail, scales)):
        return False
    return _fit_interior(x, axis, span, list(interior) + [scales[1]])


def _fit_interior(x, axis, span, weights):
    """Whether the tensors among `weights`, multiplied with x's interior
    slice (`span` steps shorter along `axis`), are no larger than it."""
    torch = _torch()
    shape = list(x.shape)
    shape[axis] -= span
    return all(torch.broadcast_shapes(shape, w.shape) == tuple(shape)
               for w in weights if isinstance(w, torch.Tensor))


def _windows_forward(x, windows):
    # Autograd records nothing here: apply_windows writes in place.
    w = windows
    return apply_windows(x, w.layout, w.axis, w.head, w.interior, w.tail,
                         w.scales, w.order)


def _windows_transpose(g, windows):
    """The transpose of `apply_windows` (see `_Windows`) applied to `g`:
    each interior weight's share of the output's gradient added into the
    input's in place, and the edge rows' shares, which involve the first
    and last `width` samples only, by autograd on a window of that size."""
    torch = _torch()
    w = windows
    axis, width = w.axis, w.layout.width
    span = width - 1
    steps = w.shape[axis]
    inner = steps - span
    gx = g.new_zeros(w.shape)
    edge_shape = list(w.shape)
    edge_shape[axis] = width
    with torch.enable_grad():
        # The edge rows alone, on windows of zeros (they are linear).
        first = g.new_zeros(edge_shape).requires_grad_()
        last = g.new_zeros(edge_shape).requires_grad_()
        heads = [_head_part(first, axis, group, scale, w.order)
                 for group, scale in zip(w.head, w.scales[0])]
        tails = [_tail_part(last, axis, width, group, scale, w.order)
                 for group, scale in zip(w.tail, w.scales[2])]
        before = sum(part.shape[axis] for part in heads)
        start, edges = 0, []
        for part in heads + [None] + tails:
            size = inner if part is None else part.shape[axis]
            if part is not None and part.requires_grad:
                edges.append((part, take(g, axis, start, start + size)))
            start += size
        if edges:
            shares = torch.autograd.grad(
                [part for part, _ in edges], [first, last],
                [share for _, share in edges], allow_unused=True)
            for share, stop in zip(shares, (width, steps)):
                if share is not None:
                    take(gx, axis, stop - width, stop).add_(share)
    body = take(g, axis, before, before + inner)
    if w.scales[1] is not None and w.order:
        body = body.clone()
        for _ in range(w.order):
            body.mul_(w.scales[1])
    for k, weight in enumerate(w.interior):
        target = take(gx, axis, k, k + inner)
        if isinstance(weight, torch.Tensor):
            target.addcmul_(body, weight)
        else:
            target.add_(body, alpha=float(weight))
    return gx


def _interior_writable(x, axis, interior, scale, span):
    """Whether `apply_windows` may write its interior into one PyTorch
    tensor in place: no gradient recorded for `x` or any weight (see
    `_torch_mode`), and the weights' products with the interior slice no
    larger than it."""
    if _torch_mode(x) != "direct":
        return False
    torch = _torch()
    tensors = [w for w in list(interior) + [scale] if isinstance(w, torch.Tensor)]
    if torch.is_grad_enabled() and any(w.requires_grad for w in tensors):
        return False
    return _fit_interior(x, axis, span, tensors)


def _apply_windows_into(x, axis, span, heads, interior, scale, order, tails):
    """`apply_windows` with its interior, the bulk of the output, written
    into the output tensor term by term in place (`y += w·x`, one pass
    each), and its edge rows (`heads`, `tails`: computed, a few rows each)
    copied into its ends."""
    torch = _torch()
    inner = x.shape[axis] - span
    before = sum(part.shape[axis] for part in heads)
    shape = list(x.shape)
    shape[axis] = before + inner + sum(part.shape[axis] for part in tails)
    y = x.new_empty(shape)
    body = take(y, axis, before, before + inner)
    for k, weight in enumerate(interior):
        term = take(x, axis, k, (k - span) or None)
        if k == 0:
            torch.mul(term, weight, out=body)
        elif isinstance(weight, torch.Tensor):
            body.addcmul_(term, weight)
        else:
            body.add_(term, alpha=float(weight))
    for _ in range(order if scale is not None else 0):
        body.mul_(scale)
    start = 0
    for part in heads + [None] + tails:
        size = inner if part is None else part.shape[axis]
        if part is not None:
            take(y, axis, start, start + size)[...] = part
        start += size
    return y


def _where_read(term, reads, axis):
    """`term` where `reads` (one boolean per row along `axis`), else 0."""
    if reads.all():
        return term
    shape = [1] * len(term.shape)
    shape[axis] = len(reads)
    return ops.where(reads.reshape(shape), term, ops.zeros_like(term))


def sum_terms(terms):
    """terms[0] + terms[1] + ..., left to right."""
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


#: Windows up to this many nodes unroll Fornberg's recurrence in the graph
#: (about 2.5·m²·(order + 1) operations: a few hundred at m = 6, fused by
#: XLA and cheapest op by op); wider ones run it as a loop
#: (`fornberg_scaled`), a graph of a few dozen operations whatever the
#: width, where the unrolled one would take minutes and gigabytes to build
#: and compile (m = 63: ≈ 20 000 operations at order 1, ≈ 300 000 at 32).
UNROLLED_MAX_WIDTH = 12


def fornberg_scaled(order, offsets):
    """`stencils.fornberg_scaled` for offsets that are tensors: unrolled up
    to `UNROLLED_MAX_WIDTH` nodes, else as a loop over the nodes
    (`fornberg_loop`)."""
    m = len(offsets)
    if m <= UNROLLED_MAX_WIDTH:
        return stencils.fornberg_scaled(order, offsets)
    inverse = 1.0 / (offsets[-1] - offsets[0])
    weights = fornberg_loop(order, ops.stack([o * inverse for o in offsets],
                                              axis=-1))
    return [w[..., 0] for w in ops.split(weights, m, axis=-1)], inverse


def fornberg_loop(order, nodes, sizes=None):
    """Fornberg's weights of the `order`-th derivative at 0 for the nodes
    along the last axis of `nodes` (`(..., m)`, increasing), as a loop that
    adds one node per pass: a graph of a few dozen operations whatever m.

    Every node's weights so far are one tensor `(..., m, order + 1)`; each
    pass applies the scalar recurrence's differences and quotients
    (`stencils.fornberg`) entry by entry, except that the new node's
    `Π (x_i - x_j)` is one product over the nodes before it (its rounding
    may differ from the scalar sequence's by an ulp or so). `sizes`,
    integers that broadcast against `nodes[..., 0]`, stops each window at
    its own number of nodes (later nodes get weight 0).
    """
    m = nodes.shape[-1]
    dtype = keras.backend.standardize_dtype(nodes.dtype)
    k = ops.convert_to_tensor(np.arange(order + 1, dtype=dtype))

    def shifted(c):  # c[..., k - 1], 0 for k = 0
        return ops.concatenate(
            [ops.zeros_like(take(c, -1, 0, 1)), take(c, -1, 0, order)], -1)

    def add_node(i, state):
        c, c1 = state
        i = ops.cast(i, "int32")
        index = ops.arange(m, dtype="int32")

        def pick(values, j):  # values[..., j], exactly (a sum of zeros)
            return ops.sum(ops.where(index == j, values,
                                     ops.zeros_like(values)), -1)

        here, previous = pick(nodes, i), pick(nodes, i - 1)  # c4, c5
        before = index < i
        c3 = ops.expand_dims(here, -1) - nodes
        # (dtype: on PyTorch, keras.ops.prod returns float32 for float64.)
        c2 = ops.prod(ops.where(before, c3, ops.ones_like(c3)), -1,
                      dtype=dtype)
        # c[i - 1], before this pass updates it.
        last = ops.sum(ops.where(ops.expand_dims(index == i - 1, -1), c,
                                 ops.zeros_like(c)), -2)
        c5, scale = ops.expand_dims(previous, -1), ops.expand_dims(c1, -1)
        # Node i: c1·(k·c[i-1][k-1] - c5·c[i-1][k]) / c2, and for k = 0
        # -c1·c5·c[i-1][0] / c2, as the scalar recurrence writes them.
        row = ops.where(k == 0, -scale * c5 * last,
                        scale * (k * shifted(last) - c5 * last))
        row = row / ops.expand_dims(c2, -1)
        # Nodes j < i: (c4·c[j][k] - k·c[j][k-1]) / c3[j].
        updated = ((ops.expand_dims(ops.expand_dims(here, -1), -1) * c
                    - k * shifted(c)) / ops.expand_dims(c3, -1))
        updated = ops.where(ops.expand_dims(before, -1), updated, c)
        updated = ops.where(ops.expand_dims(index == i, -1),
                            ops.expand_dims(row, -2), updated)
        if sizes is None:
            return updated, c2
        active = ops.convert_to_tensor(sizes, "int32") > i
        return (ops.where(ops.expand_dims(ops.expand_dims(active, -1), -1),
                          updated, c),
                ops.where(active, c2, c1))

    zero = ops.zeros_like(nodes)
    first = ops.where(np.arange(m) == 0, ops.ones_like(zero), zero)
    c = ops.stack([first] + [zero] * order, -1)
    # (A bounded loop: XLA cannot differentiate a program holding one
    # without a maximum number of iterations, as Keras models compile on GPUs.)
    c, _ = bounded_loop(m - 1, lambda j, state: add_node(j + 1, state),
                        (c, ops.ones_like(zero[..., 0])))
    return c[..., order]


class ReadingGroup(list):
    """A head group of `apply_windows` whose rows read only part of the
    window: `reads[k]` (a boolean array, one entry per row) says which rows
    read x[k]; the others get no term from it, not even 0 · x[k], so that
    a NaN or Inf beyond a causal row's window does not reach it."""

    def __init__(self, weights, reads):
        super().__init__(weights)
        self.reads = reads


def _causal_heads(t, layout, order):
    """`time_weights`' causal head rows as one group (`ReadingGroup`) from
    one `fornberg_loop` over all of them: row r's window is x[0:size_r] at
    sample point_r; its nodes are padded to the widest window with its last
    one, which the loop never reaches. Returns `(groups, scales)`."""
    axis = len(t.shape) - 1
    m = layout.width
    first = take(t, axis, 0, m)  # (..., m): every head window's samples
    points = np.array([point for point, _ in layout.head])
    sizes = np.array([size for _, size in layout.head])
    # nodes[..., r, j] = t[min(j, size_r - 1)] - t[point_r]
    columns = np.clip(np.arange(m)[None, :], 0, np.maximum(sizes[:, None] - 1, 0))
    gathered = ops.take(first, ops.convert_to_tensor(columns.reshape(-1)),
                        axis=axis)
    gathered = ops.reshape(gathered,
                           tuple(ops.shape(first)[:-1]) + (len(points), m))
    here = ops.expand_dims(ops.take(first, ops.convert_to_tensor(points),
                                    axis=axis), -1)
    offsets = gathered - here
    # Each row's last node is its last column too (the padding repeats it);
    # a row of fewer than two nodes has no derivative, and weights 0.
    extent = offsets[..., m - 1] - offsets[..., 0]
    wide = ops.convert_to_tensor(sizes >= 2)
    inverse = ops.where(wide, 1.0 / ops.where(wide, extent,
                                              ops.ones_like(extent)),
                        ops.zeros_like(extent))
    weights = fornberg_loop(order, offsets * ops.expand_dims(inverse, -1),
                             sizes)
    reads = np.arange(m)[:, None] < sizes[None, :]  # (m, rows)
    group = ReadingGroup([weights[..., j] for j in range(m)], reads)
    return [group], [inverse]


def time_weights(t, layout, order, fit=None):
    """Per-sample weights of `layout`'s windows from coordinates `t`, in the graph.

    `t` has the sequence along its last axis, `(steps,)` or `(batch, steps)`.
    Returns `(weights, scales)` for `apply_windows`: `weights` is
    `(head, interior, tail)`, each weight shaped like `t` with the steps
    axis cut to the rows it serves, and `scales` alike, one per group.
    Offsets are differences `t[j] - t[i]` taken first, in `t`'s dtype, so
    that only the spacing, not the size of the time stamps, limits the
    precision; Fornberg's recurrence is then unrolled over the (static)
    window, vectorised over batch and steps, on the offsets in units of
    the window's extent (`stencils.fornberg_scaled`). With padding 'same'
    (every window full) the interior and the edge rows go through one
    recurrence together, which keeps the graph small. `fit(order, offsets)`, if given,
    replaces `fornberg_scaled` (Savitzky–Golay: `savgol_scaled`).
    """
    fit = fornberg_scaled if fit is None else fit
    axis = len(t.shape) - 1
    m, left = layout.width, layout.left
    span = m - 1
    centre = take(t, axis, left, (left - span) or None)
    interior = [take(t, axis, k, (k - span) or None) - centre for k in range(m)]
    head, tail, head_scales, tail_scales = [], [], [], []
    if layout.tail:  # 'same': every edge row has the full window
        # The interior and the edge rows go through one recurrence, after
        # one another along the steps: one graph of it, not two.
        rows, tails = len(layout.head), len(layout.tail)
        edges = rows + tails
        offsets = []
        for k in range(m):
            parts = [interior[k]]
            if rows:
                parts.append(take(t, axis, k, k + 1) - take(t, axis, 0, rows))
            parts.append(take(t, axis, k - m, (k - span) or None)
                         - take(t, axis, -tails, None))
            offsets.append(ops.concatenate(parts, axis))
        weights, scale = fit(order, offsets)
        interior = [take(w, axis, 0, -edges) for w in weights]
        interior_scale = take(scale, axis, 0, -edges)
        if rows:
            head.append([take(w, axis, -edges, -tails) for w in weights])
            head_scales.append(take(scale, axis, -edges, -tails))
        tail.append([take(w, axis, -tails, None) for w in weights])
        tail_scales.append(take(scale, axis, -tails, None))
        return ((head, interior, tail),
                (head_scales, interior_scale, tail_scales))
    interior, interior_scale = fit(order, interior)
    if m > UNROLLED_MAX_WIDTH and layout.head:  # 'causal': rows at once
        head, head_scales = _causal_heads(t, layout, order)
    else:
        for point, size in layout.head:  # 'causal': windows of growing size
            here = take(t, axis, point, point + 1)
            weights, scale = fornberg_scaled(
                order, [take(t, axis, k, k + 1) - here for k in range(size)]
            ) if size else ([], None)
            head.append(weights)
            head_scales.append(scale)
    return ((head, interior, tail),
            (head_scales, interior_scale, tail_scales))


def savgol_scaled(order, offsets, polyorder):
    """Least-squares (Savitzky–Golay) weights for offsets that are tensors,
    as `fornberg_scaled` gives Fornberg's: `(weights, inverse)`, the
    weights of the `order`-th derivative at 0 of the degree-`polyorder`
    polynomial fitted to the nodes `offsets` (a list of m tensors, in
    increasing order) in units of half the window's extent, and
    `inverse = 2 / extent`, which the sums are multiplied by `order` times.
    """
    m = len(offsets)
    if m == 1:  # window 1: the sample itself (order and polyorder are 0)
        return [ops.ones_like(offsets[0])], ops.ones_like(offsets[0])
    inverse = 2.0 / (offsets[-1] - offsets[0])
    nodes = ops.stack(offsets, axis=-1) * ops.expand_dims(inverse, -1)
    weights = savgol_loop(order, polyorder, nodes)
    return [w[..., 0] for w in ops.split(weights, m, axis=-1)], inverse


#: Up to this degree `savgol_loop` unrolls its passes (a graph of ≈ 25
#: operations each); a loop of higher degrees costs a graph of one pass.
UNROLLED_MAX_POLYORDER = 4


def savgol_loop(order, polyorder, nodes):
    """`fdlayers.savgol.local_weights` in `keras.ops`, as a loop that adds
    one orthonormal polynomial per pass: a graph of a few dozen operations
    whatever the window and degree.

    `nodes` is `(..., m)`, ideally within [-2, 2]; returns the weights
    `(..., m)` of the `order`-th derivative at 0 of the least-squares
    polynomial of degree `polyorder`. The basis built so far is one tensor
    `(..., m, polyorder + 1)`, its columns not yet reached zero, so that one
    product reorthogonalises against every polynomial before.
    """
    m = nodes.shape[-1]
    dtype = keras.backend.standardize_dtype(nodes.dtype)
    first = ops.ones_like(nodes) * (1.0 / math.sqrt(m))  # weakly typed
    rows = ops.zeros_like(nodes[..., 0])
    column = np.arange(polyorder + 1, dtype="int32")
    basis = ops.where(column == 0, ops.expand_dims(first, -1),
                      ops.zeros_like(ops.expand_dims(first, -1)))
    # derivative[..., d]: the d-th derivative at 0 of the latest polynomial.
    k = ops.convert_to_tensor(np.arange(order + 1, dtype=dtype))
    start = np.zeros(order + 1, dtype=dtype)
    start[0] = 1.0 / np.sqrt(m)
    derivative = ops.expand_dims(rows, -1) + ops.convert_to_tensor(start)
    weights = first * ops.expand_dims(derivative[..., order], -1)
    if polyorder == 0:
        return weights

    def shifted(d):  # d[..., k - 1], 0 for k = 0
        return ops.concatenate(
            [ops.zeros_like(take(d, -1, 0, 1)), take(d, -1, 0, order)], -1)

    def add_polynomial(i, state):
        q_prev, q, previous, derivative, beta, basis, weights = state
        v = nodes * q - ops.expand_dims(beta, -1) * q_prev
        alpha = ops.sum(v * q, axis=-1)
        v = v - ops.expand_dims(alpha, -1) * q
        # Against every polynomial so far (the columns not yet reached are
        # 0): two batched matrix-vector products. (einsum: on PyTorch,
        # keras.ops.matmul returns float32 for float64.)
        v = v - ops.einsum("...jk,...k->...j", basis,
                           ops.einsum("...jk,...j->...k", basis, v))
        norm = ops.sqrt(ops.sum(v * v, axis=-1))
        following = (k * shifted(derivative)
                     - ops.expand_dims(alpha, -1) * derivative
                     - ops.expand_dims(beta, -1) * previous)
        following = following / ops.expand_dims(norm, -1)
        q_next = v / ops.expand_dims(norm, -1)
        here = ops.convert_to_tensor(column) == ops.cast(i, "int32") + 1
        basis = ops.where(here, ops.expand_dims(q_next, -1), basis)
        weights = weights + q_next * ops.expand_dims(following[..., order], -1)
        return q, q_next, derivative, following, norm, basis, weights

    state = (ops.zeros_like(first), first, ops.zeros_like(derivative),
             derivative, rows, basis, weights)
    if polyorder <= UNROLLED_MAX_POLYORDER:
        for i in range(polyorder):
            state = add_polynomial(i, state)
        return state[-1]
    return bounded_loop(polyorder, add_polynomial, state)[-1]


def bounded_loop(count, body, state):
    """`keras.ops.fori_loop(0, count, body, state)` for a static `count`;
    on TensorFlow with `count` as the loop's maximum number of iterations,
    without which XLA cannot differentiate a program that holds the loop
    (its intermediates need a static bound), even where the gradient does
    not flow through it."""
    if keras.backend.backend() != "tensorflow":
        return ops.fori_loop(0, count, body, state)
    import tensorflow as tf

    return tf.while_loop(lambda i, _: i < count,
                         lambda i, state: (i + 1, body(i, state)),
                         (tf.constant(0), state), maximum_iterations=count)[1]


#: Savitzky–Golay windows wider than this are applied as one gathered
#: tensor of every point's window (`apply_rows`), not one slice per
#: column (`apply_windows`): a graph of a few operations, not several per
#: column (a 255-sample window's took ≈ 8 s to trace and 8 s more to
#: differentiate), at the price of a copy of the input `window` times over.
#: Above `dispatch.FUSED_WEIGHTS_MAX_WIDTH`, so never fused by XLA anyway.
GATHERED_MIN_WIDTH = 25


def window_starts(layout, steps):
    """`(starts, points)`: int32 vectors of each output's first sample and
    the sample it is evaluated at, for the 'same' or 'valid' `layout` (a
    `stencils.Windows` whose head and tail use the edge windows) and
    `steps` samples (a number or a run-time scalar)."""
    m, left = layout.width, layout.left
    if layout.head or layout.tail:
        points = ops.arange(steps, dtype="int32")
        return ops.clip(points - left, 0, steps - m), points
    starts = ops.arange(steps - m + 1, dtype="int32")
    return starts, starts + left


def _gathered(x, starts, width, axis):
    """x[starts[i] + j] along `axis`, which becomes the two axes (i, j)."""
    index = (ops.expand_dims(ops.convert_to_tensor(starts, "int32"), -1)
             + ops.arange(width, dtype="int32"))
    return ops.take(x, index, axis=axis)


def apply_rows(x, weights, starts, axis, scale=None, order=0):
    """`y[i] = Σ_j weights[..., i, j] · x[starts[i] + j]` along `axis`.

    `weights` is `(rows, width)` or `(batch, rows, width)` (then `axis` is
    1); `scale`, if given, `(rows,)` or `(batch, rows)`, multiplies each
    sum `order` times, as in `apply_windows`. A gather and a sum: every
    backend differentiates it.
    """
    rank = len(x.shape)
    windows = _gathered(x, starts, weights.shape[-1], axis)
    for _ in range(rank - axis - 1):
        weights = ops.expand_dims(weights, -1)
    y = ops.sum(windows * weights, axis=axis + 1)
    if scale is not None and order:
        for _ in range(rank - axis - 1):
            scale = ops.expand_dims(scale, -1)
        for _ in range(order):
            y = y * scale
    return y


def savgol_rows(t, layout, order, polyorder):
    """Per-sample Savitzky–Golay weights of every output at once, from
    coordinates `t` (`(steps,)` or `(batch, steps)`), for `apply_rows`:
    `(weights, starts, inverse)`, `weights` `(..., rows, width)` in units of
    half each window's extent, `inverse = 2 / extent` `(..., rows)`."""
    axis = len(t.shape) - 1
    m = layout.width
    starts, points = window_starts(layout, ops.shape(t)[axis])
    nodes = (_gathered(t, starts, m, axis)
             - ops.expand_dims(ops.take(t, points, axis=axis), -1))
    if m == 1:
        return ops.ones_like(nodes), starts, None
    inverse = 2.0 / (nodes[..., m - 1] - nodes[..., 0])
    weights = savgol_loop(order, polyorder,
                          nodes * ops.expand_dims(inverse, -1))
    return weights, starts, inverse
