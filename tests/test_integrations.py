"""fdlayers in TensorFlow's machinery: serving, LiteRT, tf.data, tf.distribute, XLA.

Two kinds of comparison recur. A traced call (a served SavedModel,
`model.predict`, a `tf.data` map, an XLA-compiled step) runs the stencil as
one fused XLA kernel, as `model.predict` does, so their results are compared
bit for bit where both run that kernel on the same shape. An eager call on a
small input runs the stencil op by op, which rounds in another order; it is
compared within a few units of 2⁻²⁴ times the largest Σ_k |w_k|·|x_k| of any
window (`_rounding`), the scale of float32 rounding in a finite difference.
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import fdlayers

FD = fdlayers.FiniteDifference1D
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="TensorFlow's serving, LiteRT, tf.data and tf.distribute",
)


def _rounding(x, order, accuracy=2, spacing=1.0, coordinates=None, units=8):
    """A bound on the float32 rounding of a derivative of `x` along axis 1.

    `units` · 2⁻²⁴ · max|x| · the largest Σ|w_k| of any window the layer may
    use: every run of `order + accuracy` samples (edges, causal and
    non-uniform windows) and of the central stencil's width, its weights
    from `fdlayers.coefficients` (pure NumPy, checked against findiff in
    test_stencils.py) on the grid's coordinates.
    """
    x = np.asarray(x)
    steps = x.shape[1]
    grids = np.atleast_2d(np.arange(steps) * spacing if coordinates is None
                          else np.asarray(coordinates, dtype=np.float64))
    central = 2 * ((order - 1) // 2 + accuracy // 2) + 1
    widths = {order + accuracy, central if central > order else order + 1}
    worst = 0.0
    for grid in grids:
        for width in widths:
            for start in range(steps - width + 1):
                window = grid[start:start + width]
                for centre in window:
                    weights = fdlayers.coefficients(order, window - centre)
                    worst = max(worst, np.abs(weights).sum())
    return units * 2.0 ** -24 * np.abs(x).max() * worst


def _series(shape, seed=0, scale=1.0):
    """Random float32 samples: rounding shows at every point, not only at some."""
    return (scale * np.random.default_rng(seed).normal(size=shape)).astype("float32")


def _subprocess_env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (REPO, env.get("PYTHONPATH")) if p)
    return env


def _run_child(code, *args, cwd, stderr=False):
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        cwd=cwd, env=_subprocess_env(), capture_output=True, text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return (result.stdout, result.stderr) if stderr else result.stdout


# ---------------------------------------------------------------------------
# SavedModel export and serving.

def _serving_model():
    keras.utils.set_random_seed(1)
    return keras.Sequential([
        keras.Input((None, 3)),
        keras.layers.Dense(2),
        FD(order=2, spacing=0.1),
    ])


def test_exported_model_serves_every_length(tmp_path):
    model = _serving_model()
    model.export(tmp_path / "served", verbose=False)
    served = tf.saved_model.load(str(tmp_path / "served"))
    spec = served.signatures["serve"].structured_input_signature[1]
    assert [s.shape.as_list() for s in spec.values()] == [[None, None, 3]]

    for steps in (4, 17, 100):  # 4: the minimum, every point an edge point
        x = _series((5, steps, 3), seed=steps, scale=100.0)
        result = served.serve(tf.constant(x)).numpy()
        assert result.shape == (5, steps, 2)
        # The same stencil as predict and an eager call, in graphs that
        # TensorFlow may optimise differently: equal to rounding.
        hidden = keras.ops.convert_to_numpy(model.layers[0](x))
        bound = _rounding(hidden, order=2, spacing=0.1)
        for expected in (model.predict(x, batch_size=len(x), verbose=0),
                         keras.ops.convert_to_numpy(model(x))):
            np.testing.assert_allclose(result, expected, rtol=0, atol=bound)

    with pytest.raises(tf.errors.InvalidArgumentError, match="at least 4 steps"):
        served.serve(tf.constant(_series((1, 3, 3))))


def test_exported_irregular_grids_serve(tmp_path):
    """Per-sample time stamps `[x, t]`, and static coordinates."""
    rng = np.random.default_rng(2)
    x_in = keras.Input((None, 2), name="x")
    t_in = keras.Input((None,), name="t")
    stamped = keras.Model([x_in, t_in], FD(order=2)([x_in, t_in]))
    coordinates = np.cumsum(rng.uniform(0.5, 1.5, size=20))
    static = keras.Sequential([keras.Input((None, 1)),
                               FD(order=1, spacing=coordinates)])
    stamped.export(tmp_path / "stamped", verbose=False)
    static.export(tmp_path / "static", verbose=False)
    stamped_served = tf.saved_model.load(str(tmp_path / "stamped"))
    static_served = tf.saved_model.load(str(tmp_path / "static"))

    for steps in (4, 31):
        x = _series((3, steps, 2), seed=steps)
        t = np.cumsum(rng.uniform(0.5, 1.5, size=(3, steps)), axis=1)
        t = t.astype("float32")
        result = stamped_served.serve([x, t]).numpy()
        # Graphs that TensorFlow may optimise differently: to rounding.
        for expected in (stamped.predict([x, t], batch_size=3, verbose=0),
                         keras.ops.convert_to_numpy(stamped([x, t]))):
            np.testing.assert_allclose(
                result, expected, rtol=0,
                atol=_rounding(x, order=2, coordinates=t))
    with pytest.raises(tf.errors.InvalidArgumentError, match="strictly increasing"):
        stamped_served.serve([x, np.zeros_like(t)])
    # TensorFlow Serving's signature names the inputs after the Inputs.
    by_name = stamped_served.signatures["serving_default"](
        x=tf.constant(x), t=tf.constant(t))
    np.testing.assert_array_equal(by_name["output_0"], result)

    x = _series((4, 20, 1))
    result = static_served.serve(tf.constant(x)).numpy()
    for expected in (static.predict(x, batch_size=4, verbose=0),
                     keras.ops.convert_to_numpy(static(x))):
        np.testing.assert_allclose(
            result, expected, rtol=0,
            atol=_rounding(x, order=1, coordinates=coordinates))
    with pytest.raises(tf.errors.InvalidArgumentError, match="number of coordinates"):
        static_served.serve(tf.constant(x[:, :10]))


# A fresh process that cannot import fdlayers: the SavedModel stands alone.
_SERVING_CHILD = """
    import sys
    sys.modules["fdlayers"] = None  # `import fdlayers` now fails
    import numpy as np
    import tensorflow as tf

    directory = sys.argv[1]
    served = tf.saved_model.load(directory + "/served")
    x = tf.constant(np.load(directory + "/x.npy"))
    upstream = tf.constant(np.load(directory + "/upstream.npy"))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = served.serve(x)
        total = tf.reduce_sum(y * upstream)
    results = served.input_derivatives(x)
    # Second order through `serve` itself.
    with tf.GradientTape() as outer:
        outer.watch(x)
        with tf.GradientTape() as inner:
            inner.watch(x)
            summed = tf.reduce_sum(served.serve(x))
        first = inner.gradient(summed, x)
    np.savez(directory + "/child.npz", y=y.numpy(),
             gradient=tape.gradient(total, x).numpy(),
             first=results["first"].numpy(), second=results["second"].numpy(),
             served_second=outer.gradient(first, x).numpy())
"""


def test_served_gradients_in_a_fresh_process(tmp_path):
    """Gradients of every order flow through `serve`, in a process without
    fdlayers, and loading prints no "unsaved custom gradients" warning:
    SavedModel keeps a custom gradient one level deep, and the stencil's
    gradient (its transpose) is itself differentiated by autodiff. Higher
    derivatives can also be traced at export time, as an endpoint.
    """
    keras.utils.set_random_seed(3)
    model = keras.Sequential([
        keras.Input((None, 1)),
        keras.layers.Dense(4, activation="tanh"),
        FD(order=2, spacing=0.1),
        keras.layers.Dense(1),
    ])
    spec = tf.TensorSpec((None, None, 1), tf.float32)

    def input_derivatives(x):
        with tf.GradientTape() as outer:
            outer.watch(x)
            with tf.GradientTape() as inner:
                inner.watch(x)
                y = tf.reduce_sum(model(x))
            first = inner.gradient(y, x)
        return {"first": first, "second": outer.gradient(first, x)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", model.__call__, input_signature=[spec])
    archive.add_endpoint("input_derivatives", input_derivatives,
                         input_signature=[spec])
    archive.write_out(str(tmp_path / "served"), verbose=False)

    x = _series((2, 12, 1))
    upstream = _series((2, 12, 1), seed=1)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "upstream.npy", upstream)
    _, log = _run_child(_SERVING_CHILD, tmp_path, cwd=tmp_path, stderr=True)
    assert "custom gradient" not in log, log[-3000:]
    child = np.load(tmp_path / "child.npz")

    @tf.function
    def gradient(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            total = tf.reduce_sum(model(x) * upstream)
        return tape.gradient(total, x)

    def close(actual, expected):  # graphs optimised apart: to rounding
        expected = np.asarray(expected)
        np.testing.assert_allclose(actual, expected, rtol=1e-5,
                                   atol=1e-5 * np.abs(expected).max())

    close(child["y"], model.predict(x, batch_size=2, verbose=0))
    close(child["gradient"], gradient(tf.constant(x)))
    expected = tf.function(input_derivatives)(tf.constant(x))
    close(child["first"], expected["first"])
    close(child["second"], expected["second"])
    close(child["served_second"], expected["second"])
    assert np.abs(child["second"]).max() > 0


# ---------------------------------------------------------------------------
# TFLite / LiteRT.

def _interpreter(path):
    """LiteRT's interpreter where installed; TensorFlow's (deprecated) otherwise."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = tf.lite.Interpreter
    return Interpreter(model_path=str(path))


def _builtin_ops(interpreter):
    return {op["op_name"] for op in interpreter._get_ops_details()}


# Each padding, with one channel and with several: they join the edges to
# the interior in different ways (fdlayers.kernels._assemble).
_LITERT_BRANCHES = {
    "same": ("series", dict(order=1)),
    "valid": ("series", dict(order=2, accuracy=4, padding="valid")),
    "periodic": ("series", dict(order=3, spacing=0.5, padding="periodic")),
    "causal": ("series", dict(order=2, accuracy=3, padding="causal")),
    "same_single": ("single", dict(order=2, spacing=0.25)),
    "causal_single": ("single", dict(order=1, accuracy=1, padding="causal")),
}


@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")
def test_litert_export_matches_keras(tmp_path):
    inputs = {"series": keras.Input((None, 2), name="series"),
              "single": keras.Input((None, 1), name="single")}
    outputs = {name: FD(**kwargs)(inputs[source])
               for name, (source, kwargs) in _LITERT_BRANCHES.items()}
    model = keras.Model(inputs, outputs)
    model.export(tmp_path / "model.tflite", format="litert", verbose=False)
    interpreter = _interpreter(tmp_path / "model.tflite")
    # TFLite built-in ops only: no Flex (TensorFlow) delegate needed.
    assert not any(op.startswith("Flex") for op in _builtin_ops(interpreter))
    run = interpreter.get_signature_runner()

    for steps in (9, 40, 129):  # the runner resizes its inputs
        x = {"series": _series((3, steps, 2), seed=steps),
             "single": _series((2, steps, 1), seed=steps + 1)}
        result = run(**x)
        expected = model(x)
        for name, (source, kwargs) in _LITERT_BRANCHES.items():
            want = keras.ops.convert_to_numpy(expected[name])
            assert result[name].shape == want.shape, name
            bound = _rounding(x[source], kwargs["order"],
                              kwargs.get("accuracy", 2),
                              kwargs.get("spacing", 1.0))
            np.testing.assert_allclose(result[name], want, rtol=0, atol=bound,
                                       err_msg=name)


@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")
def test_tflite_converter_from_saved_model(tmp_path):
    """The plain converter, TFLite built-in ops only, on a SavedModel export."""
    keras.utils.set_random_seed(4)
    model = keras.Sequential([keras.Input((None, 2)),
                              FD(order=2, accuracy=4, spacing=0.1)])
    model.export(tmp_path / "served", verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "served"))
    (tmp_path / "model.tflite").write_bytes(converter.convert())
    interpreter = _interpreter(tmp_path / "model.tflite")
    index = interpreter.get_input_details()[0]["index"]
    for steps in (6, 50):
        x = _series((2, steps, 2), seed=steps, scale=10.0)
        interpreter.resize_tensor_input(index, x.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(index, x)
        interpreter.invoke()
        result = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
        np.testing.assert_allclose(
            result, keras.ops.convert_to_numpy(model(x)), rtol=0,
            atol=_rounding(x, order=2, accuracy=4, spacing=0.1))


# ---------------------------------------------------------------------------
# tf.data.

def test_dataset_map_on_batches():
    layer = FD(order=2, spacing=0.1)
    x = _series((10, 16, 2), scale=10.0)
    batches = tf.data.Dataset.from_tensor_slices(x).batch(4)
    traced = tf.function(layer)
    for batch, result in zip(batches, batches.map(layer)):
        # Graphs that TensorFlow may optimise differently: to rounding.
        for expected in (traced(batch), layer(batch)):
            np.testing.assert_allclose(
                result, expected, rtol=0,
                atol=_rounding(batch.numpy(), order=2, spacing=0.1))


def test_dataset_map_on_variable_length_examples():
    """Differentiate each `(steps, channels)` example along axis 0, then pad.

    Padding first would differentiate the padding as if it were data: the
    points near each example's end would use the zeros after it.
    """
    lengths = (5, 12, 30, 7)
    examples = [_series((n, 2), seed=n) for n in lengths]
    dataset = tf.data.Dataset.from_generator(
        lambda: iter(examples),
        output_signature=tf.TensorSpec((None, 2), tf.float32))
    derivatives = dataset.map(
        lambda x: fdlayers.derivative(x, order=2, spacing=0.1, axis=0))
    batches = list(derivatives.padded_batch(2))
    assert [tuple(b.shape) for b in batches] == [(2, 12, 2), (2, 30, 2)]
    layer = FD(order=2, spacing=0.1)
    for i, (x, n) in enumerate(zip(examples, lengths)):
        row = batches[i // 2][i % 2].numpy()
        np.testing.assert_allclose(
            row[:n], layer(x[None])[0], rtol=0,
            atol=_rounding(x[None], order=2, spacing=0.1))
        assert not row[n:].any()


# ---------------------------------------------------------------------------
# tf.distribute.

_MIRRORED_CHILD = """
    import json
    import tensorflow as tf

    # Two logical CPUs, configured before TensorFlow initialises its devices.
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import keras
    import numpy as np
    import fdlayers

    rng = np.random.default_rng(5)
    x = rng.normal(size=(64, 32, 2)).astype("float32")
    y = np.gradient(x, axis=1).sum(-1, keepdims=True).astype("float32")

    def fit():
        keras.utils.set_random_seed(5)
        model = keras.Sequential([
            keras.Input((None, 2)), keras.layers.Dense(3),
            fdlayers.FiniteDifference1D(order=1), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
        history = model.fit(x, y, batch_size=16, epochs=3, shuffle=False,
                            verbose=0)
        return model, history.history["loss"]

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        mirrored, mirrored_loss = fit()
    batch = next(iter(strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices(x).batch(16))))
    replicas = strategy.experimental_local_results(
        strategy.run(mirrored, args=(batch,)))
    single, single_loss = fit()
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "devices": sorted(r.device for r in replicas),
        "replica_batches": [int(r.shape[0]) for r in replicas],
        "mirrored_loss": mirrored_loss,
        "single_loss": single_loss,
        "weights": max(float(np.abs(a - b).max()) for a, b in
                       zip(mirrored.get_weights(), single.get_weights())),
    }))
"""


def test_fit_under_mirrored_strategy(tmp_path):
    out = json.loads(_run_child(_MIRRORED_CHILD, cwd=tmp_path).splitlines()[-1])
    assert out["replicas"] == 2
    assert [d.split("/")[-1] for d in out["devices"]] == [
        "device:CPU:0", "device:CPU:1"]
    assert out["replica_batches"] == [8, 8]
    loss = out["mirrored_loss"]
    assert loss[-1] < 0.5 * loss[0]
    # The replicas' gradients are summed in another order than one device's.
    np.testing.assert_allclose(loss, out["single_loss"], rtol=1e-5)
    assert out["weights"] < 1e-5


# ---------------------------------------------------------------------------
# XLA: the whole train and predict steps compiled.

def _sine_data(steps=64, examples=128):
    rng = np.random.default_rng(6)
    t = np.linspace(0, 2 * np.pi, steps)
    amplitude = rng.uniform(0.5, 2.0, size=(examples, 1, 1))
    phase = rng.uniform(0, 2 * np.pi, size=(examples, 1, 1))
    x = (amplitude * np.sin(t[:, None] + phase)).astype("float32")
    return x, -x, float(t[1] - t[0])  # the target: x''


def _fit(jit_compile):
    x, y, spacing = _sine_data()
    keras.utils.set_random_seed(6)
    model = keras.Sequential([
        keras.Input((None, 1)),
        keras.layers.Dense(4),  # trained through the layer's gradient only
        FD(order=2, spacing=spacing),
        keras.layers.Dense(1),
    ])
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="mse",
                  jit_compile=jit_compile)
    first = model.layers[0].get_weights()[0].copy()
    history = model.fit(x, y, batch_size=32, epochs=4, verbose=0)
    return model, history.history["loss"], first


def test_fit_and_predict_with_jit_compile():
    model, loss, first = _fit(jit_compile=True)
    assert model.jit_compile is True
    assert loss[-1] < 0.5 * loss[0]
    assert not np.array_equal(model.layers[0].get_weights()[0], first)
    _, plain_loss, _ = _fit(jit_compile=False)
    np.testing.assert_allclose(loss, plain_loss, rtol=1e-4)

    x, _, spacing = _sine_data(steps=50, examples=8)
    hidden = keras.ops.convert_to_numpy(model.layers[0](x))
    kernel = np.abs(model.layers[-1].get_weights()[0]).sum()
    bound = kernel * _rounding(hidden, order=2, spacing=spacing, units=16)
    np.testing.assert_allclose(model.predict(x, verbose=0), model(x),
                               rtol=0, atol=bound)


def test_input_gradient_inside_xla():
    """The layer's custom gradient, inlined in an outer XLA program."""
    layer = FD(order=3, accuracy=4, padding="same")
    x = tf.constant(_series((2, 40, 3)))
    upstream = tf.constant(_series((2, 40, 3), seed=1))

    def gradient(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            total = tf.reduce_sum(layer(x) * upstream)
        return tape.gradient(total, x)

    compiled = tf.function(gradient, jit_compile=True)
    np.testing.assert_allclose(
        compiled(x), gradient(x), rtol=0,
        atol=_rounding(upstream.numpy(), order=3, accuracy=4))


@pytest.mark.parametrize("kwargs, steps, expected_steps", [
    (dict(order=2, accuracy=4), 5, 5),  # needs 6 steps
    (dict(order=2, padding="periodic"), 2, 2),  # needs 3
    (dict(order=2, padding="causal"), 2, 2),  # needs 3
    (dict(order=2, accuracy=4, padding="valid"), 4, 0),  # needs 5
])
def test_too_short_inside_xla_is_nan_not_a_wrong_shape(kwargs, steps,
                                                       expected_steps):
    """XLA drops run-time assertions: a length known only to its compiler.

    Under an outer `jit_compile=True` with a dynamic length, a sequence too
    short for the stencil cannot raise; it gives NaN of the documented shape
    (empty for 'valid'), value and gradient, never a result of another length.
    """
    layer = FD(**kwargs)
    spec = [tf.TensorSpec((None, None, 2))]

    @tf.function(jit_compile=True, input_signature=spec)
    def value_and_gradient(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            total = tf.reduce_sum(y)
        return y, tape.gradient(total, x)

    y, gradient = value_and_gradient(_series((3, steps, 2)))
    assert y.shape == (3, expected_steps, 2)
    assert np.isnan(y).all()
    assert gradient.shape == (3, steps, 2)
    if expected_steps:
        assert np.isnan(gradient).all()
    # Long enough, the same function is the layer.
    x = _series((3, 12, 2))
    y, gradient = value_and_gradient(x)
    np.testing.assert_allclose(y, layer(x), rtol=0,
                               atol=_rounding(x, kwargs["order"],
                                              kwargs.get("accuracy", 2)))
    # Outside XLA the run-time check still raises.
    plain = tf.function(layer, input_signature=spec)
    with pytest.raises(tf.errors.InvalidArgumentError, match="too short"):
        plain(_series((3, steps, 2)))



def test_many_stencils_trace_without_retracing_warnings(caplog):
    """Each stencil's XLA kernel keeps its own retracing statistics.

    TensorFlow pools them by code object: were the kernels closures of one
    function, a handful of stencils, each traced once, would warn of
    excessive retracing. (Eager calls on inputs this large run fused.)
    """
    x = np.zeros((1, 1 << 20, 1), "float32")
    for order in range(1, 8):
        fdlayers.derivative(x, order)
    assert not [r for r in caplog.records if "retracing" in r.getMessage()]
