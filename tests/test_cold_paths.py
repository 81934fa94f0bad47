"""Where users meet fdlayers first: new lengths, small eager calls, serving.

On TensorFlow a stencil runs where it is cheapest for its mode and size
(`fdlayers.dispatch.placement`): small eager inputs in NumPy, small graph inputs
op by op through one function pair per configuration traced for any size,
large inputs of a length known at run time only through XLA kernels
compiled per padded length. The values and gradients of every path are
checked in test_ops.py, test_properties.py and test_robustness.py
(per_backend.PATHS); here, that new lengths trace and compile nothing new,
and that fdlayers' choices print nothing.
"""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import background
import fdlayers
from fdlayers import dispatch

pytestmark = pytest.mark.tensorflow_only


def test_padded_lengths_grow_as_a_logarithm():
    """XLA compiles a kernel per input shape: the padded lengths bound how
    many a stream of distinct lengths can cause, and the padding's cost."""
    import tensorflow as tf

    lengths = np.arange(1, 1 << 17)
    buckets = dispatch._BUCKETS[np.searchsorted(dispatch._BUCKETS, lengths)]
    assert (buckets >= lengths).all()
    assert (buckets[lengths >= 8] <= 1.25 * lengths[lengths >= 8]).all()
    assert len(np.unique(buckets)) <= 4 * 17
    for n in (1, 7, 8, 9, 100, 1000, 10 ** 5, 123457):
        expected = dispatch._BUCKETS[np.searchsorted(dispatch._BUCKETS, n)]
        assert int(dispatch._bucket(tf.constant(n))) == expected


def test_padded_kernel_is_traced_once_for_every_length(monkeypatch):
    """Large inputs of unknown length: one trace of the kernel, which takes
    the true length as a run-time value, serves every length (XLA then
    compiles it once per padded length, `_bucket`)."""
    import tensorflow as tf

    monkeypatch.setattr(dispatch, "_FUSION_MIN_SIZE", 0)  # small ones too
    seen, original = [], dispatch._bucketed_fn
    original.cache_clear()  # a kernel of this test's own

    def spy(*key):
        seen.append(key)
        return original(*key)

    monkeypatch.setattr(dispatch, "_bucketed_fn", spy)
    layer = fdlayers.FiniteDifference1D(order=2, accuracy=4, padding="periodic")
    traced = tf.function(layer, input_signature=[
        tf.TensorSpec((None, None, 2), tf.float32)])
    rng = np.random.default_rng(0)
    for n in (9, 13, 17, 30, 31, 64, 100, 127):
        x = rng.normal(size=(2, n, 2)).astype("float32")
        expected = layer(x)
        np.testing.assert_allclose(traced(x), expected, rtol=0,
                                   atol=1e-5 * np.abs(expected).max())
    kernels = {id(original(*key)): original(*key) for key in seen}
    assert len(kernels) == 1
    assert [k.experimental_get_tracing_count()
            for k in kernels.values()] == [1]


def test_new_lengths_in_predict_trace_nothing_new():
    """A model's predict at new lengths: the stencils' function pairs are
    traced once, for any size, and reused."""
    # Pairs of this test's own (another test's may have been traced again
    # under a distribution strategy or another device, as functions are).
    dispatch._graph_pair.cache_clear()
    model = keras.Sequential([
        keras.Input((None, 2)),
        fdlayers.FiniteDifference1D(order=2, spacing=0.1, accuracy=4),
        fdlayers.SavitzkyGolay1D(order=1, window=7, polyorder=2),
        keras.layers.Dense(1),
    ])
    rng = np.random.default_rng(1)
    model.predict(rng.normal(size=(3, 40, 2)), verbose=0)
    model.predict(rng.normal(size=(3, 50, 2)), verbose=0)
    before = dispatch._graph_pair.cache_info()
    pairs = [dispatch._graph_pair(*args) for args in _graph_pair_calls(model)]
    counts = [f.experimental_get_tracing_count() for pair in pairs
              for f in pair]
    for n in (60, 75, 101, 300, 999):
        x = rng.normal(size=(3, n, 2))
        np.testing.assert_allclose(model.predict(x, verbose=0), model(x),
                                   rtol=1e-4, atol=1e-4)
    assert dispatch._graph_pair.cache_info().misses == before.misses
    assert [f.experimental_get_tracing_count() for pair in pairs
            for f in pair] == counts
    assert all(count <= 1 for count in counts)


@pytest.mark.parametrize("kind", ["masked", "time stamps",
                                  "masked, time stamps"])
def test_graphs_of_any_length_share_one_traced_loop(kind, monkeypatch):
    """Where a graph knows the length only when it runs, an input runs in
    a loop of chunks (`ops._looped_any_size`; one chunk where it is short):
    that loop, with the stencil in it, is traced once per configuration and
    called from every graph, so that a new model, or a first `fit` step's
    second trace (where the optimizer's variables exist), does not trace it
    again."""
    import tensorflow as tf

    from fdlayers import ops as fdops

    fdops._loop_function.cache_clear()  # a loop of this test's own
    traces, original = [], fdops._looped_any_size

    def spy(*args):
        traces.append(args)
        return original(*args)

    monkeypatch.setattr(fdops, "_looped_any_size", spy)
    stamps, masked = "stamps" in kind, "masked" in kind
    layer = (fdlayers.FiniteDifference1D(order=2, accuracy=4) if stamps
             else fdlayers.FiniteDifference1D(order=2, spacing=0.1,
                                              accuracy=4))

    def call(x, t, mask):
        return layer([x, t] if stamps else x, mask=mask if masked else None)

    rng = np.random.default_rng(3)
    specs = [tf.TensorSpec((None, None, 2), tf.float32),
             tf.TensorSpec((None, None), tf.float32),
             tf.TensorSpec((None, None), tf.bool)]
    for n in (40, 57, 90):
        x = rng.normal(size=(3, n, 2)).astype("float32")
        t = np.cumsum(rng.uniform(0.5, 1.5, (3, n)), 1).astype("float32")
        mask = np.arange(n) < np.array([[n], [n - 9], [17]])
        expected = np.asarray(call(x, t, mask))
        traced = tf.function(call, input_signature=specs, autograph=False)
        np.testing.assert_allclose(traced(x, t, mask), expected, rtol=0,
                                   atol=1e-5 * np.abs(expected).max())
    assert len(traces) == 1
    assert fdops._loop_function.cache_info().misses == 1


def _graph_pair_calls(model):
    """The `_graph_pair` arguments of the model's stencils, recorded by
    tracing one call with a spy."""
    import tensorflow as tf

    calls = []
    original = dispatch._graph_pair

    def spy(*args):
        calls.append(args)
        return original(*args)

    dispatch._graph_pair = spy
    try:
        tf.function(model).get_concrete_function(
            tf.TensorSpec((None, None, 2), tf.float32))
    finally:
        dispatch._graph_pair = original
    assert calls
    return calls


def test_eager_numpy_path_equals_op_by_op(monkeypatch):
    """Small eager CPU inputs run in NumPy: the same operations in the same
    order as TensorFlow op by op, so the same bits, values and gradients."""
    import tensorflow as tf

    rng = np.random.default_rng(2)
    cases = [dict(order=1), dict(order=2, accuracy=4),
             dict(order=3, padding="periodic"), dict(order=2, padding="valid"),
             dict(order=1, accuracy=3, padding="causal")]
    for dtype in ("float32", "float64"):
        for kwargs in cases:
            x = tf.constant(rng.normal(size=(2, 17, 3)).astype(dtype))
            results = []
            for numpy in (True, False):
                monkeypatch.setattr(dispatch, "_EAGER_NUMPY", numpy)
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    y = fdlayers.derivative(x, spacing=0.5, **kwargs)
                    total = tf.reduce_sum(y * y)
                results.append((y.numpy(), tape.gradient(total, x).numpy()))
            for ours, theirs in zip(*results):
                np.testing.assert_array_equal(ours, theirs)


class _WithTraining(fdlayers.FiniteDifference1D):
    """A subclass whose `call` takes `training` from Keras' call context."""

    def call(self, inputs, training=None):
        y = super().call(inputs)
        return y + 1.0 if training else y


def test_eager_layer_calls_keras_only_where_it_could_matter(monkeypatch):
    """After its first call, an eager layer call on a tensor of its input
    dtype without a mask skips Keras' `__call__` (`DirectCallLayer._direct`)
    with the same result; anything Keras' `__call__` would act on — a mask,
    a dtype to cast, a subclass's `call`, a regulariser, a graph — keeps
    it."""
    import tensorflow as tf

    entered = []
    keras_call = keras.layers.Layer.__call__

    def counting(self, *args, **kwargs):
        entered.append(type(self).__name__)
        return keras_call(self, *args, **kwargs)
    monkeypatch.setattr(keras.layers.Layer, "__call__", counting)

    def through_keras(layer, *args, **kwargs):
        return keras_call(layer, *args, **kwargs)

    rng = np.random.default_rng(3)
    array = rng.normal(size=(2, 40, 3)).astype("float32")
    for layer in (fdlayers.FiniteDifference1D(2, 0.1, accuracy=4),
                  fdlayers.SavitzkyGolay1D(1, 11, 3, spacing=0.1),
                  fdlayers.FiniteDifference1D(1, np.linspace(0, 1, 40) ** 2),
                  fdlayers.SpectralDerivative1D(2, 0.1),
                  fdlayers.Laplacian(0.1, accuracy=4),
                  fdlayers.Gradient((np.linspace(0, 1, 40) ** 2,))):
        first = layer(array)
        entered.clear()
        for x in (tf.constant(array), array):
            direct = layer(x)
            assert entered == [], "the direct path was not taken"
            assert isinstance(direct, tf.Tensor)
            np.testing.assert_array_equal(direct, through_keras(layer, x))
            np.testing.assert_array_equal(direct, first)
            entered.clear()

    layer = fdlayers.FiniteDifference1D(1, accuracy=4)
    layer(array)
    # Per-sample time stamps: a list is not one tensor.
    stamps = np.cumsum(rng.uniform(0.5, 1.5, size=(2, 40)), axis=1)
    layer([array, stamps])
    assert entered
    entered.clear()
    # A masked input: the mask is read and passed on.
    masked = keras.layers.Masking()(np.where(np.arange(40)[None, :, None] < 30,
                                             array, 0.0))
    entered.clear()
    y = layer(masked)
    assert entered == ["FiniteDifference1D"]
    assert y._keras_mask is not None
    np.testing.assert_array_equal(y[:, 30:], 0.0)
    entered.clear()
    # A field layer refuses a mask, after its first call too.
    laplacian = fdlayers.Laplacian(0.1)
    laplacian(array)
    with pytest.raises(ValueError, match="does not support masks"):
        laplacian(masked)
    entered.clear()
    # A dtype to cast.
    np.testing.assert_allclose(layer(array.astype("float64")), layer(array),
                               rtol=1e-6)
    assert entered == ["FiniteDifference1D"]
    entered.clear()
    # A keyword argument.
    layer(array, mask=None)
    assert entered == ["FiniteDifference1D"]
    entered.clear()
    # A subclass of its own: `training` from the outer call.
    training = _WithTraining()
    training(array)
    np.testing.assert_array_equal(training(array, training=True),
                                  training(array) + 1.0)
    assert entered.count("_WithTraining") == 3
    entered.clear()
    # An activity regulariser adds a loss at every call.
    regularised = fdlayers.FiniteDifference1D(activity_regularizer="l2")
    regularised(array)
    regularised(array)
    assert entered == ["FiniteDifference1D"] * 2
    assert regularised.losses
    entered.clear()
    # In a graph.
    tf.function(layer)(tf.constant(array))
    assert entered == ["FiniteDifference1D"]


_QUIET = """
    import numpy as np, keras, tensorflow as tf, fdlayers
    rng = np.random.default_rng(0)
    model = keras.Sequential([
        keras.Input((None, 2)),
        fdlayers.FiniteDifference1D(order=2, spacing=0.1, accuracy=4),
        fdlayers.SavitzkyGolay1D(order=1, window=11, polyorder=3),
        keras.layers.Dense(1)])
    model.compile("adam", "mse")
    for n in (30, 41, 57, 80, 111, 150, 222, 300):
        x = rng.normal(size=(4, n, 2)).astype("float32")
        model.predict(x, verbose=0)
        model.fit(x, x[..., :1], verbose=0)
        fdlayers.derivative(x, order=2)
    model.export(sys.argv[1], verbose=False)
    served = tf.saved_model.load(sys.argv[1])
    for n in (33, 65, 129):
        served.serve(rng.normal(size=(2, n, 2)).astype("float32"))
    print("done")
"""


def _quiet(directory):
    code = "import sys\n" + textwrap.dedent(_QUIET)
    # Every TensorFlow log line shown, INFO included (XLA's compile notices).
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="0")
    return subprocess.run([sys.executable, "-c", code,
                           os.path.join(directory, "m")],
                          capture_output=True, text=True, timeout=300,
                          env=env)


def start_background_runs(config, items):
    """The quiet run, in a fresh process, in the background
    (tests/background.py)."""
    if any(item.name == "test_fdlayers_prints_no_warnings" for item in items):
        background.submit(config, "quiet", _quiet)


def test_fdlayers_prints_no_warnings(request):
    """No retracing, XLA or custom-gradient warning from fdlayers' own
    choices: new lengths in predict and fit, exporting, loading, serving."""
    result = background.submit(request.config, "quiet", _quiet).result()
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("done")
    log = result.stderr.lower()
    for noise in ("retracing", "custom gradient", "xla", "autotun"):
        assert noise not in log, result.stderr[-3000:]
