"""`spectral_derivative()`: the derivative of a periodic series by FFT.

A series of `n` samples `x[i] = f(i·spacing)` of a function of period
`L = n·spacing` has one trigonometric interpolant of lowest degree,

    p(t) = (1/n) Σ_j X[j] · exp(i·k_j·t),   k_j = 2π·j / L,

with `X` its discrete Fourier transform and `j` running over
`-n/2 < j ≤ n/2`. Its `order`-th derivative multiplies each mode by
`(i·k_j)**order`: one real FFT, a multiplication, one inverse FFT, exact
to rounding for samples of a trigonometric polynomial below the Nyquist
wavenumber `k_N = π / spacing`, and with an error that falls faster than
any power of `spacing` for smooth periodic functions.

The Nyquist mode of an even length, `j = n/2`, is the one mode without a
partner of opposite wavenumber: the samples fix only its cosine part, and
the interpolant that stays real for every real series, and has the least
oscillation, carries it as `X[n/2]/n · cos(k_N·t)`. Its derivatives of odd
order are sines, which vanish at every sample: that mode contributes 0 to
odd derivatives. Even derivatives are cosines again, `(-k_N²)**(order/2)`
times it, and are kept (Trefethen, *Spectral Methods in MATLAB*, SIAM
2000, ch. 3; S. G. Johnson, *Notes on FFT-based differentiation*, MIT,
2011). Odd lengths have no such mode.
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

#: The shortest series: 3 samples are the fewest with a mode strictly below
#: the Nyquist wavenumber; with 1 or 2 the interpolant of every series has
#: odd derivatives identically 0.
MIN_LENGTH = 3

#: The highest order. The transform's rounding, ε·max|x|, is multiplied by
#: up to `k_N**order` at the top modes, against `k**order` for a mode of
#: the signal at wavenumber `k`: for a mode at half the Nyquist wavenumber
#: the relative error is about `ε·2**order`, 4·10⁻³ in float32 at order 16
#: and of order 1 at order 24. Past 16 a float32 derivative keeps no useful
#: digit but for modes within a factor 2 of the Nyquist wavenumber.
MAX_ORDER = 16

# On TensorFlow, inputs of a static size of at least this many elements
# run in pieces (`_in_pieces`): TensorFlow's FFTs, and XLA for the rest,
# eagerly and in graphs. Below it, op by op runs as fast or faster
# ((1024, 1024, 1): 1.9 against 2.3 ms in a graph), without the compiles,
# which add 0.02-0.19 s to a first call at each shape (as the eager
# kernels of `FiniteDifference1D` from this size on).
_PIECES_MIN_SIZE = 1 << 20

# Even lengths of at least this many samples are transformed by complex
# FFTs of half their length (`_packed`): faster from 2**19 samples on, up
# to 1.8× at 2**22 (both FFTs of a long series); slower at 2**18 (7.5
# against 5.5 ms on 2**21 float32 samples in all), the same at 2**17, and
# below it faster by less than the packing's passes cost (benchmarks/
# README.md, section 14).
_PACKED_MIN_LENGTH = 1 << 19


def check_arguments(order, spacing, cutoff):
    """Validate `(order, spacing, cutoff)`; return them as
    `(int, float, float or None)`."""
    if type(order) is int and type(spacing) in (int, float) and (
            cutoff is None or type(cutoff) in (int, float)):
        return _check_plain(order, spacing, cutoff)
    return _check(order, spacing, cutoff)


@dispatch.plain_python  # TorchDynamo would trace past the cache
@functools.lru_cache(maxsize=256)
def _check_plain(order, spacing, cutoff):
    return _check(order, spacing, cutoff)


def _check(order, spacing, cutoff):
    order = stencils.check_positive_int("order", order)
    if order > MAX_ORDER:
        raise ValueError(
            f"`order` must be at most {MAX_ORDER} for a spectral derivative: "
            "higher orders amplify the transform's rounding past any digit "
            f"of the result in float32. Received: order={order}")
    spacing = fd_ops.check_spacing(spacing)
    if cutoff is not None:
        cutoff = fd_ops.as_number(cutoff)
        if isinstance(cutoff, bool) or not isinstance(cutoff, numbers.Real):
            raise TypeError(
                "`cutoff` must be None or a number in (0, 1], a fraction of "
                f"the Nyquist wavenumber. Received: cutoff={cutoff!r} of type "
                f"{type(cutoff).__name__}")
        if not 0 < float(cutoff) <= 1:  # NaN fails too
            raise ValueError(
                "`cutoff` must be None or a number in (0, 1], a fraction of "
                "the Nyquist wavenumber. Received: "
                f"cutoff={reprlib.repr(cutoff)}")
        cutoff = float(cutoff)
    return order, spacing, cutoff


def output_shape(input_shape, axis=1):
    """Shape of `spectral_derivative(x, axis=axis)` for `x` of `input_shape`:
    the same. Checks the rank (≥ 1), the axis and, where it is known, that
    the length along `axis` is at least `MIN_LENGTH`."""
    input_shape = tuple(input_shape)
    rank = len(input_shape)
    if rank < 1:
        raise ValueError(
            "The input must have rank ≥ 1, e.g. (steps,) or (batch, steps, "
            f"channels). Received: input of shape {input_shape}")
    axis = fd_ops.check_axis(axis, rank)
    length = dispatch.static_length(input_shape[axis])
    if length is not None and length < MIN_LENGTH:
        raise ValueError(_too_short(axis, length))
    return input_shape


def _too_short(axis, length=None):
    received = (f"Received: {length} steps" if length is not None
                else "Received: a shorter sequence (its length follows)")
    return (f"The input is too short along axis {axis}: a spectral "
            f"derivative needs at least {MIN_LENGTH} samples of a period. "
            + received)


def _check_symbolic(x, axis):
    """Refuse a length that is a symbolic dimension of JAX's shape
    polymorphism (`model.export` of a model with `None` lengths on JAX):
    JAX's FFTs take concrete lengths only."""
    if dispatch.is_symbolic(x.shape[axis]):
        raise ValueError(
            "A spectral derivative needs a concrete length along axis "
            f"{axis} on JAX, whose FFTs cannot be traced for a symbolic one "
            "(as `model.export` traces `None` lengths): give the model's "
            "input a fixed length, or export it on TensorFlow. Received: "
            f"length {x.shape[axis]}")


def _check_length(x, axis):
    """Fail at run time where the length is only known then (TensorFlow
    graphs); JAX and PyTorch trace with concrete lengths, which
    `output_shape` has checked."""
    if x.shape[axis] is not None or keras.backend.backend() != "tensorflow":
        return x
    import tensorflow as tf

    check = tf.debugging.assert_greater_equal(
        tf.shape(x)[axis], MIN_LENGTH, message=_too_short(axis))
    with tf.control_dependencies([check]):
        return tf.identity(x)


@dispatch.static_python
def spectral_derivative(x, order=1, spacing=1.0, cutoff=None, axis=1):
    """The `order`-th derivative of a periodic series along `axis`, by FFT.

    `x` holds `n` samples `x[..., i, ...] = f(i·spacing)` along `axis` of a
    function of period `n·spacing` (the sample after the last would be the
    first again). The result is the `order`-th derivative, at the samples,
    of the series' trigonometric interpolant: mode `j` of the real FFT,
    `0 ≤ j ≤ n // 2`, is multiplied by `(i·k_j)**order` with
    `k_j = 2π·j / (n·spacing)`. It is exact to rounding for samples of a
    trigonometric polynomial of degree `< n/2` (with period `n·spacing`);
    on a smooth periodic function its error falls faster than any power of
    `spacing`. On a non-periodic series the jump between its last and first
    samples spreads Gibbs oscillations over the whole result: use
    `FiniteDifference1D` or `SavitzkyGolay1D` there.

    The Nyquist mode `j = n/2` of an even `n`: for odd `order` it is
    zeroed, for even `order` it is kept, multiplied by
    `(-1)**(order/2) · (π/spacing)**order` (Trefethen, *Spectral Methods in
    MATLAB*, ch. 3; Johnson, *Notes on FFT-based differentiation*, 2011):
    the samples fix only the cosine part of that mode, and the real,
    least-oscillating interpolant carries it as a cosine, whose odd
    derivatives vanish at every sample. Odd `n` has no Nyquist mode.

    `cutoff` (a fraction of the Nyquist wavenumber `π/spacing`) zeroes the
    modes above it, as a low-pass filter for noise: mode `j` is kept when
    `2·j ≤ cutoff·n` (`|k_j| ≤ cutoff·π/spacing`), a mode on the boundary
    included; the comparison is made in the compute dtype. With
    `cutoff=1` every mode is kept, as with `None`.

    The multipliers `(2π·j/(n·spacing))**order` are computed in the
    compute dtype; with a fine spacing and a high order they can overflow
    (inf), and the derivative of the highest modes with them.

    Args:
        x: tensor of rank ≥ 1, at least `MIN_LENGTH` (3) long along
            `axis` (checked at run time in a TensorFlow graph whose length
            is only known then). Integer tensors are cast to
            `keras.config.floatx()`; float16 and bfloat16 inputs are
            transformed in float32 and the result is cast back.
        order: derivative order, an integer in `[1, MAX_ORDER]` (16).
        spacing: the sample spacing, a positive finite number (a 0-d array
            or eager 0-d tensor counts as one); the period is
            `n·spacing`.
        cutoff: None (keep every mode), or a number in (0, 1].
        axis: the axis to differentiate along (default 1, the steps axis).

    Returns:
        A tensor of `x`'s float dtype and shape.

    Raises:
        TypeError, ValueError: for invalid arguments or a series shorter
            than 3 samples.
    """
    order, spacing, cutoff = check_arguments(order, spacing, cutoff)
    x, dtype = fd_ops._float_input(x)
    output_shape(x.shape, axis)
    axis = fd_ops.check_axis(axis, len(x.shape))
    _check_symbolic(x, axis)
    x = _check_length(x, axis)
    if dtype in fd_ops._HALF_DTYPES:
        x = ops.cast(x, "float32")
    if 0 in x.shape:  # an empty batch: PyTorch's FFT (MKL) refuses it
        y = ops.zeros_like(x)
    else:
        y = _run(x, order, spacing, cutoff, axis)
    return ops.cast(y, dtype) if dtype in fd_ops._HALF_DTYPES else y


def _run(x, order, spacing, cutoff, axis):
    """`_differentiate` op by op, or in pieces (`_in_pieces`) on TensorFlow
    where that is faster (a static size of at least `_PIECES_MIN_SIZE`,
    eagerly or in a graph); in a program that XLA compiles whole, inline,
    as XLA runs it best."""
    if keras.backend.backend() != "tensorflow":
        return _differentiate(x, order, spacing, cutoff, axis)
    if dispatch._in_xla_program():
        return _differentiate(x, order, spacing, cutoff, axis, packed=True)
    if None not in x.shape and math.prod(x.shape) >= _PIECES_MIN_SIZE:
        return _in_pieces(x, order, spacing, cutoff, axis)
    if dispatch.placement(x) == "numpy":
        return _in_numpy(x, order, spacing, cutoff, axis)
    return _differentiate(x, order, spacing, cutoff, axis)


def _in_numpy(x, order, spacing, cutoff, axis):
    """`_differentiate` of a small eager tensor on the CPU, by NumPy's FFT
    (in the input's precision): op by op, the multipliers alone are a
    dozen TensorFlow operations of ≈ 10 µs each, and the whole derivative
    of one series of 4096 samples took ≈ 0.55 ms, against ≈ 0.03 ms for
    NumPy's. Differentiable as the pieces are (`_in_pieces`), its gradient
    attached only where a tape or an accumulator is watching."""
    import tensorflow as tf

    dtype = keras.backend.standardize_dtype(x.dtype)
    n = x.shape[axis]
    real = _multiplier(n, n // 2 + 1, dtype, order, spacing, cutoff,
                       kernels.NUMPY)
    multiplier = np.zeros(real.shape, np.result_type(dtype, np.complex64))
    if order % 2:
        multiplier.imag = real
    else:
        multiplier.real = real
    # Along `axis` (a non-negative index, `check_axis`'s), against x.
    multiplier = multiplier.reshape((-1,) + (1,) * (len(x.shape) - 1 - axis))

    def forward(v):
        # As TensorFlow's FFTs do, NaN and Inf samples spread without a word.
        with np.errstate(all="ignore"):
            spectrum = np.fft.rfft(v.numpy(), axis=axis) * multiplier
            return tf.constant(np.fft.irfft(spectrum, n, axis=axis)
                               .astype(dtype, copy=False))

    def transpose(g):
        # As in `_in_pieces`: the transpose is (-1)**order times the map.
        y = forward(g)
        return -y if order % 2 else y

    if not dispatch._recording():
        return forward(x)
    return dispatch._with_transpose_gradient(x, forward, transpose)


def _in_pieces(x, order, spacing, cutoff, axis):
    """`_differentiate` with TensorFlow's FFT ops, and what comes before,
    between and after them compiled by XLA (`_pieces`), for a static shape.

    Each part is faster that way than in one XLA program or op by op:
    TensorFlow's transposes take twice XLA's, and the packing's untangling
    (`_packed`) is a dozen passes op by op, fused into one by XLA; while
    the whole derivative compiled took 1.2-1.9× the time of these pieces,
    although its FFTs alone run as fast as TensorFlow's (benchmarks/
    README.md, section 14b). The gradient is one more derivative (see
    `gradient`)."""
    import tensorflow as tf

    n = x.shape[axis]
    packed = n % 2 == 0 and n >= _PACKED_MIN_LENGTH
    before, between, after = _pieces(
        order, spacing, cutoff, axis, tuple(x.shape),
        keras.backend.standardize_dtype(x.dtype), packed)

    # One series: its FFTs of rank 1 (see `_tensorflow`).
    one = math.prod(x.shape) == n
    forward, inverse = ((tf.signal.fft, tf.signal.ifft) if packed else
                        (tf.signal.rfft,
                         functools.partial(tf.signal.irfft, fft_length=[n])))

    @tf.custom_gradient
    def derivative(x):
        z = before(x)
        shape = z.shape
        z = between(forward(tf.reshape(z, [-1]) if one else z))
        y = after(tf.reshape(inverse(z), shape) if one else inverse(z))

        def gradient(upstream):
            # The derivative is a real circulant matrix, odd orders'
            # antisymmetric and even orders' symmetric (the multipliers of
            # modes j and -j are opposite or equal; the dropped modes come
            # in such pairs too): its transpose is (-1)**order times itself.
            # One more derivative, where differentiating the pieces took
            # 1.4-2.8× the time of op by op's gradient.
            transposed = derivative(upstream)
            return -transposed if order % 2 else transposed

        return y, gradient

    return derivative(x)


@dispatch.plain_python
@functools.lru_cache(maxsize=16)
def _pieces(order, spacing, cutoff, axis, shape, dtype, packed):
    """Three functions, compiled for `shape`, around the FFTs of
    `_in_pieces`: the steps axis moved last (and the samples packed in
    pairs where `packed`); the product by `(i·k)**order` (between the
    untangling and the tangling again of `_packed`); the axis moved back.

    One set per shape: XLA compiles per shape anyway, and a function
    shared between shapes would be traced again with `None` sizes at its
    second shape (`reduce_retracing`), losing the static length that the
    packing needs. Each set holds the executables of a large input: few
    are kept."""
    import tensorflow as tf

    n = shape[axis]
    last = len(shape) - 1
    moved = shape[:axis] + shape[axis + 1:] + (n,)

    def before(x):
        if axis != last:
            x = tf.transpose(x, _moving(len(shape), axis, last))
        return _pack(x, n) if packed else x

    def between(spectrum):
        if packed:
            return _packed_product(spectrum, n, dtype, order, spacing,
                                   cutoff)
        return spectrum * _complex_multiplier(n, dtype, order, spacing,
                                              cutoff)

    def after(y):
        if packed:
            y = _unpack(y, moved)
        if axis != last:
            y = tf.transpose(y, _moving(len(shape), last, axis))
        return y

    before, between, after = (dispatch.through_xla(fn, True)
                              for fn in (before, between, after))
    if not packed and all(size == 1 for size in shape[axis + 1:]):
        # Moving the axis past axes of size 1 is a reshape, free op by op
        # and a copy when compiled (an XLA program's output is a buffer of
        # its own).
        return (functools.partial(tf.reshape, shape=moved), between,
                functools.partial(tf.reshape, shape=shape))
    return before, between, after


def _moving(rank, source, destination):
    """The permutation of `rank` axes that moves `source` to
    `destination`, as `moveaxis` does."""
    order = [a for a in range(rank) if a != source]
    order.insert(destination, source)
    return order


def _differentiate(x, order, spacing, cutoff, axis, packed=False):
    """The derivative of a float32 or float64 tensor `x` along `axis`;
    `packed`: through `_packed` where the length is static, even and at
    least `_PACKED_MIN_LENGTH`."""
    last = len(x.shape) - 1
    if axis != last:
        x = ops.moveaxis(x, axis, last)
    n = ops.shape(x)[last]
    if (packed and isinstance(n, int) and n % 2 == 0
            and n >= _PACKED_MIN_LENGTH
            and keras.backend.backend() == "tensorflow"):
        y = _packed(x, n, order, spacing, cutoff)
    elif keras.backend.backend() == "tensorflow":
        y = _tensorflow(x, n, order, spacing, cutoff)
    else:
        real, imag = ops.rfft(x)
        multiplier = _multiplier(n, ops.shape(real)[last], real.dtype, order,
                                 spacing, cutoff)
        # (i·k)**order = i**order · k**order: a quarter turn per order.
        if order % 2:
            real, imag = -multiplier * imag, multiplier * real
        else:
            real, imag = multiplier * real, multiplier * imag
        y = ops.irfft((real, imag), n)
    if axis != last:
        y = ops.moveaxis(y, last, axis)
    return y


def _tensorflow(x, n, order, spacing, cutoff):
    """As the other backends, with TensorFlow's complex tensors: one
    complex product instead of splitting the spectrum and joining it
    again (Keras' `irfft` also checks and converts its input: 2-3× the
    time of TensorFlow's on a long series, eagerly). One series is
    transformed as a tensor of rank 1: TensorFlow's FFTs of a batch of one
    took 1.4-2× the time (`rfft` of 2**22 float32 samples 33.6 against
    24.8 ms, `fft` of 2**21 complex ones 18.6 against 8.9; the same under
    XLA either way)."""
    import tensorflow as tf

    one = None not in x.shape and math.prod(x.shape) == n
    spectrum = tf.signal.rfft(tf.reshape(x, [-1]) if one else x)
    multiplier = _complex_multiplier(n, x.dtype, order, spacing, cutoff)
    y = tf.signal.irfft(spectrum * multiplier, [n])
    return tf.reshape(y, x.shape) if one else y


def _complex_multiplier(n, dtype, order, spacing, cutoff):
    """`(i·k_j)**order` for the `n // 2 + 1` modes of a real FFT of length
    `n` (static or a scalar tensor), as a complex tensor of `dtype`'s
    precision (`_multiplier`)."""
    import tensorflow as tf

    multiplier = _multiplier(n, n // 2 + 1, dtype, order, spacing, cutoff)
    zeros = tf.zeros_like(multiplier)
    return (tf.complex(zeros, multiplier) if order % 2
            else tf.complex(multiplier, zeros))


def _packed(x, n, order, spacing, cutoff):
    """As `_tensorflow`, for a static even length `n = 2m`, with complex
    FFTs of length `m` in place of the real ones of length `n`.

    TensorFlow's `rfft` and `irfft` take about twice the time of a complex
    FFT of half the length on the longest series (66 against 36 ms for
    both ways on 2**22 float32 samples, op by op or under XLA alike;
    1.1-1.25× from 2**19 samples on, and less or nothing below), so the
    samples are packed in pairs, `z[p] = x[2p] + i·x[2p+1]` (`_pack`), and
    the spectrum of `x` is untangled from `Z = fft(z)` (Press et al.,
    *Numerical Recipes*, 3rd ed., §12.3): with `Z[m] = Z[0]` and
    `w = exp(-2πi/n)`, the even and odd samples' spectra are
    `E[k] = (Z[k] + conj Z[m-k]) / 2` and `O[k] = (Z[k] - conj Z[m-k]) / 2i`,
    and `X[k] = E[k] + w**k·O[k]` for `0 ≤ k ≤ m`. After the product
    `Y = X·(i·k)**order`, the inverse runs the same steps backwards
    (`_packed_product`), and `ifft` of the result holds the even samples of
    the derivative in its real part and the odd ones in its imaginary part
    (`_unpack`).
    """
    import tensorflow as tf

    dtype = keras.backend.standardize_dtype(x.dtype)
    spectrum = tf.signal.fft(_pack(x, n))
    packed = tf.signal.ifft(
        _packed_product(spectrum, n, dtype, order, spacing, cutoff))
    return _unpack(packed, x.shape)


def _pack(x, n):
    """`x[..., 2p] + i·x[..., 2p + 1]`: a complex series of half the
    static even length `n` of `x`'s last axis."""
    import tensorflow as tf

    shape = tf.shape(x)
    pairs = tf.reshape(x, tf.concat([shape[:-1], [n // 2, 2]], 0))
    return tf.complex(pairs[..., 0], pairs[..., 1])


def _unpack(packed, shape):
    """The real series of `shape` whose samples `2p` and `2p + 1` are
    the real and imaginary parts of `packed[..., p]`."""
    import tensorflow as tf

    y = tf.stack([tf.math.real(packed), tf.math.imag(packed)], -1)
    return tf.reshape(y, shape)


def _packed_product(spectrum, n, dtype, order, spacing, cutoff):
    """`Z = fft(z)` of a packed series (`_pack`) of static even length
    `n`, untangled into the real spectrum `X`, multiplied by
    `(i·k)**order`, and tangled again into `Ye + i·Yo` for `ifft`
    (`_packed`'s steps). Everything here is elementwise, fused by XLA;
    the twiddles `w**k` are rounded once from float64 (`_twiddles`)."""
    import tensorflow as tf

    m = n // 2
    real, imag = tf.math.real(spectrum), tf.math.imag(spectrum)
    real = tf.concat([real, real[..., :1]], -1)  # Z[m] = Z[0]
    imag = tf.concat([imag, imag[..., :1]], -1)
    cos, sin = _twiddles(n, dtype)

    def halves(real, imag, sign):
        """`(A + conj A[m - k]) / 2` and `(A - conj A[m - k]) / 2`,
        the second times `-i` (sign -1) or 1 (sign 1)."""
        real_back, imag_back = tf.reverse(real, [-1]), tf.reverse(imag, [-1])
        even = ((real + real_back) / 2, (imag - imag_back) / 2)
        odd = ((real - real_back) / 2, (imag + imag_back) / 2)
        if sign < 0:
            odd = (odd[1], -odd[0])
        return even, odd

    (even_r, even_i), (odd_r, odd_i) = halves(real, imag, -1)
    # X = E + w**k·O, with w**k = cos - i·sin.
    real = even_r + cos * odd_r + sin * odd_i
    imag = even_i + cos * odd_i - sin * odd_r
    multiplier = _multiplier(n, m + 1, dtype, order, spacing, cutoff)
    if order % 2:
        real, imag = -multiplier * imag, multiplier * real
    else:
        real, imag = multiplier * real, multiplier * imag
    (even_r, even_i), (odd_r, odd_i) = halves(real, imag, 1)
    # Yo = D·conj(w**k), with conj(w**k) = cos + i·sin; then Ye + i·Yo.
    odd_r, odd_i = cos * odd_r - sin * odd_i, cos * odd_i + sin * odd_r
    return tf.complex((even_r - odd_i)[..., :m], (even_i + odd_r)[..., :m])


@functools.lru_cache(maxsize=4)  # each as large as half an input series
def _twiddles(n, dtype):
    """`cos(2πk/n)` and `sin(2πk/n)` for `0 ≤ k ≤ n/2`, each rounded once
    from float64 to `dtype`: eager tensors, which a compiled function
    takes as inputs rather than embedding them as constants (n/2 + 1 of
    them, as large as half the input)."""
    import numpy as np
    import tensorflow as tf

    angle = 2 * np.pi * np.arange(n // 2 + 1) / n
    with tf.init_scope():
        return (tf.constant(np.cos(angle).astype(dtype)),
                tf.constant(np.sin(angle).astype(dtype)))


def _multiplier(n, bins, dtype, order, spacing, cutoff, xp=ops):
    """`i**-(order % 2) · (i·k_j)**order` for the `bins` modes of a real
    FFT of length `n`, a real vector: `k_j**order` times the sign of
    `i**(order - order % 2)`, zero where a mode is dropped (the Nyquist
    mode of an even length for odd orders, modes above `cutoff`). In
    NumPy with `xp=kernels.NUMPY`, by the same operations in `dtype`."""
    dtype = keras.backend.standardize_dtype(dtype)
    j = xp.cast(xp.arange(bins), dtype)
    length = xp.cast(n, dtype)
    k = j / length * (2 * math.pi / spacing)
    # Repeated products, not Keras' `power`, which with the `arange` took
    # ≈ 2 ms eagerly on TensorFlow for 2**17 + 1 modes; the whole
    # derivative of those 2**18 samples takes ≈ 3.6 ms without it.
    multiplier = k
    for _ in range(order - 1):
        multiplier = multiplier * k
    if order % 4 in (2, 3):
        multiplier = -multiplier
    keep = None
    if order % 2:  # the Nyquist mode of an even length (see the docstring)
        keep = xp.not_equal(2 * j, length)
    if cutoff is not None:
        below = xp.less_equal(2 * j, cutoff * length)
        keep = below if keep is None else xp.logical_and(keep, below)
    if keep is not None:
        multiplier = xp.where(keep, multiplier, xp.zeros_like(multiplier))
    return multiplier
