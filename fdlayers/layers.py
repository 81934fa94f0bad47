"""Keras layers of fdlayers: argument checks, configuration and shapes.

The numerics live in `fdlayers.ops`; `call` is one line into it.
"""

import functools
import numbers

import keras
import numpy as np

from fdlayers import ops as fd_ops
from fdlayers import savgol


# The `call`s the direct eager path may take (`DirectCallLayer._direct`):
# a subclass's own `call` might take `training` or a mask from Keras.
_DIRECT_CALLS = set()


def direct_call(call):
    """Mark a layer class's `call` as one that `DirectCallLayer` may skip
    Keras' `__call__` for: it reads no `training` and no call context."""
    _DIRECT_CALLS.add(call)
    return call


class DirectCallLayer(keras.layers.Layer):
    """A Keras layer whose eager TensorFlow calls go straight to its op
    where Keras' `__call__` could change nothing (`_direct`): what
    fdlayers' layers share. A subclass implements `_direct_op(x)`, the
    result of `call(x)` for an input already of its input dtype."""

    def __call__(self, *args, **kwargs):
        # An eager call on one small series spends more time in Keras'
        # generic `__call__` (argument conversion, call context, name
        # scopes, mask metadata: ≈ 70 µs) than in the derivative itself
        # (≈ 40 µs for 4096 steps); a field's Laplacian on (1, 64, 64, 1),
        # 130 µs, took 210 through it. Where none of that can change the
        # result, the call goes straight to the op: see `_direct`.
        if not kwargs and len(args) == 1 and self._direct(args[0]):
            return self._direct_op(args[0])
        outputs = super().__call__(*args, **kwargs)
        if self._direct_dtypes is None and _eager_tensorflow():
            # After one whole call: built, and Keras' own first-call
            # bookkeeping done.
            self._direct_dtypes = (_tensorflow().as_dtype(self.input_dtype),
                                   np.dtype(self.input_dtype))
        return outputs

    # Set on the instance after its first whole call (eagerly, on
    # TensorFlow): the dtypes of the inputs `_direct` may take.
    _direct_dtypes = None

    def _direct(self, x):
        """Whether `_direct_op(x)` gives exactly what Keras' `__call__`
        would: an eager TensorFlow tensor or NumPy array already of the
        input dtype (nothing to convert or cast), without a Keras mask, on a
        layer already called once, whose `call` is marked `direct_call` (no
        `training` to propagate), with no activity regulariser or
        distribution."""
        dtypes = self._direct_dtypes
        if dtypes is None:
            return False
        # (TensorFlow's dtypes are interned: `is` compares them.)
        tensor_dtype, array_dtype = dtypes
        if isinstance(x, np.ndarray):
            if x.dtype != array_dtype:
                return False
        elif getattr(x, "dtype", None) is not tensor_dtype or (
                not isinstance(x, _tensorflow().Tensor)):
            return False
        if (not _tensorflow().executing_eagerly()
                or getattr(x, "_keras_mask", None) is not None):
            return False
        return (type(self).call in _DIRECT_CALLS
                and self.activity_regularizer is None
                and keras.distribution.distribution() is None)

    def _direct_op(self, x):
        raise NotImplementedError


class _SequenceLayer(DirectCallLayer):
    """What fdlayers' layers share: the axis, dtypes, shapes and masks.

    A subclass sets its arguments, then implements `_check_input_shape`
    (the output shape, or an error), `compute_mask` and `call`.
    """

    def __init__(self, axis=1, **kwargs):
        allowed = ("`dtype` must be a float dtype or a mixed-precision policy "
                   "('float32', 'float64', 'mixed_float16', ...). Received: "
                   f"dtype={kwargs.get('dtype')!r}")
        if kwargs.get("dtype") is not None:
            try:  # Keras' own message would not say which argument it was
                keras.dtype_policies.get(kwargs["dtype"])
            except (TypeError, ValueError) as error:
                raise ValueError(allowed) from error
        super().__init__(**kwargs)
        # An integer policy would round the input to integers before the
        # derivative is taken, and a complex one is not a real derivative.
        dtype = keras.backend.standardize_dtype(self.variable_dtype)
        if not dtype.startswith(("float", "bfloat")):
            raise ValueError(f"{allowed} (variable dtype {dtype})")
        fd_ops.check_axis(axis)
        if axis == 0:
            raise ValueError(
                "`axis` must not be the batch axis 0. Received: axis=0"
            )
        self.axis = int(axis)
        self.supports_masking = True

    def _direct_op(self, x):
        return self._op(x, None, None)

    def _split(self, inputs):
        """`(x, t)` from `x` or `[x, t]` (shapes or tensors); `t` None if absent."""
        if isinstance(inputs, (list, tuple)) and len(inputs) and (
                isinstance(inputs[0], (list, tuple)) or
                not isinstance(inputs[0], (numbers.Integral, type(None)))):
            if len(inputs) != 2:
                raise ValueError(
                    "The layer takes a tensor `x` or a list `[x, t]` of the "
                    "input and its per-sample coordinates. Received: a list "
                    f"of {len(inputs)} inputs"
                )
            if isinstance(self.spacing, np.ndarray):
                raise ValueError(
                    "This layer has static coordinates (`spacing` is an "
                    "array); per-sample coordinates `[x, t]` need a layer "
                    "built with a number for `spacing` (which is then unused)."
                )
            return inputs[0], inputs[1]
        return inputs, None

    def _input_mask(self, mask):
        """The mask of `x` (of `[x, t]`, where each may have one)."""
        if not isinstance(mask, (list, tuple)):
            return mask
        masks = [m for m in mask if m is not None]
        if not masks:
            return None
        return (masks[0] if len(masks) == 1
                else keras.ops.logical_and(masks[0], masks[1]))

    def _check_rank_and_axis(self, input_shape):
        rank = len(input_shape)
        if rank >= 2 and fd_ops.check_axis(self.axis, rank) == 0:
            raise ValueError(
                f"`axis` must not be the batch axis: axis={self.axis} is the "
                f"batch axis for an input of rank {rank}"
            )

    @property
    def input_dtype(self):
        """The dtype float inputs are cast to, which is also the output dtype.

        The policy's variable dtype: its compute dtype, except under a mixed
        policy (`"mixed_float16"`, `"mixed_bfloat16"`), where it is float32.
        A derivative amplifies the rounding of its input by
        `spacing**-order · Σ|w|` (≈ 4·10⁴ for `order=2, spacing=0.01`), so a
        half-precision input or output would lose every significant digit
        (or overflow float16); the layer has no variables that could use the
        half-precision speed anyway.
        """
        return self.variable_dtype

    def _as_input_dtype(self, x):
        x = fd_ops.real_tensor(x, "inputs")
        # No cast where there is nothing to cast: an eager call on a small
        # series is a few tens of µs, of which a cast would be one op.
        if keras.backend.standardize_dtype(x.dtype) == self.input_dtype:
            return x
        return keras.ops.cast(x, self.input_dtype)

    def build(self, input_shape):
        self._check_input_shape(input_shape)
        self.built = True

    def compute_output_shape(self, input_shape):
        return self._check_input_shape(input_shape)

    def compute_output_spec(self, inputs, mask=None):
        # Keras' default would give the compute dtype; `call` returns input_dtype.
        shapes = keras.tree.map_structure(lambda v: tuple(v.shape), inputs)
        return keras.KerasTensor(self._check_input_shape(shapes),
                                 dtype=self.input_dtype)


@keras.saving.register_keras_serializable(package="fdlayers")
class FiniteDifference1D(_SequenceLayer):
    """The `order`-th derivative of a sampled series along its steps axis.

    For inputs `x[b, i, c] = f_bc(t0 + i·spacing)` the layer returns an
    estimate of `f_bc^(order)` at the same points, vectorised over batch and
    channels, with truncation error `O(spacing**accuracy)` at every point,
    edges included. Polynomials of degree < `order + accuracy` are
    differentiated exactly (to rounding). The stencil weights are exact
    rationals rounded once to float64 and folded with `spacing**-order`;
    they are constants, not weights of the layer.

    Edges, by `padding`:

    - `"same"` (default): output as long as the input. The central stencil,
      offsets `-r..r` with `r = (order - 1) // 2 + accuracy // 2`, wherever it
      fits; each of the `r` points nearest an edge uses its own window of the
      `order + accuracy` samples flush with that edge (point `i < r` uses
      `x[0 : order + accuracy]`), which keeps the accuracy. For `order=1,
      accuracy=2` this is `numpy.gradient(x, spacing, axis=1, edge_order=2)`.
    - `"valid"`: only points with the full central stencil; the output is
      `2r` steps shorter.
    - `"periodic"`: the series wraps around, `x[steps] ≡ x[0]`.
    - `"causal"`: `output[t]` depends on `x[0..t]` only: the backward stencil
      of `order + accuracy` samples; step `t < order + accuracy - 1` uses the
      backward stencil over its `t + 1` samples (accuracy `t + 1 - order`),
      and steps `t < order`, with too few samples for any estimate, are 0.

    Non-uniform grids: with `spacing` a coordinate vector, or with
    per-sample coordinates `t` passed as `layer([x, t])`, every output point
    uses a window of `m = order + accuracy` samples (exact for polynomials of
    degree < m, error `O(h**accuracy)` on smooth data): `"same"` centres it
    as far as possible (`(m - 1) // 2` samples before the point) and clamps
    it flush to the edges, `"valid"` keeps the points whose window fits
    (`m - 1` fewer outputs), `"causal"` uses the backward window as above;
    `"periodic"` is refused. Static coordinates get float64 weights (Fornberg)
    once; per-sample weights are computed in the graph, in the input's float
    dtype, from `t` of shape `(batch, steps)` (then `axis` must be 1) or
    `(steps,)`. Coordinates must be finite and strictly increasing: a
    `ValueError` for static ones, and for per-sample ones whenever their
    values are seen (eagerly; an `InvalidArgumentError` at run time in a
    TensorFlow graph); under `jax.jit` nothing is checked and a repeated
    time stamp gives inf or NaN at the outputs whose window holds it.

    Masking: the layer supports Keras masks (`(batch, steps)`, e.g. from
    `keras.layers.Masking` or `Embedding(mask_zero=True)`) and never reads a
    masked step. With `axis=1`, each run of unmasked steps is differentiated
    as a sequence of its own: for `"same"` and `"causal"` with the edge
    stencils at the run's ends (a `"same"` run shorter than
    `order + accuracy` steps is masked in the output); for `"valid"` and
    `"periodic"` the outputs whose stencil reaches a masked step are masked.
    The mask passes through unchanged for any other `axis`. Masked outputs
    are 0.

    Args:
        order: derivative order, an integer ≥ 1.
        spacing: the sample spacing `h`, a positive finite number (a 0-d
            array or eager 0-d tensor counts as one); or the sample
            coordinates, a 1-D array of strictly increasing finite
            positions, one per step (a non-uniform grid, see below). It is
            unused when the layer is called on `[x, t]`.
        accuracy: formal order of accuracy, an integer ≥ 1; even for the
            central paddings `"same"`, `"valid"` and `"periodic"`.
        padding: `"same"`, `"valid"`, `"periodic"` or `"causal"`
            (case-insensitive).
        axis: the axis to differentiate along; any axis but the batch axis.
        **kwargs: standard layer arguments (`name`, `dtype`, ...).

    Input shape:
        `x`, or a list `[x, t]` with `t` of shape `(batch, steps)` or
        `(steps,)`. `x`: a tensor of rank ≥ 2, e.g. `(batch, steps, channels)`; the length
        along `axis` may be `None`. Integer and float inputs are cast to
        the layer's `input_dtype` (see Returns).

    Output shape:
        The input shape; for `padding="valid"` the length along `axis` is
        shorter by `2r`.

    Returns:
        The derivative, in the layer's `input_dtype`: the compute dtype of
        its dtype policy, but float32 under `"mixed_float16"` and
        `"mixed_bfloat16"`, where the layer also reads its input in float32
        (Keras would otherwise round it to half precision first).

    Raises:
        TypeError, ValueError: for invalid arguments, an input of rank < 2, the
            batch axis, or a sequence shorter than the stencil needs (when the
            layer is built for a static length; at run time otherwise).

    Example:

    >>> import numpy as np, keras, fdlayers
    >>> t = np.arange(3.0, 3075.0, 3.0, dtype="float32").reshape(1, 1024, 1)
    >>> model = keras.Sequential([keras.Input((None, 1)),
    ...                           fdlayers.FiniteDifference1D(order=1)])
    >>> np.unique(model(t))  # d/di of 3i + 3 is 3 at every point
    array([3.], dtype=float32)
    """

    def __init__(self, order=1, spacing=1.0, accuracy=2, padding="same", axis=1,
                 **kwargs):
        super().__init__(axis, **kwargs)
        self.order, self.spacing, self.accuracy, self.padding = (
            fd_ops.check_arguments(order, spacing, accuracy, padding)
        )

    def _check_input_shape(self, input_shape):
        input_shape, times_shape = self._split(input_shape)
        input_shape = tuple(input_shape)
        self._check_rank_and_axis(input_shape)
        coordinates = (self.spacing if isinstance(self.spacing, np.ndarray)
                       else None)
        return fd_ops.output_shape(input_shape, self.order, self.accuracy,
                                   self.padding, self.axis, coordinates,
                                   times_shape)

    def compute_mask(self, inputs, mask=None):
        x, t = self._split(inputs)
        return fd_ops.derivative_mask(
            self._input_mask(mask), len(x.shape), self.order, self.accuracy,
            self.padding, self.axis,
            irregular=t is not None or isinstance(self.spacing, np.ndarray))

    @direct_call
    def call(self, inputs, mask=None):
        x, t = self._split(inputs)
        return self._op(self._as_input_dtype(x), t, self._input_mask(mask))

    def _op(self, x, t, mask):
        return fd_ops.derivative(x, self.order,
                                 self.spacing if t is None else t,
                                 self.accuracy, self.padding, self.axis,
                                 mask=mask)

    def get_config(self):
        config = super().get_config()
        spacing = self.spacing
        config.update({
            "order": self.order,
            "spacing": (spacing.tolist() if isinstance(spacing, np.ndarray)
                        else spacing),
            "accuracy": self.accuracy,
            "padding": self.padding,
            "axis": self.axis,
        })
        return config


@keras.saving.register_keras_serializable(package="fdlayers")
class SavitzkyGolay1D(_SequenceLayer):
    """A noise-robust derivative: Savitzky–Golay smoothing and differentiation.

    Each output is the `order`-th derivative, at its point, of the
    polynomial of degree `polyorder` fitted by least squares to the `window`
    samples centred on it (`order=0` smooths). It is exact for polynomials
    of degree ≤ `polyorder`; on noisy samples it averages over the window,
    where a finite difference multiplies white noise of deviation σ by
    `≈ spacing**-order · ‖w‖₂` (e.g. `σ·√2/(2h)` for `order=1`). The weights
    are exact rationals rounded once to float64; the layer has no trainable
    weights.

    Edges, by `padding`:

    - `"same"` (default): output as long as the input. The first and last
      `window // 2` points take the derivative of the polynomial fitted to
      the first and last `window` samples: the result equals
      `scipy.signal.savgol_filter(x, window, polyorder, deriv=order,
      delta=spacing, axis=1, mode="interp")`.
    - `"valid"`: only points with a full window; `window - 1` fewer outputs.
    - `"periodic"`: the series wraps around (scipy's `mode="wrap"`).

    Irregular sampling: with `spacing` a coordinate vector, or with
    per-sample time stamps `t` passed as `layer([x, t])` (`t` of shape
    `(batch, steps)`, then `axis` must be 1, or `(steps,)`), each output
    is the `order`-th derivative, at the point's own coordinate, of the
    polynomial of degree `polyorder` fitted by least squares to the
    `window` samples `x[i - window//2 .. i + window//2]` at their own
    coordinates. `"same"`: the first and last `window // 2` points evaluate
    the fits to the first and last `window` samples at their coordinates;
    `"valid"`: `window - 1` fewer outputs; `"periodic"` is refused (a
    coordinate vector does not define a period). On evenly spaced
    coordinates this is the uniform filter. The fit goes through the
    polynomials orthonormal on each window's coordinates (Stieltjes'
    recurrence with full reorthogonalisation), never the ill-conditioned
    Vandermonde matrix: static coordinates get float64 weights once
    (within 2·10⁻¹⁴ of exact, relative to the largest weight); per-sample
    weights are computed in the graph in the input's float dtype (float32
    under mixed precision), within ≈ 10⁻⁶ relative in float32 (7·10⁻⁶
    measured up to degree 32), plus the rounding of the offsets
    `t[j] - t[i]`, about 2⁻²⁴·|t| / spacing: give float32 time stamps
    relative to the series start. The layer is linear in `x` and
    differentiable with respect to it; no gradient flows to `t`. Time
    stamps are checked (finite, strictly increasing) as
    `FiniteDifference1D` checks them. Windows of 25 samples and more are
    applied as one gathered copy of every point's window (memory ≈
    `window` times the input's).

    Masks, dtypes and mixed precision as for `FiniteDifference1D`: under a
    mask each unmasked run is filtered as a sequence of its own (a `"same"`
    run shorter than `window` is masked), on uniform and irregular
    sampling alike.

    Args:
        order: derivative order, an integer ≥ 0 and ≤ `polyorder`.
        window: the number of samples in each fit, an odd integer ≥ 1
            (at most 255).
        polyorder: the degree of the fitted polynomial, an integer
            `0 ≤ polyorder < window` (at most 32).
        spacing: the sample spacing `h`, a positive finite number (a 0-d
            array or eager 0-d tensor counts as one); or the sample
            coordinates, a 1-D array of at least `window` strictly
            increasing finite positions, one per step (stored in the
            config as a list). It is unused when the layer is called on
            `[x, t]`.
        padding: `"same"`, `"valid"` or `"periodic"` (case-insensitive);
            `"same"` or `"valid"` on coordinates and time stamps.
        axis: the axis to filter along; any axis but the batch axis.
        **kwargs: standard layer arguments (`name`, `dtype`, ...).

    Input shape:
        `x`, or a list `[x, t]` with `t` of shape `(batch, steps)` or
        `(steps,)`. `x`: a tensor of rank ≥ 2, e.g. `(batch, steps,
        channels)`, at least `window` steps long; the length along `axis`
        may be `None`.

    Output shape:
        The input shape; for `padding="valid"` shorter by `window - 1`
        along `axis`.

    Example:

    >>> import numpy as np, fdlayers
    >>> t = np.arange(0.0, 6.0, 0.01)
    >>> x = (np.sin(t) + np.random.default_rng(0).normal(0, 0.01, t.size))
    >>> layer = fdlayers.SavitzkyGolay1D(order=1, window=41, polyorder=3,
    ...                                  spacing=0.01, dtype="float64")
    >>> bool(np.abs(layer(x.reshape(1, -1, 1))[0, :, 0] - np.cos(t)).max() < 0.2)
    True
    >>> stamps = np.cumsum(np.random.default_rng(1).uniform(0.0085, 0.0115, 600))
    >>> y = fdlayers.SavitzkyGolay1D(order=1, window=11, polyorder=3,
    ...                              dtype="float64")([np.sin(stamps)[None, :, None],
    ...                                                stamps[None]])
    >>> bool(np.abs(y[0, :, 0] - np.cos(stamps)).max() < 1e-5)
    True
    """

    def __init__(self, order=1, window=5, polyorder=2, spacing=1.0,
                 padding="same", axis=1, **kwargs):
        super().__init__(axis, **kwargs)
        self.order, self.window, self.polyorder = savgol.check_arguments(
            order, window, polyorder)
        self.padding = fd_ops.check_savgol_padding(padding)
        self.spacing = fd_ops.check_savgol_spacing(spacing, self.window,
                                                   self.padding)

    def _check_input_shape(self, input_shape):
        input_shape, times_shape = self._split(input_shape)
        input_shape = tuple(input_shape)
        self._check_rank_and_axis(input_shape)
        if times_shape is not None:
            savgol.windows(self.window, self.padding)  # refuses 'periodic'
        coordinates = (self.spacing if isinstance(self.spacing, np.ndarray)
                       else None)
        return fd_ops.savitzky_golay_shape(input_shape, self.order, self.window,
                                           self.polyorder, self.padding,
                                           self.axis, coordinates, times_shape)

    def compute_mask(self, inputs, mask=None):
        x, t = self._split(inputs)
        return fd_ops.savitzky_golay_mask(
            self._input_mask(mask), len(x.shape), self.order, self.window,
            self.polyorder, self.padding, self.axis,
            irregular=t is not None or isinstance(self.spacing, np.ndarray))

    @direct_call
    def call(self, inputs, mask=None):
        x, t = self._split(inputs)
        return self._op(self._as_input_dtype(x), t, self._input_mask(mask))

    def _op(self, x, t, mask):
        return fd_ops.savitzky_golay(x, self.order, self.window,
                                     self.polyorder,
                                     self.spacing if t is None else t,
                                     self.padding, self.axis, mask=mask)

    def get_config(self):
        config = super().get_config()
        spacing = self.spacing
        config.update({
            "order": self.order,
            "window": self.window,
            "polyorder": self.polyorder,
            "spacing": (spacing.tolist() if isinstance(spacing, np.ndarray)
                        else spacing),
            "padding": self.padding,
            "axis": self.axis,
        })
        return config


@functools.cache
def _tensorflow():
    import tensorflow as tf

    return tf


def _eager_tensorflow():
    """Whether this is an eager TensorFlow call (not a graph being traced,
    not another backend)."""
    return (keras.backend.backend() == "tensorflow"
            and _tensorflow().executing_eagerly())

