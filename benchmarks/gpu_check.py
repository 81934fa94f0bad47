"""GPU check: fdlayers against float64 and against a device copy.

    KERAS_BACKEND=jax   python benchmarks/gpu_check.py
    KERAS_BACKEND=torch python benchmarks/gpu_check.py
    KERAS_BACKEND=jax   python benchmarks/gpu_check.py --small  # smoke test

Three tables, each on float32 tensors made on the default device, padding
"same", edges included:

1. `FiniteDifference1D(order, accuracy)` on `(256, 2**20, 1)` (1 GiB);
2. `SavitzkyGolay1D(order, window, polyorder)` on the same input;
3. `Laplacian` and `Gradient` of 2-D fields `(16, 2048, 2048, 1)` and 3-D
   fields `(8, 256, 256, 256, 1)` (256 and 512 MiB).

Correctness: every round gets a fresh random input and the output is
poisoned with NaN before the call, so a skipped or stale computation cannot
pass. The samples checked (first, middle and last series of a 1-D batch in
every round; one whole field in each of the first four rounds, in turn) must
agree with a float64 NumPy evaluation of the documented stencils, written
out here from the public coefficients, within the float32 rounding bound (terms + 2)·2⁻²⁴·Σ|w·x| that the test
suite uses.

Speed: the median time of the layer against the median time of a
device-to-device copy of its input, interleaved. The copy reads and writes
the input once; the layer reads it once and writes its outputs once (one
tensor, or one per axis for `Gradient`). "of copy" is the layer's bytes per
second as a fraction of the copy's (target ≥ 70%).

Prints the tables; exits non-zero if any result is wrong.
"""

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import fdlayers  # noqa: E402
from fdlayers import savgol  # noqa: E402

SPACING = 0.01
FD_CASES = [(1, 2), (2, 2), (2, 4), (1, 6), (4, 8)]
SG_CASES = [(1, 11, 3), (2, 21, 4), (1, 41, 2)]
FIELD_CASES = [("Laplacian", 2, 2), ("Laplacian", 2, 4), ("Gradient", 2, 2),
               ("Laplacian", 3, 2), ("Laplacian", 3, 4), ("Gradient", 3, 2)]


def backend_tools():
    """(synchronize, copy, device name) for the active Keras backend."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        copy = jax.jit(jnp.copy)  # not donated: XLA must write a new buffer
        return ((lambda y: y.block_until_ready()), copy,
                str(jax.devices()[0].device_kind))
    if backend == "torch":
        import torch

        def synchronize(y):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            return y

        name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
        return synchronize, (lambda x: x.clone()), name
    raise SystemExit(f"run with KERAS_BACKEND=jax or torch, not {backend!r}")


# float64 references ------------------------------------------------------------

def fd_rows(order, accuracy):
    """(centre, head rows, tail rows) of padding 'same', unit spacing.

    Edge point i (and n-1-i) takes the `order + accuracy` samples at the
    start (end) of the series, as documented for `FiniteDifference1D`.
    """
    radius = (order - 1) // 2 + accuracy // 2
    width = order + accuracy
    centre = fdlayers.coefficients(order, range(-radius, radius + 1))
    head = [fdlayers.coefficients(order, range(-i, width - i)) for i in range(radius)]
    tail = [fdlayers.coefficients(order, range(i + 1 - width, i + 1))
            for i in reversed(range(radius))]
    return centre, np.array(head).reshape(radius, width), \
        np.array(tail).reshape(radius, width)


def sg_rows(order, window, polyorder):
    """(centre, head rows, tail rows) of a Savitzky–Golay filter, 'same':
    the first (last) r points evaluate the fit to the first (last) window."""
    r = window // 2
    centre = savgol.coefficients(order, window, polyorder)
    head = [savgol.coefficients(order, window, polyorder, i - r) for i in range(r)]
    tail = [savgol.coefficients(order, window, polyorder, i + 1)
            for i in range(r)]
    return centre, np.array(head).reshape(r, window), np.array(tail).reshape(r, window)


def apply_rows(x, rows, scale):
    """float64 (y, Σ|w·x|) of the stencil `rows` along the last axis of x."""
    centre, head, tail = (np.asarray(r, np.float64) * scale for r in rows)
    x = np.asarray(x, np.float64)
    n, radius = x.shape[-1], len(centre) // 2
    y = np.zeros_like(x)
    bound = np.zeros_like(x)
    inner = slice(radius, n - radius)
    for k, w in enumerate(centre):
        part = x[..., k:n - 2 * radius + k]
        y[..., inner] += w * part
        bound[..., inner] += np.abs(w * part)
    cols = head.shape[1]
    for i in range(len(head)):
        y[..., i] = x[..., :cols] @ head[i]
        bound[..., i] = np.abs(x[..., :cols]) @ np.abs(head[i])
    for i in range(len(tail)):
        j = n - len(tail) + i
        y[..., j] = x[..., n - cols:] @ tail[i]
        bound[..., j] = np.abs(x[..., n - cols:]) @ np.abs(tail[i])
    return y, bound


def along(x, axis, rows, scale):
    """`apply_rows` along `axis` of x."""
    y, bound = apply_rows(np.moveaxis(x, axis, -1), rows, scale)
    return np.moveaxis(y, -1, axis), np.moveaxis(bound, -1, axis)


# The three tables ---------------------------------------------------------------

def measure(layer, shape, rounds, reference, outputs, tools, seed, checked=None):
    """Run `layer` on `rounds + 1` fresh inputs (the first warms up).

    `reference(x, k)` gets round k's input and returns (samples taken,
    [(want, bound), ...]) for the layer's output channels. Only the first
    `checked` rounds are checked when it is given (a float64 reference of a
    whole 3-D field takes seconds on the host). Returns (worst error / bound, failures, layer
    ms, copy ms, seed).
    """
    synchronize, copy = tools
    layer_times, copy_times, worst, failures = [], [], 0.0, 0
    for k in range(rounds + 1):
        seed += 1
        x = keras.random.normal(shape, seed=seed)
        synchronize(x)
        y = keras.ops.full(shape[:-1] + (outputs,), float("nan"))  # poison
        synchronize(y)
        start = time.perf_counter()
        y = synchronize(layer(x))
        layer_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        synchronize(copy(x))
        copy_times.append(time.perf_counter() - start)

        if checked is not None and k >= checked:
            continue
        samples, checks = reference(x, k)
        got = keras.ops.convert_to_numpy(keras.ops.take(y, samples, axis=0))
        for c, (want, bound) in enumerate(checks):
            error = np.abs(got[..., c].astype(np.float64) - want)
            if not np.all(np.isfinite(got[..., c])) or np.any(error > bound):
                failures += 1
            worst = max(worst, float(np.max(error / np.maximum(bound, 1e-300))))
    return (worst, failures, statistics.median(layer_times[1:]) * 1e3,
            statistics.median(copy_times[1:]) * 1e3, seed)


def series_reference(shape, rows, order):
    """The reference of a 1-D layer on the first, middle and last series."""
    samples = sorted({0, shape[0] // 2, shape[0] - 1})
    terms = len(rows[0]) + 2

    def reference(x, k):
        host = keras.ops.convert_to_numpy(keras.ops.take(x, samples, axis=0))
        want, scale = apply_rows(host[..., 0], rows, SPACING ** -order)
        return samples, [(want, terms * 2.0 ** -24 * scale)]

    return reference


def field_reference(shape, name, accuracy):
    """The reference of `Laplacian` or `Gradient` on one field per round."""
    ndim = len(shape) - 2
    order = 2 if name == "Laplacian" else 1
    rows = fd_rows(order, accuracy)
    width = len(rows[0])

    def reference(x, k):
        b = (0, shape[0] // 2, shape[0] - 1)[k % 3]
        host = keras.ops.convert_to_numpy(x[b])[..., 0]
        parts = [along(host, axis, rows, SPACING ** -order) for axis in range(ndim)]
        if name == "Gradient":
            checks = [(want[None], (width + 2) * 2.0 ** -24 * bound[None])
                      for want, bound in parts]
        else:
            want = sum(p[0] for p in parts)
            bound = (ndim * width + 2) * 2.0 ** -24 * sum(p[1] for p in parts)
            checks = [(want[None], bound[None])]
        return [b], checks

    return reference


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--small", action="store_true",
                        help="small inputs and 3 rounds: a smoke test")
    args = parser.parse_args(argv)
    rounds = 3 if args.small else args.rounds
    series = (8, 65536, 1) if args.small else (256, 2 ** 20, 1)
    fields = {2: (2, 128, 128, 1) if args.small else (16, 2048, 2048, 1),
              3: (2, 32, 32, 32, 1) if args.small else (8, 256, 256, 256, 1)}
    synchronize, copy, device = backend_tools()
    tools = (synchronize, copy)
    print(f"fdlayers {fdlayers.__version__}, Keras {keras.__version__}, backend "
          f"{keras.backend.backend()}, device {device}")
    print(f"float32, padding 'same', spacing {SPACING}, {rounds} interleaved "
          f"rounds after one warm-up, medians\n")
    header = (f"{'max err/bound':>13} {'layer ms':>9} {'copy ms':>8} "
              f"{'GB/s':>7} {'of copy':>8}")
    failures, seed = 0, 0

    def row(worst, wrong, layer_ms, copy_ms, nbytes, moved):
        rate = moved * nbytes / (layer_ms / 1e3) / 1e9
        share = (moved / 2) * copy_ms / layer_ms
        return (f"{worst:13.3f} {layer_ms:9.3f} {copy_ms:8.3f} {rate:7.1f} "
                f"{share:8.0%}" + ("  WRONG" if wrong else ""))

    gib = np.prod(series) * 4 / 2 ** 30
    tables = [
        (f"1. FiniteDifference1D, input {series} ({gib:.2f} GiB)",
         f"{'order':>5} {'acc':>3} ",
         [(f"{order:>5} {accuracy:>3} ",
           fdlayers.FiniteDifference1D(order, SPACING, accuracy), series,
           series_reference(series, fd_rows(order, accuracy), order), 1, None)
          for order, accuracy in FD_CASES]),
        (f"\n2. SavitzkyGolay1D, input {series}",
         f"{'order':>5} {'window':>6} {'poly':>4} ",
         [(f"{order:>5} {window:>6} {polyorder:>4} ",
           fdlayers.SavitzkyGolay1D(order, window, polyorder, spacing=SPACING),
           series, series_reference(series, sg_rows(order, window, polyorder),
                                    order), 1, None)
          for order, window, polyorder in SG_CASES]),
        (f"\n3. Fields: 2-D {fields[2]}, 3-D {fields[3]}",
         f"{'layer':>9} {'dims':>4} {'acc':>3} ",
         [(f"{name:>9} {ndim:>4} {accuracy:>3} ",
           getattr(fdlayers, name)(spacing=SPACING, accuracy=accuracy),
           fields[ndim], field_reference(fields[ndim], name, accuracy),
           ndim if name == "Gradient" else 1, 4)
          for name, ndim, accuracy in FIELD_CASES]),
    ]
    for title, columns, cases in tables:
        print(title)
        print(columns + header)
        for label, layer, shape, reference, outputs, checked in cases:
            worst, wrong, layer_ms, copy_ms, seed = measure(
                layer, shape, rounds, reference, outputs, tools, seed, checked)
            failures += wrong
            print(label + row(worst, wrong, layer_ms, copy_ms,
                              int(np.prod(shape)) * 4, 1 + outputs))

    if failures:
        print(f"\n{failures} check(s) gave a wrong or non-finite result")
        return 1
    print("\nall results within the float32 rounding bound of the float64 reference")
    return 0


if __name__ == "__main__":
    sys.exit(main())
