"""Tests of the `fdlayers.FiniteDifference1D` layer.

Numbers are checked against references that do not use fdlayers' own
stencils: findiff's weights applied by the documented edge rules,
`numpy.gradient`, and closed-form derivatives.
"""

import functools
import json
import math
import os
import re
import subprocess
import sys
import textwrap

import findiff
import keras
import numpy as np
import pytest

import fdlayers
import per_backend
from harness import run_layer_test
from per_backend import numpy, tensor

FD = fdlayers.FiniteDifference1D
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------
# An independent reference: findiff's weights, the edge rules of DESIGN.md.

@functools.lru_cache(maxsize=None)
def _findiff_weights(order, offsets):
    return np.asarray(
        findiff.coefficients(deriv=order, offsets=list(offsets))["coefficients"],
        dtype=np.float64,
    )


def reference_derivative(x, order=1, spacing=1.0, accuracy=2, padding="same",
                         axis=1, absolute=False):
    """The documented result of `FiniteDifference1D`, in float64 NumPy.

    With `absolute=True`, Σ|w_k|·|x_k| instead: the scale of the rounding error
    of each output point, for tolerances.
    """
    x = np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1)
    if absolute:
        x = np.abs(x)
    n = x.shape[-1]
    radius = (order - 1) // 2 + accuracy // 2
    window = order + accuracy
    central = tuple(range(-radius, radius + 1))
    columns = []
    points = range(radius, n - radius) if padding == "valid" else range(n)
    for i in points:
        if padding == "causal":
            if i < order:
                columns.append(np.zeros(x.shape[:-1]))
                continue
            offsets = tuple(range(-min(i, window - 1), 1))
        elif padding == "same" and i < radius:
            offsets = tuple(range(-i, window - i))
        elif padding == "same" and n - 1 - i < radius:
            j = n - 1 - i
            offsets = tuple(range(j - window + 1, j + 1))
        else:
            offsets = central
        weights = _findiff_weights(order, offsets)
        if absolute:
            weights = np.abs(weights)
        samples = x[..., [(i + o) % n for o in offsets]]
        columns.append(samples @ weights)
    return np.moveaxis(np.stack(columns, axis=-1), -1, axis) / spacing ** order


def smooth_series(shape, axis=1, spacing=1.0, seed=0):
    """Smooth float32 data varying along `axis` (and across other axes)."""
    rng = np.random.default_rng(seed)
    t = np.arange(shape[axis]) * spacing
    t = t.reshape([-1 if a == axis else 1 for a in range(len(shape))])
    phase = rng.uniform(0, 2 * np.pi, shape)
    return (np.sin(0.7 * t + phase) + 0.5 * np.cos(0.13 * t)).astype("float32")


# ---------------------------------------------------------------------------
# The layer contract, through the harness, on many configurations.

CONFIGS = [
    # (init kwargs, input shape)
    ({}, (2, 16, 3)),
    ({"order": 2, "accuracy": 4}, (2, 20, 3)),
    ({"order": 3, "spacing": 0.25, "padding": "valid"}, (2, 16, 2)),
    ({"order": 1, "accuracy": 6, "padding": "periodic"}, (2, 24, 2)),
    ({"order": 2, "accuracy": 3, "padding": "causal", "spacing": 0.5}, (2, 16, 2)),
    ({"order": 1, "accuracy": 1, "padding": "causal"}, (3, 9, 1)),
    ({"padding": "SAME", "spacing": 2}, (2, 12, 1)),
    # Exactly the minimum length: every `same` output is an edge point.
    ({"order": 4, "accuracy": 2}, (2, 6, 2)),
    ({"order": 2, "accuracy": 4, "padding": "valid"}, (2, 5, 1)),
    ({"order": 2, "accuracy": 2, "padding": "periodic"}, (2, 3, 1)),
    # Other axes.
    ({"axis": 2}, (2, 3, 12)),
    ({"axis": -1, "order": 2, "padding": "valid"}, (2, 4, 10)),
    ({"axis": -2, "padding": "periodic"}, (2, 10, 3)),
    # Rank 2 and rank 4.
    ({}, (3, 12)),
    ({"axis": -1, "order": 2, "padding": "causal", "accuracy": 1}, (3, 12)),
    ({"accuracy": 4}, (2, 10, 3, 2)),
    ({"axis": 2, "padding": "causal"}, (2, 3, 10, 2)),
    ({"axis": -1, "order": 3, "accuracy": 2, "padding": "valid"}, (2, 2, 3, 9)),
]


def _config_id(config):
    kwargs, shape = config
    args = ",".join(f"{k}={v}" for k, v in kwargs.items()) or "default"
    return f"{args}-{'x'.join(map(str, shape))}"


@pytest.mark.parametrize("kwargs, shape", CONFIGS,
                         ids=[_config_id(c) for c in CONFIGS])
def test_layer_contract(kwargs, shape, tmp_path):
    axis = kwargs.get("axis", 1) % len(shape)
    spacing = float(kwargs.get("spacing", 1.0))
    x = smooth_series(shape, axis=axis, spacing=spacing)
    args = (kwargs.get("order", 1), spacing, kwargs.get("accuracy", 2),
            kwargs.get("padding", "same").lower(), axis)
    expected = reference_derivative(x, *args)
    # float32 rounding: a few ulps of Σ|w_k·x_k| at the worst point.
    atol = 1e-6 * reference_derivative(x, *args, absolute=True).max()
    run_layer_test(FD, kwargs, x, expected_output=expected,
                   expected_output_shape=expected.shape, rtol=1e-6, atol=atol,
                   tmp_path=tmp_path)


def test_harness_catches_a_wrong_compute_output_shape():
    """The harness must fail for a layer whose shape inference is wrong."""

    class WrongShape(FD):
        def compute_output_shape(self, input_shape):
            return tuple(input_shape[:-1]) + (7,)

    with pytest.raises(AssertionError, match="compute_output_shape"):
        run_layer_test(WrongShape, {}, smooth_series((2, 8, 1)),
                       run_mixed_precision_check=False)


def test_harness_catches_weights():
    class WithWeight(FD):
        def build(self, input_shape):
            self.scale = self.add_weight(shape=(), initializer="ones")
            super().build(input_shape)

    with pytest.raises(AssertionError, match="weights"):
        run_layer_test(WithWeight, {}, smooth_series((2, 8, 1)),
                       run_mixed_precision_check=False)


def test_harness_catches_a_half_precision_output():
    """A layer that computes in its policy's float16 fails the harness."""

    @keras.saving.register_keras_serializable(package="fdlayers_tests")
    class HalfOutput(FD):
        @property
        def input_dtype(self):
            return self.compute_dtype

        def compute_output_spec(self, inputs, mask=None):
            return keras.KerasTensor(self.compute_output_shape(inputs.shape),
                                     dtype=self.compute_dtype)

    with pytest.raises(AssertionError, match="float16"):
        run_layer_test(HalfOutput, {}, smooth_series((2, 8, 1)))


# ---------------------------------------------------------------------------
# Mixed precision.

@pytest.fixture
def global_policy():
    """Set Keras' global dtype policy for one test, then restore it."""
    before = keras.config.dtype_policy()
    yield keras.config.set_dtype_policy
    keras.config.set_dtype_policy(before)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_differentiates_float32_samples(policy, global_policy):
    """sin'' with h = 0.01 under a mixed policy: float32 in, float32 out.

    Rounding the samples to half precision first, as Keras does for a layer
    that computes in its policy's dtype, is off by O(1) to O(100).
    """
    global_policy(policy)
    t = np.arange(0.0, 10.0, 0.01)
    x = np.sin(t).astype("float32").reshape(1, -1, 1)
    model = keras.Sequential([keras.Input((None, 1)),
                              FD(order=2, spacing=0.01),
                              keras.layers.Dense(1, kernel_initializer="ones")])
    assert model.layers[0].dtype_policy.name == policy
    features = model.layers[0].output
    assert keras.backend.standardize_dtype(features.dtype) == "float32"
    y = keras.ops.convert_to_numpy(model.layers[0](x))
    assert y.dtype == np.float32
    error = np.abs(y[0, :, 0] + np.sin(t)).max()
    assert error < 0.05, error

    half = "float16" if policy == "mixed_float16" else "bfloat16"
    rounded = keras.ops.cast(keras.ops.cast(x, half), "float32")
    naive = keras.ops.convert_to_numpy(FD(order=2, spacing=0.01)(rounded))
    assert np.abs(naive[0, :, 0] + np.sin(t)).max() > 100 * error


# ---------------------------------------------------------------------------
# The original question's numbers.

def test_original_example_gives_three_everywhere():
    # An integer tensor of the backend, as tf.range is on TensorFlow.
    series = keras.ops.reshape(keras.ops.arange(3, 3075, 3), (1, 1024, 1))
    model = keras.Sequential([FD(order=1)])
    y = keras.ops.convert_to_numpy(model(series))
    assert y.shape == (1, 1024, 1)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, np.full((1, 1024, 1), 3.0, np.float32))


# ---------------------------------------------------------------------------
# Models: Sequential, functional, subclassed; training.

class SubclassedDifferentiator(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.derivative = FD(order=1)

    def call(self, inputs):
        return self.derivative(inputs)


def _sequential():
    return keras.Sequential([keras.Input((None, 3)), FD(order=1)])


def _functional():
    inputs = keras.Input((None, 3))
    return keras.Model(inputs, FD(order=1)(inputs))


@pytest.mark.parametrize("make_model", [_sequential, _functional, SubclassedDifferentiator],
                         ids=["sequential", "functional", "subclassed"])
def test_layer_in_models(make_model):
    x = smooth_series((4, 40, 3))
    model = make_model()
    expected = np.gradient(x.astype(np.float64), axis=1, edge_order=2)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), expected,
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.predict(x, batch_size=2, verbose=0),
                               expected, rtol=1e-5, atol=1e-5)


def _trainable_model():
    return keras.Sequential([
        keras.Input((16, 2)),
        keras.layers.Dense(4),
        FD(order=1, accuracy=4),
        keras.layers.Dense(1),
    ])


def test_trains_in_fit():
    keras.utils.set_random_seed(1)
    x = smooth_series((64, 16, 2))
    # A target the model can reach: the derivative of a mix of the channels.
    y = reference_derivative(x @ np.array([[1.0], [-0.5]]), accuracy=4)
    model = _trainable_model()
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="mse")
    losses = model.fit(x, y, epochs=8, batch_size=16, verbose=0).history["loss"]
    assert all(math.isfinite(loss) for loss in losses), losses
    assert losses[-1] < 0.5 * losses[0], losses


def test_gradient_reaches_the_earlier_dense_layer():
    keras.utils.set_random_seed(2)
    model = _trainable_model()
    grads = per_backend.weight_gradients(
        model, lambda y: keras.ops.mean(keras.ops.square(y)),
        smooth_series((4, 16, 2)))
    assert len(grads) == len(model.trainable_variables) == 4
    # The first Dense layer's kernel and bias, upstream of the stencil.
    for grad in grads[:2]:
        assert grad is not None
        assert np.all(np.isfinite(grad))
        assert np.abs(grad).max() > 0


def _stencil_matrix(n, **kwargs):
    """The documented derivative as an (outputs, n) matrix: column j is the
    response to the unit impulse e_j."""
    return np.stack([reference_derivative(np.eye(n)[None, :, j, None], **kwargs)
                     [0, :, 0] for j in range(n)], axis=1)


@pytest.mark.parametrize("mode", per_backend.MODES)
@pytest.mark.parametrize("kwargs", [
    {"order": 2, "accuracy": 2},
    {"order": 1, "accuracy": 4, "padding": "periodic", "spacing": 0.5},
    {"order": 3, "accuracy": 2, "padding": "valid"},
    {"order": 2, "accuracy": 3, "padding": "causal"},
], ids=lambda kwargs: kwargs.get("padding", "same"))
def test_input_gradient_is_the_adjoint_stencil(kwargs, mode):
    """d/dx Σ g·D(x) is Dᵀg: the stencil's transpose, checked numerically;
    and the backward pass differentiates again, to D·s."""
    n = 12
    x = smooth_series((1, n, 1)).astype(np.float64)
    matrix = _stencil_matrix(n, **kwargs)
    rng = np.random.default_rng(3)
    g = rng.normal(size=(1, matrix.shape[0], 1))
    s = rng.normal(size=(1, n, 1))
    layer = FD(**kwargs, dtype="float64")
    run = per_backend.compiled(per_backend.value_and_gradients(layer), mode)
    y, grad, second = numpy(run(tensor(x), tensor(g), tensor(s)))
    np.testing.assert_allclose(y[0, :, 0], matrix @ x[0, :, 0], rtol=1e-10,
                               atol=1e-10)
    np.testing.assert_allclose(grad[0, :, 0], matrix.T @ g[0, :, 0],
                               rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(second[0, :, 0], matrix @ s[0, :, 0],
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("mode", per_backend.MODES)
def test_second_derivative_of_a_loss_is_not_none(mode):
    """L(x) = ½‖D x‖²: ∇L = DᵀD x and ∇²L·v = DᵀD v, through the layer in a
    model, differentiated twice with respect to its input. (TensorFlow used
    to give None for second derivatives of linear networks.)"""
    n = 10
    model = keras.Sequential([keras.Input((n, 1), dtype="float64"),
                              FD(order=1, accuracy=4, dtype="float64")])
    matrix = _stencil_matrix(n, order=1, accuracy=4)
    gram = matrix.T @ matrix
    rng = np.random.default_rng(4)
    x, v = rng.normal(size=(2, 1, n, 1))

    def loss(x):
        return 0.5 * keras.ops.sum(keras.ops.square(model(x)))

    run = per_backend.compiled(per_backend.gradient_and_hessian_product(loss),
                               mode)
    grad, hessian_v = numpy(run(tensor(x), tensor(v)))
    np.testing.assert_allclose(grad[0, :, 0], gram @ x[0, :, 0], rtol=1e-10,
                               atol=1e-10)
    np.testing.assert_allclose(hessian_v[0, :, 0], gram @ v[0, :, 0],
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kwargs", [
    {"order": 3, "accuracy": 4},
    {"order": 2, "accuracy": 6, "padding": "periodic"},
    {"order": 2, "accuracy": 3, "padding": "causal"},
    {"order": 1, "accuracy": 4, "padding": "valid", "spacing": 0.5},
], ids=lambda kwargs: kwargs.get("padding", "same"))
def test_first_call_inside_a_compiled_program(kwargs):
    """An unbuilt layer, and the op, called first inside a whole-program
    compiler. (torch.compile traced the stencil arithmetic itself, NumPy
    and exact rationals, and failed on it.)"""
    x = smooth_series((2, 16, 3)).astype(np.float64)
    want = reference_derivative(x, kwargs["order"], kwargs.get("spacing", 1.0),
                                kwargs["accuracy"], kwargs.get("padding", "same"))
    layer = FD(**kwargs, dtype="float64")
    got = numpy(per_backend.whole_program(layer)(tensor(x)))
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    op = per_backend.whole_program(lambda x: fdlayers.derivative(
        x, kwargs["order"], kwargs.get("spacing", 1.0), kwargs["accuracy"],
        kwargs.get("padding", "same")))
    np.testing.assert_allclose(numpy(op(tensor(x))), want, rtol=1e-10,
                               atol=1e-10)


# ---------------------------------------------------------------------------
# Saving and loading in a fresh Python process.

_CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    import keras
    import fdlayers  # registers the layers; nothing else is needed
    directory = sys.argv[1]
    model = keras.saving.load_model(directory + "/model.keras")
    layer = model.layers[-1]
    assert type(layer) is fdlayers.FiniteDifference1D, type(layer)
    x = np.load(directory + "/x.npy")
    np.save(directory + "/child.npy", keras.ops.convert_to_numpy(model(x)))
""")


def _subprocess_env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
               KERAS_BACKEND=keras.backend.backend())
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (REPO, env.get("PYTHONPATH")) if p)
    return env


def test_saved_model_loads_in_a_fresh_process(tmp_path):
    inputs = keras.Input((None, 2))
    hidden = keras.layers.Dense(2)(inputs)
    outputs = FD(order=2, spacing=0.5, accuracy=3, padding="causal")(hidden)
    model = keras.Model(inputs, outputs)
    x = smooth_series((3, 30, 2))
    expected = keras.ops.convert_to_numpy(model(x))
    model.save(tmp_path / "model.keras")
    np.save(tmp_path / "x.npy", x)

    result = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp_path)], cwd=tmp_path,
        env=_subprocess_env(), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_array_equal(np.load(tmp_path / "child.npy"), expected)


# ---------------------------------------------------------------------------
# Configuration.

@pytest.mark.parametrize("kwargs, expected", [
    ({}, {"order": 1, "spacing": 1.0, "accuracy": 2, "padding": "same", "axis": 1}),
    ({"order": np.int64(3), "spacing": 2, "accuracy": np.int32(4),
      "padding": "SAME", "axis": -1},
     {"order": 3, "spacing": 2.0, "accuracy": 4, "padding": "same", "axis": -1}),
    ({"order": 2, "spacing": np.float32(0.5), "accuracy": 3,
      "padding": "Causal", "axis": np.int64(2)},
     {"order": 2, "spacing": 0.5, "accuracy": 3, "padding": "causal", "axis": 2}),
    ({"padding": "periodic", "spacing": 0.1},
     {"order": 1, "spacing": 0.1, "accuracy": 2, "padding": "periodic", "axis": 1}),
])
def test_get_config_has_every_argument_normalised(kwargs, expected):
    config = FD(**kwargs, name="fd").get_config()
    for key, value in expected.items():
        assert config[key] == value, (key, config[key])
        assert type(config[key]) is type(value), (key, type(config[key]))
    assert config["name"] == "fd"
    json.dumps(config)  # plain Python values only
    assert FD.from_config(config).get_config() == config


@pytest.mark.parametrize("spacing", [
    np.array(0.5), np.array(2), np.float32(0.5)[()],
    pytest.param("tensor", id="0-d tensor")])
def test_a_0d_spacing_is_a_number(spacing):
    """As numpy.gradient takes them: 0-d arrays and (eager) 0-d tensors."""
    if spacing == "tensor":
        spacing = keras.ops.convert_to_tensor(0.5)
    value = float(keras.ops.convert_to_numpy(spacing))
    x = smooth_series((2, 12, 1))
    config = FD(order=2, spacing=spacing).get_config()
    assert config["spacing"] == value and type(config["spacing"]) is float
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(FD(order=2, spacing=spacing)(x)),
        keras.ops.convert_to_numpy(FD(order=2, spacing=value)(x)))
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(fdlayers.derivative(x, 2, spacing)),
        keras.ops.convert_to_numpy(fdlayers.derivative(x, 2, value)))
    assert fdlayers.SavitzkyGolay1D(spacing=spacing).get_config()[
        "spacing"] == value


@pytest.mark.parametrize("spacing", [np.array(True), np.array(1 + 2j),
                                     np.array(-0.5), np.array(np.nan)],
                         ids=["bool", "complex", "negative", "nan"])
def test_a_0d_spacing_is_checked_as_a_number(spacing):
    with pytest.raises((TypeError, ValueError), match="`spacing` must be"):
        FD(spacing=spacing)


@pytest.mark.tensorflow_only
def test_a_symbolic_0d_spacing_is_refused_by_name():
    import tensorflow as tf

    x = smooth_series((2, 12, 1)).astype("float32")
    traced = tf.function(lambda x, s: fdlayers.derivative(x, 1, s))
    with pytest.raises(TypeError, match="`spacing`.*0-d tensor"):
        traced(x, tf.constant(0.5))


# ---------------------------------------------------------------------------
# Dynamic lengths.

LENGTHS = [7, 50, 300]


def test_functional_model_with_dynamic_length():
    inputs = keras.Input(shape=(None, 2))
    model = keras.Model(inputs, FD(order=1)(inputs))
    assert tuple(model.output.shape) == (None, None, 2)
    for n in LENGTHS:
        x = smooth_series((2, n, 2), seed=n)
        y = keras.ops.convert_to_numpy(model(x))
        np.testing.assert_allclose(y, np.gradient(x.astype(np.float64), axis=1,
                                                  edge_order=2),
                                   rtol=1e-5, atol=1e-5)


def _dynamic_function(**kwargs):
    import tensorflow as tf

    layer = FD(**kwargs)
    return tf.function(layer, input_signature=[tf.TensorSpec([None, None, 2])])


# JAX and PyTorch trace with concrete shapes: a length known only at run
# time is TensorFlow's alone.
@pytest.mark.tensorflow_only
def test_tf_function_with_dynamic_length():
    fn = _dynamic_function(order=2, accuracy=4)
    assert fn.get_concrete_function().structured_outputs.shape.as_list() == [
        None, None, 2]
    for n in LENGTHS:
        x = smooth_series((2, n, 2), seed=n)
        np.testing.assert_allclose(fn(x).numpy(),
                                   reference_derivative(x, 2, accuracy=4),
                                   rtol=1e-5, atol=1e-4)
    # One trace serves every length.
    assert fn.experimental_get_tracing_count() == 1


@pytest.mark.parametrize("mode", per_backend.MODES)
def test_inputs_of_several_ranks_in_one_program(mode):
    """Layers of one configuration on rank 2, 3 and 4 inputs in one program.

    Nothing cached between layers (traces, compiled kernels) may tie the
    configuration to the first rank it met.
    """
    for shape in [(2, 12, 3), (2, 12), (2, 12, 3, 2), (3, 12)]:
        x = smooth_series(shape)
        fn = per_backend.compiled(FD(order=1, accuracy=4), mode)
        np.testing.assert_allclose(
            numpy(fn(tensor(x))), reference_derivative(x, accuracy=4),
            rtol=1e-5, atol=1e-5, err_msg=f"input of shape {shape}")


# Minimum lengths from DESIGN.md: order + accuracy for `same` and `causal`,
# the central stencil's width 2·((order - 1) // 2 + accuracy // 2) + 1 for
# `valid` and `periodic`.
MIN_LENGTHS = [
    ({"order": 1}, 3),
    ({"order": 2, "accuracy": 4}, 6),
    ({"order": 2, "accuracy": 4, "padding": "valid"}, 5),
    ({"order": 3, "accuracy": 2, "padding": "periodic"}, 5),
    ({"order": 2, "accuracy": 3, "padding": "causal"}, 5),
]


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("kwargs, minimum", MIN_LENGTHS)
def test_too_short_at_run_time_names_the_minimum(kwargs, minimum):
    import tensorflow as tf

    fn = _dynamic_function(**kwargs)
    fn(tf.zeros([1, minimum, 2]))  # the minimum itself is fine
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=f"at least {minimum} steps"):
        fn(tf.zeros([1, minimum - 1, 2]))


@pytest.mark.parametrize("kwargs, minimum", MIN_LENGTHS)
def test_too_short_at_build_time_names_the_minimum(kwargs, minimum):
    message = f"at least {minimum} steps.*Received: {minimum - 1} steps"
    with pytest.raises(ValueError, match=message):
        FD(**kwargs)(keras.Input((minimum - 1, 2)))
    with pytest.raises(ValueError, match=message):
        FD(**kwargs)(np.zeros((1, minimum - 1, 2), np.float32))
    assert FD(**kwargs)(keras.Input((minimum, 2))).shape[1] is not None


# ---------------------------------------------------------------------------
# Input and compute dtypes.

@pytest.mark.parametrize("convert", [
    lambda a: keras.ops.convert_to_tensor(a, "int32"),
    lambda a: a.astype(np.int64),
    lambda a: a.astype(np.int32),
], ids=["tensor-int32", "numpy-int64", "numpy-int32"])
def test_integer_inputs_are_cast_to_float(convert):
    i = np.arange(20)
    squares = np.stack([i ** 2, 3 * i + 1], axis=-1)[None]  # (1, 20, 2)
    y = FD(order=1)(convert(squares))
    assert keras.backend.standardize_dtype(y.dtype) == "float32"
    # Exact for degree < order + accuracy = 3.
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(y),
        np.stack([2.0 * i, np.full(20, 3.0)], axis=-1)[None].astype(np.float32))


@pytest.mark.parametrize("mode", per_backend.MODES)
@pytest.mark.parametrize("input_dtype", ["float32", "float64"])
def test_float64_layer_computes_in_float64(input_dtype, mode):
    h = 1e-3
    t = np.arange(200) * h
    x = np.sin(1 + t)[None, :, None]
    layer = FD(order=1, spacing=h, dtype="float64")
    y = per_backend.compiled(layer, mode)(tensor(x.astype(input_dtype)))
    assert keras.backend.standardize_dtype(y.dtype) == "float64"
    # float32 arithmetic would be wrong in the 4th digit here.
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(y),
        np.gradient(x.astype(input_dtype).astype(np.float64), h, axis=1,
                    edge_order=2),
        rtol=1e-10, atol=1e-9)


# ---------------------------------------------------------------------------
# Bad arguments and inputs.

# A 10**9-point stencil must be refused, not built (`fails_fast`).
ALARM_S = 20


BAD_ARGUMENTS = [
    # (kwargs, exception, fragments the message must contain)
    ({"order": 0}, ValueError, ["order=0"]),
    ({"order": -1}, ValueError, ["order=-1"]),
    ({"order": 2.5}, TypeError, ["order=2.5"]),
    ({"order": "1"}, TypeError, ["order='1'"]),
    ({"order": True}, TypeError, ["order=True"]),
    ({"order": None}, TypeError, ["order=None"]),
    ({"accuracy": 0}, ValueError, ["accuracy=0"]),
    ({"accuracy": -2}, ValueError, ["accuracy=-2"]),
    ({"accuracy": 2.0}, TypeError, ["accuracy=2.0"]),
    ({"accuracy": 3}, ValueError, ["accuracy=3", "even"]),
    ({"accuracy": 1, "padding": "valid"}, ValueError, ["accuracy=1", "even"]),
    ({"accuracy": 5, "padding": "periodic"}, ValueError, ["accuracy=5", "even"]),
    ({"spacing": 0}, ValueError, ["spacing=0"]),
    ({"spacing": -1}, ValueError, ["spacing=-1"]),
    ({"spacing": float("nan")}, ValueError, ["spacing=nan"]),
    ({"spacing": float("inf")}, ValueError, ["spacing=inf"]),
    ({"spacing": "a"}, TypeError, ["spacing='a'"]),
    ({"spacing": None}, TypeError, ["spacing=None"]),
    ({"padding": "full"}, ValueError, ["padding='full'"]),
    ({"padding": "Circular"}, ValueError, ["padding='Circular'"]),
    ({"padding": None}, TypeError, ["padding=None"]),
    ({"padding": 1}, TypeError, ["padding=1"]),
    ({"axis": 0}, ValueError, ["axis=0", "batch axis"]),
    ({"axis": "1"}, TypeError, ["axis='1'"]),
    ({"axis": 1.0}, TypeError, ["axis=1.0"]),
    ({"order": 10 ** 9}, ValueError, ["order=1000000000"]),
    ({"accuracy": 10 ** 9}, ValueError, ["accuracy=1000000000"]),
    ({"accuracy": 10 ** 9 + 1, "padding": "causal"}, ValueError,
     ["accuracy=1000000001"]),
]


def _message(fragments):
    return "(?s)" + "".join(f"(?=.*{re.escape(f)})" for f in fragments)


@pytest.mark.parametrize("kwargs, error, fragments", BAD_ARGUMENTS,
                         ids=[repr(k) for k, _, _ in BAD_ARGUMENTS])
def test_bad_arguments_are_refused(kwargs, error, fragments, fails_fast):
    with pytest.raises(error, match=_message(fragments)) as info:
        FD(**kwargs)
    assert type(info.value) is error


@pytest.mark.parametrize("accuracy", [1, 3, 4])
def test_causal_takes_any_accuracy(accuracy):
    x = smooth_series((1, 12, 1))
    y = FD(order=1, accuracy=accuracy, padding="causal")(x)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(y),
        reference_derivative(x, 1, accuracy=accuracy, padding="causal"),
        rtol=1e-5, atol=1e-4)


BAD_INPUTS = [
    # (kwargs, input shape, exception, fragments)
    ({"axis": -3}, (4, 10, 2), ValueError, ["axis=-3", "batch axis"]),
    # A batch shorter than the stencil must not hide the batch-axis error.
    ({"axis": -3}, (2, 10, 2), ValueError, ["axis=-3", "batch axis"]),
    ({"axis": -4}, (4, 10, 3, 2), ValueError, ["axis=-4", "batch axis"]),
    ({"axis": 3}, (2, 10, 2), ValueError, ["axis=3"]),
    ({"axis": -4}, (2, 10, 2), ValueError, ["axis=-4"]),
    ({"axis": 2}, (2, 10), ValueError, ["axis=2"]),
    ({}, (10,), ValueError, ["rank", "(10,)"]),
]


@pytest.mark.parametrize("kwargs, shape, error, fragments", BAD_INPUTS,
                         ids=[f"{k}-{s}" for k, s, _, _ in BAD_INPUTS])
@pytest.mark.parametrize("symbolic", [False, True], ids=["eager", "symbolic"])
def test_bad_inputs_are_refused(kwargs, shape, error, fragments, symbolic):
    layer = FD(**kwargs)
    if symbolic:
        x = keras.Input(batch_shape=shape)
    else:
        x = np.zeros(shape, np.float32)
    with pytest.raises(error, match=_message(fragments)):
        layer(x)
