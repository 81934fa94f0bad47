"""spectral_derivative and SpectralDerivative1D: closed forms, the Nyquist
mode, cutoff, NumPy's FFT and pysindy, gradients, the layer contract, errors.
"""

import keras
import numpy as np
import pytest

import fdlayers
import per_backend
from fdlayers import spectral
from harness import run_layer_test

SD = fdlayers.SpectralDerivative1D
# Keras' own call of jax2tf, on JAX (test_model_export).
pytestmark = pytest.mark.filterwarnings(
    "ignore:The `native_serialization` parameter is deprecated"
    ":DeprecationWarning")
# JAX computes in float32 unless 64-bit types are enabled (conftest.py does).
FLOAT64 = keras.backend.standardize_dtype(
    keras.ops.convert_to_tensor(np.zeros(1)).dtype) == "float64"


def _numpy(tensor):
    return per_backend.numpy(tensor)


def _reference(x, order, spacing, cutoff=None, axis=1):
    """The derivative by NumPy's complex FFT over all n modes, float64:
    mode k = 2π·fftfreq(n, spacing) times (i·k)**order; the Nyquist mode
    (fftfreq's -n/2) zeroed for odd orders; modes |k| > cutoff·π/spacing
    zeroed."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[axis]
    k = 2 * np.pi * np.fft.fftfreq(n, spacing)
    multiplier = (1j * k) ** order
    j = np.abs(np.fft.fftfreq(n) * n)
    if order % 2:
        multiplier[2 * j == n] = 0
    if cutoff is not None:
        multiplier[2 * j > cutoff * n] = 0
    shape = [1] * x.ndim
    shape[axis] = n
    y = np.fft.ifft(np.fft.fft(x, axis=axis) * multiplier.reshape(shape),
                    axis=axis)
    return y.real


def _matrix(n, order, spacing, cutoff=None):
    """The derivative as an n × n matrix (its columns: unit samples)."""
    return _reference(np.eye(n), order, spacing, cutoff, axis=0)


def _assert_relative(actual, desired, rtol):
    scale = max(np.abs(desired).max(), 1e-300)
    np.testing.assert_allclose(actual, desired, rtol=0, atol=rtol * scale)


# ---------------------------------------------------------------------------
# Closed forms.

def _trigonometric(n, spacing, order, nyquist=0.0):
    """Samples of Σ_m a_m cos(ω_m t) + b_m sin(ω_m t) for every m < n/2
    (ω_m = 2πm / (n·spacing)), plus `nyquist`·cos(π t / spacing) for even
    n, and the closed-form `order`-th derivative at the samples."""
    t = np.arange(n) * spacing
    rng = np.random.default_rng(n)
    x = np.full(n, 0.3)
    d = np.zeros(n)
    for m in range(1, (n + 1) // 2):
        a, b = rng.uniform(-1, 1, 2)
        w = 2 * np.pi * m / (n * spacing)
        phase = order * np.pi / 2  # d/dt cos(wt + φ) = w·cos(wt + φ + π/2)
        x += a * np.cos(w * t) + b * np.sin(w * t)
        d += w ** order * (a * np.cos(w * t + phase) + b * np.sin(w * t + phase))
    if n % 2 == 0:
        w = np.pi / spacing
        x += nyquist * np.cos(w * t)  # (-1)**i
        if order % 2 == 0:
            # Even orders keep the Nyquist mode: (-w²)**(order/2)·cos.
            d += nyquist * (-w * w) ** (order // 2) * np.cos(w * t)
        # Odd orders: the interpolant's derivative there is ∝ sin(π i) = 0.
    return x, d


@pytest.mark.parametrize("n", [16, 17])
@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_trigonometric_polynomials_are_exact_to_rounding(n, order):
    """Every mode below Nyquist at once, and for even n a Nyquist mode."""
    spacing = 0.3
    x, want = _trigonometric(n, spacing, order, nyquist=0.7)
    dtype = "float64" if FLOAT64 else "float32"
    y = _numpy(fdlayers.spectral_derivative(
        x.reshape(1, n, 1).astype(dtype), order, spacing))[0, :, 0]
    _assert_relative(y, want, 1e-13 if FLOAT64 else 1e-5)


def test_nyquist_mode_odd_orders_zero_even_orders_keep():
    """(-1)**i alone: the interpolant is cos(π t/h), whose odd derivatives
    vanish at every sample and whose second is -(π/h)²·(-1)**i."""
    n, h = 8, 0.5
    x = (-1.0) ** np.arange(n)
    for order in (1, 2, 3, 4):
        y = _numpy(fdlayers.spectral_derivative(x[None], order, h))[0]
        want = 0 * x if order % 2 else (-(np.pi / h) ** 2) ** (order // 2) * x
        np.testing.assert_allclose(y, want, rtol=1e-13, atol=1e-9)


def test_cutoff_keeps_the_boundary_mode_and_zeroes_above():
    n, h = 64, 0.1
    t = np.arange(n) * h
    w = 2 * np.pi / (n * h)
    x = (np.sin(2 * w * t) + 0.1 * np.sin(10 * w * t))[None]
    low = 2 * w * np.cos(2 * w * t)
    high = 10 * w * 0.1 * np.cos(10 * w * t)
    # Mode j is kept when 2j ≤ cutoff·n: 10 is on the boundary of 20/64.
    cases = [(None, low + high), (1.0, low + high), (20 / 64, low + high),
             (19 / 64, low), (4 / 64, low), (3 / 64, 0 * low)]
    for cutoff, want in cases:
        y = _numpy(fdlayers.spectral_derivative(x, 1, h, cutoff))[0]
        np.testing.assert_allclose(y, want, rtol=0, atol=1e-12, err_msg=cutoff)


def test_even_orders_keep_the_nyquist_mode_only_at_cutoff_one():
    x = (-1.0) ** np.arange(8)[None]
    full = _numpy(fdlayers.spectral_derivative(x, 2, 1.0, cutoff=1.0))
    below = _numpy(fdlayers.spectral_derivative(x, 2, 1.0, cutoff=0.99))
    np.testing.assert_allclose(full, -np.pi ** 2 * x, rtol=1e-13)
    np.testing.assert_allclose(below, 0 * x, atol=1e-12)


# ---------------------------------------------------------------------------
# Against NumPy's FFT and pysindy, float64.

CASES = [  # (shape, order, spacing, cutoff, axis)
    ((3, 50, 2), 1, 0.1, None, 1),
    ((3, 51, 2), 2, 0.7, None, 1),
    ((2, 4, 33), 3, 2.0, 0.5, 2),
    ((2, 32, 3), 4, 0.05, 0.8, -2),
    ((40, 3), 1, 1.0, 0.25, 0),
    ((3,), 2, 1.0, None, 0),
    ((2, 5, 6, 4), 1, 0.2, None, 2),
]


@pytest.mark.parametrize("shape,order,spacing,cutoff,axis", CASES)
def test_equals_numpy_fft_differentiation(shape, order, spacing, cutoff, axis,
                                          rng):
    x = rng.standard_normal(shape)
    want = _reference(x, order, spacing, cutoff, axis)
    y = _numpy(fdlayers.spectral_derivative(x, order, spacing, cutoff, axis))
    assert y.shape == x.shape
    _assert_relative(y, want, 1e-12 if FLOAT64 else 1e-5)


@pytest.mark.parametrize("n", [40, 41])
@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_equals_pysindy_spectral_derivative(n, order, rng):
    differentiation = pytest.importorskip("pysindy.differentiation")
    x = rng.standard_normal((n, 3))
    want = differentiation.SpectralDerivative(d=order, axis=0)(x, t=0.25)
    y = _numpy(fdlayers.spectral_derivative(x, order, 0.25, axis=0))
    _assert_relative(y, want, 1e-12 if FLOAT64 else 1e-5)


# ---------------------------------------------------------------------------
# Gradients: the op is linear, y = D x, so the input gradient of <y, u> is
# Dᵀu, and differentiating that again with respect to u gives D s.

@pytest.mark.parametrize("mode", per_backend.MODES)
@pytest.mark.parametrize("n,order,cutoff", [(12, 1, None), (12, 2, None),
                                            (13, 3, 0.5)])
def test_gradient_is_the_transpose(mode, n, order, cutoff, rng):
    h = 0.4
    matrix = _matrix(n, order, h, cutoff)
    x, upstream, second = (rng.standard_normal((2, n, 3)) for _ in range(3))
    run = per_backend.compiled(per_backend.value_and_gradients(
        lambda v: fdlayers.spectral_derivative(v, order, h, cutoff)), mode)
    y, dx, d2 = per_backend.numpy(run(*map(per_backend.tensor,
                                           (x, upstream, second))))
    tol = 1e-12 if FLOAT64 else 1e-4
    _assert_relative(y, np.einsum("ij,bjc->bic", matrix, x), tol)
    _assert_relative(dx, np.einsum("ji,bjc->bic", matrix, upstream), tol)
    _assert_relative(d2, np.einsum("ij,bjc->bic", matrix, second), tol)


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("shape,order,spacing,cutoff,axis", CASES)
def test_eager_numpy_path_equals_op_by_op(shape, order, spacing, cutoff, axis,
                                          monkeypatch, rng):
    """Small eager calls on the CPU run in NumPy's FFT: the values, the
    gradient and the second derivative of op by op (TensorFlow's FFTs, as
    on other devices), to rounding; and no gradient machinery where no
    tape watches."""
    from fdlayers import dispatch

    x, upstream, second = (rng.standard_normal(shape) for _ in range(3))
    fn = lambda v: fdlayers.spectral_derivative(  # noqa: E731
        v, order, spacing, cutoff, axis)
    args = [per_backend.tensor(a) for a in (x, upstream, second)]
    taken = []
    real = spectral._in_numpy
    monkeypatch.setattr(spectral, "_in_numpy",
                        lambda *a: taken.append(a) or real(*a))
    attached = []
    real_attach = dispatch._with_transpose_gradient
    monkeypatch.setattr(dispatch, "_with_transpose_gradient",
                        lambda *a: attached.append(a) or real_attach(*a))
    fn(args[0])
    assert taken and not attached
    numpy_path = per_backend.numpy(per_backend.value_and_gradients(fn)(*args))
    assert attached
    monkeypatch.setattr(dispatch, "_EAGER_NUMPY", False)
    taken.clear()
    by_ops = per_backend.numpy(per_backend.value_and_gradients(fn)(*args))
    assert not taken
    tol = 1e-12 if FLOAT64 else 1e-5
    for a, b in zip(numpy_path, by_ops):
        _assert_relative(a, b, tol)
    _assert_relative(numpy_path[0], _reference(x, order, spacing, cutoff,
                                               axis), tol)


@pytest.fixture
def fresh_pieces():
    """No compiled pieces from earlier tests: each test here traces its
    own, through the functions it counts."""
    cached = spectral._pieces  # (a test may replace it)
    cached.cache_clear()
    yield
    cached.cache_clear()


@pytest.mark.tensorflow_only  # the other backends have one path
@pytest.mark.parametrize("mode", ["eager", "tf.function", "XLA"])
@pytest.mark.parametrize("n", [30, 31])
def test_large_input_paths_equal_op_by_op(n, mode, monkeypatch, rng,
                                          fresh_pieces):
    """On TensorFlow large static inputs run in pieces (FFT ops and
    compiled functions around them), eagerly and in graphs, and even
    lengths with half-length complex FFTs there and in XLA programs; forced
    here on small inputs: the same result, and gradient, as op by op."""
    x = rng.standard_normal((2, n, 2))
    fn = lambda v: fdlayers.spectral_derivative(v, 3, 0.5, 0.9)  # noqa: E731
    args = [per_backend.tensor(a) for a in (x, x[::-1].copy(), x * 2)]
    pieces, packed = [], []

    def counted(calls, real):
        def wrapper(*args, **kwargs):
            calls.append(args)
            return real(*args, **kwargs)
        return wrapper

    def run(mode):  # a new function, traced anew
        return per_backend.numpy(per_backend.compiled(
            per_backend.value_and_gradients(fn), mode)(*args))

    plain = run("tf.function")
    monkeypatch.setattr(spectral, "_PIECES_MIN_SIZE", 0)
    monkeypatch.setattr(spectral, "_PACKED_MIN_LENGTH", 0)
    monkeypatch.setattr(spectral, "_pieces",
                        counted(pieces, spectral._pieces))
    monkeypatch.setattr(spectral, "_packed_product",
                        counted(packed, spectral._packed_product))
    forced = run(mode)
    assert bool(pieces) == (mode != "XLA")
    assert bool(packed) == (n % 2 == 0)
    for a, b in zip(plain, forced):
        _assert_relative(a, b, 1e-12 if FLOAT64 else 1e-5)
    _assert_relative(forced[0], _reference(x, 3, 0.5, 0.9),
                     1e-12 if FLOAT64 else 1e-5)


@pytest.mark.tensorflow_only
def test_pieces_keep_static_lengths_at_each_new_shape(monkeypatch, rng,
                                                      fresh_pieces):
    """Each shape gets its own compiled pieces, traced with its static
    length: pieces shared between shapes are traced again with `None`
    sizes at their second shape, where the half-length FFTs cannot run."""
    monkeypatch.setattr(spectral, "_PIECES_MIN_SIZE", 0)
    monkeypatch.setattr(spectral, "_PACKED_MIN_LENGTH", 0)
    lengths = []
    real_product = spectral._packed_product

    def product(spectrum, n, *args):
        lengths.append(n)
        return real_product(spectrum, n, *args)

    monkeypatch.setattr(spectral, "_packed_product", product)
    fn = lambda v: fdlayers.spectral_derivative(v, 2, 0.5)  # noqa: E731
    for shape in [(2, 30, 2), (1, 40, 1), (3, 30, 1)]:
        x = rng.standard_normal(shape)
        y = per_backend.numpy(per_backend.compiled(fn, "tf.function")(
            per_backend.tensor(x)))
        _assert_relative(y, _reference(x, 2, 0.5), 1e-12 if FLOAT64 else 1e-5)
    assert lengths == [30, 40, 30]


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("forced", [None, "eager", "tf.function"])
@pytest.mark.parametrize("shape,axis", [((1, 30, 1), 1), ((1, 1, 31), 2),
                                        ((32,), 0), ((30, 1), 0)])
def test_one_series_is_transformed_at_rank_one(shape, axis, forced,
                                               monkeypatch, rng):
    """One series goes through TensorFlow's FFTs as a tensor of rank 1,
    op by op and, forced, in the pieces (with half-length FFTs for even
    lengths): the closed-form values, gradients and second derivatives."""
    x = rng.standard_normal(shape)
    if forced:
        monkeypatch.setattr(spectral, "_PIECES_MIN_SIZE", 0)
        monkeypatch.setattr(spectral, "_PACKED_MIN_LENGTH", 0)
    fn = lambda v: fdlayers.spectral_derivative(  # noqa: E731
        v, 3, 0.5, 0.9, axis=axis)
    args = [per_backend.tensor(a) for a in (x, x * 2, x[..., ::-1].copy())]
    mode = forced or "eager"
    y, dx, d2 = per_backend.numpy(per_backend.compiled(
        per_backend.value_and_gradients(fn), mode)(*args))
    tol = 1e-12 if FLOAT64 else 1e-5
    _assert_relative(y, _reference(x, 3, 0.5, 0.9, axis), tol)
    # Odd order: the transpose is minus the derivative.
    _assert_relative(dx, -_reference(x * 2, 3, 0.5, 0.9, axis), tol)
    _assert_relative(d2, _reference(x[..., ::-1], 3, 0.5, 0.9, axis), tol)


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_pieces_along_any_axis(axis, monkeypatch, rng):
    """The pieces move the steps axis last and back, as op by op does."""
    x = rng.standard_normal((6, 8, 10))
    fn = lambda v: fdlayers.spectral_derivative(  # noqa: E731
        v, 1, 0.5, axis=axis)
    plain = per_backend.numpy(per_backend.compiled(fn, "tf.function")(
        per_backend.tensor(x)))
    monkeypatch.setattr(spectral, "_PIECES_MIN_SIZE", 0)
    monkeypatch.setattr(spectral, "_PACKED_MIN_LENGTH", 0)
    forced = per_backend.numpy(per_backend.compiled(fn, "tf.function")(
        per_backend.tensor(x)))
    _assert_relative(forced, plain, 1e-12 if FLOAT64 else 1e-5)
    _assert_relative(forced, _reference(x, 1, 0.5, axis=axis),
                     1e-12 if FLOAT64 else 1e-5)


# ---------------------------------------------------------------------------
# Dtypes.

def test_dtypes(rng):
    x = rng.standard_normal((2, 24, 2))
    want = _reference(x, 1, 0.5)
    y32 = fdlayers.spectral_derivative(x.astype("float32"), 1, 0.5)
    assert keras.backend.standardize_dtype(y32.dtype) == "float32"
    _assert_relative(_numpy(y32), want, 1e-5)
    for half in ("float16", "bfloat16"):
        # Transformed in float32, returned in the input's dtype.
        xh = keras.ops.cast(x, half)
        y = fdlayers.spectral_derivative(xh, 1, 0.5)
        assert keras.backend.standardize_dtype(y.dtype) == half
        in_float32 = fdlayers.spectral_derivative(keras.ops.cast(xh, "float32"),
                                                  1, 0.5)
        np.testing.assert_array_equal(
            _numpy(keras.ops.cast(y, "float32")),
            _numpy(keras.ops.cast(keras.ops.cast(in_float32, half), "float32")))
    integers = np.arange(24).reshape(1, 24) % 5
    y = fdlayers.spectral_derivative(integers, 1)
    assert keras.backend.standardize_dtype(y.dtype) == keras.config.floatx()
    _assert_relative(_numpy(y), _reference(integers, 1, 1.0), 1e-5)


def test_zero_dimensional_spacing_and_cutoff_count_as_numbers(rng):
    x = rng.standard_normal((1, 20, 1))
    want = _numpy(fdlayers.spectral_derivative(x, 2, 0.5, 0.5))
    got = fdlayers.spectral_derivative(x, 2, np.array(0.5), np.float32(0.5))
    np.testing.assert_array_equal(_numpy(got), want)
    layer = SD(2, np.float64(0.5), np.array(0.5))
    assert layer.get_config()["spacing"] == 0.5
    assert type(layer.get_config()["cutoff"]) is float


# ---------------------------------------------------------------------------
# The layer.

@pytest.mark.parametrize("kwargs,shape", [
    ({"order": 1, "spacing": 0.25}, (2, 32, 3)),
    ({"order": 2, "spacing": 0.5, "cutoff": 0.6, "axis": 2}, (2, 3, 31)),
])
def test_layer_contract(kwargs, shape, rng, tmp_path):
    x = rng.standard_normal(shape).astype("float32")
    want = _reference(x, kwargs["order"], kwargs["spacing"],
                      kwargs.get("cutoff"), kwargs.get("axis", 1))
    run_layer_test(SD, kwargs, x, expected_output=want, rtol=1e-5,
                   atol=1e-5 * np.abs(want).max(), tmp_path=tmp_path)


def test_layer_in_a_model_that_trains(rng):
    """The derivative of a Dense layer's output, inside fit."""
    x = rng.standard_normal((8, 16, 2)).astype("float32")
    model = keras.Sequential([keras.Input((None, 2)), keras.layers.Dense(2),
                              SD(1, spacing=0.5)])
    model.compile("sgd", "mse")
    target = _reference(x, 1, 0.5).astype("float32")
    history = model.fit(x, target, epochs=2, batch_size=4, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


def test_masks_are_refused():
    with pytest.raises(ValueError, match="does not support masks"):
        keras.Sequential([keras.Input((None, 2)), keras.layers.Masking(),
                          SD()])
    layer = SD()
    with pytest.raises(ValueError, match="does not support masks"):
        layer(np.ones((1, 8, 1), "float32"), mask=np.ones((1, 8), bool))


# ---------------------------------------------------------------------------
# Errors.

@pytest.mark.parametrize("kwargs,error,match", [
    ({"order": 0}, ValueError, r"`order` must be a positive integer. Received: order=0"),
    ({"order": 17}, ValueError, r"`order` must be at most 16.*order=17"),
    ({"order": 1.0}, TypeError, r"`order`.*order=1.0"),
    ({"order": True}, TypeError, r"`order`"),
    ({"spacing": 0}, ValueError, r"`spacing` must be a positive finite"),
    ({"spacing": float("inf")}, ValueError, r"`spacing`.*inf"),
    ({"spacing": "a"}, TypeError, r"`spacing`"),
    ({"spacing": [0.1, 0.2]}, TypeError, r"`spacing`"),
    ({"cutoff": 0}, ValueError, r"`cutoff` must be None or a number in \(0, 1\].*cutoff=0"),
    ({"cutoff": 1.5}, ValueError, r"cutoff=1.5"),
    ({"cutoff": float("nan")}, ValueError, r"cutoff=nan"),
    ({"cutoff": "low"}, TypeError, r"`cutoff`.*'low'"),
    ({"cutoff": True}, TypeError, r"`cutoff`"),
    ({"axis": 1.0}, TypeError, r"`axis` must be an integer"),
])
def test_argument_errors_name_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        SD(**kwargs)
    with pytest.raises(error, match=match):
        fdlayers.spectral_derivative(np.ones((1, 8, 1)), **kwargs)


def test_input_errors():
    with pytest.raises(ValueError, match="`axis` must not be the batch axis"):
        SD(axis=0)
    with pytest.raises(ValueError, match="batch axis"):
        SD(axis=-3)(np.ones((2, 8, 1), "float32"))
    with pytest.raises(ValueError, match=r"rank ≥ 2"):
        SD()(np.ones((8,), "float32"))
    with pytest.raises(ValueError, match=r"`axis` must be in \[-3, 3\).*axis=3"):
        fdlayers.spectral_derivative(np.ones((1, 8, 1)), axis=3)
    with pytest.raises(ValueError, match="at least 3 samples.*Received: 2 steps"):
        fdlayers.spectral_derivative(np.ones((1, 2, 1)))
    with pytest.raises(ValueError, match="at least 3 samples"):
        keras.Sequential([keras.Input((2, 1)), SD()])
    with pytest.raises(TypeError, match="`x` must hold real numbers"):
        fdlayers.spectral_derivative(np.ones((1, 8), complex))
    # Three samples are enough.
    y = _numpy(fdlayers.spectral_derivative(np.array([[0.0, 1.0, 0.0]]), 1))
    np.testing.assert_allclose(y, _reference([[0.0, 1.0, 0.0]], 1, 1.0),
                               atol=1e-6)


def test_empty_batches_give_empty_results():
    for shape, axis in (((0, 8, 2), 1), ((2, 8, 0), 1), ((0, 8), -1)):
        y = fdlayers.spectral_derivative(np.zeros(shape, "float32"), axis=axis)
        assert tuple(y.shape) == shape
    assert tuple(SD()(np.zeros((0, 8, 2), "float32")).shape) == (0, 8, 2)


@pytest.mark.tensorflow_only
def test_too_short_at_run_time_in_a_graph_and_any_length_otherwise():
    import tensorflow as tf

    fn = tf.function(lambda v: fdlayers.spectral_derivative(v, 2, 0.5),
                     input_signature=[tf.TensorSpec((None, None), tf.float64)])
    for n in (3, 10, 11):
        x = np.random.default_rng(n).standard_normal((2, n))
        np.testing.assert_allclose(fn(x).numpy(), _reference(x, 2, 0.5),
                                   atol=1e-10)
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least 3"):
        fn(np.ones((1, 2)))


@pytest.mark.skipif(per_backend.BACKEND == "torch",
                    reason="Keras 3.15 cannot export on PyTorch (test_export.py)")
def test_model_export(tmp_path):
    """Any length on TensorFlow; on JAX a fixed one (its FFTs take no
    symbolic length), and `None` is refused by name."""
    length = None if per_backend.BACKEND == "tensorflow" else 16
    model = keras.Sequential([keras.Input((length, 2)), SD(2, spacing=0.5)])
    model.export(str(tmp_path / "exported"), verbose=False)
    import tensorflow as tf

    served = tf.saved_model.load(str(tmp_path / "exported"))
    for n in (7, 16) if length is None else (16,):
        x = np.random.default_rng(n).standard_normal((1, n, 2)).astype("float32")
        np.testing.assert_allclose(served.serve(x).numpy(),
                                   _reference(x, 2, 0.5), rtol=0, atol=1e-3)
    if per_backend.BACKEND == "jax":
        model = keras.Sequential([keras.Input((None, 2)), SD()])
        with pytest.raises(ValueError, match="needs a concrete length"):
            model.export(str(tmp_path / "symbolic"), verbose=False)
