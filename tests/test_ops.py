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
# that exercise distinct slicing (rank 3 along 1, rank 2 along 0), and for
# the op-by-op branch only the latter, since
# test_gradient_of_short_and_dynamic_sequences runs that branch along
# axis 1 of rank 3 for the same cases.
_TRACED_SHAPES = {"any length": [_SHAPES[3]],
                  "any length, padded": [_SHAPES[0], _SHAPES[3]]}
# On those traced paths the default run takes one case per padding, the
# others are marked slow (FDLAYERS_SLOW=1); every case runs on the others.
EVERY_PADDING = [(2, 4, "same"), (2, 4, "valid"), (1, 2, "periodic"),
                 (2, 3, "causal")]


_PATH_CASES = [
    pytest.param(path, *shape_axis, *case, marks=(
        pytest.mark.slow if path in _TRACED_SHAPES
        and case not in EVERY_PADDING else ()))
    for path in per_backend.PATHS
    for shape_axis in _TRACED_SHAPES.get(path, _SHAPES) for case in CASES]


# Each path with each shape, order, accuracy and padding (covering.py).
@pytest.mark.pairwise
@pytest.mark.parametrize("path,shape,axis,order,accuracy,padding",
                         _PATH_CASES, indirect=["path"])
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


@pytest.mark.parametrize("dynamic,extra,order,accuracy,padding", [
    pytest.param(dynamic, extra, *case,
                 id="-".join(map(str, (name, extra, *case))), marks=(
        # A length known at run time only takes one path whatever it is:
        # the minimum, and longer; traced anew for each case.
        [pytest.mark.tensorflow_only] if dynamic else []) + (
        [pytest.mark.slow] if dynamic and case not in EVERY_PADDING else []))
    for name, dynamic, extra in [("static", False, 0), ("static", False, 1),
                                 ("static", False, 7), ("dynamic", True, 0),
                                 ("dynamic", True, 7)]
    for case in CASES])
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


def _graph_ops(function, *args):
    """The operation types of a tf.function's graph and every function in
    its library (fdlayers' stencils are functions called from it)."""
    graph = function.get_concrete_function(*args).graph.as_graph_def()
    types = {node.op for node in graph.node}
    for library_function in graph.library.function:
        types.update(node.op for node in library_function.node_def)
    return types


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("order,accuracy,padding", [
    (1, 8, "same"), (2, 6, "valid"), (1, 8, "periodic"), (3, 6, "causal")])
@pytest.mark.parametrize("shape,axis", [((3, 40, 2), 1), ((2, 37), 1),
                                        ((2, 3, 33, 2), 2), ((30, 4), 0)])
def test_wide_stencils_convolve_in_graphs(order, accuracy, padding, shape,
                                          axis, rng):
    """In a graph run op by op, a float32 stencil of 6 or more nonzero
    weights is one depthwise convolution per run of them
    (`kernels._convolved`): within float32 rounding of the float64
    reference, value, gradient and second derivative, and it keeps a
    non-finite sample to the outputs whose stencil weighs it."""
    import tensorflow as tf

    h, n = 0.3, shape[axis]
    matrix = reference_matrix(order, accuracy, padding, n, h)
    x = rng.normal(size=shape)
    out_shape = list(shape)
    out_shape[axis] = matrix.shape[0]
    upstream, second = rng.normal(size=out_shape), rng.normal(size=shape)
    run = tf.function(_value_and_gradients(order, accuracy, padding, axis, h))
    args = [tf.constant(a.astype(np.float32)) for a in (x, upstream, second)]
    assert "DepthwiseConv2dNative" in _graph_ops(run, *args)
    got = [r.numpy() for r in run(*args)]
    x, upstream, second = (a.numpy().astype(np.float64) for a in args)
    bound = (order + accuracy + 2) * 2.0 ** -24
    for value, want_matrix, v in [(got[0], matrix, x),
                                  (got[1], matrix.T, upstream),
                                  (got[2], matrix, second)]:
        assert value.dtype == np.float32
        want = apply_along(want_matrix, v, axis)
        scale = apply_along(abs(want_matrix), abs(v), axis)
        np.testing.assert_array_less(abs(value - want), bound * scale + 1e-30)

    # An infinite sample reaches exactly the outputs that weigh it.
    for index in (0, n // 2, n - 1):
        spiked = np.moveaxis(x.copy(), axis, 0)
        spiked[index] = np.inf
        spiked = np.moveaxis(spiked, 0, axis).astype(np.float32)
        y = tf.function(lambda v: fdlayers.derivative(
            v, order, h, accuracy, padding, axis))(tf.constant(spiked))
        reaches = np.moveaxis(np.isfinite(y.numpy()), axis, 0)
        weighed = matrix[:, index] != 0
        assert (~reaches[weighed]).all() and reaches[~weighed].all()


@pytest.mark.tensorflow_only
def test_narrow_stencils_and_unknown_channels_keep_the_slices(rng):
    """Fewer than 6 nonzero weights, float64, channels unknown while
    tracing, or more than 256 of them: no convolution
    (`kernels._convolved`), the same results."""
    import tensorflow as tf

    cases = [
        (lambda v: fdlayers.derivative(v, 1, 0.5, 4), "float32", [2, 50, 3]),
        (lambda v: fdlayers.derivative(v, 1, 0.5, 8), "float64", [2, 50, 3]),
        (lambda v: fdlayers.derivative(v, 1, 0.5, 8), "float32",
         [None, None, None]),
        (lambda v: fdlayers.derivative(v, 1, 0.5, 8), "float32",
         [2, 50, 17, 16]),
    ]
    for fn, dtype, spec in cases:
        x = rng.normal(size=[d or size for d, size in zip(spec, (2, 50, 3))]
                       + spec[3:])
        run = tf.function(fn, input_signature=[tf.TensorSpec(spec, dtype)])
        assert "DepthwiseConv2dNative" not in _graph_ops(run)
        np.testing.assert_allclose(run(tf.constant(x.astype(dtype))),
                                   fn(x.astype(dtype)), rtol=1e-6, atol=1e-5)


@pytest.mark.tensorflow_only
def test_wide_savitzky_golay_windows_convolve_in_graphs(rng):
    """SavitzkyGolay1D's interior, 41 and 11 points, convolved in a graph:
    scipy's result within float32 rounding."""
    import tensorflow as tf
    signal = pytest.importorskip("scipy.signal")

    x = rng.normal(size=(3, 300, 2))
    for order, window, polyorder in ((1, 41, 3), (0, 11, 2), (2, 11, 4)):
        run = tf.function(lambda v: fdlayers.ops.savitzky_golay(
            v, order, window, polyorder, 0.1))
        x32 = tf.constant(x.astype(np.float32))
        assert "DepthwiseConv2dNative" in _graph_ops(run, x32)
        want = signal.savgol_filter(x32.numpy().astype(np.float64), window,
                                    polyorder, deriv=order, delta=0.1, axis=1)
        scale = np.max(abs(want)) + 1
        np.testing.assert_allclose(run(x32).numpy(), want,
                                   atol=window * 2.0 ** -22 * scale * 10.0 ** order)


@pytest.mark.skipif(keras.backend.backend() != "jax",
                    reason="eager JAX arrays on an accelerator")
@pytest.mark.parametrize("kind", ["uniform", "masked", "time stamps"])
def test_large_arrays_on_an_accelerator_stay_there(kind, monkeypatch, rng):
    """An eager JAX call pads a small array to its bucket on the host, but
    a large one on an accelerator runs the kernel compiled for its shape
    on the device: padding it on the host would move it there and back
    twice (`dispatch.bucketed_on_host`). Here every array counts as being
    on an accelerator; the values are those of the host's route."""
    from fdlayers import dispatch

    steps = dispatch._FUSION_MIN_SIZE // 2 + 5  # two series: just above
    x = rng.standard_normal((2, steps, 1)).astype("float32")
    kwargs = {"order": 2, "accuracy": 4}
    if kind == "masked":
        mask = np.ones((2, steps), bool)
        mask[0, steps // 3:steps // 3 + 7] = False
        kwargs["mask"] = keras.ops.convert_to_tensor(mask)
    if kind == "time stamps":
        t = np.cumsum(rng.uniform(0.5, 1.5, (2, steps)), axis=1)
        kwargs["spacing"] = keras.ops.convert_to_tensor(t.astype("float32"))
    small = x[:, :1000]
    small_kwargs = dict(kwargs)
    for name in ("mask", "spacing"):
        if name in kwargs and kind != "uniform":
            small_kwargs[name] = kwargs[name][:, :1000]
    on_host = numpy(fdlayers.derivative(tensor(x), **kwargs))
    small_on_host = numpy(fdlayers.derivative(tensor(small), **small_kwargs))

    padded = []
    original = dispatch._static_padded
    monkeypatch.setattr(dispatch, "on_host", lambda x: False)
    monkeypatch.setattr(dispatch, "_static_padded", lambda x, *args, **kw: (
        padded.append(x.shape), original(x, *args, **kw))[1])
    on_device = numpy(fdlayers.derivative(tensor(x), **kwargs))
    assert padded == []
    np.testing.assert_allclose(on_device, on_host, rtol=1e-5, atol=1e-5)
    # A small array still takes the host's route, with the same values.
    small_on_device = numpy(fdlayers.derivative(tensor(small), **small_kwargs))
    assert padded
    np.testing.assert_array_equal(small_on_device, small_on_host)
    if kind == "time stamps":  # checked on the device: still refused
        from fdlayers import ops as fd_ops

        checked, check = [], fd_ops._times_in_order
        monkeypatch.setattr(fd_ops, "_times_in_order", lambda t: (
            checked.append(t.shape), check(t))[1])
        bad = np.array(kwargs["spacing"])
        bad[1, 10] = bad[1, 9]
        with pytest.raises(ValueError, match="increasing"):
            fdlayers.derivative(tensor(x), 2, keras.ops.convert_to_tensor(bad))
        assert checked == [bad.shape]


@pytest.mark.skipif(keras.backend.backend() != "torch",
                    reason="PyTorch's stencil written in place")
@pytest.mark.every_case  # this backend's own test: all of it
@pytest.mark.parametrize("order,accuracy,padding", CASES)
def test_torch_writes_the_stencil_into_one_tensor(order, accuracy, padding,
                                                  monkeypatch, rng):
    """On PyTorch the stencil is written into one output tensor, term by
    term in place: directly where no gradient is recorded, through an
    autograd function (whose gradient is the transposed stencil) where one
    is, and op by op under a `torch.func` transform. Each gives the
    reference's values, and a NaN reaches only the outputs whose stencil
    weighs it."""
    import torch

    from fdlayers import kernels

    h, n, nan_at = 0.3, 40, 17
    matrix = reference_matrix(order, accuracy, padding, n, h)
    x = rng.normal(size=(3, n, 2))
    want = apply_along(matrix, x, 1)
    scale = apply_along(abs(matrix), abs(x), 1)
    written = []
    original = kernels.LinearStencil._forward_into
    monkeypatch.setattr(kernels.LinearStencil, "_forward_into",
                        lambda self, x: (written.append(1), original(self, x))[1])

    def derivative(v):
        return fdlayers.derivative(v, order, h, accuracy, padding)

    with torch.no_grad():
        direct = numpy(derivative(tensor(x)))
    assert written == [1]
    recorded = derivative(tensor(x).requires_grad_())
    assert written == [1, 1] and recorded.grad_fn is not None
    mapped = numpy(torch.func.vmap(derivative)(tensor(x[:, None])))[:, 0]
    assert written == [1, 1]
    for got in (direct, numpy(recorded), mapped):
        np.testing.assert_array_less(abs(got - want), 1e-13 * scale + 1e-300)

    bad = x.copy()
    bad[1, nan_at, 0] = np.nan
    with torch.no_grad():
        got = numpy(derivative(tensor(bad)))
    reached = np.zeros(want.shape, bool)
    reached[1, :, 0] = matrix[:, nan_at] != 0
    assert (np.isnan(got) == reached).all()
    np.testing.assert_array_less(abs(got[~reached] - want[~reached]),
                                 1e-13 * scale[~reached] + 1e-300)
