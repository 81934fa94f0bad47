"""Tests of fields: `fdlayers.partial` and the vector-calculus layers.

References are independent of fdlayers' stencils: closed-form derivatives
of polynomial and smooth fields (float64), findiff's operators on the same
grids, and exact vector identities. Backend-neutral (test_backends.py runs
it on JAX and PyTorch); on TensorFlow small inputs also take the compiled
path of large ones (`fused`), forced by lowering the size from which
`fdlayers.dispatch.placement` picks XLA.
"""

import keras
import numpy as np
import pytest
from numpy.polynomial import polynomial as P

import fdlayers
import per_backend
from fdlayers import dispatch, fields
from harness import run_layer_test
from per_backend import numpy, tensor

TF = keras.backend.backend() == "tensorflow"


@pytest.fixture(params=["composed", "fused"] if TF else ["default"])
def path(request, monkeypatch):
    """Each way a field operator runs: op by op through `derivative`, and,
    on TensorFlow, as one compiled function (forced on small inputs)."""
    if request.param == "fused":
        monkeypatch.setattr(dispatch, "_FUSION_MIN_SIZE", 0)
        # Eagerly, from the first call at a shape (not after a few calls
        # through the padded kernels: test_padded_kernels_at_new_sizes).
        monkeypatch.setattr(fields, "_FUSE_FROM_CALL", 1)
    return request.param


def grid(n, low=0.0, high=1.0, irregular=False, seed=0):
    """`n` coordinates on [low, high]: uniform, or jittered (non-uniform)."""
    s = np.linspace(low, high, n)
    if irregular:
        h = (high - low) / (n - 1)
        s[1:-1] += np.random.default_rng(seed).uniform(-0.3, 0.3, n - 2) * h
    return s


def _polygrid(c, axes):
    """The polynomial Σ c[i, j, ...] s0^i s1^j ... on the grid `axes`."""
    if len(axes) == 1:
        return P.polyval(axes[0], c)
    if len(axes) == 2:
        return P.polygrid2d(axes[0], axes[1], c)
    return P.polygrid3d(axes[0], axes[1], axes[2], c)


def poly_partial(c, orders):
    for k, order in enumerate(orders):
        if order:
            c = P.polyder(c, order, axis=k)
    return c


def batch(*fields_):
    """Fields (each an ndarray over the grid) as one input, channels last."""
    return np.stack(fields_, -1)[None]


def spacing_of(axes, irregular):
    return tuple(s if irregular else float(s[1] - s[0]) for s in axes)


# ---------------------------------------------------------------------------
# Exactness on polynomials, corners included.

@pytest.mark.parametrize("orders,accuracy,padding,irregular", [
    ((1, 1), 2, "same", False), ((2, 1), 4, "same", False),
    ((0, 3), 2, ("valid", "same"), False), ((1, 2), 3, "causal", False),
    ((2, 1), 2, ("same", "valid"), False),
    ((1, 1), 2, "same", True), ((2, 0), 2, ("same", "valid"), True),
])
def test_partial_exact_on_polynomials(orders, accuracy, padding, irregular,
                                      path, rng):
    axes = [grid(11, 0.5, 1.5, irregular, 1), grid(12, -1.0, 0.2, irregular, 2)]
    degree = [o + accuracy for o in orders]   # degree < order + accuracy
    c = rng.uniform(-1, 1, [d if o else 4 for d, o in zip(degree, orders)])
    x = batch(_polygrid(c, axes))
    expected = _polygrid(poly_partial(c, orders), axes)
    y = numpy(fdlayers.partial(tensor(x), orders, spacing_of(axes, irregular),
                               accuracy, padding))[0, ..., 0]
    pads = padding if isinstance(padding, tuple) else (padding,) * 2
    for k, pad in enumerate(pads):  # valid: the points with a full stencil
        if pad == "valid" and orders[k]:
            r = (orders[k] - 1) // 2 + accuracy // 2
            expected = np.take(expected, range(r, expected.shape[k] - r), k)
    if "causal" in pads:  # only points with order + accuracy - 1 of history
        cut = [o + accuracy - 1 if o else 0 for o in orders]
        y, expected = y[cut[0]:, cut[1]:], expected[cut[0]:, cut[1]:]
    np.testing.assert_allclose(y, expected, rtol=1e-8,
                               atol=1e-8 * np.abs(expected).max())


@pytest.mark.parametrize("layer,ndim", [
    ("Gradient", 2), ("Divergence", 2), ("Curl", 2), ("Laplacian", 2),
    ("Gradient", 3), ("Divergence", 3), ("Curl", 3), ("Laplacian", 3),
    ("Laplacian", 1),
])
def test_vector_calculus_exact_on_polynomials(layer, ndim, path, rng):
    """Degree 3 in each variable, accuracy 2: first derivatives are exact
    for degree < 3 and second for degree < 4 along the differentiated axis;
    so the polynomial has degree 2 (first) or 3 (Laplacian) per variable."""
    # Coordinate grids in 2-D, uniform ones (compiled whole where fused) in
    # 1-D and 3-D.
    axes = [grid(n, -0.5, 0.7 + 0.1 * n, ndim == 2, n)
            for n in (7, 8, 9)[:ndim]]
    degree = 4 if layer == "Laplacian" else 3
    components = {"Gradient": 1, "Laplacian": 1}.get(layer, ndim)
    cs = [rng.uniform(-1, 1, (degree,) * ndim) for _ in range(components * 2)]
    x = batch(*[_polygrid(c, axes) for c in cs])  # 2 fields, component-major
    fields_ = 2

    def d(c, k, order=1):
        return _polygrid(poly_partial(c, [order if j == k else 0
                                          for j in range(ndim)]), axes)

    comp = [cs[j * fields_:(j + 1) * fields_] for j in range(components)]
    if layer == "Gradient":
        expected = [d(c, k) for k in range(ndim) for c in comp[0]]
    elif layer == "Divergence":
        expected = [sum(d(comp[k][f], k) for k in range(ndim))
                    for f in range(fields_)]
    elif layer == "Laplacian":
        expected = [sum(d(c, k, 2) for k in range(ndim)) for c in comp[0]]
    elif ndim == 2:
        expected = [d(comp[1][f], 0) - d(comp[0][f], 1) for f in range(fields_)]
    else:
        expected = [d(comp[(i + 2) % 3][f], (i + 1) % 3)
                    - d(comp[(i + 1) % 3][f], (i + 2) % 3)
                    for i in range(3) for f in range(fields_)]
    expected = np.stack(expected, -1)[None]
    spacing = tuple(a if ndim == 2 else a[1] - a[0] for a in axes)
    y = numpy(getattr(fdlayers, layer)(spacing=spacing, dtype="float64")(
        tensor(x)))
    np.testing.assert_allclose(y, expected, rtol=1e-8,
                               atol=1e-8 * np.abs(expected).max())


# ---------------------------------------------------------------------------
# Convergence at the interior, the edges and the corners.

def _regions(shape, r):
    """Boolean masks of the interior, edge (one margin) and corner (two)."""
    margins = sum(np.logical_or(np.arange(n) < r, np.arange(n) >= n - r)
                  .reshape([-1 if j == k else 1 for j in range(len(shape))])
                  .astype(int) for k, n in enumerate(shape))
    return {"interior": margins == 0, "edges": margins == 1,
            "corners": margins == 2}


@pytest.mark.parametrize("operator,accuracy", [
    ((1, 1), 2), ((1, 1), 4), ("laplacian", 2), ("laplacian", 4),
    ((0, 1), 6)])
def test_convergence_slopes(operator, accuracy):
    errors = {}
    # Large enough to be asymptotic, small enough to stay above rounding.
    sizes = {2: (16, 32, 64), 4: (24, 48, 96), 6: (12, 24, 48)}[accuracy]
    for n in sizes:
        s = np.linspace(0.0, 1.0, n)
        h = s[1] - s[0]
        u, v = np.meshgrid(s, 1.2 * s, indexing="ij")
        f = np.sin(2.0 * u + 0.3) * np.exp(0.8 * v)
        if operator == "laplacian":
            exact = (0.64 - 4.0) * f
            y = fdlayers.Laplacian(spacing=(h, 1.2 * h), accuracy=accuracy,
                                   dtype="float64")(tensor(batch(f)))
        else:
            exact = {(1, 1): 2 * 0.8 * np.cos(2.0 * u + 0.3) * np.exp(0.8 * v),
                     (0, 1): 0.8 * f}[operator]
            y = fdlayers.partial(tensor(batch(f)), operator, (h, 1.2 * h),
                                 accuracy)
        error = np.abs(numpy(y)[0, ..., 0] - exact)
        r = accuracy // 2
        for region, where in _regions(f.shape, r).items():
            errors.setdefault(region, []).append(error[where].max())
    for region, values in errors.items():
        slopes = -np.diff(np.log2(values))
        assert abs(slopes[-1] - accuracy) <= 0.3, (region, values, slopes)


# ---------------------------------------------------------------------------
# findiff's operators on the same grids.

def _findiff_parts(irregular):
    axes = [grid(13, 0.0, 1.0, irregular, 3), grid(14, 0.0, 1.3, irregular, 4)]
    u, v = np.meshgrid(*axes, indexing="ij")
    f = np.sin(2.0 * u) * np.exp(v)
    g = np.cos(u + v) * u
    h = axes if irregular else [float(a[1] - a[0]) for a in axes]
    return axes, u, v, f, g, h


@pytest.mark.parametrize("irregular", [False, True])
def test_equal_to_findiff(irregular):
    findiff = pytest.importorskip("findiff")
    axes, u, v, f, g, h = _findiff_parts(irregular)
    spacing = tuple(h)
    vector = np.stack([f, g])
    grid_kw = {"coords": axes} if irregular else {"h": h}
    cases = [
        (findiff.Diff(0, h[0]) * findiff.Diff(1, h[1]), f,
         fdlayers.PartialDerivative((1, 1), spacing), batch(f)),
        (findiff.Gradient(acc=2, **grid_kw), f,
         fdlayers.Gradient(spacing), batch(f)),
        (findiff.Divergence(acc=2, **grid_kw), vector,
         fdlayers.Divergence(spacing), batch(f, g)),
        (findiff.Curl(acc=2, **grid_kw), vector,
         fdlayers.Curl(spacing), batch(f, g)),
    ]
    if not irregular:
        # On coordinate grids findiff's second derivative uses a 5-point
        # central window where fdlayers uses order + accuracy = 4 points
        # (test_findiff_edges_differ); uniform grids agree.
        cases.append((findiff.Laplacian(h=h, acc=2), f,
                      fdlayers.Laplacian(spacing), batch(f)))
    for reference, argument, layer, x in cases:
        layer.dtype_policy = keras.dtype_policies.get("float64")
        expected = np.asarray(reference(argument))
        if expected.ndim == 3:  # findiff stacks components first
            expected = np.moveaxis(expected, 0, -1)
        else:
            expected = expected[..., None]
        np.testing.assert_allclose(numpy(layer(tensor(x)))[0], expected,
                                   rtol=1e-9, atol=1e-9, err_msg=layer.name)


def test_findiff_edges_differ_at_accuracy_4():
    """findiff's one-sided rows start at the point itself (point 1 reads
    samples 1..m); fdlayers' are flush with the edge (samples 0..m-1), as
    FiniteDifference1D's. Both have accuracy 4 there; they agree at the
    interior and at the edge points themselves, and differ at points 1 and
    n-2, where fdlayers' error is the smaller on this field."""
    findiff = pytest.importorskip("findiff")
    s = np.linspace(0.0, 1.0, 41)
    h = s[1] - s[0]
    u, v = np.meshgrid(s, s, indexing="ij")
    f = np.sin(2.0 * u) * np.exp(v)
    exact = -4.0 * f + f
    ours = numpy(fdlayers.Laplacian(h, accuracy=4, dtype="float64")(
        tensor(batch(f))))[0, ..., 0]
    theirs = findiff.Laplacian(h=[h, h], acc=4)(f)
    near = np.zeros(f.shape, bool)
    near[[1, -2], :] = near[:, [1, -2]] = True
    np.testing.assert_allclose(ours[~near], theirs[~near], rtol=1e-9,
                               atol=1e-9)
    ours_error = np.abs(ours - exact)[near].max()
    theirs_error = np.abs(theirs - exact)[near].max()
    assert np.abs(ours - theirs)[near].max() > 1e-6
    assert ours_error < theirs_error < 1e-3


def test_periodic_fields(path):
    findiff = pytest.importorskip("findiff")
    n = 32
    s = np.arange(n) / n
    u, v = np.meshgrid(s, 2 * s, indexing="ij")   # periods 1 and 2
    f = np.sin(2 * np.pi * u) * np.cos(np.pi * v)
    h = (1.0 / n, 2.0 / n)
    ours = numpy(fdlayers.Laplacian(h, padding="periodic", dtype="float64")(
        tensor(batch(f))))[0, ..., 0]
    theirs = (findiff.Diff(0, h[0], periodic=True) ** 2
              + findiff.Diff(1, h[1], periodic=True) ** 2)(f)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-10)
    exact = -(4 + 1) * np.pi ** 2 * f
    assert np.abs(ours - exact).max() < 0.2  # O(h²): 5π²·(π²h²/12)·...
    mixed = numpy(fdlayers.partial(tensor(batch(f)), (1, 1), h, 4,
                                   ("periodic", "same")))[0, ..., 0]
    exact = -2 * np.pi ** 2 * np.cos(2 * np.pi * u) * np.sin(np.pi * v)
    assert np.abs(mixed - exact).max() < 5e-3


# ---------------------------------------------------------------------------
# Vector identities and the channel layout.

def test_curl_of_gradient_and_divergence_of_curl_vanish(path, rng):
    """The 1-D operators along different axes commute exactly, so these
    vanish to rounding on any field, polynomial or not."""
    x2 = rng.normal(size=(2, 9, 10, 3))
    grad = fdlayers.Gradient((0.1, 0.2), dtype="float64")
    curl = numpy(fdlayers.Curl((0.1, 0.2), dtype="float64")(grad(tensor(x2))))
    assert np.abs(curl).max() < 1e-11
    axes = [grid(n, 0, 1, True, n) for n in (7, 8, 6)]
    c = rng.uniform(-1, 1, (3, 4, 4, 4))
    x3 = batch(*[_polygrid(ci, axes) for ci in c])
    spacing = tuple(axes)
    curl3 = fdlayers.Curl(spacing, accuracy=4, dtype="float64")
    div = numpy(fdlayers.Divergence(spacing, accuracy=4, dtype="float64")(
        curl3(tensor(x3))))
    assert np.abs(div).max() < 1e-9
    zero = numpy(curl3(fdlayers.Gradient(spacing, accuracy=4,
                                         dtype="float64")(
        tensor(x3[..., :1]))))
    assert np.abs(zero).max() < 1e-9


def test_divergence_of_gradient_is_laplacian(path, rng):
    """Exact on quadratics (both operators are), for any number of channels
    and either data format."""
    s0, s1 = np.linspace(0, 1, 8), np.linspace(0, 2, 9)
    fields_ = [_polygrid(rng.uniform(-1, 1, (3, 3)), (s0, s1))
               for _ in range(3)]
    spacing = (s0[1], s1[1] - s1[0])
    for data_format in ("channels_last", "channels_first"):
        x = batch(*fields_)
        if data_format == "channels_first":
            x = np.moveaxis(x, -1, 1)
        kw = dict(spacing=spacing, data_format=data_format, dtype="float64")
        div_grad = fdlayers.Divergence(**kw)(fdlayers.Gradient(**kw)(
            tensor(x)))
        lap = fdlayers.Laplacian(**kw)(tensor(x))
        np.testing.assert_allclose(numpy(div_grad), numpy(lap), atol=1e-9)
        g = numpy(fdlayers.Gradient(**kw)(tensor(x)))
        assert g.shape[1 if data_format == "channels_first" else -1] == 6
    # Channel k·C + c of the gradient is ∂x_c/∂s_k.
    g = numpy(fdlayers.Gradient(spacing, dtype="float64")(tensor(batch(
        *fields_))))
    d1 = numpy(fdlayers.partial(tensor(batch(fields_[2])), (0, 1), spacing))
    np.testing.assert_allclose(g[..., 3 + 2], d1[..., 0], atol=1e-12)


# ---------------------------------------------------------------------------
# Compiled modes, gradients to the input, dtypes.

@pytest.mark.parametrize("mode", per_backend.MODES)
def test_modes_and_input_gradients(mode, path, rng):
    """Each mode gives the dense operator's values, its adjoint as the
    gradient, and the operator again as the gradient's gradient."""
    shape = (1, 6, 7, 2)
    size = int(np.prod(shape))
    layer = fdlayers.Laplacian((0.5, 0.25), accuracy=2, dtype="float64")
    basis = np.eye(size).reshape((size,) + shape[1:])
    matrix = numpy(layer(tensor(basis))).reshape(size, -1).T  # y = A x
    x = rng.normal(size=shape)
    upstream = rng.normal(size=shape)
    second = rng.normal(size=shape)
    run = per_backend.compiled(per_backend.value_and_gradients(layer), mode)
    y, dx, d2 = map(numpy, run(tensor(x), tensor(upstream), tensor(second)))
    np.testing.assert_allclose(y.ravel(), matrix @ x.ravel(), atol=1e-10)
    np.testing.assert_allclose(dx.ravel(), matrix.T @ upstream.ravel(),
                               atol=1e-10)
    np.testing.assert_allclose(d2.ravel(), matrix @ second.ravel(),
                               atol=1e-10)


def test_half_precision_and_integers():
    x = (np.arange(30.0).reshape(1, 5, 6, 1) ** 2 / 100).astype("float16")
    y16 = fdlayers.partial(tensor(x), (0, 2))
    assert keras.backend.standardize_dtype(y16.dtype) == "float16"
    y32 = fdlayers.partial(tensor(x.astype("float32")), (0, 2))
    np.testing.assert_array_equal(numpy(y16), numpy(y32).astype("float16"))
    yint = fdlayers.partial(tensor(np.arange(30).reshape(1, 5, 6, 1)), (1, 0))
    assert keras.backend.standardize_dtype(yint.dtype) == keras.config.floatx()
    np.testing.assert_allclose(numpy(yint), 6.0)


# ---------------------------------------------------------------------------
# The layer contract (harness.py).

@pytest.mark.parametrize("cls,kwargs,channels", [
    ("PartialDerivative", {"orders": (1, 2), "spacing": (0.5, 2.0)}, 2),
    ("Gradient", {"padding": "valid"}, 2),
    ("Divergence", {"spacing": 0.5, "accuracy": 4}, 4),
    ("Curl", {"padding": ("same", "periodic")}, 2),
    ("Laplacian", {"spacing": ([0.0, 0.5, 1.5, 2.0, 3.0, 3.5, 4.5, 5.0, 6.0],
                               1.0), "padding": ("same", "valid")}, 3),
    ("Gradient", {"data_format": "channels_first", "accuracy": 1,
                  "padding": "causal"}, 3),
])
def test_layer_contract(cls, kwargs, channels, rng, tmp_path):
    layer_cls = getattr(fdlayers, cls)
    if kwargs.get("data_format") == "channels_first":
        x = rng.normal(size=(2, channels, 9, 8)).astype("float32")
    else:
        x = rng.normal(size=(2, 9, 8, channels)).astype("float32")
    # Divergence and Curl need to know their channels; the spatial
    # lengths may be None.
    dynamic = (1, 2) if cls in ("Divergence", "Curl") else None
    run_layer_test(layer_cls, kwargs, x, tmp_path=tmp_path,
                   dynamic_axes=dynamic)


def test_layer_contract_3d(rng, tmp_path):
    x = rng.normal(size=(1, 5, 6, 7, 3)).astype("float32")
    y = run_layer_test(fdlayers.Curl, {"spacing": (1.0, 0.5, 0.25)}, x,
                       tmp_path=tmp_path, run_mixed_precision_check=False,
                       dynamic_axes=(1, 2, 3))
    assert y.shape == x.shape


def test_masks_are_refused():
    inputs = keras.Input((5, 4, 1))
    masked = keras.layers.Masking()(inputs)
    with pytest.raises(ValueError, match="does not support masks"):
        fdlayers.Laplacian()(masked)


# ---------------------------------------------------------------------------
# Errors name the argument.

x2d = np.zeros((1, 8, 9, 2))


@pytest.mark.parametrize("call,error,match", [
    (lambda: fdlayers.partial(x2d, (1, 0, 0)), ValueError,
     "`orders` has 3 entries but the input has 2 spatial axes"),
    (lambda: fdlayers.partial(x2d, (0, 0)), ValueError,
     "`orders` must differentiate along at least one axis"),
    (lambda: fdlayers.partial(x2d, (1, -1)), ValueError,
     "`orders` must hold non-negative integers"),
    (lambda: fdlayers.partial(x2d, 1), TypeError, "`orders` must be a tuple"),
    (lambda: fdlayers.partial(x2d, (1.5, 0)), TypeError, "`orders`"),
    (lambda: fdlayers.partial(x2d, (1, 0), padding="mirror"), ValueError,
     "`padding` must be one of"),
    (lambda: fdlayers.partial(x2d, (1, 0), padding=("same",) * 3), ValueError,
     "`padding` has 3 entries but the field has 2 spatial axes"),
    (lambda: fdlayers.partial(x2d, (1, 0), padding=("same", "wrap")),
     ValueError, r"`padding\[1\]` must be one of"),
    (lambda: fdlayers.partial(x2d, (1, 0), spacing=(1.0, 2.0, 3.0)),
     ValueError, "`spacing` has 3 entries but the field has 2"),
    (lambda: fdlayers.partial(x2d, (1, 0), spacing=(1.0, -2.0)), ValueError,
     r"`spacing\[1\]` must be a positive finite number"),
    (lambda: fdlayers.partial(x2d, (1, 0), spacing=(np.arange(7.0), 1.0)),
     ValueError, r"has 8 steps along spatial axis 0 .* `spacing\[0\]` has 7"),
    (lambda: fdlayers.partial(x2d, (1, 0), spacing=([0, 2, 1] * 3, 1.0)),
     ValueError, r"`spacing\[0\]` coordinates must be strictly increasing"),
    (lambda: fdlayers.partial(x2d, (1, 0), spacing=(np.arange(8.0), 1.0),
                              padding="periodic"), ValueError,
     r"'periodic' is not defined on the coordinate grid `spacing\[0\]`"),
    (lambda: fdlayers.partial(x2d, (1, 0), accuracy=3), ValueError,
     "`accuracy` must be even"),
    (lambda: fdlayers.partial(x2d, (1, 0), data_format="NHWC"), ValueError,
     "`data_format` must be"),
    (lambda: fdlayers.partial(np.zeros((2, 3)), (1,)), ValueError,
     "A field must have rank 3 to 5"),
    (lambda: fdlayers.partial(np.zeros((1, 3, 9, 1)), (1, 0), accuracy=4),
     ValueError, "too short along spatial axis 0"),
    (lambda: fdlayers.Divergence()(np.zeros((1, 5, 6, 3))), ValueError,
     r"`Divergence` on a field with 2 spatial axes takes 2·C channels"),
    (lambda: fdlayers.Curl()(np.zeros((1, 5, 3))), ValueError,
     "`Curl` needs a field with 2 or 3 spatial axes"),
    (lambda: fdlayers.Curl(spacing=(1.0,)), ValueError,
     "`Curl` needs a field with 2 or 3 spatial axes"),
    (lambda: fdlayers.Gradient(spacing=(1.0, 2.0), padding=("same",) * 3),
     ValueError, "one entry per spatial axis each"),
    (lambda: fdlayers.PartialDerivative((1, 1))(np.zeros((1, 5, 6, 7, 1))),
     ValueError, "`orders` has 2 entries but the input has 3"),
    (lambda: fdlayers.Laplacian(accuracy=0), ValueError,
     "`accuracy` must be a positive integer"),
    (lambda: fdlayers.Gradient(dtype="int32"), ValueError, "`dtype`"),
])
def test_errors_name_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.tensorflow_only
def test_padded_kernels_of_two_ranks(monkeypatch):
    """The kernel for lengths known at run time only is traced per rank: a
    field operator uses one 1-D stencil on fields of rank 4 and 5, and a
    function traced for both ranks would lose the rank."""
    import tensorflow as tf

    monkeypatch.setattr(dispatch, "_FUSION_MIN_SIZE", 0)
    layer = fdlayers.FiniteDifference1D(order=1, axis=1)
    for shape in ((1, 9, 4, 2), (1, 9, 4, 3, 2)):
        x = np.random.default_rng(0).normal(size=shape).astype("float32")
        traced = tf.function(layer, input_signature=[
            tf.TensorSpec((None,) * len(shape), tf.float32)])
        np.testing.assert_allclose(traced(x), layer(x), atol=1e-5)


@pytest.mark.tensorflow_only
def test_padded_kernels_at_new_sizes(monkeypatch, rng):
    """Eagerly, a large field at a new shape runs through the kernels
    compiled for padded sizes (none compiled for its shape), and so does a
    graph of unknown spatial sizes: the same values as op by op, edges and
    corners, valid, periodic and causal axes included, and the same input
    gradients. (Two shapes of the same padded size: one kernel each.)"""
    import tensorflow as tf

    laplacian = fdlayers.Laplacian((0.5, 0.25), accuracy=4, dtype="float64")
    cases = [(laplacian, (1, 9, 10, 2)), (laplacian, (1, 10, 9, 2)),
             (fdlayers.Gradient(padding=("valid", "periodic"),
                                dtype="float64"), (1, 9, 10, 1)),
             (fdlayers.Curl(0.5, padding="causal", accuracy=1,
                            dtype="float64"), (1, 9, 10, 2))]

    def values_and_gradient(layer, x, upstream):
        x = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
        return y.numpy(), tape.gradient(y, x, upstream).numpy()

    expected = []
    for layer, shape in cases:  # op by op
        x = rng.normal(size=shape)
        upstream = rng.normal(size=layer(x).shape)
        expected.append((x, upstream, values_and_gradient(layer, x, upstream)))
    monkeypatch.setattr(dispatch, "_FUSION_MIN_SIZE", 0)
    compiled = fields._fused_fn.cache_info().currsize
    for (layer, shape), (x, upstream, (y, dx)) in zip(cases, expected):
        if layer is laplacian and shape[1] == 10:
            got = values_and_gradient(layer, x, upstream)
            np.testing.assert_allclose(got[1], dx, rtol=1e-10, atol=1e-10)
            spec = tf.TensorSpec((None, None, None, 2), tf.float64)
            traced = tf.function(layer, input_signature=[spec])
            np.testing.assert_allclose(traced(x), y, rtol=1e-10, atol=1e-10)
        else:
            got = (layer(x),)
        np.testing.assert_allclose(got[0], y, rtol=1e-10, atol=1e-10)
    assert fields._fused_fn.cache_info().currsize == compiled


@pytest.mark.tensorflow_only
def test_run_time_start_is_not_compiled_in():
    """`kernels.take_at`'s start stays a parameter of the XLA kernel: were
    it compiled in as a constant, a padded kernel would be compiled for
    each length."""
    import tensorflow as tf

    from fdlayers import kernels

    take = tf.function(lambda x, start: kernels.take_at(x, 1, start, 2),
                       jit_compile=True)
    x = tf.reshape(tf.range(12.0), (2, 6))
    np.testing.assert_array_equal(take(x, tf.constant(3)), [[3, 4], [9, 10]])
    hlo = take.experimental_get_compiler_ir(x, tf.constant(3))(stage="hlo")
    assert "parameter(1)" in hlo, hlo


@pytest.mark.skipif(keras.backend.backend() != "torch",
                    reason="PyTorch's sums in place")
@pytest.mark.every_case  # this backend's own test: all of it
@pytest.mark.parametrize("name", ["Laplacian", "Divergence", "Curl"])
@pytest.mark.parametrize("ndim", [2, 3])
def test_torch_sums_the_terms_in_place(name, ndim, monkeypatch, rng):
    """On PyTorch, where no gradient is recorded, an operator's terms are
    summed into the first one in place (`fields._sums_in_place`), and
    subtracted where they are (the curl): the input is left as it was, and
    the result is that of the sums op by op, here and where a gradient is
    recorded."""
    import torch

    routes = []
    decide = fields._sums_in_place
    monkeypatch.setattr(fields, "_sums_in_place",
                        lambda x: routes.append(decide(x)) or routes[-1])
    channels = 2 if name == "Laplacian" else ndim
    x = rng.standard_normal((2,) + (9,) * ndim + (channels,))
    layer = getattr(fdlayers, name)(spacing=(0.5, 0.25, 2.0)[:ndim],
                                    accuracy=4, dtype="float64")
    v = tensor(x)
    with torch.no_grad():
        got = numpy(layer(v))
    assert routes == [True]
    np.testing.assert_array_equal(numpy(v), x)
    monkeypatch.setattr(fields, "_sums_in_place", lambda x: False)
    with torch.no_grad():
        want = numpy(layer(tensor(x)))
    np.testing.assert_array_equal(got, want)
    recorded = layer(tensor(x).requires_grad_())
    np.testing.assert_array_equal(numpy(recorded.detach()), want)
