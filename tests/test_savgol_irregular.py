"""SavitzkyGolay1D on coordinates and per-sample time stamps.

References are independent of fdlayers: `numpy.polyfit` on each point's
window (the windows taken from the documented rules), the uniform layer
(itself checked against scipy in test_savgol.py) where the stamps are
evenly spaced, and a simulated jittered recording with a known velocity.
"""

import math
from fractions import Fraction

import keras
import numpy as np
import pytest

import fdlayers
import per_backend
from fdlayers import ops as fd_ops
from fdlayers import savgol
from harness import input_gradient, run_layer_test
from per_backend import numpy, tensor

SG = fdlayers.SavitzkyGolay1D
FD = fdlayers.FiniteDifference1D


def jittered(rng, n, jitter=0.15, start=0.0, step=1.0):
    """Strictly increasing stamps: steps of `step` ± `jitter`·step."""
    return start + np.cumsum(step * (1 + rng.uniform(-jitter, jitter, n)))


def reference_matrix(t, order, window, polyorder, padding="same"):
    """Row i: the weights of the `order`-th derivative at t[i] of
    `numpy.polyfit(t[window] - t[i], ·, polyorder)`, window by the rules."""
    n, r = len(t), window // 2
    rows = []
    for i in range(n):
        if padding == "valid" and not r <= i < n - r:
            continue
        start = min(max(i - r, 0), n - window)
        offsets = t[start:start + window] - t[i]
        # One fit per unit sample: column j's coefficients, highest first.
        coefficients = np.polyfit(offsets, np.eye(window), polyorder)
        row = np.zeros(n)
        row[start:start + window] = (coefficients[polyorder - order]
                                     * math.factorial(order))
        rows.append(row)
    return np.array(rows)


# Low and high degrees (a loop from degree 5 on), smoothing, 'valid', and a
# window applied gathered (from kernels.GATHERED_MIN_WIDTH on).
CASES = [(2, 11, 4, "same"), (0, 7, 3, "valid"), (3, 9, 8, "same"),
         (1, 41, 3, "same")]


@pytest.mark.parametrize("order,window,polyorder,padding", CASES)
def test_static_and_per_sample_equal_polyfit_on_each_window(
        order, window, polyorder, padding, rng):
    n = 50
    t = np.stack([jittered(rng, n, start=s) for s in (0.0, 100.0)])
    x = rng.normal(size=(2, n, 2))
    matrices = [reference_matrix(t[b], order, window, polyorder, padding)
                for b in range(2)]
    want = np.stack([matrices[b] @ x[b] for b in range(2)])
    atol = 1e-9 * np.abs(want).max()
    per_sample = numpy(SG(order, window, polyorder, padding=padding,
                          dtype="float64")([x, t]))
    np.testing.assert_allclose(per_sample, want, rtol=0, atol=atol)
    # (Stamps from 100 on for static coordinates.)
    static = numpy(SG(order, window, polyorder, spacing=t[1],
                      padding=padding, dtype="float64")(x[1:]))
    np.testing.assert_allclose(static[0], want[1], rtol=0, atol=atol)


def exact_weights(nodes, order, polyorder):
    """The least-squares weights at 0, in rationals: the normal equations
    `G y = order!·e_order` (`G[p][q] = Σ s^(p+q)`) solved exactly, then
    `w_j = Σ_p y_p s_j^p`."""
    s = [Fraction(float(v)) for v in nodes]
    size = polyorder + 1
    rows = [[sum(v ** (p + q) for v in s) for q in range(size)]
            + [Fraction(math.factorial(order) * (p == order))]
            for p in range(size)]
    for col in range(size):  # Gauss–Jordan; G is positive definite
        rows[col] = [v / rows[col][col] for v in rows[col]]
        for r in range(size):
            if r != col:
                rows[r] = [a - rows[r][col] * b
                           for a, b in zip(rows[r], rows[col])]
    y = [row[-1] for row in rows]
    return np.array([float(sum(c * v ** p for p, c in enumerate(y)))
                     for v in s])


@pytest.mark.parametrize("window,polyorder,order", [(15, 14, 1), (41, 10, 3)])
def test_float64_weights_are_the_exact_least_squares_ones(window, polyorder,
                                                          order, rng):
    """Up to the degree where the monomial Vandermonde matrix is hopeless
    and a fit without reorthogonalisation drifts (polyorder = window - 1),
    at an edge and in the middle of a jittered window."""
    d = jittered(rng, window)
    for point in (0, window // 2):
        nodes = (d - d[point]) / ((d[-1] - d[0]) / 2)
        want = exact_weights(nodes, order, polyorder)
        got = savgol.local_weights(nodes, order, polyorder)
        np.testing.assert_allclose(got, want, rtol=0,
                                   atol=1e-13 * np.abs(want).max())


@pytest.mark.parametrize("order,window,polyorder,padding",
                         [(1, 7, 3, "same"), (2, 9, 4, "valid")])
def test_evenly_spaced_stamps_equal_the_uniform_layer(order, window, polyorder,
                                                      padding, rng):
    n, h = 40, 0.25
    t = 3.0 + h * np.arange(n)
    x = rng.normal(size=(2, n, 3))
    uniform = numpy(SG(order, window, polyorder, spacing=h, padding=padding,
                       dtype="float64")(x))
    static = numpy(SG(order, window, polyorder, spacing=t, padding=padding,
                      dtype="float64")(x))
    per_sample = numpy(SG(order, window, polyorder, padding=padding,
                          dtype="float64")([x, np.tile(t, (2, 1))]))
    atol = 1e-10 * np.abs(uniform).max()
    np.testing.assert_allclose(static, uniform, rtol=0, atol=atol)
    np.testing.assert_allclose(per_sample, uniform, rtol=0, atol=atol)


@pytest.mark.parametrize("padding,window", [("same", 27), ("valid", 7)])
@pytest.mark.parametrize("mode", per_backend.MODES)
def test_value_and_gradient_match_the_dense_reference(padding, window, mode,
                                                      rng):
    """Value, gradient and the gradient's own derivative for static and
    per-sample stamps, windows applied column by column and, from
    `kernels.GATHERED_MIN_WIDTH` on, gathered; on TensorFlow, `tf.function`
    traces for lengths known only at run time."""
    n, order, polyorder = 33, 1, 2
    t = np.stack([jittered(rng, n) for _ in range(2)])
    x = rng.normal(size=(2, n, 3))
    matrices = [reference_matrix(t[b], order, window, polyorder, padding)
                for b in range(2)]
    upstream = rng.normal(size=(2, matrices[0].shape[0], 3))
    second = rng.normal(size=x.shape)
    static_layer = SG(order, window, polyorder, spacing=t[0], padding=padding,
                      dtype="float64")
    sample_layer = SG(order, window, polyorder, padding=padding,
                      dtype="float64")

    def value_and_gradient(x, t, upstream, second):
        static = per_backend.value_and_gradients(static_layer)
        sample = per_backend.value_and_gradients(lambda x: sample_layer([x, t]))
        return (*static(x, upstream, second), *sample(x, upstream, second))

    if mode == "tf.function":
        import tensorflow as tf

        spec = [tf.TensorSpec([None, None, 3], tf.float64),
                tf.TensorSpec([None, None], tf.float64),
                tf.TensorSpec([None, None, 3], tf.float64),
                tf.TensorSpec([None, None, 3], tf.float64)]
        value_and_gradient = tf.function(value_and_gradient,
                                         input_signature=spec)
    else:
        value_and_gradient = per_backend.compiled(value_and_gradient, mode)
    y_static, g_static, s_static, y_sample, g_sample, s_sample = numpy(
        value_and_gradient(tensor(x), tensor(t), tensor(upstream),
                           tensor(second)))
    tol = 1e-10
    np.testing.assert_allclose(y_static[0], matrices[0] @ x[0], atol=tol)
    np.testing.assert_allclose(g_static[0], matrices[0].T @ upstream[0],
                               atol=tol)
    np.testing.assert_allclose(s_static[0], matrices[0] @ second[0], atol=tol)
    for b in range(2):
        np.testing.assert_allclose(y_sample[b], matrices[b] @ x[b], atol=tol)
        np.testing.assert_allclose(g_sample[b], matrices[b].T @ upstream[b],
                                   atol=tol)
        np.testing.assert_allclose(s_sample[b], matrices[b] @ second[b],
                                   atol=tol)


# TensorFlow's paths; the compiled modes, and the other backends' eager
# calls, are covered above.
@pytest.mark.tensorflow_only
@pytest.mark.parametrize("path", [p for p in per_backend.PATHS
                                  if p not in per_backend.MODES])
def test_every_execution_path_of_per_sample_stamps(path, monkeypatch, rng):
    wrap = per_backend.on_path(path, monkeypatch)
    n = 30
    t = np.stack([jittered(rng, n) for _ in range(2)])
    x = rng.normal(size=(2, n, 1))
    for padding, window in (("same", 9), ("valid", 9), ("same", 27)):
        layer = SG(1, window, 3, padding=padding, dtype="float64")
        got = numpy(wrap(lambda x, t: layer([x, t]))(tensor(x), tensor(t)))
        for b in range(2):
            want = reference_matrix(t[b], 1, window, 3, padding) @ x[b]
            np.testing.assert_allclose(got[b], want, atol=1e-10)


def test_float32_stamps_relative_to_the_start_and_a_wide_window(rng):
    """Weights computed in float32 (`kernels.savgol_loop`), a window of 61
    at degree 6: within a few 1e-6 of the float64 fit, relative."""
    n = 200
    t = jittered(rng, n, step=0.01)
    x = np.sin(3 * t)[None, :, None] + rng.normal(0, 0.01, (1, n, 1))
    want = reference_matrix(t, 1, 61, 6) @ x[0]
    got = numpy(SG(1, 61, 6)([x.astype("float32"),
                              t[None].astype("float32")]))
    np.testing.assert_allclose(got[0], want, rtol=0,
                               atol=2e-5 * np.abs(want).max())


def test_jittered_recording_beats_finite_differences_on_the_same_stamps(rng):
    """The IMU case: 100 Hz, intervals ±15 %, position noise 2 mm; the
    velocity of a cubic fit over 0.2 s beats the finite difference several
    fold (examples/imu_jitter.py prints the figures)."""
    n = 500
    t = np.stack([jittered(rng, n, step=0.01) for _ in range(2)])
    t -= t[:, :1]
    velocity = np.cos(2 * np.pi * 0.5 * t) + 0.5 * np.sin(2 * np.pi * 1.2 * t)
    position = (np.sin(2 * np.pi * 0.5 * t) / (2 * np.pi * 0.5)
                - 0.5 * np.cos(2 * np.pi * 1.2 * t) / (2 * np.pi * 1.2))
    x = (position + rng.normal(0, 0.002, t.shape))[..., None]
    inputs = [x.astype("float32"), t.astype("float32")]

    def rms(estimate):
        return np.sqrt(np.mean((numpy(estimate)[..., 0] - velocity) ** 2))

    fd = rms(FD(1)(inputs))
    sg = rms(SG(1, 21, 3)(inputs))
    assert sg < fd / 4, (sg, fd)


@pytest.mark.parametrize("window", [7, 27])  # by column; gathered
def test_masked_runs_are_fitted_as_their_own_sequences(window, rng):
    n = 70
    t = np.stack([jittered(rng, n) for _ in range(2)])
    x = rng.normal(size=(2, n, 1))
    mask = np.ones((2, n), bool)
    mask[0, 50:] = False
    mask[1, 6:9] = False  # a run of 6 (< window) and one of 61
    poisoned = np.where(mask[..., None], x, np.nan)
    layer = SG(1, window, 3, dtype="float64")
    y = numpy(layer([poisoned, t], mask=[tensor(mask), None]))
    out = numpy(fd_ops.savitzky_golay_mask(tensor(mask), 3, 1, window, 3,
                                           irregular=True))
    assert not np.isnan(y).any()
    assert not out[1, :6].any() and out[1, 9:].all() and out[0, :50].all()
    np.testing.assert_array_equal(y[~out], 0.0)
    for b, run in ((0, slice(0, 50)), (1, slice(9, n))):
        want = reference_matrix(t[b, run], 1, window, 3) @ x[b, run]
        np.testing.assert_allclose(y[b, run], want, atol=1e-10)
    # No masked step, nor a run too short for a fit, sends NaN back.
    grad = input_gradient(
        lambda v: layer([v, tensor(t)], mask=[tensor(mask), None]), poisoned)
    assert not np.isnan(grad).any()
    np.testing.assert_array_equal(grad[~mask], 0.0)


def test_masks_on_static_coordinates_and_with_valid(rng):
    n = 30
    t = jittered(rng, n)
    x = rng.normal(size=(2, n, 1))
    mask = np.ones((2, n), bool)
    mask[0, 20:] = False
    poisoned = np.where(mask[..., None], x, np.nan)
    # Static coordinates: the run 0..19 alone.
    y = numpy(SG(1, 7, 3, spacing=t, dtype="float64")(poisoned,
                                                      mask=tensor(mask)))
    np.testing.assert_allclose(y[0, :20], reference_matrix(t[:20], 1, 7, 3)
                               @ x[0, :20], atol=1e-10)
    np.testing.assert_array_equal(y[0, 20:], 0.0)
    # 'valid': an output is kept where its whole window is unmasked.
    times = np.tile(t, (2, 1))
    y = numpy(SG(1, 7, 3, padding="valid", dtype="float64")(
        [poisoned, times], mask=[tensor(mask), None]))
    want = reference_matrix(t, 1, 7, 3, "valid") @ x[0]
    np.testing.assert_allclose(y[0, :14], want[:14], atol=1e-10)
    np.testing.assert_array_equal(y[0, 14:], 0.0)
    np.testing.assert_allclose(y[1], reference_matrix(t, 1, 7, 3, "valid")
                               @ x[1], atol=1e-10)


# Layer contract: shapes, config, saving -------------------------------------

def test_static_coordinates_layer_contract(rng, tmp_path):
    t = jittered(rng, 24)
    x = rng.normal(size=(2, 24, 3)).astype("float32")
    want = reference_matrix(t, 1, 7, 3) @ x.astype(np.float64)
    run_layer_test(SG, {"order": 1, "window": 7, "polyorder": 3,
                        "spacing": t}, x, expected_output=want, rtol=1e-4,
                   atol=1e-4, dynamic_axes=[], tmp_path=tmp_path)
    config = SG(1, 7, 3, spacing=t).get_config()
    assert config["spacing"] == t.tolist()


def test_functional_model_with_per_sample_stamps_saves_and_loads(rng,
                                                                 tmp_path):
    x_in = keras.Input(shape=(None, 2))
    t_in = keras.Input(shape=(None,))
    layer = SG(order=1, window=7, polyorder=2)
    y = layer([x_in, t_in])
    assert tuple(y.shape) == (None, None, 2)
    assert layer.compute_output_shape([(None, 30, 2), (None, 30)]) == (
        None, 30, 2)
    model = keras.Model([x_in, t_in], keras.layers.Concatenate()([x_in, y]))
    n = 40
    t = np.stack([jittered(rng, n), jittered(rng, n)]).astype("float32")
    x = np.sin(t)[..., None] * np.array([1.0, 2.0], "float32")
    out = model.predict([x, t], verbose=0)
    want = np.stack([reference_matrix(t[b].astype(np.float64), 1, 7, 2)
                     @ x[b].astype(np.float64) for b in range(2)])
    np.testing.assert_allclose(out[..., 2:], want, atol=2e-5)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded.predict([x, t], verbose=0), out)
    assert model([x[:, :15], t[:, :15]]).shape == (2, 15, 4)


def test_mixed_precision_reads_and_returns_float32(rng):
    t = jittered(rng, 20).astype("float32")[None]
    x = rng.normal(size=(1, 20, 1)).astype("float32")
    full = numpy(SG(1, 5, 2)([x, t]))
    mixed = SG(1, 5, 2, dtype="mixed_float16")([x, t])
    assert keras.backend.standardize_dtype(mixed.dtype) == "float32"
    np.testing.assert_array_equal(numpy(mixed), full)


# Bad input --------------------------------------------------------------------

def test_periodic_is_refused_on_coordinates_and_stamps():
    with pytest.raises(ValueError, match="`padding` must be one of 'same', "
                       "'valid'.*Received: padding='periodic'"):
        SG(1, 5, 2, spacing=np.arange(8.0), padding="periodic")
    with pytest.raises(ValueError, match="padding='periodic'"):
        SG(1, 5, 2, padding="periodic")([np.zeros((1, 8, 1)),
                                         np.arange(8.0)[None]])


@pytest.mark.parametrize("spacing,message", [
    ([0.0, 1.0, 1.0, 2.0, 3.0], "strictly increasing"),
    ([0.0, 1.0, np.nan, 3.0, 4.0], "finite"),
    ([[0.0, 1.0, 2.0, 3.0, 4.0]], "1-D"),
    ([0.0, 1.0, 2.0, 3.0], "4 coordinates; a window of 5"),
])
def test_bad_static_coordinates_fail_at_construction(spacing, message):
    with pytest.raises(ValueError, match=message) as info:
        SG(1, 5, 2, spacing=spacing)
    assert "`spacing`" in str(info.value)


def test_shape_and_stamp_errors():
    layer = SG(1, 5, 2, spacing=np.arange(6.0))
    with pytest.raises(ValueError, match="6 coordinates"):
        layer(np.zeros((1, 7, 1)))
    with pytest.raises(ValueError, match="static coordinates"):
        layer([np.zeros((1, 6, 1)), np.arange(6.0)[None]])
    layer = SG(1, 5, 2)
    with pytest.raises(ValueError, match="6 steps but the input has 5"):
        layer([np.zeros((1, 5, 1)), np.arange(6.0)[None]])
    with pytest.raises(ValueError, match="at least 5"):
        layer([np.zeros((1, 4, 1)), np.arange(4.0)[None]])
    with pytest.raises(ValueError, match="strictly increasing"):
        layer([np.zeros((1, 5, 1), "float32"),
               np.array([[0.0, 1.0, 1.0, 2.0, 3.0]], "float32")])
