"""Non-uniform grids: static coordinate vectors and per-sample time stamps.

References are independent of fdlayers: `numpy.gradient` on coordinates,
analytic derivatives of polynomials and `sin`, and a dense matrix whose rows
solve the Vandermonde system of each point's window (`np.linalg.solve`), the
windows taken from the documented rules.
"""

import math
from fractions import Fraction

import keras
import numpy as np
import pytest

import fdlayers
import per_backend
from harness import run_layer_test
from per_backend import numpy, tensor

FD = fdlayers.FiniteDifference1D


def random_grid(rng, n, jitter=0.45, start=0.0):
    """Strictly increasing coordinates: unit steps jittered by ±jitter."""
    return start + np.cumsum(1.0 + rng.uniform(-jitter, jitter, n))


def window(i, n, m, order, padding):
    """(start, size) of point i's window by the documented rules, or None
    for a point without output ('valid') and size 0 for a zero output."""
    left = (m - 1) // 2
    if padding == "same":
        return min(max(i - left, 0), n - m), m
    if padding == "valid":
        return (i - left, m) if left <= i <= n - m + left else None
    size = min(i + 1, m)  # causal
    return i + 1 - size, (size if size > order else 0)


def _matrix(t, order, accuracy, padding, weights):
    """The derivative's matrix: row i is `weights(offsets)` over point i's
    window (`window`), offsets t[start:start + size] - t[i]."""
    n, m = len(t), order + accuracy
    rows = []
    for i in range(n):
        spec = window(i, n, m, order, padding)
        if spec is None:
            continue
        start, size = spec
        row = np.zeros(n)
        if size:
            row[start:start + size] = weights(t[start:start + size], t[i])
        rows.append(row)
    return np.array(rows)


def reference_matrix(t, order, accuracy, padding):
    """Rows w with Σ_k w_k (t_k - t_i)^p = order! δ_p,order (p < size)."""
    def weights(nodes, point):
        d = nodes - point
        vandermonde = d[None, :] ** np.arange(len(d))[:, None]
        rhs = np.zeros(len(d))
        rhs[order] = math.factorial(order)
        return np.linalg.solve(vandermonde, rhs)

    return _matrix(t, order, accuracy, padding, weights)


def exact_matrix(t, order, accuracy, padding):
    """`reference_matrix` in exact rational arithmetic, for wide windows
    whose Vandermonde systems are too ill-conditioned to solve in floats:
    w_j = d^order/dx^order of the Lagrange basis polynomial of node j, at
    the output point."""
    def weights(nodes, point):
        d = [Fraction(float(v)) - Fraction(float(point)) for v in nodes]
        row = np.zeros(len(d))
        for j in range(len(d)):
            poly = [Fraction(1)]  # coefficients of prod_{k != j} (x - d_k)
            denominator = Fraction(1)
            for k in range(len(d)):
                if k != j:
                    poly = ([-d[k] * poly[0]]
                            + [poly[p - 1] - d[k] * poly[p]
                               for p in range(1, len(poly))] + [poly[-1]])
                    denominator *= d[j] - d[k]
            if order < len(poly):
                row[j] = float(math.factorial(order) * poly[order]
                               / denominator)
        return row

    return _matrix(t, order, accuracy, padding, weights)


CASES = [(1, 2, "same"), (2, 2, "same"), (3, 4, "same"), (1, 4, "valid"),
         (2, 2, "valid"), (1, 1, "causal"), (2, 3, "causal")]


# 3. Validation ----------------------------------------------------------------

def test_order_1_accuracy_2_is_numpy_gradient(rng):
    t = random_grid(rng, 200, start=5.0)
    x = rng.normal(size=(3, 200, 2))
    want = np.gradient(x, t, axis=1, edge_order=2)
    static = numpy(FD(1, t, 2, dtype="float64")(x))
    np.testing.assert_allclose(static, want, rtol=1e-12, atol=1e-12)
    per_sample = numpy(FD(1, accuracy=2, dtype="float64")([x, np.tile(t, (3, 1))]))
    np.testing.assert_allclose(per_sample, want, rtol=1e-12, atol=1e-12)
    shared = numpy(fdlayers.derivative(x, 1, tensor(t), 2))
    np.testing.assert_allclose(shared, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("order,accuracy,padding", CASES)
def test_polynomials_are_exact_at_every_point(order, accuracy, padding, rng):
    m = order + accuracy
    n = 3 * m + 5
    degree = m - 1
    t = np.stack([random_grid(rng, n, start=-n / 2) for _ in range(3)])
    coefs = rng.normal(size=degree + 1)
    poly = np.polynomial.Polynomial(coefs)
    x = poly(t)[..., None]
    want = poly.deriv(order)(t)[..., None]
    per_sample = numpy(FD(order, accuracy=accuracy, padding=padding,
                          dtype="float64")([x, t]))
    static = np.concatenate([
        numpy(FD(order, t[b], accuracy, padding, dtype="float64")(x[b:b + 1]))
        for b in range(3)])
    if padding == "valid":
        left = (m - 1) // 2
        want = want[:, left:n - (m - 1 - left)]
    elif padding == "causal":  # full history from point m - 1 on
        want, per_sample, static = (a[:, m - 1:] for a in (want, per_sample, static))
    scale = np.abs(want).max()
    np.testing.assert_allclose(static, want, atol=1e-9 * scale)
    np.testing.assert_allclose(per_sample, want, atol=1e-9 * scale)


@pytest.mark.parametrize("padding", ["same", "valid", "causal"])
def test_windows_wider_than_the_unrolled_recurrence_match_the_reference(
        padding, rng):
    """Windows of more than `kernels.UNROLLED_MAX_WIDTH` nodes run
    Fornberg's recurrence as a loop (edge rows included): every padding,
    per-sample and static, against the rows solved one by one."""
    from fdlayers import kernels

    order, accuracy = 2, kernels.UNROLLED_MAX_WIDTH  # 14 nodes
    n = 40
    t = np.stack([random_grid(rng, n, start=s) for s in (0.0, 50.0)])
    x = rng.normal(size=(2, n, 2))
    per_sample = numpy(fdlayers.derivative(tensor(x), order, tensor(t),
                                           accuracy, padding))
    for b in range(2):
        want = np.einsum("ij,jc->ic", exact_matrix(
            t[b], order, accuracy, padding), x[b])
        static = numpy(fdlayers.derivative(x[b:b + 1], order, t[b],
                                           accuracy, padding))[0]
        scale = np.abs(want).max()
        np.testing.assert_allclose(per_sample[b], want, atol=1e-9 * scale)
        np.testing.assert_allclose(static, want, atol=1e-9 * scale)


@pytest.mark.parametrize("order,accuracy", [(1, 2), (1, 4), (2, 2), (2, 4)])
def test_error_on_jittered_grids_falls_at_the_accuracy(order, accuracy):
    """The slope of log(error) against log(mean spacing), fitted over five
    halvings, each on a fresh jittered grid (RMS error: the maximum follows
    the worst local spacing ratio of each draw)."""
    rng = np.random.default_rng(7)
    sizes = np.array([100, 200, 400, 800, 1600])
    errors = []
    for n in sizes:
        h = 2 * np.pi / n
        t = h * random_grid(rng, n, jitter=0.3)
        y = FD(order, t, accuracy, dtype="float64")(np.sin(t)[None, :, None])
        exact = np.sin(t + order * np.pi / 2)
        errors.append(np.sqrt(np.mean((numpy(y)[0, :, 0] - exact) ** 2)))
    slope = -np.polyfit(np.log(sizes), np.log(errors), 1)[0]
    assert abs(slope - accuracy) < 0.5, (errors, slope)


@pytest.mark.parametrize("order,accuracy,padding", CASES)
def test_per_sample_equals_static_row_by_row(order, accuracy, padding, rng):
    n = 40
    t = np.stack([random_grid(rng, n, start=s) for s in (0.0, 100.0, -3.0)])
    x = rng.normal(size=(3, n, 2))
    per_sample = numpy(FD(order, accuracy=accuracy, padding=padding,
                          dtype="float64")([x, t]))
    for b in range(3):
        static = numpy(FD(order, t[b], accuracy, padding,
                          dtype="float64")(x[b:b + 1]))
        np.testing.assert_allclose(per_sample[b:b + 1], static, rtol=1e-10,
                                   atol=1e-10 * np.abs(static).max())


# A graph traced for any length takes 10-20 s of test time per case to
# trace and differentiate twice: there, one case per padding.
_TRACED_CASES = [(1, 2, "same"), (2, 2, "valid"), (1, 1, "causal")]


@pytest.mark.parametrize("order,accuracy,padding,mode", [
    (*case, mode) for mode in per_backend.MODES
    for case in CASES if case != (3, 4, "same")  # compile time
    if mode != "tf.function" or case in _TRACED_CASES])
def test_value_and_gradient_match_the_dense_reference(order, accuracy, padding,
                                                      mode, rng):
    """Value, gradient and the gradient's own derivative (see
    `per_backend.value_and_gradients`) for static and per-sample coordinates;
    on TensorFlow, `tf.function` traces for lengths known only at run time."""
    n = 23
    t = np.stack([random_grid(rng, n) for _ in range(2)])
    x = rng.normal(size=(2, n, 3))
    matrices = [reference_matrix(t[b], order, accuracy, padding) for b in range(2)]
    upstream = rng.normal(size=(2, matrices[0].shape[0], 3))
    second = rng.normal(size=x.shape)
    static_layer = FD(order, t[0], accuracy, padding, dtype="float64")
    sample_layer = FD(order, accuracy=accuracy, padding=padding, dtype="float64")

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
        value_and_gradient = tf.function(value_and_gradient, input_signature=spec)
    else:
        value_and_gradient = per_backend.compiled(value_and_gradient, mode)
    y_static, g_static, s_static, y_sample, g_sample, s_sample = numpy(
        value_and_gradient(tensor(x), tensor(t), tensor(upstream),
                           tensor(second)))
    tol = 1e-11
    np.testing.assert_allclose(y_static[0], matrices[0] @ x[0], atol=tol)
    np.testing.assert_allclose(g_static[0], matrices[0].T @ upstream[0], atol=tol)
    np.testing.assert_allclose(s_static[0], matrices[0] @ second[0], atol=tol)
    for b in range(2):
        np.testing.assert_allclose(y_sample[b], matrices[b] @ x[b], atol=tol)
        np.testing.assert_allclose(g_sample[b], matrices[b].T @ upstream[b],
                                   atol=tol)
        np.testing.assert_allclose(s_sample[b], matrices[b] @ second[b],
                                   atol=tol)


def test_static_coordinates_along_another_axis(rng):
    t = random_grid(rng, 17)
    x = rng.normal(size=(2, 3, 17))
    y = numpy(FD(2, t, 2, axis=-1, dtype="float64")(x))
    matrix = reference_matrix(t, 2, 2, "same")
    np.testing.assert_allclose(y, x @ matrix.T, atol=1e-11)


def test_float32_per_sample_weights_with_time_stamps_relative_to_start(rng):
    t = random_grid(rng, 300) * 0.01
    x = np.sin(t)[None, :, None]
    want = np.gradient(x, t, axis=1, edge_order=2)
    got = numpy(FD(1)([x.astype("float32"), t[None].astype("float32")]))
    np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max())


# Layer contract: shapes, config, saving -------------------------------------

def test_static_coordinates_layer_contract(rng, tmp_path):
    t = random_grid(rng, 24)
    x = rng.normal(size=(2, 24, 3)).astype("float32")
    want = reference_matrix(t, 2, 2, "same") @ x.astype(np.float64)
    run_layer_test(FD, {"order": 2, "spacing": t, "accuracy": 2}, x,
                   expected_output=want, rtol=1e-4, atol=1e-4,
                   dynamic_axes=[], tmp_path=tmp_path)
    config = FD(2, t).get_config()
    assert config["spacing"] == t.tolist()


def test_functional_model_with_per_sample_time_stamps_saves_and_loads(rng,
                                                                       tmp_path):
    x_in = keras.Input(shape=(None, 2))
    t_in = keras.Input(shape=(None,))
    layer = FD(order=1, accuracy=2)
    y = layer([x_in, t_in])
    assert tuple(y.shape) == (None, None, 2)
    model = keras.Model([x_in, t_in], keras.layers.Concatenate()([x_in, y]))
    n = 50
    t = np.stack([random_grid(rng, n), random_grid(rng, n)]).astype("float32")
    x = np.sin(t)[..., None] * np.array([1.0, 2.0], "float32")
    out = model.predict([x, t], verbose=0)
    want = np.stack([np.gradient(x[b], t[b], axis=0, edge_order=2)
                     for b in range(2)])
    np.testing.assert_allclose(out[..., 2:], want, atol=2e-4)

    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded.predict([x, t], verbose=0), out)
    # Another length through the same model.
    t2, x2 = t[:, :20], x[:, :20]
    assert model([x2, t2]).shape == (2, 20, 4)


def test_shared_time_axis_of_shape_steps(rng):
    t = random_grid(rng, 30)
    x = rng.normal(size=(4, 30, 1))
    y = numpy(fdlayers.derivative(x, 2, tensor(t), 2, "valid"))
    np.testing.assert_allclose(y[..., 0], x[..., 0] @ reference_matrix(
        t, 2, 2, "valid").T, atol=1e-11)


# 4. Bad input -----------------------------------------------------------------

@pytest.mark.parametrize("spacing,message", [
    ([0.0, 1.0, 1.0, 2.0], "strictly increasing"),
    ([0.0, 2.0, 1.0, 3.0], "strictly increasing"),
    ([0.0, 1.0, np.nan, 3.0], "finite"),
    ([0.0, 1.0, 2.0, np.inf], "finite"),
    ([[0.0, 1.0, 2.0, 3.0]], "1-D"),
    ([0.0, 1.0], "at least 3"),
])
def test_bad_static_coordinates_fail_at_construction(spacing, message):
    with pytest.raises(ValueError, match=message) as info:
        FD(1, spacing)
    assert "`spacing`" in str(info.value)


def test_static_coordinates_refuse_periodic_and_wrong_lengths():
    with pytest.raises(ValueError, match="period"):
        FD(1, [0.0, 1.0, 2.5, 3.0], padding="periodic")
    layer = FD(1, [0.0, 1.0, 2.5, 3.0])
    with pytest.raises(ValueError, match="4 coordinates"):
        layer(np.zeros((1, 5, 1)))
    with pytest.raises(ValueError, match="4 coordinates"):
        layer.compute_output_shape((None, 6, 2))
    with pytest.raises(ValueError, match="static coordinates"):
        layer([np.zeros((1, 4, 1)), np.arange(4.0)[None]])


@pytest.mark.tensorflow_only
def test_static_coordinates_wrong_length_at_run_time():
    import tensorflow as tf

    graph = tf.function(FD(1, [0.0, 1.0, 2.5, 3.0]), input_signature=[
        tf.TensorSpec([None, None, 1], tf.float32)])
    graph(tf.zeros((1, 4, 1)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="coordinates"):
        graph(tf.zeros((1, 5, 1)))


BAD_TIMES = [
    [[0.0, 1.0, 1.0, 2.0, 3.0]],  # a repeated time stamp
    [[0.0, 1.0, 0.5, 2.0, 3.0]],
    [[0.0, 1.0, np.nan, 2.0, 3.0]],
    [[0.0, 1.0, 2.0, 3.0, np.inf]],
]


@pytest.mark.parametrize("t", BAD_TIMES)
def test_bad_per_sample_coordinates(t):
    x = np.zeros((1, 5, 1), "float32")
    t = np.array(t, "float32")
    layer = FD(1)
    with pytest.raises(ValueError, match="strictly increasing"):
        layer([x, t])
    with pytest.raises(ValueError, match="strictly increasing"):
        layer([tensor(x), tensor(t)])


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("t", BAD_TIMES)
def test_bad_per_sample_coordinates_at_run_time(t):
    import tensorflow as tf

    x = np.zeros((1, 5, 1), "float32")
    graph = tf.function(FD(1), input_signature=[[
        tf.TensorSpec([None, None, 1], tf.float32),
        tf.TensorSpec([None, None], tf.float32)]])
    graph([x, np.arange(5, dtype="float32")[None]])
    with pytest.raises(tf.errors.InvalidArgumentError, match="strictly increasing"):
        graph([x, np.array(t, "float32")])


def test_per_sample_shape_errors():
    layer = FD(1)
    with pytest.raises(ValueError, match="6 steps but the input has 5"):
        layer([np.zeros((1, 5, 1)), np.arange(6.0)[None]])
    with pytest.raises(ValueError, match="axis=1"):
        FD(1, axis=2)([np.zeros((1, 2, 5)), np.arange(5.0)[None]])
    with pytest.raises(ValueError, match="period"):
        FD(1, padding="periodic")([np.zeros((1, 5, 1)), np.arange(5.0)[None]])
    with pytest.raises(ValueError, match="at least 3"):
        layer([np.zeros((1, 2, 1)), np.arange(2.0)[None]])


def test_shared_time_axis_along_another_axis(rng):
    t = random_grid(rng, 19)
    x = rng.normal(size=(2, 3, 19))
    y = numpy(fdlayers.derivative(x, 1, tensor(t), 2, axis=2))
    np.testing.assert_allclose(y, np.gradient(x, t, axis=2, edge_order=2),
                               atol=1e-11)


@pytest.mark.tensorflow_only
@pytest.mark.parametrize("make", [
    lambda t, padding: fdlayers.FiniteDifference1D(2, t, accuracy=4,
                                                   padding=padding,
                                                   dtype="float64"),
    lambda t, padding: fdlayers.SavitzkyGolay1D(1, 7, 3, t, padding=padding,
                                                dtype="float64")],
    ids=["FiniteDifference1D", "SavitzkyGolay1D"])
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_static_grids_share_their_traced_functions(make, padding, rng):
    """In a TensorFlow graph a static grid's weights are arguments of the
    stencil's functions (`ops._shared_static`), so a layer on a new grid,
    as a new length needs, traces none of them anew; its results are the
    eager ones."""
    import tensorflow as tf
    from fdlayers import dispatch

    misses = []
    for n in (40, 57, 90):
        t = np.cumsum(rng.uniform(0.8, 1.2, n)) * 0.1
        layer = make(t, padding)
        x = rng.normal(size=(2, n, 3))
        before = dispatch._graph_pair.cache_info().misses
        y = tf.function(layer)(tf.constant(x))
        misses.append(dispatch._graph_pair.cache_info().misses - before)
        np.testing.assert_allclose(y, layer(x), rtol=1e-12, atol=1e-9)
    assert misses[0] <= 1 and misses[1:] == [0, 0], misses


@pytest.mark.skipif(keras.backend.backend() != "torch",
                    reason="PyTorch's windows written in place")
@pytest.mark.every_case  # this backend's own test: all of it
@pytest.mark.parametrize("kind", ["coordinates", "time stamps", "Savitzky-Golay"])
@pytest.mark.parametrize("order,accuracy,padding", [
    (1, 2, "same"), (2, 4, "valid"), (2, 3, "causal"), (3, 6, "same")])
def test_torch_writes_the_windows_into_one_tensor(kind, order, accuracy,
                                                  padding, monkeypatch, rng):
    """On PyTorch a stencil on coordinates or time stamps writes its
    interior into one output tensor, each term added in place
    (`kernels._apply_windows_into`); where a gradient is recorded, through
    an autograd function whose gradient is the transpose, written in place
    too (`kernels._windows_transpose`). Both agree with op by op
    everywhere (a NaN sample included), in float32 and float64, and so do
    the gradient and the gradient's own derivative."""
    import torch

    from fdlayers import kernels

    calls = []
    into = kernels._apply_windows_into
    monkeypatch.setattr(kernels, "_apply_windows_into",
                        lambda *a: calls.append(1) or into(*a))
    x = rng.standard_normal((3, 50, 2))
    x[1, 20, 1] = np.nan
    stamps = np.cumsum(rng.uniform(0.5, 1.5, (3, 50)), axis=1)
    for dtype in ("float32", "float64"):
        def run(grad=False):
            return run_on(tensor(x.astype(dtype)).requires_grad_(grad))

        def run_on(v):
            if kind == "coordinates":
                return fdlayers.derivative(v, order, random_grid(rng, 50),
                                           accuracy, padding)
            t = tensor(stamps.astype(dtype))
            if kind == "time stamps":
                return fdlayers.derivative(v, order, t, accuracy, padding)
            window = 2 * accuracy + 1
            return fdlayers.SavitzkyGolay1D(
                order, window, order + 1,
                padding="valid" if padding == "valid" else "same",
                dtype=dtype)([v, t])

        state = rng.bit_generator.state
        with torch.no_grad():
            got = numpy(run())
        assert len(calls) == 1
        rng.bit_generator.state = state  # the same coordinates again
        monkeypatch.setattr(kernels, "_torch_mode", lambda x: None)
        with torch.no_grad():
            want = numpy(run())
        monkeypatch.undo()
        monkeypatch.setattr(kernels, "_apply_windows_into",
                            lambda *a: calls.append(1) or into(*a))
        rng.bit_generator.state = state
        recorded = run(grad=True)  # through the autograd function
        assert len(calls) == 2
        calls.clear()
        assert type(recorded.grad_fn).__name__ == "ForwardBackward"
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        assert np.isnan(got).any() and not np.isnan(got).all()
        finite = ~np.isnan(want)
        scale = np.abs(want[finite]).max()
        tolerance = 1e-5 if dtype == "float32" else 1e-13
        np.testing.assert_allclose(got[finite], want[finite], rtol=0,
                                   atol=tolerance * scale)
        np.testing.assert_array_equal(numpy(recorded.detach()), got)

        # The gradient, and its derivative with respect to the upstream
        # gradient (the stencil again), against autodiff op by op.
        upstream = rng.standard_normal(want.shape)
        direction = rng.standard_normal(x.shape)
        def gradients():
            rng.bit_generator.state = state
            v = tensor(x.astype(dtype)).requires_grad_()
            u = tensor(upstream.astype(dtype)).requires_grad_()
            g, = torch.autograd.grad((run_on(v) * u).sum(), v,
                                     create_graph=True)
            d = tensor(direction.astype(dtype))
            gg, = torch.autograd.grad((g * d).sum(), u)
            return numpy(g.detach()), numpy(gg)

        got = gradients()
        assert len(calls) == 2  # the map, then the map again in gg
        calls.clear()
        monkeypatch.setattr(kernels, "_torch_mode", lambda x: None)
        want = gradients()
        monkeypatch.undo()
        monkeypatch.setattr(kernels, "_apply_windows_into",
                            lambda *a: calls.append(1) or into(*a))
        for a, b in zip(got, want):
            np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
            finite = ~np.isnan(b)
            np.testing.assert_allclose(
                a[finite], b[finite], rtol=0,
                atol=tolerance * np.abs(b[finite]).max())
