"""First-call and per-call cost of SavitzkyGolay1D on per-sample time stamps.

`layer([x, t])` computes its weights in the graph for every call. This
prints, for inputs (1, 200, 1) and (8, 4096, 1), float32, polyorder 3 (2
for window 5) and windows 5, 11, 41 (and 255 at degree 32, the widest and
highest the layer takes, on (1, 300, 1)), the first call (tracing and
compiling included) and the median of later calls, eagerly and in a
tf.function traced for any length (as a Keras model's `predict` is), and the
peak resident memory of the process. Each configuration runs in a fresh
process, so that no cache of another helps it.

    python benchmarks/savgol_stamps_cost.py
"""

import json
import os
import subprocess
import sys

CASES = [((1, 200, 1), 5, 2), ((1, 200, 1), 11, 3), ((1, 200, 1), 41, 3),
         ((8, 4096, 1), 5, 2), ((8, 4096, 1), 11, 3), ((8, 4096, 1), 41, 3),
         ((1, 300, 1), 255, 32)]

CHILD = r"""
import json, resource, sys, time
import numpy as np, tensorflow as tf, fdlayers
shape, window, polyorder, mode = json.loads(sys.argv[1])
rng = np.random.default_rng(0)
t = np.cumsum(0.01 * (1 + rng.uniform(-0.15, 0.15, shape[:2])), 1)
t = (t - t[:, :1]).astype("float32")
x = rng.normal(size=shape).astype("float32")
layer = fdlayers.SavitzkyGolay1D(1, window, polyorder)
call = lambda x, t: layer([x, t])
if mode == "tf.function":
    call = tf.function(call, input_signature=[
        tf.TensorSpec([None, None, 1], tf.float32),
        tf.TensorSpec([None, None], tf.float32)])
x, t = tf.constant(x), tf.constant(t)
start = time.perf_counter(); call(x, t).numpy()
first = time.perf_counter() - start
times = []
for _ in range(10):
    start = time.perf_counter(); call(x, t).numpy()
    times.append(time.perf_counter() - start)
print(json.dumps([first, sorted(times)[5],
                  resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024]))
"""


def main():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    print(f"{'input':>12} {'window':>6} {'degree':>6} {'mode':>11} "
          f"{'first call':>10} {'per call':>9} {'peak RSS':>9}")
    for shape, window, polyorder in CASES:
        for mode in ("eager", "tf.function"):
            out = subprocess.run(
                [sys.executable, "-c", CHILD,
                 json.dumps([shape, window, polyorder, mode])],
                capture_output=True, text=True, env=env, check=True)
            first, per_call, rss = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{str(shape):>12} {window:>6} {polyorder:>6} {mode:>11} "
                  f"{first:>9.2f}s {per_call * 1000:>7.1f}ms {rss:>6.0f} MB")


if __name__ == "__main__":
    main()
