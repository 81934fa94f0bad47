"""Every execution path of `fdlayers.derivative` against a float64 reference.

TensorFlow runs the stencil in NumPy for small eager inputs (op by op on
other devices), as one fused XLA kernel for large eager inputs, op by op
inside a `tf.function` for small inputs, through kernels compiled for padded
lengths for large inputs of a length known at run time only, and inlined
into an outer XLA program under `jit_compile=True`; its gradient is the
transposed stencil (`fdlayers.dispatch.placement`). JAX runs it through
XLA eagerly and under `jax.jit`, and differentiates it itself; PyTorch runs
it op by op. Each path of the backend under test is checked here against a dense matrix built in NumPy from the
documented semantics (windows from the README, weights from
`fdlayers.coefficients`, which test_stencils checks against findiff), for the
value, the gradient with respect to the input and the second derivative.
"""

import keras
import numpy as np
import pytest

import fdlayers
import per_backend
from per_backend import numpy, tensor

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


# TensorFlow's eager calls take one of two paths by size: each is forced.
@pytest.fixture(params=per_backend.PATHS)
def path(request, monkeypatch):
    """A wrapper that runs a function on one of the backend's paths."""
    return per_backend.on_path(request.param, monkeypatch)


def _value_and_gradients(order, accuracy, padding, axis, h):
    """(x, upstream, second) -> y, dL/dx for L = <y, upstream>, and
    d/d(upstream) <dL/dx, second>."""
    return per_backend.value_and_gradients(
        lambda x: fdlayers.derivative(x, order, h, accuracy, padding, axis))


_SHAPES = [((3, 40, 2), 1), ((2, 3, 33), 2), ((2, 37), 1), ((30, 4), 0)]
# A tf.function traced for any length builds each configuration's function
# pair and its second derivative anew (≈ 2 s): there, the ranks and axes
# that exercise distinct slicing (rank 3 along 1, rank 2 along 0).
_TRACED_SHAPES = [_SHAPES[0], _SHAPES[3]]
_PATH_SHAPES = [(p, *shape_axis) for p in per_backend.PATHS
                for shape_axis in (_TRACED_SHAPES if p.startswith("any length")
                                   else _SHAPES)]


@pytest.mark.parametrize("order,accuracy,padding", CASES)
@pytest.mark.parametrize("path,shape,axis", _PATH_SHAPES, indirect=["path"])
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

    run = path(_value_and_gradients(order, accuracy, padding, axis, h))
    y, dx, d2 = numpy(run(tensor(x), tensor(upstream), tensor(second)))

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
    got = numpy(run(tensor(x.astype(np.float32))))
    assert got.dtype == np.float32
    x32 = x.astype(np.float32).astype(np.float64)
    want = apply_along(matrix, x32, 1)
    scale = apply_along(abs(matrix), abs(x32), 1)
    m = order + accuracy
    np.testing.assert_array_less(abs(got - want), (m + 2) * 2.0 ** -24 * scale)


@pytest.mark.tensorflow_only
def test_dynamic_length_graph_uses_one_trace_for_all_lengths():
    import tensorflow as tf

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
    y = fdlayers.derivative(tensor(x[None, :]), 2, h, 4)
    assert keras.backend.standardize_dtype(y.dtype) == "float16"
    want = fdlayers.derivative(tensor(x.astype(np.float32)[None, :]), 2, h, 4)
    np.testing.assert_array_equal(numpy(y), numpy(keras.ops.cast(want, "float16")))


@pytest.mark.parametrize("order,accuracy,padding", CASES)
@pytest.mark.parametrize("extra", [0, 1, 7])
@pytest.mark.parametrize("dynamic", [
    False, pytest.param(True, marks=pytest.mark.tensorflow_only)],
    ids=["static", "dynamic"])
def test_gradient_of_short_and_dynamic_sequences(order, accuracy, padding,
                                                 extra, dynamic, rng):
    """The transpose splits off its ends when the length is known and long
    enough, and pads the whole sequence otherwise: both near the minimum
    length, and with a length only known at run time (TensorFlow graphs).
    The value and the second derivative are checked on the way."""
    h = 0.5
    n = fdlayers.stencils.plan(order, accuracy, padding).min_length + extra
    matrix = reference_matrix(order, accuracy, padding, n, h)
    x = rng.normal(size=(2, n, 3))
    upstream = rng.normal(size=(2, matrix.shape[0], 3))

    gradients = _value_and_gradients(order, accuracy, padding, 1, h)
    if dynamic:
        import tensorflow as tf

        spec = tf.TensorSpec([None, None, 3], tf.float64)
        gradients = tf.function(gradients, input_signature=[spec] * 3)
    second = rng.normal(size=x.shape)
    y, dx, d2 = numpy(gradients(tensor(x), tensor(upstream), tensor(second)))
    for got, operator, vector in [(y, matrix, x), (dx, matrix.T, upstream),
                                 (d2, matrix, second)]:
        want = apply_along(operator, vector, 1)
        scale = apply_along(abs(operator), abs(vector), 1)
        np.testing.assert_array_less(abs(got - want), 1e-13 * scale + 1e-300)
