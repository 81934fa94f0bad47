"""`input_derivatives`: zeros, never None, and agreement with finite differences."""

import keras
import numpy as np
import pytest

import fdlayers
from fdlayers.autodiff import input_derivatives


def _numpy(tensor):
    return keras.ops.convert_to_numpy(tensor)


# float64 end to end on TensorFlow. JAX computes in float32 unless x64 is
# enabled, and a float64 Keras model on PyTorch 2.13 was measured to round to
# float32 somewhere (3e-8 from a NumPy float64 forward pass), so those
# backends get float32 and grids coarse enough for truncation to dominate.
PRECISE = keras.backend.backend() == "tensorflow"
DTYPE = "float64" if PRECISE else "float32"


def _network(activation, width=8, depth=3, inputs=1, outputs=1, dtype=None,
             seed=7):
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((inputs,), dtype=dtype)]
    layers += [keras.layers.Dense(width, activation=activation, dtype=dtype)
               for _ in range(depth)]
    layers.append(keras.layers.Dense(outputs, dtype=dtype))
    return keras.Sequential(layers)


def test_a_linear_network_has_a_constant_slope_and_zero_curvature():
    """The question users ask: d²y/dx² of a linear network is 0, not None."""
    model = _network(None)
    x = np.linspace(-2.0, 2.0, 33, dtype="float32").reshape(-1, 1)
    first, second, third = input_derivatives(model, x, order=3)
    for derivative in (first, second, third):
        assert derivative is not None
        assert tuple(derivative.shape) == (33, 1)
    slope = np.linalg.multi_dot([_numpy(layer.kernel) for layer in model.layers])
    np.testing.assert_allclose(_numpy(first), np.full((33, 1), slope[0, 0]),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(_numpy(second), 0.0)
    np.testing.assert_array_equal(_numpy(third), 0.0)


def _grid(steps, spacing):
    """`tf.range`-style points -1, -1 + h, ... as a column."""
    return (keras.ops.convert_to_numpy(keras.ops.arange(steps, dtype="float32"))
            .astype("float64") * spacing - 1.0).reshape(-1, 1)


@pytest.mark.parametrize("order", [1, 2])
def test_tanh_network_agrees_with_finite_differences(order):
    """FiniteDifference1D on the model's outputs along a `range` grid agrees
    with the autodiff derivative; in float64 the difference falls at the
    stencil's rate, by ≈ 2**accuracy when the spacing halves."""
    model = _network("tanh", dtype=DTYPE)
    accuracy = 2
    errors = []
    coarse = 64 if PRECISE else 16
    for steps, spacing in ((2 * coarse + 1, 1 / coarse),
                           (4 * coarse + 1, 1 / (2 * coarse))):
        x = _grid(steps, spacing).astype(DTYPE)
        exact = _numpy(input_derivatives(model, x, order=order)[-1])[:, 0]
        samples = _numpy(model(x)).reshape(1, -1, 1)
        numeric = _numpy(fdlayers.FiniteDifference1D(
            order, spacing, accuracy, dtype=DTYPE)(samples))[0, :, 0]
        errors.append(np.abs(numeric - exact).max())
        assert errors[-1] < 0.01 * np.abs(exact).max(), errors
    if PRECISE:  # in float32 the finer grid's error is mostly rounding
        rate = np.log2(errors[0] / errors[1])
        assert abs(rate - accuracy) < 0.3, (errors, rate)


@pytest.mark.tensorflow_only
def test_nested_tapes_agree_where_they_give_a_value():
    """On TensorFlow, nested GradientTapes give the same numbers, and None
    where input_derivatives gives zeros."""
    import tensorflow as tf

    x = tf.constant(np.linspace(-1.0, 1.0, 17).reshape(-1, 1), tf.float32)
    for activation in ("tanh", None):
        model = _network(activation)
        with tf.GradientTape() as outer:
            outer.watch(x)
            with tf.GradientTape() as inner:
                inner.watch(x)
                y = model(x)
            first = inner.gradient(y, x)
        second = outer.gradient(first, x)
        ours = input_derivatives(model, x, order=2)
        np.testing.assert_array_equal(ours[0].numpy(), first.numpy())
        if activation is None:
            assert second is None  # the problem
            np.testing.assert_array_equal(ours[1].numpy(), 0.0)
        else:
            np.testing.assert_array_equal(ours[1].numpy(), second.numpy())


def _partials(model, x, output, feature, order, step):
    """∂ᵏ model(x)[:, output] / ∂x[:, feature]ᵏ by a 5-point central
    difference in float64 along that feature alone."""
    offsets = np.arange(-2, 3)
    weights = {1: np.array([1, -8, 0, 8, -1]) / 12,
               2: np.array([-1, 16, -30, 16, -1]) / 12}[order]
    total = 0.0
    for offset, weight in zip(offsets, weights):
        shifted = x.copy()
        shifted[:, feature] += offset * step
        total = total + weight * _numpy(model(shifted))[:, output]
    return total / step ** order


def test_elementwise_and_per_feature_derivatives():
    model = _network("tanh", inputs=3, outputs=3, dtype=DTYPE)
    x = np.random.default_rng(1).uniform(-1, 1, (6, 3)).astype(DTYPE)
    elementwise = [_numpy(d) for d in input_derivatives(model, x, order=2)]
    by_feature = [[_numpy(d) for d in input_derivatives(model, x, 2, feature=j)]
                  for j in range(3)]
    step, tolerance = (1e-3, 2e-5) if PRECISE else (3e-2, 2e-2)
    for order in (1, 2):
        for j in range(3):
            # Elementwise: output j against input j, the diagonal (to
            # rounding: on JAX, derivatives by feature of a dense chain come
            # from Taylor mode, the elementwise ones from nested jvp).
            np.testing.assert_allclose(
                elementwise[order - 1][:, j], by_feature[j][order - 1][:, j],
                rtol=1e-12 if PRECISE else 1e-5,
                atol=1e-6 * np.abs(elementwise[order - 1]).max())
            for output in range(3):
                np.testing.assert_allclose(
                    by_feature[j][order - 1][:, output],
                    _partials(model, x, output, j, order, step),
                    atol=tolerance)


def test_a_multi_feature_input_with_another_output_shape_needs_feature():
    model = _network("tanh", inputs=3, outputs=2)
    x = np.zeros((4, 3), "float32")
    with pytest.raises(ValueError, match=r"pass feature=j.*|.*Received: x of "
                       r"shape \(4, 3\), output of shape \(4, 2\)"):
        input_derivatives(model, x)
    assert tuple(input_derivatives(model, x, 1, feature=-1)[0].shape) == (4, 2)


@pytest.mark.parametrize("kwargs,fragment", [
    ({"order": 0}, "`order` must be an integer ≥ 1. Received: order=0"),
    ({"order": 1.5}, "`order` must be an integer ≥ 1. Received: order=1.5"),
    ({"order": True}, "`order` must be an integer ≥ 1. Received: order=True"),
    ({"feature": 1}, r"`feature` must be an integer in \[-1, 1\)"),
    ({"feature": "x"}, r"`feature` must be an integer.*Received: feature='x'"),
])
def test_bad_arguments_are_refused(kwargs, fragment):
    model = _network("tanh")
    with pytest.raises(ValueError, match=fragment):
        input_derivatives(model, np.zeros((2, 1), "float32"), **kwargs)


def test_a_batch_of_scalars_is_refused():
    with pytest.raises(ValueError, match=r"`x` must have a batch axis.*"
                       r"Received: x of shape \(5,\)"):
        input_derivatives(_network("tanh"), np.zeros(5, "float32"))


def test_integer_inputs_are_cast():
    model = _network(None)
    first, = input_derivatives(model, np.arange(4).reshape(-1, 1), order=1)
    assert keras.backend.standardize_dtype(first.dtype) == keras.config.floatx()


def test_fdlayers_exports_it():
    assert fdlayers.input_derivatives is input_derivatives


@pytest.mark.tensorflow_only
def test_a_callable_that_needs_autograph_traces_in_a_tf_function():
    """fdlayers' own helpers run unconverted by AutoGraph, but the calls
    that lead to the model stay convertible: a plain function branching on
    a tensor's value (a Python `if`, which AutoGraph turns into a `cond`)
    still traces in a user's `tf.function`."""
    import tensorflow as tf

    def model(v):
        if tf.reduce_sum(v) > 0:
            return v ** 2
        return v ** 3

    x = tf.constant([[1.0], [2.0]])
    first, second = tf.function(lambda v: fdlayers.input_partials(
        model, v, [(0,), (0, 0)]))(x)
    np.testing.assert_allclose(first.numpy().ravel(), [2.0, 4.0])
    np.testing.assert_allclose(second.numpy().ravel(), [2.0, 2.0])
    laplacian = tf.function(lambda v: fdlayers.input_laplacian(model, v))(-x)
    np.testing.assert_allclose(laplacian.numpy().ravel(), [-6.0, -12.0])
    slope, curvature = tf.function(lambda v: fdlayers.input_derivatives(
        model, v, order=2))(-x)
    np.testing.assert_allclose(slope.numpy().ravel(), [3.0, 12.0])
    np.testing.assert_allclose(curvature.numpy().ravel(), [-6.0, -12.0])
