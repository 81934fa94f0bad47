"""`SpectralDerivative1D`: the Keras layer of `fdlayers.spectral`.

Argument checks, configuration and shapes; `call` is one line into
`fdlayers.spectral.spectral_derivative`.
"""

import keras

from fdlayers import spectral
from fdlayers.layers import _SequenceLayer, direct_call

_MASKS = (
    "SpectralDerivative1D does not support masks: the derivative of a "
    "periodic series depends on every sample of the period, so no output "
    "could be computed without reading a masked step. Differentiate each "
    "series at its own length (or use FiniteDifference1D or SavitzkyGolay1D, "
    "which differentiate each unmasked run). Received: an input with a mask")


@keras.saving.register_keras_serializable(package="fdlayers")
class SpectralDerivative1D(_SequenceLayer):
    """The `order`-th derivative of a periodic series, by FFT.

    For inputs `x[b, i, c] = f_bc(i·spacing)`, `i < n`, of functions of
    period `n·spacing`, the layer returns the `order`-th derivative, at the
    samples, of each series' trigonometric interpolant: mode
    `k_j = 2π·j / (n·spacing)` of the real FFT is multiplied by
    `(i·k_j)**order`. It is exact to rounding for trigonometric polynomials
    below the Nyquist wavenumber `π/spacing`, and on smooth periodic data
    its error falls faster than any power of `spacing` (where a finite
    difference's falls as `spacing**accuracy`). The series must be
    periodic: the jump from the last sample back to the first spreads
    oscillations over the whole output (use `FiniteDifference1D` or
    `SavitzkyGolay1D` for non-periodic data).

    The Nyquist mode of an even length (`j = n/2`, wavenumber
    `π/spacing`) is zeroed for odd orders and kept, times
    `(-1)**(order/2)·(π/spacing)**order`, for even orders: the samples
    fix only that mode's cosine, whose odd derivatives vanish at every
    sample (Trefethen, *Spectral Methods in MATLAB*, ch. 3; Johnson,
    *Notes on FFT-based differentiation*, MIT 2011). `cutoff` zeroes every
    mode with `|k_j| > cutoff·π/spacing` (`2·j > cutoff·n`); a mode on the
    boundary is kept. Noise is white over all modes while a smooth
    signal's spectrum falls off, so a cutoff just above the signal's
    highest wavenumber removes most of the noise of the derivative.

    The layer has no weights. Masks are refused (a `ValueError`): every
    output depends on every sample of the period.

    Args:
        order: derivative order, an integer from 1 to 16 (the transform's
            rounding is multiplied by up to `(π/spacing)**order`).
        spacing: the sample spacing, a positive finite number (a 0-d array
            or eager 0-d tensor counts as one); the period is
            `steps·spacing`.
        cutoff: None (every mode), or a number in (0, 1]: the fraction of
            the Nyquist wavenumber above which modes are zeroed.
        axis: the axis to differentiate along; any axis but the batch axis.
        **kwargs: standard layer arguments (`name`, `dtype`, ...).

    Input shape:
        A tensor of rank ≥ 2, e.g. `(batch, steps, channels)`, at least 3
        steps long along `axis`; the length may be `None` (then checked at
        run time). Integer and float inputs are cast to the layer's
        `input_dtype`.

    Output shape:
        The input shape.

    Returns:
        The derivative, in the layer's `input_dtype`: the compute dtype of
        its dtype policy, but float32 under `"mixed_float16"` and
        `"mixed_bfloat16"` (see `FiniteDifference1D`).

    Raises:
        TypeError, ValueError: for invalid arguments, an input of rank < 2,
            the batch axis, a series shorter than 3 samples, or a mask.

    Example:

    >>> import numpy as np, fdlayers
    >>> n = 64
    >>> t = np.arange(n) * (2 * np.pi / n)  # one period of sin(3t)
    >>> layer = fdlayers.SpectralDerivative1D(order=1, spacing=2 * np.pi / n,
    ...                                       dtype="float64")
    >>> y = layer(np.sin(3 * t).reshape(1, n, 1))[0, :, 0]
    >>> bool(np.abs(np.asarray(y) - 3 * np.cos(3 * t)).max() < 1e-12)
    True
    """

    def __init__(self, order=1, spacing=1.0, cutoff=None, axis=1, **kwargs):
        super().__init__(axis, **kwargs)
        self.order, self.spacing, self.cutoff = spectral.check_arguments(
            order, spacing, cutoff)
        self.supports_masking = False

    def _check_input_shape(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) < 2:
            raise ValueError(
                "The input must have rank ≥ 2, e.g. (batch, steps) or "
                "(batch, steps, channels). Received: input of shape "
                f"{input_shape}")
        self._check_rank_and_axis(input_shape)
        return spectral.output_shape(input_shape, self.axis)

    def compute_output_spec(self, inputs, mask=None):
        if mask is not None:
            raise ValueError(_MASKS)
        return super().compute_output_spec(inputs)

    def compute_mask(self, inputs, mask=None):
        if mask is not None:
            raise ValueError(_MASKS)
        return None

    @direct_call
    def call(self, inputs, mask=None):
        if mask is not None:
            raise ValueError(_MASKS)
        return self._op(self._as_input_dtype(inputs), None, None)

    def _op(self, x, t, mask):
        return spectral.spectral_derivative(x, self.order, self.spacing,
                                            self.cutoff, self.axis)

    def get_config(self):
        config = super().get_config()
        config.update({
            "order": self.order,
            "spacing": self.spacing,
            "cutoff": self.cutoff,
            "axis": self.axis,
        })
        return config
