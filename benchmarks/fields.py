"""Section 13 of bench.py: fields, `Laplacian` and `Gradient` on 2-D and 3-D grids.

Float32 fields `(16, 512, 512, 1)` and `(4, 128, 128, 128, 1)` (with
`--quick`, `(4, 512, 512, 1)` and `(1, 128, 128, 64, 1)`: still above the
size from which fdlayers compiles the operator whole), eagerly, in
`tf.function` and under XLA (`jit_compile=True`), in interleaved rounds
(medians), each against its floor in the same mode:

- `Laplacian` reads the field once and writes one output: `x * 2.0`;
- `Gradient` writes ndim outputs: the concatenation of ndim scaled copies.

Beside them, on the same data: the Laplacian as one `FiniteDifference1D`
per axis, summed (one pass per axis, as before fields existed); findiff's
`Laplacian` and `Gradient` (acc=2, on the NumPy array); `numpy.gradient`
(edge_order=2); `tf.image.sobel_edges` (2-D; smoothed and unscaled, so not
the same quantity, but the built-in a Keras user would reach for). Then the
formulations tried for the compiled Laplacian, as XLA functions. Each
figure comes as wall time and as the process's CPU time (all threads).
Last (13c), the cold path: calls at 30 new sizes of a large 2-D field
(with `--quick`, 8 sizes, the Laplacian only, not in `predict`), eagerly,
in a `tf.function` and in `predict`, each in a fresh process beside a
`Conv2D`, with the time and the memory (RSS) they take.

    python benchmarks/bench.py --only 13
    python benchmarks/fields.py [--quick] [--new-sizes]
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import fdlayers  # noqa: E402
from fdlayers import fields  # noqa: E402
from timing import finish as _finish  # noqa: E402

SHAPES = [(16, 512, 512, 1), (4, 128, 128, 128, 1)]
QUICK_SHAPES = [(4, 512, 512, 1), (1, 128, 128, 64, 1)]


def interleaved(candidates, rounds):
    """Median seconds of each candidate, called in turn `rounds` times:
    `{name: (wall, cpu)}`. The CPU time (all of the process's threads) is
    the steadier figure on a machine shared with other jobs, whose load
    stretches the wall time of whichever candidate it meets."""
    for fn in candidates.values():
        # Warm up: trace, compile, allocate; eagerly, fdlayers compiles a
        # field's operator for its shape from its `_FUSE_FROM_CALL`-th call
        # at that shape (before, the padded kernels run: 13c).
        for _ in range(fields._FUSE_FROM_CALL):
            _finish(fn())
    times = {name: ([], []) for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            wall, cpu = time.perf_counter(), time.process_time()
            _finish(fn())
            times[name][0].append(time.perf_counter() - wall)
            times[name][1].append(time.process_time() - cpu)
    return {name: (statistics.median(w), statistics.median(c))
            for name, (w, c) in times.items()}


MODES = {
    "eager": lambda f: f,
    "tf.function": tf.function,
    "XLA": lambda f: tf.function(f, jit_compile=True),
}


def _candidates(x, wrap, h, eager):
    """(operator, name) -> function, for one mode."""
    ndim = len(x.shape) - 2
    spacing = (h,) * ndim
    laplacian = fdlayers.Laplacian(spacing)
    gradient = fdlayers.Gradient(spacing)
    per_axis = [fdlayers.FiniteDifference1D(2, h, axis=1 + k)
                for k in range(ndim)]

    def by_axis(v):
        total = per_axis[0](v)
        for layer in per_axis[1:]:
            total = total + layer(v)
        return total

    def copies(v):
        return tf.concat([v * (2.0 + k) for k in range(ndim)], -1)

    c = {("laplacian", "floor"): wrap(lambda: x * 2.0),
         ("laplacian", "fdlayers"): wrap(lambda: laplacian(x)),
         ("laplacian", "1-D layer per axis"): wrap(lambda: by_axis(x)),
         ("gradient", "floor"): wrap(lambda: copies(x)),
         ("gradient", "fdlayers"): wrap(lambda: gradient(x))}
    if ndim == 2:
        c[("gradient", "tf.image.sobel_edges")] = wrap(
            lambda: tf.image.sobel_edges(x))
    if eager:
        # The first calls at a new shape, before the operator is compiled
        # for it: through the padded kernels that every size shares.
        for operator in ("laplacian", "gradient"):
            key = (operator, ndim, None, spacing, 2, ("same",) * ndim,
                   "channels_last")
            c[(operator, "fdlayers, calls 1-15")] = (
                lambda key=key: fields._any_size(x, key))
        array = x.numpy()
        axes = tuple(range(1, ndim + 1))
        c[("gradient", "numpy.gradient")] = lambda: np.gradient(
            array, h, axis=axes, edge_order=2)
        try:
            import findiff
        except ImportError:
            print("(findiff is not installed: its rows are left out)")
        else:
            fd_laplacian = findiff.Diff(axes[0], h, acc=2) ** 2
            for k in axes[1:]:
                fd_laplacian = fd_laplacian + findiff.Diff(k, h, acc=2) ** 2
            fd_gradient = [findiff.Diff(k, h, acc=2) for k in axes]
            c[("laplacian", "findiff")] = lambda: fd_laplacian(array)
            c[("gradient", "findiff")] = lambda: [d(array) for d in
                                                  fd_gradient]
    return c


def section(shape, rounds):
    h = 1.0 / (shape[1] - 1)
    x = tf.random.normal(shape, seed=13)
    print(f"\n13. Fields: Laplacian and Gradient (padding 'same', accuracy 2, "
          f"edges and corners included), input {shape} float32")
    print(f"{'mode':<12} {'operator':<10} {'who':<22} {'ms':>9} "
          f"{'/ floor':>8} {'/ fdlayers':>10} {'cpu / floor':>11} "
          f"{'cpu / fdl.':>10}")
    results = {}
    for mode, wrap in MODES.items():
        medians = interleaved(_candidates(x, wrap, h, mode == "eager"),
                              rounds)
        for (operator, who), (seconds, cpu) in medians.items():
            floor, cpu_floor = medians[(operator, "floor")]
            ours, cpu_ours = medians[(operator, "fdlayers")]
            results[(mode, operator, who)] = (seconds / floor,
                                              cpu / cpu_floor)
            print(f"{mode:<12} {operator:<10} {who:<22} {seconds * 1e3:9.2f} "
                  f"{seconds / floor:8.2f} {seconds / ours:10.2f} "
                  f"{cpu / cpu_floor:11.2f} {cpu / cpu_ours:10.2f}")
    return results


def _strips(x, key, stencil, k):
    """The head and tail strips of the operator along spatial axis k, whole
    along the other axes (as `fields._interior_and_strips` makes them)."""
    ndim = key[1]
    axes, _ = fields.spatial_axes(len(x.shape), key[6])
    blocks = fields.operator_terms(key[0], ndim, key[2])[1]
    radius = fields._radii(blocks, ndim, key[4])[k]
    block = 2 + key[4] + radius
    axis, length = axes[k], x.shape[axes[k]]
    head = fields._composed(x[(slice(None),) * axis + (slice(0, block),)],
                            key, stencil)
    tail = fields._composed(
        x[(slice(None),) * axis + (slice(length - block, None),)], key,
        stencil)
    return (head[(slice(None),) * axis + (slice(0, radius),)],
            tail[(slice(None),) * axis + (slice(block - radius, None),)])


def _every_strip_in_place(x, key, stencil):
    axes, _ = fields.spatial_axes(len(x.shape), key[6])
    widths = [(0, 0)] * len(x.shape)
    for axis in axes:
        widths[axis] = (1, 1)
    y = tf.pad(fields._interior(x, key), widths)
    for k, axis in enumerate(axes):
        head, tail = _strips(x, key, stencil, k)
        origin = [0] * len(x.shape)
        y = keras.ops.slice_update(y, origin, head)
        origin[axis] = x.shape[axis] - 1
        y = keras.ops.slice_update(y, origin, tail)
    return y


def _every_strip_concatenated(x, key, stencil):
    ndim = key[1]
    axes, _ = fields.spatial_axes(len(x.shape), key[6])
    y = fields._interior(x, key)
    for k in reversed(range(ndim)):
        head, tail = _strips(x, key, stencil, k)
        for j in range(k):  # not yet joined along axis j
            cut = (slice(None),) * axes[j] + (slice(1, -1),)
            head, tail = head[cut], tail[cut]
        y = tf.concat([head, y, tail], axes[k])
    return y


def formulations(shape, rounds):
    """The compiled Laplacian (padding 'same', accuracy 2), formulated
    several ways, as XLA functions."""
    x = tf.random.normal(shape, seed=13)
    ndim = len(shape) - 2
    key = ("laplacian", ndim, None, (1.0,) * ndim, 2, ("same",) * ndim,
           "channels_last")
    stencil = fields._stencil_fn("float32")
    xla = MODES["XLA"]
    candidates = {
        "floor x * 2.0": xla(lambda v: v * 2.0),
        "interior only (no edges)": xla(lambda v: fields._interior(v, key)),
        "interior + strips: last axis concatenated, others in place (used)":
            xla(lambda v: fields._interior_and_strips(v, key, stencil)),
        "interior + strips, every strip in place": xla(
            lambda v: _every_strip_in_place(v, key, stencil)),
        "interior + strips, every strip concatenated": xla(
            lambda v: _every_strip_concatenated(v, key, stencil)),
        "1-D operators with their edges, summed": xla(
            lambda v: fields._composed(v, key, stencil)),
    }
    medians = interleaved({k: (lambda f=f: f(x)) for k, f in
                           candidates.items()}, rounds)
    floor, cpu_floor = medians["floor x * 2.0"]
    print(f"\n13b. Formulations of the compiled Laplacian, XLA, input {shape}")
    print(f"{'formulation':<68} {'ms':>7} {'/ floor':>8} {'cpu / floor':>11}")
    for name, (seconds, cpu) in medians.items():
        print(f"{name:<68} {seconds * 1e3:7.2f} {seconds / floor:8.2f} "
              f"{cpu / cpu_floor:11.2f}")


_NEW_SIZES = """
import json, os, statistics, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np, keras, tensorflow as tf
import fdlayers

who, mode, count = sys.argv[1], sys.argv[2], int(sys.argv[3])


def rss_mb():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024


if who.startswith("Conv2D"):
    filters = int(who.split()[1])
    layer = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)
    layer.build((None, None, None, 1))
    cross = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], "float32")
    layer.set_weights([np.repeat(cross[:, :, None, None], filters, -1)])
else:
    layer = getattr(fdlayers, who)(spacing=1.0)
if mode == "eager":
    call = layer
elif mode == "tf.function":
    call = tf.function(layer, reduce_retracing=True)
else:
    inputs = keras.Input((None, None, 1))
    model = keras.Model(inputs, layer(inputs))
    call = lambda x: model.predict(x, verbose=0)
rng = np.random.default_rng(0)


def twice(shape):
    x = tf.constant(rng.standard_normal((1,) + shape + (1,), "float32"))
    times = []
    for _ in range(2):
        start = time.perf_counter()
        np.asarray(call(x))[0, 0, 0]
        times.append(time.perf_counter() - start)
    return times


twice((1000, 1100))  # the first traces and kernels, apart
twice((1001, 1101))  # the first retrace, apart
# `count` new sizes of 1.0-2.1 million points (30): 1024-1720 × 1024-1256.
sizes = [(1024 + 24 * i, 1024 + 8 * ((7 * i) % count)) for i in range(count)]
before, start = rss_mb(), time.perf_counter()
times = [twice(size) for size in sizes]
total = time.perf_counter() - start
print(json.dumps(dict(
    first=statistics.median(t[0] for t in times),
    first_max=max(t[0] for t in times),
    again=statistics.median(t[1] for t in times),
    total=total, rss=rss_mb() - before)))
"""


def new_sizes(count, quick=False):
    """13c: a call at each of `count` new sizes of a large 2-D field, and
    the call again at that size, eagerly, in a `tf.function` of
    `reduce_retracing=True` and in `predict` of a model of unknown spatial
    sizes; each in a fresh process, beside a `Conv2D` (3×3, `"same"`,
    1 filter for the Laplacian and 2 for the Gradient's two outputs).
    `quick`: the Laplacian eagerly and in `tf.function` only."""
    import json
    import subprocess
    import sys

    sizes = [(1024 + 24 * i) * (1024 + 8 * ((7 * i) % count))
             for i in range(count)]  # as in _NEW_SIZES
    print(f"\n13c. New field sizes: {count} shapes (1, 1024-"
          f"{1024 + 24 * (count - 1)}, 1024-{1024 + 8 * (count - 1)}, 1) "
          f"float32 ({min(sizes) / 1e6:.1f}-{max(sizes) / 1e6:.1f} million "
          "points), each called twice; fresh process per row, after two "
          "first calls at other sizes")
    print(f"{'mode':<12} {'who':<12} {'first ms':>9} {'max':>7} "
          f"{'again ms':>9} {'loop s':>7} {'RSS MB':>7}")
    modes = ("eager", "tf.function") + (() if quick else ("predict",))
    whos = ("Laplacian", "Conv2D 1") + (() if quick else ("Gradient",
                                                         "Conv2D 2"))
    for mode in modes:
        for who in whos:
            # From the directory of the fdlayers imported here, which
            # `python -c` puts first on the path.
            result = subprocess.run(
                [sys.executable, "-c", _NEW_SIZES, who, mode, str(count)],
                capture_output=True, text=True, check=True,
                cwd=os.path.dirname(os.path.dirname(fdlayers.__file__)))
            r = json.loads(result.stdout.strip().splitlines()[-1])
            print(f"{mode:<12} {who:<12} {r['first'] * 1e3:9.1f} "
                  f"{r['first_max'] * 1e3:7.0f} {r['again'] * 1e3:9.1f} "
                  f"{r['total']:7.2f} {r['rss']:7.1f}")


def main(quick=False):
    rounds = 5 if quick else 9
    shapes = QUICK_SHAPES if quick else SHAPES
    results = {}
    for shape in shapes:
        results[shape] = section(shape, rounds)
    for shape in shapes:
        formulations(shape, rounds)
    new_sizes(8 if quick else 30, quick)
    print("\nTargets: Laplacian and Gradient ≤ 1.5× their floor in every mode;"
          " findiff ≥ 10× fdlayers' eager time.")
    for shape, ratios in results.items():
        for (mode, operator, who), (ratio, cpu) in ratios.items():
            if who == "fdlayers":
                mark = "met" if max(ratio, cpu) <= 1.5 else (
                    "met in CPU time" if cpu <= 1.5 else "MISSED")
                print(f"{str(shape):<22} {mode:<12} {operator:<10} "
                      f"{ratio:5.2f}× floor (CPU time {cpu:5.2f}×): {mark}")
        for operator in ("laplacian", "gradient"):
            if ("eager", operator, "findiff") in ratios:
                theirs = ratios[("eager", operator, "findiff")]
                ours = ratios[("eager", operator, "fdlayers")]
                speedup, cpu = theirs[0] / ours[0], theirs[1] / ours[1]
                mark = "met" if min(speedup, cpu) >= 10 else (
                    "met in CPU time" if cpu >= 10 else "MISSED")
                print(f"{str(shape):<22} eager        {operator:<10} findiff "
                      f"{speedup:5.1f}× slower (CPU time {cpu:5.1f}×): "
                      f"{mark}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smaller fields and fewer rounds")
    parser.add_argument("--new-sizes", action="store_true",
                        help="13c only: calls at new field sizes")
    args = parser.parse_args()
    if args.new_sizes:
        new_sizes(8 if args.quick else 30, args.quick)
    else:
        main(args.quick)
