"""Keras layers of fields: partial derivatives and vector calculus on 1-D to
3-D grids. Argument checks, configuration and shapes; the numerics live in
`fdlayers.fields`, and `call` is one line into it.

One base class carries what the layers share (spacing, accuracy, padding,
data format, dtypes, shapes, config), as Keras' `BaseConv` does for
`Conv1D`-`Conv3D`; each public class names its operator and documents it.
"""

import keras
import numpy as np

from fdlayers import fields
from fdlayers import ops as fd_ops
from fdlayers import stencils
from fdlayers.layers import DirectCallLayer, direct_call

_DTYPE_MESSAGE = ("`dtype` must be a float dtype or a mixed-precision policy "
                  "('float32', 'float64', 'mixed_float16', ...). Received: "
                  "dtype={!r}")


class _FieldLayer(DirectCallLayer):
    """What the field layers share. A subclass sets `operator` (a name of
    `fdlayers.fields.operator_terms`) and, for partial derivatives, `orders`."""

    operator = None
    orders = None

    def __init__(self, spacing=1.0, accuracy=2, padding="same",
                 data_format=None, **kwargs):
        if kwargs.get("dtype") is not None:
            try:  # Keras' own message would not say which argument it was
                keras.dtype_policies.get(kwargs["dtype"])
            except (TypeError, ValueError) as error:
                raise ValueError(
                    _DTYPE_MESSAGE.format(kwargs["dtype"])) from error
        super().__init__(**kwargs)
        dtype = keras.backend.standardize_dtype(self.variable_dtype)
        if not dtype.startswith(("float", "bfloat")):
            raise ValueError(_DTYPE_MESSAGE.format(kwargs.get("dtype"))
                             + f" (variable dtype {dtype})")
        self.spacing = fields.check_spacing(spacing)
        self.accuracy = fields.check_accuracy(accuracy)
        self.padding = fields.check_padding(padding)
        self.data_format = fields.check_data_format(data_format)
        self._check_known_axes()
        # So that Keras hands a mask to `call`, which refuses it: a field
        # has no padded steps to skip, and dropping a mask would be silent.
        self.supports_masking = True

    def _check_known_axes(self):
        """Check what the arguments alone decide: the number of spatial axes
        where `orders` or a per-axis tuple gives it, and each axis's order,
        accuracy, padding and spacing together."""
        lengths = {len(v) for v in (self.orders, self.spacing, self.padding)
                   if isinstance(v, tuple)}
        if len(lengths) > 1:
            raise ValueError(
                "`orders`, `spacing` and `padding` given per axis must have "
                "one entry per spatial axis each. Received: "
                + ", ".join(f"{name}={fields._short(value)}" for name, value
                            in (("orders", self.orders),
                                ("spacing", self.spacing),
                                ("padding", self.padding))
                            if isinstance(value, tuple)))
        if lengths:
            ndim = lengths.pop()
            _, blocks = fields.operator_terms(self.operator, ndim, self.orders)
            fields.check_terms(blocks, ndim, self.spacing, self.accuracy,
                               self.padding)
            return
        # Any number of axes: every axis is differentiated with the orders
        # of the operator (1 or 2).
        for order in (1, 2) if self.operator == "laplacian" else (1,):
            stencils.check_order_accuracy(
                order, self.accuracy,
                self.padding in stencils.CENTRAL_PADDINGS)

    @property
    def input_dtype(self):
        """The dtype inputs are cast to and the output's: the variable
        dtype of the policy (float32 under `"mixed_float16"` and
        `"mixed_bfloat16"`), since a derivative of half-precision samples
        loses most of its digits (see `FiniteDifference1D.input_dtype`)."""
        return self.variable_dtype

    def _output_shape(self, input_shape):
        return fields.output_shape(tuple(input_shape), self.operator,
                                   self.spacing, self.accuracy, self.padding,
                                   self.data_format, self.orders)

    def build(self, input_shape):
        self._output_shape(input_shape)
        self.built = True

    def compute_output_shape(self, input_shape):
        return self._output_shape(input_shape)

    def compute_output_spec(self, inputs, mask=None):
        self._refuse_mask(mask)
        # Keras' default would give the compute dtype; `call` returns input_dtype.
        return keras.KerasTensor(self._output_shape(inputs.shape),
                                 dtype=self.input_dtype)

    def compute_mask(self, inputs, mask=None):
        return None

    def _refuse_mask(self, mask):
        if mask is not None:
            raise ValueError(
                f"`{type(self).__name__}` does not support masks: a field's "
                "grid has no padded steps to skip. Remove the mask (e.g. the "
                "`Masking` layer or `mask_zero=True`) before this layer.")

    @direct_call
    def call(self, inputs, mask=None):
        self._refuse_mask(mask)
        x = fd_ops.real_tensor(inputs, "inputs")
        if keras.backend.standardize_dtype(x.dtype) != self.input_dtype:
            x = keras.ops.cast(x, self.input_dtype)
        return self._direct_op(x)

    def _direct_op(self, x):
        return fields.apply_operator(x, self.operator, self.spacing,
                                     self.accuracy, self.padding,
                                     self.data_format, self.orders)

    def get_config(self):
        config = super().get_config()
        spacing = self.spacing
        if isinstance(spacing, tuple):
            spacing = [s.tolist() if isinstance(s, np.ndarray) else s
                       for s in spacing]
        config.update({
            "spacing": spacing,
            "accuracy": self.accuracy,
            "padding": (list(self.padding) if isinstance(self.padding, tuple)
                        else self.padding),
            "data_format": self.data_format,
        })
        return config


_COMMON_ARGS = """spacing: the grid spacing, one positive number for every axis, or a
            tuple with one entry per spatial axis, each a positive number or
            that axis's 1-D array of strictly increasing coordinates.
        accuracy: the formal order of accuracy, an integer ≥ 1; even for the
            central paddings `"same"`, `"valid"` and `"periodic"`.
        padding: `"same"` (default), `"valid"`, `"periodic"` or `"causal"`
            for every axis, or a tuple with one per spatial axis; each axis
            as `FiniteDifference1D` along it.
        data_format: `"channels_last"` (`(batch, *spatial, channels)`) or
            `"channels_first"` (`(batch, channels, *spatial)`); None gives
            `keras.config.image_data_format()`.
        **kwargs: standard layer arguments (`name`, `dtype`, ...)."""


@keras.saving.register_keras_serializable(package="fdlayers")
class PartialDerivative(_FieldLayer):
    """A partial derivative of a field on a 1-D, 2-D or 3-D grid.

    `PartialDerivative((o_0, ..., o_{n-1}))` estimates
    `∂^(o_0+...+o_{n-1}) f / ∂s_0^o_0 ... ∂s_{n-1}^o_{n-1}` at every grid
    point of each channel: the composition of `FiniteDifference1D`'s
    operator along each axis with a nonzero order (see
    `fdlayers.partial`). Along each axis the edges are those of
    `FiniteDifference1D` with that axis's padding; at corners and edges
    the composition keeps the formal accuracy: polynomials of degree
    < `o_k + accuracy` in each differentiated s_k are exact everywhere.
    An axis with order 0 is not differentiated and keeps its length.

    Args:
        orders: a tuple of non-negative integers, one per spatial axis, not
            all 0: `(1, 1)` on `(batch, H, W, C)` is ∂²/∂s₀∂s₁.
        {args}

    Input shape:
        `(batch, *spatial, channels)` with `len(orders)` spatial axes
        (channels first for `"channels_first"`); spatial lengths may be None.

    Output shape:
        The input's, shorter by the stencil width − 1 along each
        differentiated axis with padding `"valid"`.

    Returns:
        The derivative in the layer's `input_dtype` (float32 under the
        mixed-precision policies).

    Raises:
        TypeError, ValueError: for invalid arguments, each named; an input
            whose number of spatial axes is not `len(orders)`, too short for
            a stencil, or not as long as a coordinate vector.

    Masks are not supported: a mask is refused with a ValueError.

    Example:

    >>> import numpy as np, fdlayers
    >>> s = np.linspace(0.0, 1.0, 11)
    >>> x, y = np.meshgrid(s, s, indexing="ij")
    >>> f = (x**2 * y)[None, :, :, None]   # ∂²f/∂x∂y = 2x
    >>> layer = fdlayers.PartialDerivative((1, 1), spacing=0.1,
    ...                                    dtype="float64")
    >>> bool(np.allclose(layer(f)[0, :, :, 0], 2 * x))
    True
    """

    operator = "partial"

    def __init__(self, orders, spacing=1.0, accuracy=2, padding="same",
                 data_format=None, **kwargs):
        self.orders = fields.check_orders(orders)
        super().__init__(spacing, accuracy, padding, data_format, **kwargs)

    def get_config(self):
        config = super().get_config()
        config["orders"] = list(self.orders)
        return config


@keras.saving.register_keras_serializable(package="fdlayers")
class Gradient(_FieldLayer):
    """The gradient of each channel of a field on a 1-D, 2-D or 3-D grid.

    For C fields `x[..., c]` on n spatial axes the output has n·C channels,
    axis-major: channel `k·C + c` is ∂x_c/∂s_k (so `Divergence` of it is
    the Laplacian). Each component is `PartialDerivative` of order 1 along
    its axis, with its edges; with `padding="valid"` every component is cut
    to the points where all of them have a central stencil.

    Args:
        {args}

    Input shape:
        `(batch, *spatial, C)` with 1 to 3 spatial axes (channels first
        for `"channels_first"`).

    Output shape:
        `(batch, *spatial, n·C)`, each spatial length shorter by
        `accuracy` (the stencil width − 1) where padding is `"valid"`.

    Masks are not supported: a mask is refused with a ValueError.

    Example:

    >>> import numpy as np, fdlayers
    >>> s = np.linspace(0.0, 1.0, 11)
    >>> x, y = np.meshgrid(s, s, indexing="ij")
    >>> f = (x * y)[None, :, :, None]                 # ∇f = (y, x)
    >>> g = fdlayers.Gradient(spacing=0.1, dtype="float64")(f)
    >>> bool(np.allclose(g[0, :, :, 0], y) and np.allclose(g[0, :, :, 1], x))
    True
    """

    operator = "gradient"


@keras.saving.register_keras_serializable(package="fdlayers")
class Divergence(_FieldLayer):
    """The divergence of vector fields on a 1-D, 2-D or 3-D grid.

    The input holds n·C channels, n components of C vector fields,
    axis-major as `Gradient` writes them: channel `k·C + c` is component k
    (along spatial axis k) of field c. Output channel c is
    `Σ_k ∂v[k·C + c]/∂s_k`. With `padding="valid"` every term is cut to
    the points where all of them have a central stencil.

    Args:
        {args}

    Input shape:
        `(batch, *spatial, n·C)` with n = 1 to 3 spatial axes; the number
        of channels must be known and a multiple of n.

    Output shape:
        `(batch, *spatial, C)`, shorter by `accuracy` along each `"valid"`
        axis.

    Masks are not supported: a mask is refused with a ValueError.

    Example:

    >>> import numpy as np, fdlayers
    >>> s = np.linspace(0.0, 1.0, 11)
    >>> x, y = np.meshgrid(s, s, indexing="ij")
    >>> v = np.stack([x * y, y**2], -1)[None]        # div v = y + 2y
    >>> d = fdlayers.Divergence(spacing=0.1, dtype="float64")(v)
    >>> bool(np.allclose(d[0, :, :, 0], 3 * y))
    True
    """

    operator = "divergence"


@keras.saving.register_keras_serializable(package="fdlayers")
class Curl(_FieldLayer):
    """The curl of vector fields on a 2-D or 3-D grid.

    Channels as for `Divergence`: n·C in, component k of field c in channel
    `k·C + c`. On 2 spatial axes the output is the scalar vorticity, C
    channels: `∂v₁/∂s₀ − ∂v₀/∂s₁`. On 3 axes it is the vector, 3·C
    channels in the same layout: `(∂v₂/∂s₁ − ∂v₁/∂s₂, ∂v₀/∂s₂ − ∂v₂/∂s₀,
    ∂v₁/∂s₀ − ∂v₀/∂s₁)`. (The axes are taken in array order: on a
    `(batch, y, x, ...)` image grid, s₀ is y.)

    Args:
        {args}

    Input shape:
        `(batch, *spatial, n·C)` with n = 2 or 3 spatial axes; the number
        of channels must be known and a multiple of n.

    Output shape:
        `(batch, *spatial, C)` in 2-D, `(batch, *spatial, 3·C)` in 3-D,
        shorter by `accuracy` along each `"valid"` axis.

    Masks are not supported: a mask is refused with a ValueError.

    Example:

    >>> import numpy as np, fdlayers
    >>> s = np.linspace(0.0, 1.0, 11)
    >>> x, y = np.meshgrid(s, s, indexing="ij")
    >>> v = np.stack([-y, x], -1)[None]   # a rigid rotation: vorticity 2
    >>> w = fdlayers.Curl(spacing=0.1, dtype="float64")(v)
    >>> bool(np.allclose(w, 2.0))
    True
    """

    operator = "curl"

    def _check_known_axes(self):
        super()._check_known_axes()
        for value in (self.spacing, self.padding):
            if isinstance(value, tuple):
                fields.operator_terms("curl", len(value))


@keras.saving.register_keras_serializable(package="fdlayers")
class Laplacian(_FieldLayer):
    """The Laplacian of each channel of a field on a 1-D, 2-D or 3-D grid.

    Output channel c is `Σ_k ∂²x_c/∂s_k²`: the sum of `FiniteDifference1D`'s
    second derivatives along every axis, each with its edges (exact on
    polynomials of degree < 2 + accuracy at every point, corners included).
    It equals `Divergence(Gradient(x))` up to the truncation error of each,
    for any number of channels. Large inputs run as one compiled pass over
    the field (benchmarks/README.md, section 13).

    Args:
        {args}

    Input shape:
        `(batch, *spatial, C)` with 1 to 3 spatial axes.

    Output shape:
        The input's, shorter by `accuracy` along each `"valid"` axis.

    Masks are not supported: a mask is refused with a ValueError.

    Example:

    >>> import numpy as np, fdlayers
    >>> s = np.linspace(0.0, 1.0, 11)
    >>> x, y = np.meshgrid(s, s, indexing="ij")
    >>> f = (x**2 + x * y**2)[None, :, :, None]        # Δf = 2 + 2x
    >>> lap = fdlayers.Laplacian(spacing=0.1, dtype="float64")(f)
    >>> bool(np.allclose(lap[0, :, :, 0], 2 + 2 * x))
    True
    """

    operator = "laplacian"


for _cls in (PartialDerivative, Gradient, Divergence, Curl, Laplacian):
    _cls.__doc__ = _cls.__doc__.replace("{args}", _COMMON_ARGS)
del _cls
