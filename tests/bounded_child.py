"""A child process for test_bounded_cost.py: runs configurations under limits.

    python bounded_child.py CASES_JSON
    python bounded_child.py --craft PATH

For each case (a layer's config, how its input is given, the modes to run
it in), after a warm-up that loads the backend's machinery with a narrow
layer: the address space is capped at its size then plus `budget_mb`
(`RLIMIT_AS`, so an allocation beyond it fails), an alarm at `alarm_s`, and
the peak resident memory reset; the layer's first call and a call at a
second length run in each mode. One JSON line per case reports the peak
growth of resident memory and the seconds taken (informative only: the
tests assert the limits, which are what an operator sets, not times).

A case with "model" loads that `.keras` file (safe mode) and predicts;
`--craft PATH` writes such a file, in a process of its own, so that the
child that loads it has built nothing of it.
The "lengths" case calls layers at many distinct lengths and reports the
resident memory after the first tenth and after all of them.
"""

import functools
import json
import os
import resource
import signal
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import fdlayers  # noqa: E402

BACKEND = keras.backend.backend()


def _status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def _reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _modes():
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return {"eager": lambda f: f, "tf.function": tf.function,
                "XLA": lambda f: tf.function(f, jit_compile=True)}
    if BACKEND == "jax":
        import jax

        return {"eager": lambda f: f, "jax.jit": jax.jit}
    return {"eager": lambda f: f}


def _inputs(n, how, seed=0):
    rng = np.random.default_rng(seed)
    x = np.sin(0.05 * np.arange(n)).reshape(1, n, 1).astype("float32")
    t = np.cumsum(rng.uniform(0.5, 1.5, n)).reshape(1, n).astype("float32")
    mask = np.ones((1, n), dtype=bool)
    mask[:, n - n // 5:] = False
    if how == "stamps":
        return (x, t), {}
    if how == "masked stamps":
        return (x, t), {"mask": mask}
    if how == "masked":
        return (x,), {"mask": mask}
    return (x,), {}


def _layer(config):
    config = dict(config)
    cls = getattr(fdlayers, config.pop("class"))
    if "coordinates" in config:
        n = config.pop("coordinates")
        config["spacing"] = np.cumsum(
            np.random.default_rng(1).uniform(0.5, 1.5, n))
    return cls(**config)


def _caller(layer):
    def call(*args, **kwargs):
        return layer(list(args) if len(args) > 1 else args[0], **kwargs)
    return call


def _run(case):
    """Peak growth of resident memory and seconds, by mode."""
    modes = {name: wrap for name, wrap in _modes().items()
             if name in case.get("modes", _modes())}
    if "model" in case:
        model = keras.saving.load_model(case["model"], safe_mode=True)
        calls = [("predict", lambda *a: model.predict(
            list(a) if len(a) > 1 else a[0], verbose=0))]
        lengths = case["lengths"]
    else:
        layer = _layer(case["layer"])
        lengths = case["lengths"]
        calls = []
        for mode, wrap in modes.items():
            calls.append((mode, wrap(_caller(layer))))
    report = {}
    for mode, call in calls:
        before = _status("VmRSS:")
        _reset_peak()
        start = time.perf_counter()
        for n in lengths:
            args, kwargs = _inputs(n, case.get("input", "series"))
            y = np.asarray(keras.ops.convert_to_numpy(call(*args, **kwargs)))
            if not y.shape[:2] == (1, n - case.get("shorter", 0)):
                raise AssertionError(f"{mode}: shape {y.shape} for n={n}")
        report[mode] = {"grown": _status("VmHWM:") - before,
                        "seconds": round(time.perf_counter() - start, 2)}
    return report


def _warm_up():
    x = np.sin(np.arange(64.0)).reshape(1, 64, 1).astype("float32")
    t = np.arange(64.0, dtype="float32").reshape(1, 64)
    for wrap in _modes().values():
        for layer, args in ((fdlayers.FiniteDifference1D(), x),
                            (fdlayers.FiniteDifference1D(), [x, t]),
                            (fdlayers.SavitzkyGolay1D(), x)):
            keras.ops.convert_to_numpy(wrap(_caller(layer))(
                *(args if isinstance(args, list) else [args])))


def _lengths(case):
    """Resident memory after a tenth of the distinct lengths, and after all.

    A `tf.function` here relaxes its shapes, as Keras' own functions do
    (`predict`, `fit`): one trace for every length. (Without it, TensorFlow
    traces and keeps a graph for each new length, whatever it holds.)"""
    modes = _modes()
    if BACKEND == "tensorflow":
        import tensorflow as tf

        modes["tf.function"] = functools.partial(tf.function,
                                                 reduce_retracing=True)
    layers = [_layer(config) for config in case["layers"]]
    calls = [(wrap(_caller(layer)), how)
             for layer, how in zip(layers, case["inputs"])
             for wrap in (modes[m] for m in case["modes"])]
    count = case["count"]
    marks = []
    for i, n in enumerate(np.random.default_rng(2).permutation(
            np.arange(100, 100 + 7 * count, 7))):
        for call, how in calls:
            args, _ = _inputs(int(n), how)
            keras.ops.convert_to_numpy(call(*args))
        if i + 1 in (count // 10, count):
            marks.append(_status("VmRSS:"))
    return {"after a tenth": marks[0], "after all": marks[1]}


def craft(path):
    """A small `.keras` file holding the two most expensive time-stamp
    layers (the widest causal window, the most columns)."""
    x = keras.Input((None, 1))
    t = keras.Input((None,))
    y = fdlayers.FiniteDifference1D(1, accuracy=62, padding="causal")([x, t])
    y = fdlayers.FiniteDifference1D(32, accuracy=32, padding="causal")([y, t])
    keras.Model([x, t], y).save(path)


def main():
    if sys.argv[1] == "--craft":
        craft(sys.argv[2])
        return
    cases = json.loads(sys.argv[1])
    _warm_up()
    for case in cases:
        if "count" in case:
            print(json.dumps({"name": case["name"], **_lengths(case)}),
                  flush=True)
            continue
        limit = _status("VmSize:") + case["budget_mb"] * 2**20
        resource.setrlimit(resource.RLIMIT_AS,
                           (limit, resource.RLIM_INFINITY))
        signal.alarm(case["alarm_s"])
        report = _run(case)
        signal.alarm(0)
        resource.setrlimit(resource.RLIMIT_AS,
                           (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        print(json.dumps({"name": case["name"], "modes": report}), flush=True)


if __name__ == "__main__":
    main()
