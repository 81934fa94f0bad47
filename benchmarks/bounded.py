"""Section 15 of bench.py: what one call costs in memory, and what the
widest accepted windows cost on a first call.

    python benchmarks/bounded.py [--quick]

1. Peak memory of one call on a long series `(1, n, 1)` float64, as a
   multiple of the input's size, for every path (uniform, masked, static
   coordinates, per-sample time stamps; the last two also along the last
   axis of `(1, 1, n)`) eagerly and in `tf.function`,
   beside the floor `x * 2.0`; each in a fresh process, whose peak resident
   memory is reset just before the call (Linux only). The output itself is
   one input size. A `tf.function`'s first call includes its tracing;
   "any length" is a `tf.function` traced for `None` sizes, as `predict`
   and a served model trace one; "any batch" for a `None` batch only, as
   `predict` traces a model of a fixed length; "XLA" is compiled whole
   (`jit_compile=True`). Each cell gives the call, then the call and the
   result's `.numpy()`, which copies some results (any `tf.function`'s,
   `x * 2.0`'s too). 15d: the same call on JAX (eagerly and under
   `jax.jit`) and PyTorch, where installed.
2. The widest windows the layers accept, on `(1, 200, 1)`: the first call
   and a call at a new length (260 steps), each configuration in a fresh
   process, with the process's peak resident memory.
3. The time of a later call on long inputs in graphs (15c), traced for
   the shape, for `None` sizes and for a `None` batch, and compiled whole
   (`jit_compile=True`), against `x * 2.0` in the same mode: long inputs
   with per-call weights run in chunks.
"""

import argparse
import json
import os
import subprocess
import sys

_MEMORY_CHILD = r"""
import json, os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_ENABLE_X64", "1")
import numpy as np, keras, fdlayers

def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024

n, path, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
rng = np.random.default_rng(0)
# ", last axis": the series along the last axis of (1, 1, n), not the steps.
last = path.endswith(", last axis")
path = path.removesuffix(", last axis")
shape = (1, 1, n) if last else (1, n, 1)
x = keras.ops.convert_to_tensor(rng.standard_normal(shape))
kw = dict(order=2, accuracy=4, axis=2 if last else 1)
grid = np.cumsum(rng.uniform(0.5, 1.5, n))
mask = keras.ops.convert_to_tensor(np.arange(n)[None] < n - 10)
t = keras.ops.convert_to_tensor(grid if last else grid[None])
fn = {"x * 2.0": lambda x: x * 2.0,
      "uniform": lambda x: fdlayers.derivative(x, **kw),
      "masked": lambda x: fdlayers.derivative(x, mask=mask, **kw),
      "static coordinates": lambda x: fdlayers.derivative(x, spacing=grid, **kw),
      "time stamps": lambda x: fdlayers.derivative(x, spacing=t, **kw)}[path]
if mode == "jax.jit":
    import jax
    fn = jax.jit(fn)
elif mode != "eager":
    import tensorflow as tf
    if mode == "tf.function":
        fn = tf.function(fn)
    elif mode == "any length":  # as `predict` and a served model trace it
        fn = tf.function(fn, input_signature=[tf.TensorSpec(
            (None, 1, None) if last else (None, None, 1), tf.float64)])
    elif mode == "any batch":  # as `predict` traces a model of a fixed length
        fn = tf.function(fn, input_signature=[tf.TensorSpec(
            (None, 1, n) if last else (None, n, 1), tf.float64)])
    elif mode == "XLA":  # compiled whole
        fn = tf.function(fn, jit_compile=True)
getattr(x, "block_until_ready", lambda: x)()  # (JAX: the input is there)
before = status("VmRSS:")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets the peak (VmHWM) to the current size
y = fn(x)
getattr(y, "block_until_ready", lambda: y)()
call = status("VmHWM:") - before
y = keras.ops.convert_to_numpy(y)
print(json.dumps({"call": call, "extra": status("VmHWM:") - before,
                  "input": n * 8}))
"""

_WIDEST_CHILD = r"""
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np, tensorflow as tf, fdlayers, resource

config, mode = json.loads(sys.argv[1]), sys.argv[2]
how = config.pop("input")
cls = getattr(fdlayers, config.pop("class"))
if "coordinates" in config:
    config["spacing"] = np.cumsum(np.random.default_rng(1).uniform(
        0.5, 1.5, config.pop("coordinates")))
layer = cls(**config)

def call(*args):
    return layer(list(args) if len(args) > 1 else args[0])

fn = {"eager": call, "tf.function": tf.function(call),
      "XLA": tf.function(call, jit_compile=True)}[mode]
times = []
lengths = [200] if "spacing" in config and not np.isscalar(
    config["spacing"]) else [200, 260]
if config.get("window", 0) > 200:
    lengths = [300, 360]
for n in lengths:
    rng = np.random.default_rng(n)
    x = np.sin(0.05 * np.arange(n)).reshape(1, n, 1).astype("float32")
    t = np.cumsum(rng.uniform(0.5, 1.5, n)).reshape(1, n).astype("float32")
    start = time.perf_counter()
    np.asarray(fn(x, t) if how == "stamps" else fn(x))
    times.append(time.perf_counter() - start)
print(json.dumps({"seconds": times, "max_rss": resource.getrusage(
    resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""

_SPEED_CHILD = r"""
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np, tensorflow as tf, fdlayers

shape, dtype = tuple(json.loads(sys.argv[1])), sys.argv[2]
rng = np.random.default_rng(0)
x = tf.constant(rng.standard_normal(shape).astype(dtype))
mask = tf.constant(np.arange(shape[1]) % 1000 < 990) & tf.ones(shape[:2], bool)
t = tf.constant(np.cumsum(rng.uniform(0.5, 1.5, shape[:2]), 1).astype(dtype))
grid = np.cumsum(rng.uniform(0.5, 1.5, shape[1]))
kw = dict(order=2, accuracy=4)
paths = {"x * 2.0": lambda x, m, s: x * 2.0,
         "masked": lambda x, m, s: fdlayers.derivative(x, mask=m, **kw),
         "time stamps": lambda x, m, s: fdlayers.derivative(x, spacing=s, **kw)}
if shape[0] == 1:
    paths["static coordinates"] = (
        lambda x, m, s: fdlayers.derivative(x, spacing=grid, **kw))
specs = {"tf.function": None,
         "any length": [(None, None) + shape[2:], (None, None), (None, None)],
         "any batch": [(None,) + shape[1:], (None, shape[1]),
                       (None, shape[1])],
         "XLA": None}
result = {}
for path, fn in paths.items():
    for mode, spec in specs.items():
        function = tf.function(fn, jit_compile=mode == "XLA")
        if spec is not None:
            function = function.get_concrete_function(*[
                tf.TensorSpec(s, d) for s, d in zip(spec, (dtype, tf.bool,
                                                           dtype))])
        np.asarray(function(x, mask, t))
        times = []
        for _ in range(5):
            start = time.perf_counter()
            np.asarray(function(x, mask, t))
            times.append(time.perf_counter() - start)
        result[f"{path}|{mode}"] = float(np.median(times))
print(json.dumps(result))
"""


def section_speed(shape, dtype):
    print(f"\n15c. Time of a later call on {shape} {dtype} in graphs "
          "(order 2, accuracy 4; median of 5, with the result's .numpy()): "
          "traced for the shape, for None sizes (any length), for a None "
          "batch (any batch) and compiled whole (XLA); each as a multiple "
          "of x * 2.0's in the same mode, the milliseconds in brackets "
          "(one fresh process)")
    data = _child(_SPEED_CHILD, json.dumps(shape), dtype)
    if data is None:
        print("failed")
        return
    modes = ("tf.function", "any length", "any batch", "XLA")
    print(f"{'path':<20}" + "".join(f" {mode:>18}" for mode in modes))
    for path in dict.fromkeys(key.split("|")[0] for key in data):
        cells = [f"{data[f'{path}|{m}'] / data[f'x * 2.0|{m}']:.1f}x "
                 f"({data[f'{path}|{m}'] * 1e3:.0f} ms)" for m in modes]
        print(f"{path:<20}" + "".join(f" {c:>18}" for c in cells),
              flush=True)


WIDEST = [
    ("time stamps, causal, order 1, accuracy 62",
     {"class": "FiniteDifference1D", "order": 1, "accuracy": 62,
      "padding": "causal", "input": "stamps"}),
    ("time stamps, causal, order 32, accuracy 32",
     {"class": "FiniteDifference1D", "order": 32, "accuracy": 32,
      "padding": "causal", "input": "stamps"}),
    ("time stamps, order 2, accuracy 62",
     {"class": "FiniteDifference1D", "order": 2, "accuracy": 62,
      "input": "stamps"}),
    ("static coordinates, order 62, accuracy 2",
     {"class": "FiniteDifference1D", "order": 62, "accuracy": 2,
      "coordinates": 200, "input": "series"}),
    ("uniform, order 2, accuracy 62",
     {"class": "FiniteDifference1D", "order": 2, "accuracy": 62,
      "input": "series"}),
    ("Savitzky-Golay, window 255, polyorder 32",
     {"class": "SavitzkyGolay1D", "order": 1, "window": 255,
      "polyorder": 32, "input": "series"}),
]


def _child(code, *args, backend="tensorflow"):
    run = subprocess.run([sys.executable, "-c", code, *args],
                         capture_output=True, text=True,
                         env=dict(os.environ, KERAS_BACKEND=backend))
    if run.returncode:
        return None
    return json.loads(run.stdout.strip().splitlines()[-1])


# The paths of 15a and 15d; ", last axis": along the last axis of
# `(1, 1, n)`, which runs in chunks with that axis moved to the steps.
PATHS = ("x * 2.0", "uniform", "masked", "static coordinates", "time stamps",
         "static coordinates, last axis", "time stamps, last axis")


def section_memory(n):
    print(f"\n15a. Peak extra memory of one call on (1, {n}, 1) float64, "
          "as a multiple of the input (order 2, accuracy 4; fresh process "
          "each; the output is 1x): the call, then with the result's "
          ".numpy(), which copies some results")
    if not os.path.exists("/proc/self/clear_refs"):
        print("(needs Linux's /proc: skipped)")
        return
    modes = ("eager", "tf.function", "any length", "any batch", "XLA")
    print(f"{'path':<29}" + "".join(f" {mode:>14}" for mode in modes))
    for path in PATHS:
        cells = []
        for mode in modes:
            data = _child(_MEMORY_CHILD, str(n), path, mode)
            cells.append("failed" if data is None else
                         f"{data['call'] / data['input']:.1f}x, "
                         f"{data['extra'] / data['input']:.1f}x")
        print(f"{path:<29}" + "".join(f" {cell:>14}" for cell in cells),
              flush=True)


def section_backends(n):
    print(f"\n15d. Peak extra memory of one call on (1, {n}, 1) float64 on "
          "JAX and PyTorch, as a multiple of the input (order 2, accuracy 4; "
          "fresh process each; the output is 1x)")
    if not os.path.exists("/proc/self/clear_refs"):
        print("(needs Linux's /proc: skipped)")
        return
    runs = [("jax", "eager"), ("jax", "jax.jit"), ("torch", "eager")]
    print(f"{'path':<29}" + "".join(f" {b + ' ' + m:>15}" for b, m in runs))
    for path in PATHS:
        cells = []
        for backend, mode in runs:
            data = _child(_MEMORY_CHILD, str(n), path, mode,
                          backend=backend)
            cells.append("failed or absent" if data is None else
                         f"{data['call'] / data['input']:.1f}x")
        print(f"{path:<29}" + "".join(f" {cell:>15}" for cell in cells),
              flush=True)


def section_widest(modes):
    print("\n15b. The widest accepted windows on (1, 200, 1) float32: "
          "first call, a call at a new length, and the process's peak "
          "resident memory (fresh process each, TensorFlow and fdlayers "
          "loaded: about 0.8 GB of it)")
    print(f"{'configuration':<42} {'mode':<12} {'first':>7} {'new length':>11}"
          f" {'max RSS':>8}")
    for name, config in WIDEST:
        for mode in modes:
            data = _child(_WIDEST_CHILD, json.dumps(config), mode)
            if data is None:
                print(f"{name:<42} {mode:<12} failed")
                continue
            seconds = data["seconds"] + [float("nan")]
            print(f"{name:<42} {mode:<12} {seconds[0]:6.2f}s "
                  f"{seconds[1]:10.2f}s {data['max_rss'] / 2**30:7.2f}G",
                  flush=True)


def main(quick=False):
    # 2**24: the long series the limits are stated for; 2**21: below the
    # chunks of eager calls (4 * fdlayers.ops.CHUNK_POINTS) and of short
    # static grids, which keep their weights.
    for n in [2 ** 20] if quick else [2 ** 21, 2 ** 24]:
        section_memory(n)
    section_backends(2 ** 20 if quick else 2 ** 24)
    section_widest(["eager", "XLA"] if quick
                   else ["eager", "tf.function", "XLA"])
    section_speed((1, 2 ** 20 if quick else 2 ** 24, 1), "float64")
    if not quick:
        section_speed((64, 65536, 4), "float32")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    main(parser.parse_args().quick)
