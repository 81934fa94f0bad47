"""Bounded cost: the most expensive configurations the layers accept run
within fixed limits of memory and time, from a model file too; many
distinct lengths do not grow the process; caches are bounded by bytes.

Which configurations are the most expensive, by their operation counts:

- time stamps (`layer([x, t])`): Fornberg's recurrence costs about
  m²·(order + 1) operations for a window of m nodes, and its causal head
  rows, one window size each, m³ (kernels.fornberg_loop runs them as one
  loop). The widest: causal, order 1, accuracy 62 (m = 63); causal order 32,
  accuracy 32 (the most columns); central order 2, accuracy 62 (m = 64);
  masked causal windows, every step's window size in one loop
  (masking._causal_windows_at_once).
- static coordinates: order 62 (m = 64, 63 columns for every point).
- uniform grids: the widest stencils, order 2, accuracy 62 and causal
  order 3, accuracy 61 (32 × 64 and 63 × 64 edge weights).
- Savitzky–Golay: a 255-sample window at polynomial order 32, and masked.

Each runs in a child process (tests/bounded_child.py, started in the
background when collection ends, tests/background.py) with its address
space capped at its warmed-up size plus `BUDGET_MB` and an alarm, and its
resident memory may grow by at most `GROWTH_MB`, for the first call and
a call at a second length in every mode of the backend. These are the
README's stated limits ("a few seconds and a few hundred MB" on
`(1, 200, 1)`).

Backend-neutral: the child runs on the backend of this process.
"""

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

import background
import fdlayers
import per_backend
from fdlayers import caches, stencils
from per_backend import numpy, tensor

HERE = pathlib.Path(__file__).resolve().parent
BUDGET_MB = 1024  # address space beyond the warmed-up process
GROWTH_MB = 400  # resident memory a case may add
ALARM_S = 60  # seconds for a case, every mode and both lengths

FD, SG = "FiniteDifference1D", "SavitzkyGolay1D"
EXPENSIVE = [
    ("stamps causal 1/62", dict({"class": FD, "order": 1, "accuracy": 62,
                                 "padding": "causal"}), "stamps"),
    ("stamps causal 32/32", dict({"class": FD, "order": 32, "accuracy": 32,
                                  "padding": "causal"}), "stamps"),
    ("stamps same 2/62", dict({"class": FD, "order": 2, "accuracy": 62}),
     "stamps"),
    ("masked stamps causal 1/62", dict({"class": FD, "order": 1,
                                        "accuracy": 62,
                                        "padding": "causal"}),
     "masked stamps"),
    ("coordinates 62/2", dict({"class": FD, "order": 62, "accuracy": 2,
                               "coordinates": 200}), "series"),
    ("uniform 2/62", dict({"class": FD, "order": 2, "accuracy": 62}),
     "series"),
    ("uniform causal 3/61", dict({"class": FD, "order": 3, "accuracy": 61,
                                  "padding": "causal"}), "series"),
    ("savgol 255/32", dict({"class": SG, "order": 1, "window": 255,
                            "polyorder": 32}), "series"),
    ("masked savgol 101/4", dict({"class": SG, "order": 1, "window": 101,
                                  "polyorder": 4}), "masked"),
    # A longer series, where the weights' working memory, ≈ 8 values a
    # point for each node and derivative (32 × 31 here), is what grows:
    # 555 MB in one piece, about 90 MB in chunks (fdlayers.ops._chunk_share).
    # Padding "valid" runs as "same" in chunks, keeping the interior.
    ("long stamps valid 30/2", dict({"class": FD, "order": 30, "accuracy": 2,
                                     "padding": "valid"}), "stamps"),
    # A long series in one program (jax.jit, jit_compile=True): XLA held
    # every chunk's buffers at once, 610 MB at 2**22 float32 steps under
    # jax.jit and 548 MB with jit_compile=True, where a loop over the
    # chunks takes 151 MB and 84 MB.
    ("long stamps 2**22", dict({"class": FD, "order": 2, "accuracy": 4}),
     "stamps"),
]
LONG = {"long stamps valid 30/2": [24000], "long stamps 2**22": [1 << 22]}
LONG_COMPILED = {"long stamps 2**22": ["XLA", "jax.jit"]}
# (The long wide case on TensorFlow only: the chunks' sizes are shared by
# the backends, and on PyTorch, beside the other suites of the test
# command on 2 cores, its 3.7 s took more than the alarm.)
TENSORFLOW_ONLY = {"long stamps valid 30/2"}


# By default every case runs eagerly, and the one whose compiled form cost
# the most before (minutes and gigabytes, unrolled) runs compiled whole too;
# FDLAYERS_SLOW=1 runs every case in every mode (seconds of compiling each).
SLOW = os.environ.get("FDLAYERS_SLOW") == "1"
COMPILED_BY_DEFAULT = {"stamps causal 1/62": ["XLA", "jax.jit"]}
LENGTHS_COUNT = 1000


def _modes(name):
    if name in LONG:  # (compiled whole, 24000 steps of it: minutes)
        return (["eager"] + LONG_COMPILED.get(name, [])
                + (["tf.function"] if SLOW else []))
    if SLOW:
        return None  # all of them
    return ["eager"] + COMPILED_BY_DEFAULT.get(name, [])


def _case(name, config, how):
    lengths = (LONG[name] if name in LONG else
               [200] if "coordinates" in config else  # the grid's own
               [300, 360] if config.get("window", 0) > 200 else [200, 260])
    case = {"name": name, "layer": config, "input": how, "lengths": lengths,
            "budget_mb": BUDGET_MB, "alarm_s": ALARM_S}
    if config.get("padding") == "valid":  # a window less one fewer outputs
        case["shorter"] = config["order"] + config["accuracy"] - 1
    if _modes(name):
        case["modes"] = _modes(name)
    return case


def _run_child(directory):
    """Every case, run in one child process (one import of the backend),
    after a process of its own has written the crafted model file:
    `(run, size of the file)`. In the background (tests/background.py):
    the children take a core while the other tests run."""
    model = pathlib.Path(directory) / "crafted.keras"
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend(),
               PYTHONPATH=os.pathsep.join([str(HERE.parent)] + sys.path))
    child = [sys.executable, str(HERE / "bounded_child.py")]
    crafted = subprocess.run(child + ["--craft", str(model)],
                             capture_output=True, text=True, timeout=300,
                             env=env)
    if crafted.returncode != 0:
        return crafted, 0
    # Eager calls of these sizes compile nothing on TensorFlow (NumPy, or
    # op by op); a Keras-style tf.function runs the kernels shared between
    # lengths.
    modes = {"tensorflow": ["tf.function"]}.get(keras.backend.backend(),
                                                 ["eager"])
    cases = [_case(name, config, how) for name, config, how in EXPENSIVE
             if name not in TENSORFLOW_ONLY
             or keras.backend.backend() == "tensorflow"]
    cases.append({"name": "model", "model": str(model), "input": "stamps",
                  "lengths": [200, 260], "budget_mb": BUDGET_MB,
                  "alarm_s": ALARM_S})
    if keras.backend.backend() != "jax":
        cases.append({"name": "lengths", "count": LENGTHS_COUNT,
                      "modes": modes,
                      "layers": [{"class": FD, "order": 2, "accuracy": 4},
                                 {"class": FD, "order": 1, "accuracy": 4}],
                      "inputs": ["series", "stamps"]})
    run = subprocess.run(child + [json.dumps(cases)], capture_output=True,
                         text=True, timeout=900, env=env)
    return run, model.stat().st_size


MEASURES_MEMORY = os.path.exists("/proc/self/clear_refs")


def start_background_runs(config, items):
    """The child, in the background (tests/background.py)."""
    if MEASURES_MEMORY and any("child" in item.fixturenames
                               for item in items):
        background.submit(config, "bounded child", _run_child)


@pytest.fixture(scope="module")
def child(request):
    """Each case's JSON line from the child, by name."""
    if not MEASURES_MEMORY:
        pytest.skip("measures memory through Linux's /proc")
    run, size = background.submit(request.config, "bounded child",
                                  _run_child).result()
    assert run.returncode == 0, run.stderr[-3000:]
    results = {line["name"]: line for line in map(
        json.loads, run.stdout.strip().splitlines())}
    results["model"]["size"] = size
    return results


@pytest.mark.parametrize("name", [
    name for name, _, _ in EXPENSIVE
    if name not in TENSORFLOW_ONLY or keras.backend.backend() == "tensorflow"])
def test_the_most_expensive_configurations_stay_within_limits(name, child):
    # The child fails (and so every test here) if a case needs more address
    # space than its cap or more time than its alarm.
    for mode, result in child[name]["modes"].items():
        assert result["grown"] <= GROWTH_MB * 2**20, (mode, result)


def test_a_crafted_model_file_runs_within_limits(child):
    """A `.keras` file of a few kilobytes holding the most expensive
    time-stamp layers loads in safe mode and predicts at two lengths
    within the same limits as the layers themselves."""
    assert child["model"]["size"] < 64 * 1024
    result = child["model"]["modes"]["predict"]
    assert result["grown"] <= GROWTH_MB * 2**20, result


@pytest.mark.skipif(
    keras.backend.backend() == "jax",
    reason="eager JAX compiles every operation for every new shape, in any "
           "Keras layer (a Conv1D keeps ≈ 4 MB a length): fdlayers' own "
           "kernels are shared between lengths there too (padded to "
           "buckets), but the process grows with JAX's caches")
def test_a_thousand_distinct_lengths_do_not_grow_the_process(child):
    """Compiled kernels are shared between lengths (padded to buckets), so
    their number grows with the logarithm of the longest length, not with
    the number of lengths: after the first hundred lengths, the next nine
    hundred add next to nothing."""
    result = child["lengths"]
    assert result["after all"] - result["after a tenth"] <= 48 * 2**20, result


# ---------------------------------------------------------------------------
# Caches and weights in bounded memory.

def test_the_bytes_cache_evicts_by_size_and_keeps_the_newest():
    calls = []

    @caches.bytes_cache(100, cost=lambda key, size: size, max_entries=3)
    def build(key, size):
        calls.append(key)
        return object()

    a = build("a", 40)
    assert build("a", 40) is a and calls == ["a"]
    build("b", 40)
    build("a", 40)  # a is now the most recently used
    build("c", 40)  # over 100 bytes: b, the least recently used, goes
    assert build.cache_bytes() == 80
    assert build("a", 40) is a and calls == ["a", "b", "c"]
    build("b", 40)
    assert calls == ["a", "b", "c", "b"]
    huge = build("huge", 1000)  # larger than the budget: kept alone
    assert build("huge", 1000) is huge and build.cache_bytes() == 1000
    for key in "defg":
        build(key, 1)
    assert build.cache_bytes() == 3  # at most three entries
    build.cache_clear()
    assert build.cache_bytes() == 0


def test_static_grids_of_deleted_layers_are_not_kept(monkeypatch):
    """Functions built for static coordinate grids are kept within
    dispatch.STATIC_CACHE_BYTES (here, as if every grid were larger than
    it): the weights of a deleted layer's grid go with the next grid."""
    import gc
    import weakref

    from fdlayers import dispatch, ops

    monkeypatch.setattr(dispatch, "STATIC_CACHE_BYTES", 1)
    ops._static_fn.cache_clear()
    dispatch._graph_pair.cache_clear()
    n = 300
    x = np.ones((1, n, 1), "float32")
    built = []
    for seed in range(4):
        grid = np.cumsum(np.random.default_rng(seed).uniform(0.5, 1.5, n))
        fdlayers.FiniteDifference1D(2, grid, accuracy=4)(x)
        built.append(weakref.ref(ops._static_fn(
            ("difference", 2, 4, "same"), 1, 3, "float32", grid.tobytes(),
            False)))
        assert ops._static_fn.cache_bytes() == ops._static_bytes(
            ("difference", 2, 4, "same"), 1, 3, "float32", grid.tobytes(),
            False)
    gc.collect()
    assert [ref() is None for ref in built] == [True, True, True, False]
    ops._static_fn.cache_clear()


@pytest.mark.skipif(keras.backend.backend() != "tensorflow"
                    or not MEASURES_MEMORY,
                    reason="TensorFlow's conversion, measured through "
                           "Linux's /proc")
def test_long_arrays_become_tensors_in_one_size_of_memory():
    """`dispatch.captured(..., shared=True)` writes long arrays once,
    concatenated and cast, into memory that the tensor then shares: the
    tensor keeps their values after they are gone, and the conversion's
    peak is one size of it (a static grid's weights, a window per point;
    TensorFlow's own conversion keeps its copy of an array beside the
    tensor)."""
    import gc

    from bounded_child import _reset_peak, _status
    from fdlayers import dispatch

    rng = np.random.default_rng(3)
    rows = 1 << 22
    parts = [rng.standard_normal((n, 4)) for n in (3, rows, 5)]
    expected = np.concatenate(parts).astype("float32")
    gc.collect()
    before = _status("VmRSS:")
    _reset_peak()
    tensor = dispatch.captured(*parts, dtype="float32", shared=True)
    grown = _status("VmHWM:") - before
    del parts
    gc.collect()
    assert tensor.dtype == "float32" and tensor.shape == expected.shape
    np.testing.assert_array_equal(tensor.numpy(), expected)
    assert grown < 1.5 * expected.nbytes, grown / expected.nbytes
    starts = dispatch.captured(np.arange(rows), dtype="int32")
    assert starts.dtype == "int32"
    np.testing.assert_array_equal(starts.numpy(), np.arange(rows))


@pytest.mark.parametrize("spec, scale, dtype", [
    (("difference", 2, 4, "same"), 1.0, "float32"),
    (("difference", 2, 4, "same"), 3e-4, "float64"),
    (("difference", 3, 6, "valid"), 1e-200, "float32"),  # folded: 2**1877
    (("difference", 30, 4, "same"), 1e5, "float32"),
    (("difference", 1, 62, "same"), 1.0, "float64"),
    # Weights beyond float32's range before they are folded (two samples
    # 1e-40 apart): not in place.
    (("difference", 2, 2, "same"), None, "float32"),
])
def test_static_rows_written_in_place_are_the_float64_rows_cast(
        spec, scale, dtype, monkeypatch):
    """A static grid's kept rows of weights, written block by block into
    the memory their tensor shares, cast before they are scaled by a power
    of two, are those computed in float64 at once, scaled and cast."""
    from fdlayers import ops

    monkeypatch.setattr(stencils, "WORKING_BYTES", 1)  # 256 points a block
    grid = np.cumsum(np.random.default_rng(5).uniform(0.1, 2.0, 400))
    if scale is None:
        grid -= grid[0]
        grid[1] = 1e-40
    else:
        grid *= scale
    layout, head, interior, tail, exponent = ops._folded_weights(
        spec, dtype, grid.tobytes())
    expected = np.concatenate([np.reshape(part, (-1, layout.width))
                               for part in (head, interior, tail)])
    in_place = ops._rows_in_place(spec, dtype, grid.tobytes())
    if scale is None:
        raw = stencils.window_weights(ops._grid_units(grid)[1], *spec[1:])
        assert np.abs(raw[2]).max() > np.finfo("float32").max
        assert in_place is None
        return
    assert in_place[0] == layout and in_place[1] == exponent
    assert in_place[2].dtype == dtype
    np.testing.assert_array_equal(in_place[2], expected.astype(dtype))


@pytest.mark.skipif(keras.backend.backend() != "tensorflow"
                    or not MEASURES_MEMORY,
                    reason="TensorFlow's tensors, measured through Linux's "
                           "/proc")
def test_static_rows_take_about_one_size_of_them(monkeypatch):
    """The kept rows of a long static grid cost about their own size to
    make (a float64 array of them and its cast copy took 3× and more)."""
    import gc

    from bounded_child import _reset_peak, _status
    from fdlayers import ops

    monkeypatch.setattr(stencils, "WORKING_BYTES", 1 << 22)
    grid = np.cumsum(np.random.default_rng(6).uniform(0.5, 1.5, 1 << 21))
    key = grid.tobytes()
    ops._static_rows.cache_clear()
    gc.collect()
    before = _status("VmRSS:")
    _reset_peak()
    # (Windows of 12: the rows, 96 MB, against a few grid sizes, 16 MB each,
    # that the scaling, the checks and the windows' starts take besides.)
    layout, _, rows, _ = ops._static_rows(
        ("difference", 2, 10, "same"), "float32", key)
    grown = _status("VmHWM:") - before
    ops._static_rows.cache_clear()
    size = len(grid) * layout.width * 4
    assert rows.shape == (len(grid), layout.width)
    assert grown < 2 * size, grown / size


@pytest.mark.parametrize("order, accuracy, padding", [
    (1, 2, "same"), (3, 4, "causal"), (62, 2, "same")])
def test_static_weights_in_chunks_equal_those_at_once(order, accuracy,
                                                      padding, monkeypatch):
    t = np.cumsum(np.random.default_rng(4).uniform(0.5, 1.5, 700))
    whole = stencils.window_weights(t, order, accuracy, padding)
    monkeypatch.setattr(stencils, "WORKING_BYTES", 1)  # 256 points a chunk
    chunked = stencils.window_weights(t, order, accuracy, padding)
    np.testing.assert_array_equal(chunked[2], whole[2])
    for a, b in zip(chunked[1] + [chunked[3]], whole[1] + [whole[3]]):
        np.testing.assert_array_equal(a, b)


# Long inputs with per-call weights (time stamps, masks) run in chunks of
# points along the steps (fdlayers.ops._in_chunks), whose results must be
# those of the whole input: here with chunks of a few windows.
CHUNKED = [
    ("time stamps", dict(order=2, accuracy=4), "same", "stamps"),
    ("time stamps, causal", dict(order=1, accuracy=3), "causal", "stamps"),
    ("time stamps, masked", dict(order=1, accuracy=4), "same",
     "masked stamps"),
    ("mask", dict(order=2, accuracy=4), "causal", "masked"),
    ("coordinates, masked", dict(order=1, accuracy=4), "same",
     "masked coordinates"),
    ("Savitzky-Golay, mask", dict(order=1, window=31, polyorder=3), "same",
     "masked"),
    ("Savitzky-Golay, time stamps", dict(order=2, window=27, polyorder=4),
     "same", "stamps"),
    # Wider than the unrolled recurrence: fewer points a chunk, and eagerly
    # on TensorFlow the chunks in the graph of the shared loop.
    ("time stamps, wide", dict(order=2, accuracy=14), "same", "stamps"),
    ("time stamps, wide, causal", dict(order=1, accuracy=14), "causal",
     "stamps"),
    # Padding "valid": padding "same" in chunks, its interior kept.
    ("time stamps, valid", dict(order=2, accuracy=4), "valid", "stamps"),
    ("time stamps, masked, valid", dict(order=1, accuracy=4), "valid",
     "masked stamps"),
    ("Savitzky-Golay, time stamps, valid", dict(order=1, window=9,
                                                polyorder=3),
     "valid", "stamps"),
    # Long static grids: weights computed in the graph, chunk by chunk
    # (ops._static_in_chunks), against the grid's float64 weights at once.
    ("coordinates", dict(order=2, accuracy=4), "same", "coordinates"),
    ("coordinates, causal", dict(order=1, accuracy=3), "causal",
     "coordinates"),
    ("Savitzky-Golay, coordinates", dict(order=1, window=9, polyorder=3),
     "same", "coordinates"),
    ("coordinates, valid", dict(order=1, accuracy=4), "valid",
     "coordinates"),
]


# Where the lengths are known at run time only (`predict`, a served model),
# the loop's bounds are computed then (ops._looped_any_size); where only
# the batch is, the chunks are as for a batch of one, compiled per batch.
ANY_LENGTH = (["any length", "any batch"] if per_backend.BACKEND == "tensorflow"
              else [])


def _chunk_reach(spec, per_point):
    """`(width, step)` of the chunks of a stencil of `spec` in these tests
    (ops._chunk_route): `width` samples more on either side of `step`
    outputs, chunks of 16 points over a batch of 2 being shorter than four
    widths. `per_point`: weights per point (time stamps, coordinates)."""
    from fdlayers import dispatch, ops

    plan = ops._windows_of(spec) if per_point else dispatch.plan_of(spec)
    width = plan.width + plan.min_length
    return width, 4 * width


def _wrap(mode, monkeypatch):
    """`per_backend.on_path`, and "any batch": a tf.function traced for
    inputs of any size along their first axis."""
    if mode != "any batch":
        return per_backend.on_path(mode, monkeypatch)
    import tensorflow as tf

    def wrap(fn):
        function = tf.function(fn)

        def call(*args):
            args = [tf.convert_to_tensor(a) for a in args]
            return function.get_concrete_function(*[
                tf.TensorSpec([None] + a.shape[1:], a.dtype) for a in args
            ])(*args)
        return call
    return wrap


@pytest.mark.parametrize("name, kwargs, padding, how, mode", [
    pytest.param(*case, mode, id=f"{case[0]}-{mode}") for case in CHUNKED
    for mode in ["eager"] + [
        mode for mode in per_backend.MODES[1:] + ANY_LENGTH
        # (In a TensorFlow graph, chunks run in a loop: every case.)
        if mode == "tf.function"
        or case[0] in ("time stamps", "mask", "coordinates",
                       "time stamps, valid", "coordinates, valid")
        or (mode in ANY_LENGTH and "Savitzky" in case[0])]])
def test_long_inputs_in_chunks_equal_the_whole(name, kwargs, padding, how,
                                               mode, monkeypatch):
    from fdlayers import ops

    # Chunks of `step` outputs, from `width` samples more on either side
    # (ops._chunk_route, with chunks of 16 points over a batch of 2):
    # four chunks and a part, and masked runs across their bounds and
    # within a window of them, on either side.
    spec = (("savgol", kwargs["order"], kwargs["window"], kwargs["polyorder"])
            if "window" in kwargs else
            ("difference", kwargs["order"], kwargs["accuracy"]))
    spec += ("same" if padding == "valid" else padding,)
    width, step = _chunk_reach(spec, per_point=how != "masked")
    rng = np.random.default_rng(7)
    n = 4 * step + 2 * width + 7
    x = rng.standard_normal((2, n, 3))
    t = np.cumsum(rng.uniform(0.5, 1.5, (2, n)), axis=1)
    mask = np.ones((2, n), bool)
    for row, start, length in ((0, step - 2, 3), (1, 2 * step - 4, 8),
                               (0, 3 * step - 5, 10), (1, 0, 2),
                               (0, step // 2, 1), (1, n - 3, 3),
                               (1, step - 6, 4), (0, 2 * step - 3, 2),
                               (1, 3 * step + 2, 3), (0, 4 * step + 1, 1)):
        mask[row, start:start + length] = False
    op = (fdlayers.derivative if "accuracy" in kwargs
          else ops.savitzky_golay)
    # (A grid in units far from 1: its weights are computed on it scaled
    # by a power of two, and scaled back, chunk by chunk too.)
    spacing = (t if "stamps" in how else t[0] * 3e-4 if "coordinates" in how
               else 0.5)
    masked = "masked" in how

    def run(a, m):
        return op(a, spacing=tensor(spacing) if "stamps" in how else spacing,
                  padding=padding, mask=m if masked else None, **kwargs)

    wrap = _wrap(mode, monkeypatch)
    monkeypatch.setattr(ops, "CHUNK_POINTS", 1 << 30)
    monkeypatch.setattr(ops, "SMALL_CHUNK_POINTS", 1 << 30)
    whole = numpy(wrap(run)(tensor(x), tensor(mask)))
    monkeypatch.setattr(ops, "CHUNK_POINTS", 16)  # chunks of 4 windows
    monkeypatch.setattr(ops, "SMALL_CHUNK_POINTS", 16)
    per_backend.clear_caches()
    chunked = numpy(wrap(run)(tensor(x), tensor(mask)))
    np.testing.assert_allclose(chunked, whole, rtol=1e-12,
                               atol=1e-12 * np.abs(whole).max())


@pytest.mark.parametrize("how, mode", [
    (how, mode) for how in ("stamps", "coordinates", "stamps, valid")
    for mode in per_backend.MODES + ANY_LENGTH[:1]])
def test_long_series_along_another_axis_run_in_chunks(how, mode,
                                                      monkeypatch):
    """Coordinates along an axis other than the steps: the axis is moved to
    the steps, where the chunks run, and back; the values are the whole
    input's."""
    from fdlayers import ops

    rng = np.random.default_rng(9)
    n = 700
    x = rng.standard_normal((2, 3, n))
    grid = np.cumsum(rng.uniform(0.5, 1.5, n)) * 3e-4
    spacing = tensor(grid) if "stamps" in how else grid
    padding = "valid" if "valid" in how else "same"
    routes = []
    route = ops._chunk_route
    monkeypatch.setattr(ops, "_chunk_route", lambda *a, **k: routes.append(
        route(*a, **k)) or routes[-1])

    def run(v):
        return fdlayers.derivative(v, 2, spacing, accuracy=4,
                                   padding=padding, axis=-1)

    wrap = _wrap(mode, monkeypatch)
    for points in ("CHUNK_POINTS", "SMALL_CHUNK_POINTS"):
        monkeypatch.setattr(ops, points, 1 << 30)
    whole = numpy(wrap(run)(tensor(x)))
    for points in ("CHUNK_POINTS", "SMALL_CHUNK_POINTS"):
        monkeypatch.setattr(ops, points, 16)
    per_backend.clear_caches()
    routes.clear()
    # (A function of its own: `jax.jit` keeps the trace of `run`.)
    chunked = numpy(wrap(lambda v: run(v))(tensor(x)))
    assert any(r != "whole" for r in routes)
    assert chunked.shape == whole.shape == x.shape[:2] + (
        n - 5 if padding == "valid" else n,)  # windows of 6
    np.testing.assert_allclose(chunked, whole, rtol=1e-12,
                               atol=1e-12 * np.abs(whole).max())


@pytest.mark.parametrize("how, mode", [
    pytest.param(how, mode, marks=(
        # The loop over chunks of a length known at run time differentiates
        # alike whatever its chunks compute: the default run takes it masked.
        pytest.mark.slow if mode == "any length" and how != "masked" else ()))
    # (Compiled whole, in a loop: TensorFlow's XLA differentiates the
    # chunks unrolled, fdlayers.ops._program_loop.)
    for mode in per_backend.MODES + ANY_LENGTH
    for how in ["coordinates", "stamps", "masked"]
    # (Any batch differs from tf.function only in the chunks' bounds.)
    if mode != "any batch" or how == "masked"])
def test_long_inputs_in_chunks_have_the_gradients_of_short_ones(
        how, mode, monkeypatch):
    """The chunked paths (weights in the graph; in a TensorFlow graph, a
    loop over the chunks) have the transposed map as their gradient, and
    that gradient's own, as the whole input at once: float32 input
    (a static grid's weights are float64 either way)."""
    from fdlayers import ops

    rng = np.random.default_rng(8)
    n = 300  # more than three chunks
    x, upstream, second = (rng.standard_normal((2, n, 2)).astype("float32")
                           for _ in range(3))
    grid = np.cumsum(rng.uniform(0.5, 1.5, n))
    mask = tensor(np.arange(n)[None] % 40 < [[35], [30]])
    spacing = {"coordinates": grid * 3e-4,  # in units far from 1
               "stamps": tensor(np.stack([grid, 2 * grid]).astype("float32")),
               "masked": 0.5}[how]
    wrap = _wrap(mode, monkeypatch)
    run = wrap(per_backend.value_and_gradients(
        lambda v: fdlayers.derivative(
            v, 2, spacing, accuracy=4,
            mask=mask if how == "masked" else None)))
    args = [tensor(a) for a in (x, upstream, second)]
    whole = [numpy(v) for v in run(*args)]
    monkeypatch.setattr(ops, "CHUNK_POINTS", 16)
    monkeypatch.setattr(ops, "SMALL_CHUNK_POINTS", 16)
    per_backend.clear_caches()
    run = wrap(per_backend.value_and_gradients(
        lambda v: fdlayers.derivative(
            v, 2, spacing, accuracy=4,
            mask=mask if how == "masked" else None)))
    chunked = [numpy(v) for v in run(*args)]
    for got, want in zip(chunked, whole):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-5,
                                   atol=1e-6 * np.abs(want).max())


@pytest.mark.parametrize("where", [0, 15, 16, 17, 40, 298])
def test_long_time_stamps_are_checked_in_chunks(where, monkeypatch):
    """Long time stamps are checked a chunk at a time (the differences of
    the whole would be two more input sizes): a repeated stamp is found
    wherever it is, at a chunk's edge too (chunks of 16 stamps here)."""
    from fdlayers import ops

    monkeypatch.setattr(ops, "CHUNK_POINTS", 16)
    monkeypatch.setattr(ops, "SMALL_CHUNK_POINTS", 16)
    t = np.cumsum(np.ones((2, 300)), axis=1)
    t[1, where + 1] = t[1, where]
    x = tensor(np.zeros((2, 300, 1)))
    # (Under jax.jit nothing is checked: see fdlayers.ops._check_times.)
    for mode in [m for m in per_backend.MODES[:2] + ANY_LENGTH
                 if m != "jax.jit"]:
        call = _wrap(mode, monkeypatch)(
            lambda a, s: fdlayers.derivative(a, spacing=s))
        with pytest.raises(Exception, match="strictly increasing"):
            numpy(call(x, tensor(t)))
    t[1, where + 1] += 0.5
    np.testing.assert_allclose(numpy(fdlayers.derivative(x, spacing=tensor(t))),
                               0.0)


@pytest.mark.parametrize("how", ["stamps", "masked"])
def test_inputs_about_one_chunk_long_equal_the_whole(how, monkeypatch):
    """Every chunk's input has one size (fdlayers.ops._in_chunks): where
    that size reaches the input's length, whether in one chunk or two, the
    input is not cut, and the result is the whole input's."""
    from fdlayers import ops

    width, step = _chunk_reach(("difference", 2, 4, "same"),
                               per_point=how == "stamps")
    rng = np.random.default_rng(9)
    for n in (step - 1, step + width - 1, step + width, step + 2 * width - 1,
              step + 2 * width, step + 2 * width + 1, 2 * step + width):
        x = rng.standard_normal((2, n, 1))
        t = np.cumsum(rng.uniform(0.5, 1.5, (2, n)), axis=1)
        mask = np.arange(n)[None] % 13 < [[11], [12]]

        def run(a, s, m):
            return fdlayers.derivative(
                a, 2, spacing=s if how == "stamps" else 1.0, accuracy=4,
                mask=m if how == "masked" else None)

        args = [tensor(a) for a in (x, t, mask)]
        monkeypatch.setattr(ops, "CHUNK_POINTS", 1 << 30)
        monkeypatch.setattr(ops, "SMALL_CHUNK_POINTS", 1 << 30)
        whole = numpy(run(*args))
        monkeypatch.setattr(ops, "CHUNK_POINTS", 16)
        monkeypatch.setattr(ops, "SMALL_CHUNK_POINTS", 16)
        for mode in per_backend.MODES[:2] + ANY_LENGTH:
            got = numpy(_wrap(mode, monkeypatch)(run)(*args))
            np.testing.assert_allclose(got, whole, rtol=1e-12,
                                       atol=1e-12 * np.abs(whole).max(),
                                       err_msg=f"{mode}, {n} steps")


# A graph's chunks are written into one buffer (ops._looped): a batch of one
# whose outputs end on 64 bytes is the buffer's front, shared, not copied.
_WRITTEN_IN_PLACE = r"""
import os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np, tensorflow as tf, fdlayers
from bounded_child import _reset_peak, _status

how, n = sys.argv[1], int(sys.argv[2])
spec = [tf.TensorSpec((None, None, 1), tf.float64),
        tf.TensorSpec((None, None), tf.float64),
        tf.TensorSpec((None, None), tf.bool)]

def run(x, t, m):
    return fdlayers.derivative(x, 2, spacing=t if how == "stamps" else 1.0,
                               accuracy=4, mask=m if how == "masked" else None)

def inputs(n, seed):
    rng = np.random.default_rng(seed)
    return (tf.constant(rng.standard_normal((1, n, 1))),
            tf.constant(np.cumsum(rng.uniform(0.5, 1.5, (1, n)), 1)),
            tf.constant(np.arange(n)[None] % 1000 < 990))

# As `predict` and a served model run it: traced for any length, its chunks
# warmed up on a shorter series.
f = tf.function(run).get_concrete_function(*spec)
f(*inputs(300_000, 1)).numpy()
args = inputs(n, 2)
before = _status("VmRSS:")
_reset_peak()
y = f(*args)
print((_status("VmHWM:") - before) / (n * 8))
"""


@pytest.mark.skipif(per_backend.BACKEND != "tensorflow" or not MEASURES_MEMORY,
                    reason="TensorFlow's graph loop, measured through "
                           "Linux's /proc")
@pytest.mark.parametrize("how", ["stamps", "masked"])
def test_a_graphs_chunks_take_about_one_output_size(how):
    """A long series in a graph's loop of chunks takes about one size of its
    output: each piece is written where it goes. (Pieces gathered and
    concatenated took 1.9× a float64 input masked and 2.5× with time
    stamps, on 2**22 steps.)"""
    out = subprocess.run(
        [sys.executable, "-c", _WRITTEN_IN_PLACE, how, str(1 << 22)],
        capture_output=True, text=True, cwd=HERE, timeout=300,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(HERE)] + sys.path)))
    assert out.returncode == 0, out.stderr[-3000:]
    grown = float(out.stdout.split()[-1])
    assert grown < 1.6, grown


@pytest.mark.parametrize("mode", ["tf.function"] + ANY_LENGTH)
def test_a_graphs_chunks_of_one_series_equal_the_whole(mode, monkeypatch):
    """A batch of one series, its outputs ending on 64 bytes or not (the
    buffer's front shared, or copied: ops._looped), in chunks, gives the
    whole input's values, and in a `tf.function` its gradient."""
    from fdlayers import ops

    if per_backend.BACKEND != "tensorflow":
        pytest.skip("a TensorFlow graph's loop")
    import tensorflow as tf

    rng = np.random.default_rng(10)
    for n in (160, 163):  # 160 float64 outputs end on 64 bytes, 163 do not
        x, upstream = (rng.standard_normal((1, n, 1)) for _ in range(2))
        t = np.cumsum(rng.uniform(0.5, 1.5, (1, n)), axis=1)
        mask = np.arange(n)[None] % 23 < 20
        for how in ("stamps", "masked"):
            def run(v, u):
                with tf.GradientTape() as tape:
                    tape.watch(v)
                    y = fdlayers.derivative(
                        v, 2, spacing=tensor(t) if how == "stamps" else 1.0,
                        accuracy=4,
                        mask=tensor(mask) if how == "masked" else None)
                if mode != "tf.function":
                    return y, y
                return y, tape.gradient(y, v, output_gradients=u)

            args = [tensor(a) for a in (x, upstream)]
            monkeypatch.setattr(ops, "CHUNK_POINTS", 1 << 30)
            monkeypatch.setattr(ops, "SMALL_CHUNK_POINTS", 1 << 30)
            whole = [numpy(v) for v in _wrap(mode, monkeypatch)(run)(*args)]
            monkeypatch.setattr(ops, "CHUNK_POINTS", 16)
            monkeypatch.setattr(ops, "SMALL_CHUNK_POINTS", 16)
            per_backend.clear_caches()
            chunked = [numpy(v)
                       for v in _wrap(mode, monkeypatch)(run)(*args)]
            for got, want in zip(chunked, whole):
                np.testing.assert_allclose(
                    got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max(),
                    err_msg=f"{how}, {n} steps, {mode}")
