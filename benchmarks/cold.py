"""Section 10 of bench.py: the cold paths, where users meet fdlayers.

Each figure stands beside a plain-Keras stand-in measured in the same run
(a `Conv1D` with the same window and `padding="same"`, in the same model),
or beside the NumPy/SciPy peer. Every configuration runs in a fresh process,
so that nothing compiled or traced for one is reused by the next:

  a. the first `predict`, and the first call of a `tf.function`, at each of
     10 new sequence lengths from 100 to 10 000 steps, and the steady-state
     `predict` at the same lengths;
  b. an exported SavedModel's `serve` at 10 new lengths, loaded in a fresh
     process;
  c. the first `fit` epoch on batches of varying lengths, padded and masked
     or bucketed by `tf.data`;
  d. eager calls on one series `(1, n, 1)` against `numpy.gradient` and
     `scipy.signal.savgol_filter`.

    python benchmarks/bench.py --only 10      # ≈ 4 minutes on 2 cores
    python benchmarks/cold.py --quick         # fewer configurations
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap

LENGTHS = [int(round(100 * 100 ** (i / 9))) for i in range(10)]  # 100..10000
CHANNELS = 3
BATCH = 8

# name -> (layer expression, stand-in window, kind). `kind`: "uniform",
# "coordinates" (a layer per length: its coordinates fix the length) or
# "stamps" (per-sample time stamps, the model takes [x, t]).
CONFIGS = {
    "FD order 1, acc 2": ("fdlayers.FiniteDifference1D(1, 0.01, 2)", 3,
                          "uniform"),
    "FD order 2, acc 4": ("fdlayers.FiniteDifference1D(2, 0.01, 4)", 5,
                          "uniform"),
    "FD order 2, acc 6": ("fdlayers.FiniteDifference1D(2, 0.01, 6)", 7,
                          "uniform"),
    "FD order 2, acc 4, coordinates": (
        "fdlayers.FiniteDifference1D(2, np.cumsum(np.full(n, 0.01)), 4)", 6,
        "coordinates"),
    "FD order 1, acc 2, [x, t]": ("fdlayers.FiniteDifference1D(1, accuracy=2)",
                                  3, "stamps"),
    "FD order 2, acc 4, [x, t]": ("fdlayers.FiniteDifference1D(2, accuracy=4)",
                                  6, "stamps"),
    "SG window 5": ("fdlayers.SavitzkyGolay1D(1, 5, 2, 0.01)", 5, "uniform"),
    "SG window 11": ("fdlayers.SavitzkyGolay1D(1, 11, 3, 0.01)", 11,
                     "uniform"),
    "SG window 41": ("fdlayers.SavitzkyGolay1D(1, 41, 3, 0.01)", 41,
                     "uniform"),
}
QUICK = ["FD order 2, acc 4", "FD order 2, acc 4, [x, t]", "SG window 11"]

_PRELUDE = """
import os, sys, json, time, statistics
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np, keras, tensorflow as tf
import fdlayers
rng = np.random.default_rng(0)

def clock(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
"""

_NEW_LENGTHS = _PRELUDE + """
layer_source, window, kind, lengths = json.loads(sys.argv[1])

def build(n, standin):
    x_in = keras.Input((None, {channels}))
    inputs = [x_in]
    h = x_in
    if kind == "stamps":
        t_in = keras.Input((None,))
        inputs.append(t_in)
        h = [x_in, t_in]
    if standin:
        if kind == "stamps":
            h = keras.layers.Concatenate()([x_in, keras.layers.Reshape((-1, 1))(t_in)])
        h = keras.layers.Conv1D({channels}, window, padding="same")(h)
    else:
        h = eval(layer_source)(h)
    model = keras.Model(inputs, keras.layers.Dense(1)(h))
    return model, tf.function(lambda *a: model(list(a) if len(a) > 1 else a[0]))

models = {{}}
rows = []
for n in lengths:
    x = rng.normal(size=({batch}, n, {channels})).astype("float32")
    data = [x]
    if kind == "stamps":
        data.append(np.cumsum(rng.uniform(0.005, 0.015, size=({batch}, n)), 1).astype("float32"))
    row = {{"n": n}}
    for standin in (True, False):  # the stand-in first: it pays the imports
        key = "conv" if standin else "fd"
        if kind == "coordinates" or key not in models:
            models[key] = build(n, standin)
        model, traced = models[key]
        arg = data if len(data) > 1 else data[0]
        row[key + " predict"] = clock(lambda: model.predict(arg, verbose=0))
        row[key + " tf.function"] = clock(lambda: traced(*data))
        row[key + " steady"] = statistics.median(
            clock(lambda: model.predict(arg, verbose=0)) for _ in range(3))
    rows.append(row)
print(json.dumps(rows))
"""

_EXPORT = _PRELUDE + """
layer_source, window, kind, directory = json.loads(sys.argv[1])
n = 64
for standin in (True, False):
    x_in = keras.Input((None, {channels}))
    h = keras.layers.Conv1D({channels}, window, padding="same")(x_in) if standin else eval(layer_source)(x_in)
    model = keras.Model(x_in, keras.layers.Dense(1)(h))
    model.export(os.path.join(directory, "conv" if standin else "fd"), verbose=False)
print("{{}}")
"""

_SERVE = _PRELUDE + """
directory, lengths = json.loads(sys.argv[1])
served = {{key: tf.saved_model.load(os.path.join(directory, key)) for key in ("conv", "fd")}}
rows = []
for n in lengths:
    x = tf.constant(rng.normal(size=({batch}, n, {channels})).astype("float32"))
    row = {{"n": n}}
    for key, model in served.items():
        row[key + " serve"] = clock(lambda: model.serve(x).numpy())
        row[key + " steady"] = statistics.median(
            clock(lambda: model.serve(x).numpy()) for _ in range(3))
    rows.append(row)
print(json.dumps(rows))
"""

_FIT = _PRELUDE + """
layer_source, window, standin, pipeline, count = json.loads(sys.argv[1])
lengths = rng.integers(100, 2000, size=count)
series = [rng.normal(size=(n, {channels})).astype("float32") for n in lengths]
targets = rng.normal(size=(count, 1)).astype("float32")
dataset = tf.data.Dataset.from_generator(
    lambda: zip(series, targets),
    output_signature=(tf.TensorSpec((None, {channels}), tf.float32),
                      tf.TensorSpec((1,), tf.float32)))
if pipeline == "padded":
    dataset = dataset.padded_batch(16)
else:
    dataset = dataset.bucket_by_sequence_length(
        lambda x, y: tf.shape(x)[0], [400, 800, 1200, 1600], [16] * 5)
inputs = keras.Input((None, {channels}))
h = keras.layers.Masking()(inputs)
h = keras.layers.Conv1D({channels}, window, padding="same")(h) if standin else eval(layer_source)(h)
h = keras.layers.Dense(8, activation="tanh")(h)
outputs = keras.layers.Dense(1)(keras.layers.GlobalAveragePooling1D()(h))
model = keras.Model(inputs, outputs)
model.compile("adam", "mse")
print(json.dumps(clock(lambda: model.fit(dataset, epochs=1, verbose=0))))
"""


def _child(template, payload):
    code = textwrap.dedent(template.format(channels=CHANNELS, batch=BATCH))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(payload)],
                         capture_output=True, text=True, env=env, check=False)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def _ratios(rows, key):
    return [row["fd " + key] / row["conv " + key] for row in rows]


def new_lengths(names):
    print(f"\n10a. A new sequence length: first predict and first tf.function "
          f"call at each of {len(LENGTHS)} new lengths ({LENGTHS[0]} to "
          f"{LENGTHS[-1]} steps, batch {BATCH}, {CHANNELS} channels), each "
          f"beside a Conv1D stand-in of the same window in the same model; "
          f"fresh process per configuration")
    print(f"{'configuration':<32} {'predict ms':>11} {'stand-in':>9} "
          f"{'ratio med/max':>14} {'tf.function ratio med/max':>26} "
          f"{'steady ratio':>13}")
    results = {}
    for name in names:
        source, window, kind = CONFIGS[name]
        rows = _child(_NEW_LENGTHS, [source, window, kind, LENGTHS])
        # The first length carries the model's first trace, for both.
        later = rows[1:]
        predict, traced = _ratios(later, "predict"), _ratios(later, "tf.function")
        steady = _ratios(rows, "steady")
        results[name] = (predict, traced, steady, rows)
        print(f"{name:<32} "
              f"{statistics.median(r['fd predict'] for r in later) * 1e3:11.1f} "
              f"{statistics.median(r['conv predict'] for r in later) * 1e3:9.1f} "
              f"{statistics.median(predict):7.2f}/{max(predict):5.2f} "
              f"{statistics.median(traced):19.2f}/{max(traced):5.2f} "
              f"{statistics.median(steady):13.2f}")
        first = rows[0]
        print(f"{'':<4}first length ({first['n']} steps, the model's first "
              f"trace): predict {first['fd predict'] * 1e3:.0f} ms against "
              f"{first['conv predict'] * 1e3:.0f} ms, tf.function "
              f"{first['fd tf.function'] * 1e3:.0f} ms against "
              f"{first['conv tf.function'] * 1e3:.0f} ms")
    return results


def serving(names):
    print(f"\n10b. An exported SavedModel's serve, loaded in a fresh process, "
          f"at {len(LENGTHS)} new lengths, beside the Conv1D stand-in's")
    print(f"{'configuration':<32} {'first serve ms':>15} {'stand-in':>9} "
          f"{'ratio med/max':>14} {'steady ratio':>13}")
    for name in names:
        source, window, kind = CONFIGS[name]
        if kind != "uniform":
            continue
        with tempfile.TemporaryDirectory() as directory:
            _child(_EXPORT, [source, window, kind, directory])
            rows = _child(_SERVE, [directory, LENGTHS])
        first, steady = _ratios(rows, "serve"), _ratios(rows, "steady")
        print(f"{name:<32} "
              f"{statistics.median(r['fd serve'] for r in rows) * 1e3:15.2f} "
              f"{statistics.median(r['conv serve'] for r in rows) * 1e3:9.2f} "
              f"{statistics.median(first):7.2f}/{max(first):5.2f} "
              f"{statistics.median(steady):13.2f}")


def first_epoch(names, count, repeats=3):
    print(f"\n10c. First fit epoch, {count} series of 100-2000 steps in "
          f"batches of 16, Masking → layer → Dense → GlobalAveragePooling1D, "
          f"fresh process each; the stand-in has a Conv1D in the layer's "
          f"place; {repeats} pairs run alternately, median of each")
    print(f"{'configuration':<32} {'pipeline':<9} {'fdlayers s':>10} "
          f"{'stand-in s':>10} {'ratio':>6} {'ratios (each pair)':>20}")
    for name in names:
        source, window, kind = CONFIGS[name]
        if kind != "uniform":
            continue
        for pipeline in ("padded", "bucketed"):
            # One first epoch is a few seconds of one-time work, which a
            # busy machine moves by ±30 %: pairs, alternated, and medians.
            ours, theirs = [], []
            for _ in range(repeats):
                ours.append(_child(_FIT, [source, window, False, pipeline,
                                          count]))
                theirs.append(_child(_FIT, [source, window, True, pipeline,
                                            count]))
            ratios = " ".join(f"{a / b:.2f}" for a, b in zip(ours, theirs))
            ours, theirs = statistics.median(ours), statistics.median(theirs)
            print(f"{name:<32} {pipeline:<9} {ours:10.2f} {theirs:10.2f} "
                  f"{ours / theirs:6.2f} {ratios:>20}")


def eager_single(rounds):
    import numpy as np
    import scipy.signal

    import fdlayers
    import tensorflow as tf
    import timing

    print("\n10d. Eager calls on one series (1, n, 1) float32 against the NumPy "
          "and SciPy peers (median µs; ratio = fdlayers / peer)")
    print(f"{'n':>6} {'np.gradient':>11} {'derivative':>10} {'ratio':>6} "
          f"{'layer':>8} {'ratio':>6} {'savgol_filter':>13} "
          f"{'savitzky_golay':>14} {'ratio':>6} {'layer':>8} {'ratio':>6}")
    fd = fdlayers.FiniteDifference1D()
    sg = fdlayers.SavitzkyGolay1D(1, 11, 3)
    for n in (256, 1024, 4096, 16384, 65536):
        array = np.sin(0.01 * np.arange(n, dtype="float32"))[None, :, None]
        x = tf.constant(array)
        candidates = {
            "np.gradient": lambda: np.gradient(array, axis=1, edge_order=2),
            "derivative": lambda: fdlayers.derivative(x),
            "layer": lambda: fd(x),
            "savgol": lambda: scipy.signal.savgol_filter(array, 11, 3, deriv=1,
                                                         axis=1),
            "savitzky_golay": lambda: fdlayers.ops.savitzky_golay(x, 1, 11, 3),
            "sg layer": lambda: sg(x),
        }
        us = {key: seconds * 1e6 for key, seconds in timing.interleaved(
            candidates, rounds, wait=lambda y: y).items()}
        print(f"{n:>6} {us['np.gradient']:11.1f} {us['derivative']:10.1f} "
              f"{us['derivative'] / us['np.gradient']:6.2f} {us['layer']:8.1f} "
              f"{us['layer'] / us['np.gradient']:6.2f} {us['savgol']:13.1f} "
              f"{us['savitzky_golay']:14.1f} "
              f"{us['savitzky_golay'] / us['savgol']:6.2f} {us['sg layer']:8.1f} "
              f"{us['sg layer'] / us['savgol']:6.2f}")


def main(quick=False):
    names = QUICK if quick else list(CONFIGS)
    new_lengths(names)
    serving(names)
    first_epoch(QUICK if quick else ["FD order 2, acc 4", "SG window 11"],
                48 if quick else 96, 1 if quick else 3)
    eager_single(200 if quick else 1000)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="three configurations, fewer rounds")
    main(parser.parse_args().quick)
