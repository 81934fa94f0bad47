"""Every execution path of `fdlayers.derivative` against a float64 reference.

TensorFlow runs the stencil op by op for small eager inputs, as one fused XLA
kernel for large eager inputs and inside any `tf.function`, and inlined into
an outer XLA program under `jit_compile=True`; its gradient is a separate
transposed kernel. Each path is checked here against a dense matrix built
in NumPy from the documented semantics (windows from the README, weights from
`fdlayers.coefficients`, which test_stencils checks against findiff), for the
value, the gradient with respect to the input and the second derivative.
"""

import numpy as np
import pytest
import tensorflow as tf

import fdlayers
from fdlayers import ops as fd_ops

CASES = [  # (order, accuracy, padding)
    (1, 2, "same"), (2, 4, "same"), (3, 2, "same"), (4, 8, "same"),
    (1, 2, "valid"), (2, 4, "valid"),
    (1, 2, "periodic"), (4, 6, "periodic"),
    (1, 1, "causal"), (2, 3, "causal"), (4, 4, "causal"),
]


def reference_matrix(order, accuracy, padding, n, h):
    """The n_out × n matrix of the derivative, from the documented rules."""
    width = order + accuracy  # one-sided window
    if padding == "causal":
        rows = []
        for t in range(n):
            row = np.zeros(n)
            count = min(t + 1, width)
            if count > order:  # fewer than order + 1 samples: output 0
                row[t + 1 - count:t + 1] = fdlayers.coefficients(
                    order, range(1 - count, 1))
            rows.append(row)
        return np.array(rows) / h ** order
    radius = (order - 1) // 2 + accuracy // 2
    central = fdlayers.coefficients(order, range(-radius, radius + 1))
    rows = []
    for i in range(n):
        row = np.zeros(n)
        if radius <= i < n - radius:
            row[i - radius:i + radius + 1] = central
        elif padding == "valid":
            continue
        elif padding == "periodic":
            for offset, weight in zip(range(-radius, radius + 1), central):
                row[(i + offset) % n] += weight
        elif i < radius:  # same: the window flush with the left edge
            row[:width] = fdlayers.coefficients(order, range(-i, width - i))
        else:
            j = n - 1 - i
            row[n - width:] = fdlayers.coefficients(order, range(j + 1 - width, j + 1))
        rows.append(row)
    return np.array(rows) / h ** order


def apply_along(matrix, x, axis):
    return np.moveaxis(np.tensordot(matrix, x, axes=[[1], [axis]]), 0, axis)


@pytest.fixture(params=["eager, op by op", "eager, fused", "tf.function", "XLA"])
def path(request, monkeypatch):
    """A wrapper that runs a function on one of the four paths."""
    if request.param.startswith("eager"):
        # Small eager inputs run op by op, large ones fused: force either.
        fused = request.param.endswith("fused")
        monkeypatch.setattr(fd_ops, "_EAGER_FUSION_MIN_SIZE",
                            0 if fused else float("inf"))
        return lambda f: f
    if request.param == "XLA":
        return lambda f: tf.function(f, jit_compile=True)
    return tf.function


def _value_and_gradients(x, upstream, second, order, accuracy, padding, axis, h):
    """y, dL/dx for L = <y, upstream>, and d/d(upstream) <dL/dx, second>."""
    with tf.GradientTape() as outer:
        outer.watch(upstream)
        with tf.GradientTape() as inner:
            inner.watch(x)
            y = fdlayers.derivative(x, order, h, accuracy, padding, axis)
        dx = inner.gradient(y, x, output_gradients=upstream)
    d2 = outer.gradient(dx, upstream, output_gradients=second)
    return y, dx, d2


@pytest.mark.parametrize("order,accuracy,padding", CASES)
@pytest.mark.parametrize("shape,axis", [((3, 40, 2), 1), ((2, 3, 33), 2),
                                        ((2, 37), 1), ((30, 4), 0)])
def test_every_path_matches_the_reference(path, order, accuracy, padding,
                                          shape, axis, rng):
    h = 0.3
    n = shape[axis]
    matrix = reference_matrix(order, accuracy, padding, n, h)
    x = rng.normal(size=shape)
    out_shape = list(shape)
    out_shape[axis] = matrix.shape[0]
    upstream = rng.normal(size=out_shape)
    second = rng.normal(size=shape)

    run = path(lambda *a: _value_and_gradients(
        *a, order, accuracy, padding, axis, h))
    y, dx, d2 = (v.numpy() for v in run(tf.constant(x), tf.constant(upstream),
                                        tf.constant(second)))

    # Rounding scale: |A|·|x|, so that the tolerance follows the stencil.
    for got, want, scale in [
        (y, apply_along(matrix, x, axis), apply_along(abs(matrix), abs(x), axis)),
        (dx, apply_along(matrix.T, upstream, axis),
         apply_along(abs(matrix.T), abs(upstream), axis)),
        # The gradient of the gradient is the forward map again.
        (d2, apply_along(matrix, second, axis), apply_along(abs(matrix), abs(second), axis)),
    ]:
        assert got.shape == want.shape
        np.testing.assert_array_less(abs(got - want), 1e-13 * (scale + 1e-300) + 1e-300)


def test_float32_paths_agree_with_float64(path, rng):
    """float32 stays within (m + 2)·2⁻²⁴ of the rounding scale on every path."""
    order, accuracy, padding, h = 2, 4, "same", 0.05
    x = rng.normal(size=(4, 64, 3))
    matrix = reference_matrix(order, accuracy, padding, 64, h)
    run = path(lambda x: fdlayers.derivative(x, order, h, accuracy, padding))
    got = run(tf.constant(x, tf.float32)).numpy()
    assert got.dtype == np.float32
    x32 = x.astype(np.float32).astype(np.float64)
    want = apply_along(matrix, x32, 1)
    scale = apply_along(abs(matrix), abs(x32), 1)
    m = order + accuracy
    np.testing.assert_array_less(abs(got - want), (m + 2) * 2.0 ** -24 * scale)


def test_dynamic_length_graph_uses_one_trace_for_all_lengths():
    layer = fdlayers.FiniteDifference1D(order=2, accuracy=4, dtype="float64")
    run = tf.function(layer, input_signature=[tf.TensorSpec([None, None, 1], tf.float64)])
    for n in (6, 50, 4000):
        t = np.arange(n, dtype=np.float64)[None, :, None]
        np.testing.assert_allclose(run(tf.constant(t ** 2)).numpy(), 2.0, rtol=1e-6)
    assert run.experimental_get_tracing_count() == 1


def test_half_precision_is_computed_in_float32():
    """float16 input: the result of the float32 computation, cast back."""
    h = 0.01
    t = np.arange(200) * h
    x = np.sin(t).astype(np.float16)
    y = fdlayers.derivative(x[None, :], 2, h, 4)
    assert y.dtype == tf.float16
    want = fdlayers.derivative(x.astype(np.float32)[None, :], 2, h, 4)
    np.testing.assert_array_equal(y.numpy(), tf.cast(want, tf.float16).numpy())


@pytest.mark.parametrize("order,accuracy,padding", CASES)
@pytest.mark.parametrize("extra", [0, 1, 7])
@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_gradient_of_short_and_dynamic_sequences(order, accuracy, padding,
                                                 extra, dynamic, rng):
    """The transpose splits off its ends when the length is known and long
    enough, and pads the whole sequence otherwise: both near the minimum
    length, and with a length only known at run time."""
    h = 0.5
    n = fdlayers.stencils.plan(order, accuracy, padding).min_length + extra
    matrix = reference_matrix(order, accuracy, padding, n, h)
    x = rng.normal(size=(2, n, 3))
    upstream = rng.normal(size=(2, matrix.shape[0], 3))

    def gradient(x, upstream):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fdlayers.derivative(x, order, h, accuracy, padding)
        return tape.gradient(y, x, output_gradients=upstream)

    if dynamic:
        spec = tf.TensorSpec([None, None, 3], tf.float64)
        gradient = tf.function(gradient, input_signature=[spec, spec])
    got = gradient(tf.constant(x), tf.constant(upstream)).numpy()
    want = apply_along(matrix.T, upstream, 1)
    scale = apply_along(abs(matrix.T), abs(upstream), 1)
    np.testing.assert_array_less(abs(got - want), 1e-13 * scale + 1e-300)
