"""Speed of FiniteDifference1D against the memory-bandwidth floor and peers.

One process, the same input for everyone, interleaved rounds, medians. Every
figure that matters is a ratio measured in this run: a stencil reads each
input once and writes each output once, so its floor is an elementwise
`x * 2.0` on the same tensor in the same mode.

    python benchmarks/bench.py            # full run (a few minutes on 2 cores)
    python benchmarks/bench.py --quick    # smaller tensors, fewer rounds

Sections:
  1. fdlayers in eager, tf.function and XLA modes against `x * 2.0` there;
  2. peers on the same data (numpy.gradient, findiff, scipy.ndimage,
     naive TensorFlow slices, torch.gradient when torch is installed);
  3. forward + backward (gradient with respect to the input) against forward;
  4. time per element from 2**16 to 2**24 steps;
  5. first-call cost of a new sequence length in eager use;
  6. peak extra memory of one call, in a fresh process;
  7. the formulations tried for the stencil and its edges, side by side;
  8. per-sample time stamps (layer([x, t])) against the uniform grid;
  9. SavitzkyGolay1D against scipy.signal.savgol_filter and the floor;
 10. the cold paths (benchmarks/cold.py): a new sequence length in predict,
     tf.function and a served SavedModel, a first fit epoch, and eager calls
     on one small series, beside a Conv1D stand-in or the NumPy/SciPy peer;
 11. the `fdlayers diff` command on files (benchmarks/command.py): a 200 MB
     CSV and a 100 000-column CSV against pandas + numpy.gradient, a 200 MB
     .npy's peak memory, and the start of the command;
 12. derivatives of a network for training (benchmarks/derivatives.py): a
     Laplacian, a residual with its weight gradients and a fourth derivative
     of a 5 x 50 tanh MLP on every backend, against nested autodiff by hand
     and DeepXDE, then each one's first call in a fresh process;
 13. fields (benchmarks/fields.py): Laplacian and Gradient on (16, 512, 512,
     1) and (4, 128, 128, 128, 1) in the three modes against their floors,
     findiff, numpy.gradient and tf.image.sobel_edges; calls at 30 new
     sizes of a large 2-D field beside a Conv2D;
 14. spectral derivatives (benchmarks/spectral.py): SpectralDerivative1D
     eager, in tf.function and XLA against FFT differentiation in NumPy
     (numpy.fft) and SciPy (scipy.fft) on the same data;
 15. bounded cost (benchmarks/bounded.py): peak memory of one call on a
     long series, as a multiple of the input, for every path, the first
     call of the widest accepted windows, and the time of a call on long
     inputs in graphs of static and of None sizes;
 16. the stencil on PyTorch (benchmarks/torch_stencil.py): written into one
     tensor in place against op by op, with and without its gradient.

    python benchmarks/bench.py --only 8   # one section (8 to 16)
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import bounded  # noqa: E402
import cold  # noqa: E402
import derivatives  # noqa: E402
import fields  # noqa: E402
import fdlayers  # noqa: E402
import spectral  # noqa: E402
import torch_stencil  # noqa: E402
from timing import finish as _finish  # noqa: E402
from timing import interleaved  # noqa: E402

CASES = [(1, 2), (2, 2), (2, 4), (1, 6), (4, 8)]  # (order, accuracy)
SPACING = 0.01


def _modes():
    return {
        "eager": lambda f: f,
        "tf.function": tf.function,
        "XLA": lambda f: tf.function(f, jit_compile=True),
    }


def section_modes(x, rounds):
    print(f"\n1. FiniteDifference1D (padding 'same', edges included) against "
          f"x * 2.0, input {tuple(x.shape)} float32")
    print(f"{'mode':<12} {'order':>5} {'acc':>3} {'ms':>8} {'floor ms':>9} "
          f"{'ratio':>6}")
    results = {}
    for mode, wrap in _modes().items():
        candidates = {"floor": wrap(lambda: x * 2.0)}
        for order, accuracy in CASES:
            layer = fdlayers.FiniteDifference1D(order, SPACING, accuracy)
            candidates[(order, accuracy)] = wrap(lambda layer=layer: layer(x))
        medians = interleaved(candidates, rounds)
        floor = medians.pop("floor")
        for (order, accuracy), seconds in medians.items():
            ratio = seconds / floor
            results[(mode, order, accuracy)] = ratio
            print(f"{mode:<12} {order:>5} {accuracy:>3} {seconds * 1e3:8.2f} "
                  f"{floor * 1e3:9.2f} {ratio:6.2f}")
    return results


def _naive_slices(x):
    # What a user writes by hand: central differences, no edges.
    return (x[:, 2:] - x[:, :-2]) / (2 * SPACING)


def section_peers(x, rounds):
    import findiff
    import scipy.ndimage

    print(f"\n2. Peers on the same data, input {tuple(x.shape)} float32 "
          f"(ratio = peer time / fdlayers time; > 1: fdlayers is faster)")
    array = x.numpy()
    fast = tf.function(lambda layer, x: layer(x))
    print(f"{'peer':<34} {'order':>5} {'acc':>3} {'peer ms':>9} "
          f"{'fdlayers ms':>11} {'ratio':>6}")
    try:
        import torch

        tensor = torch.from_numpy(array)
    except ImportError:
        torch = None
    results = {}
    for order, accuracy in CASES:
        layer = fdlayers.FiniteDifference1D(order, SPACING, accuracy)
        _, weights = fdlayers.stencil(order, accuracy)
        weights = weights / SPACING ** order
        diff = findiff.Diff(1, SPACING, acc=accuracy) ** order
        candidates = {
            "fdlayers": lambda: fast(layer, x),
            "numpy copy (NumPy floor)": lambda: array.copy(),
            f"findiff Diff(1, h, acc={accuracy})**{order}": lambda: diff(array),
            "scipy.ndimage.correlate1d": lambda: scipy.ndimage.correlate1d(
                array, weights, axis=1, mode="nearest"),
        }
        if (order, accuracy) == (1, 2):
            candidates["numpy.gradient(edge_order=2)"] = lambda: np.gradient(
                array, SPACING, axis=1, edge_order=2)
            candidates["naive TF slices, eager"] = lambda: _naive_slices(x)
            candidates["naive TF slices, tf.function"] = tf.function(
                lambda: _naive_slices(x))
            if torch is not None:
                candidates["torch.gradient(edge_order=2)"] = lambda: torch.gradient(
                    tensor, spacing=SPACING, dim=1, edge_order=2)[0]
        medians = interleaved(candidates, rounds)
        ours = medians.pop("fdlayers")
        for name, seconds in medians.items():
            results[(name, order, accuracy)] = seconds / ours
            print(f"{name:<34} {order:>5} {accuracy:>3} {seconds * 1e3:9.2f} "
                  f"{ours * 1e3:11.2f} {seconds / ours:6.2f}")
    if torch is None:
        print("(torch is not installed: torch.gradient skipped)")
    return results


def section_backward(x, rounds):
    print("\n3. Forward + backward (gradient with respect to the input) "
          "against forward alone, tf.function")
    print(f"{'mode':<12} {'order':>5} {'acc':>3} {'fwd ms':>8} "
          f"{'fwd+bwd ms':>10} {'ratio':>6}")
    upstream = tf.ones_like(x)
    results = {}
    for mode, wrap in list(_modes().items())[1:]:
        for order, accuracy in CASES[:3]:
            layer = fdlayers.FiniteDifference1D(order, SPACING, accuracy)

            def both(layer=layer):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    y = layer(x)
                # Return y too: the gradient of a linear map does not need
                # it, and a graph would otherwise prune the forward pass.
                return y, tape.gradient(y, x, output_gradients=upstream)

            medians = interleaved({"fwd": wrap(lambda layer=layer: layer(x)),
                                   "both": wrap(both)}, rounds)
            ratio = medians["both"] / medians["fwd"]
            results[(mode, order, accuracy)] = ratio
            print(f"{mode:<12} {order:>5} {accuracy:>3} "
                  f"{medians['fwd'] * 1e3:8.2f} {medians['both'] * 1e3:10.2f} "
                  f"{ratio:6.2f}")
    return results


def section_linear(max_log2, rounds):
    print("\n4. Time per element, input (1, steps, 1) float32, order 1 "
          "accuracy 2, tf.function")
    layer = fdlayers.FiniteDifference1D(1, SPACING, 2)
    fn = tf.function(lambda x: layer(x))
    print(f"{'steps':>10} {'ms':>8} {'ns/element':>11} {'floor ns':>9} "
          f"{'ratio':>6}")
    floor_fn = tf.function(lambda x: x * 2.0)
    per_element, ratios = {}, {}
    for log2 in range(16, max_log2 + 1, 2):
        x = tf.random.normal((1, 2 ** log2, 1))
        medians = interleaved({"fd": lambda: fn(x), "floor": lambda: floor_fn(x)},
                              rounds)
        per_element[log2] = medians["fd"] / 2 ** log2 * 1e9
        ratios[log2] = medians["fd"] / medians["floor"]
        print(f"{'2**' + str(log2):>10} {medians['fd'] * 1e3:8.3f} "
              f"{per_element[log2]:11.3f} "
              f"{medians['floor'] / 2 ** log2 * 1e9:9.3f} {ratios[log2]:6.2f}")
    for name, values in [("time per element", per_element),
                         ("ratio to the floor", ratios)]:
        values = list(values.values())
        print(f"{name}: largest / smallest - 1 = "
              f"{max(values) / min(values) - 1:+.0%}")
    return per_element


def section_first_call(lengths):
    print("\n5. Eager first call at a new sequence length (input (64, steps, 4))")
    layer = fdlayers.FiniteDifference1D(2, SPACING, 4)
    print(f"{'steps':>8} {'first ms':>9} {'next ms':>8}")
    for steps in lengths:
        x = tf.random.normal((64, steps, 4))
        start = time.perf_counter()
        _finish(layer(x))
        first = time.perf_counter() - start
        start = time.perf_counter()
        _finish(layer(x))
        print(f"{steps:>8} {first * 1e3:9.1f} "
              f"{(time.perf_counter() - start) * 1e3:8.2f}")


_MEMORY_CHILD = """
import os, sys, json
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np, tensorflow as tf, fdlayers
shape, mode, which = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
x = tf.random.normal(shape)
layer = (lambda x: x * 2.0) if which == "x * 2.0" else fdlayers.FiniteDifference1D(2, 0.01, 4)
fn = {"eager": layer, "tf.function": tf.function(layer),
      "XLA": tf.function(layer, jit_compile=True)}[mode]
fn(tf.random.normal((1, 64, 1)))  # build and trace on a tiny input
def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
before = status("VmRSS:")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets the peak (VmHWM) to the current size
y = fn(x)  # on the CPU the call returns when the result is ready
print(json.dumps({"extra": status("VmHWM:") - before,
                  "input": int(np.prod(shape)) * 4}))
"""


def section_memory(shape):
    print(f"\n6. Peak extra memory of one call (fresh process, input {shape} "
          "float32; the output itself is one input size; XLA's first call at "
          "a shape includes compiling for it)")
    if not os.path.exists("/proc/self/clear_refs"):
        print("(needs /proc: skipped on this system)")
        return {}
    results = {}
    for mode in _modes():
        for which in ("x * 2.0", "FiniteDifference1D(2, 0.01, 4)"):
            out = subprocess.run(
                [sys.executable, "-c", _MEMORY_CHILD, json.dumps(list(shape)),
                 mode, which],
                capture_output=True, text=True, check=True,
            )
            data = json.loads(out.stdout.strip().splitlines()[-1])
            results[(mode, which)] = data["extra"] / data["input"]
            print(f"{mode:<12} {which:<31} extra {data['extra'] / 2**20:8.1f} "
                  f"MiB = {results[(mode, which)]:.2f} × input")
    return results


def _formulations(plan, x):
    """The ways of computing padding 'same' that were tried, as functions."""
    weights, span = plan.weights / SPACING, int(plan.offsets[-1] - plan.offsets[0])
    rows = plan.head.shape[0]
    cols = plan.head.shape[1]
    n = x.shape[1]

    def interior(x):
        return tf.add_n([x[:, k:n - span + k] * float(w)
                         for k, w in enumerate(weights) if w])

    def edges(x):
        head = tf.einsum("rc,bcz->brz", plan.head / SPACING, x[:, :cols])
        tail = tf.einsum("rc,bcz->brz", plan.tail / SPACING, x[:, n - cols:])
        return head, tail

    def pad_update(x):
        head, tail = edges(x)
        y = tf.pad(interior(x), [[0, 0], [rows, rows], [0, 0]])
        y = keras.ops.slice_update(y, [0, 0, 0], head)  # in place under XLA
        return keras.ops.slice_update(y, [0, n - rows, 0], tail)

    def concat(x):
        head, tail = edges(x)
        return tf.concat([head, interior(x), tail], axis=1)

    channels = x.shape[2]
    depthwise_filter = tf.constant(
        np.repeat(weights[:, None, None, None], channels, axis=2), x.dtype)

    def depthwise(x):
        # Interior only: even without edges it is the slowest under XLA.
        return tf.nn.depthwise_conv2d(x[:, :, None, :], depthwise_filter,
                                      [1, 1, 1, 1], "VALID")[:, :, 0, :]

    return {"interior only (padding 'valid')": interior,
            "pad + in-place edge update": pad_update,
            "concatenate edges": concat,
            "depthwise convolution (interior)": depthwise}


def section_formulations(x, rounds):
    print(f"\n7. Formulations tried, input {tuple(x.shape)} float32, ratio to "
          "x * 2.0 in the same mode")
    print(f"{'formulation':<34} {'order':>5} {'acc':>3} {'mode':<12} "
          f"{'ms':>8} {'ratio':>6}")
    for order, accuracy in [(1, 2), (2, 4)]:
        plan = fdlayers.stencils.plan(order, accuracy, "same")
        for mode, wrap in list(_modes().items())[1:]:
            candidates = {"floor": wrap(lambda: x * 2.0)}
            for name, fn in _formulations(plan, x).items():
                candidates[name] = wrap(lambda fn=fn: fn(x))
            medians = interleaved(candidates, rounds)
            floor = medians.pop("floor")
            for name, seconds in medians.items():
                print(f"{name:<34} {order:>5} {accuracy:>3} {mode:<12} "
                      f"{seconds * 1e3:8.2f} {seconds / floor:6.2f}")


def section_irregular(x, rounds):
    print(f"\n8. Per-sample time stamps, layer([x, t]) with t of shape "
          f"{tuple(x.shape[:2])}, against the uniform grid, order 1 "
          f"accuracy 2, padding 'same', input {tuple(x.shape)} float32")
    print(f"{'mode':<12} {'uniform ms':>10} {'per-sample ms':>13} {'ratio':>6}")
    steps = SPACING * (1.0 + tf.random.uniform(x.shape[:2], -0.4, 0.4, seed=2))
    t = tf.cumsum(steps, axis=1)
    uniform = fdlayers.FiniteDifference1D(1, SPACING, 2)
    per_sample = fdlayers.FiniteDifference1D(1, accuracy=2)
    results = {}
    for mode, wrap in _modes().items():
        medians = interleaved({"uniform": wrap(lambda: uniform(x)),
                               "per-sample": wrap(lambda: per_sample([x, t]))},
                              rounds)
        ratio = medians["per-sample"] / medians["uniform"]
        results[mode] = ratio
        print(f"{mode:<12} {medians['uniform'] * 1e3:10.2f} "
              f"{medians['per-sample'] * 1e3:13.2f} {ratio:6.2f}")
    return results


def section_savgol(x, rounds):
    from scipy.signal import savgol_filter

    print(f"\n9. SavitzkyGolay1D against scipy.signal.savgol_filter "
          f"(mode='interp', the same edges), input {tuple(x.shape)} float32, "
          "along axis 1")
    print(f"{'window':>6} {'poly':>4} {'order':>5} {'mode':<12} {'ms':>8} "
          f"{'/ x*2.0':>8} {'scipy ms':>9} {'scipy / ours':>12}")
    data = x.numpy()
    results = {}
    for window, polyorder, order in [(5, 2, 1), (11, 3, 1), (41, 3, 1),
                                     (11, 4, 2)]:
        layer = fdlayers.SavitzkyGolay1D(order, window, polyorder, SPACING)
        scipy_time = interleaved({"scipy": lambda: savgol_filter(
            data, window, polyorder, deriv=order, delta=SPACING, axis=1,
            mode="interp")}, max(3, rounds // 3))["scipy"]
        for mode, wrap in _modes().items():
            medians = interleaved({"ours": wrap(lambda: layer(x)),
                                   "floor": wrap(lambda: x * 2.0)}, rounds)
            results[(window, polyorder, order, mode)] = (
                medians["ours"] / medians["floor"], scipy_time / medians["ours"])
            print(f"{window:>6} {polyorder:>4} {order:>5} {mode:<12} "
                  f"{medians['ours'] * 1e3:8.2f} "
                  f"{medians['ours'] / medians['floor']:8.2f} "
                  f"{scipy_time * 1e3:9.2f} {scipy_time / medians['ours']:12.1f}")
    return results


def section_command(quick):
    """Section 11, in a process of its own: a child's peak memory counts
    its parent's at the fork, and this one has loaded TensorFlow."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "command.py")
    sys.stdout.flush()
    subprocess.run([sys.executable, script, *(["--quick"] if quick else [])],
                   check=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smaller tensors and fewer rounds")
    parser.add_argument("--only", type=int,
                        choices=(8, 9, 10, 11, 12, 13, 14, 15, 16),
                        help="run one section (8: per-sample time stamps, "
                             "9: Savitzky-Golay, 10: cold paths, 11: the "
                             "command on files, 12: derivatives of a "
                             "network, 13: fields, 14: spectral "
                             "derivatives, 15: bounded cost, 16: the "
                             "stencil on PyTorch)")
    args = parser.parse_args(argv)
    rounds = 3 if args.quick else 9
    steps = 2 ** 12 if args.quick else 2 ** 16
    print(f"fdlayers {fdlayers.__version__}, TensorFlow {tf.__version__}, "
          f"NumPy {np.__version__}, Python {platform.python_version()}")
    print(f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}")
    x = tf.random.normal((64, steps, 4), seed=0)
    if args.only == 10:
        cold.main(args.quick)
        return
    if args.only == 11:
        section_command(args.quick)
        return
    if args.only == 12:
        derivatives.main(args.quick)
        return
    if args.only == 13:
        fields.main(args.quick)
        return
    if args.only == 14:
        spectral.main(args.quick, interleaved)
        return
    if args.only == 15:
        bounded.main(args.quick)
        return
    if args.only == 16:
        torch_stencil.main(args.quick)
        return
    if args.only:
        {8: section_irregular, 9: section_savgol}[args.only](x, rounds)
        return
    long = tf.random.normal((1, 64 * steps * 4, 1), seed=1)
    section_modes(x, rounds)
    section_modes(long, rounds)
    section_peers(x, rounds)
    section_backward(x, rounds)
    section_linear(18 if args.quick else 24, rounds)
    section_first_call([1000, 1001, 2000, 5000] if args.quick
                       else [1000, 1001, 2000, 5000, 65536])
    section_memory((64, steps, 4))
    section_formulations(x, rounds)
    section_irregular(x, rounds)
    section_savgol(x, rounds)
    cold.main(args.quick)
    section_command(args.quick)
    derivatives.main(args.quick)
    fields.main(args.quick)
    spectral.main(args.quick, interleaved)
    bounded.main(args.quick)
    torch_stencil.main(args.quick)


if __name__ == "__main__":
    main()
