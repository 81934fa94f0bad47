"""GPU check: FiniteDifference1D against float64 and against a device copy.

    KERAS_BACKEND=jax   python benchmarks/gpu_check.py
    KERAS_BACKEND=torch python benchmarks/gpu_check.py
    KERAS_BACKEND=jax   python benchmarks/gpu_check.py --batch 8 --steps 4096  # smoke test

For each (order, accuracy), padding "same", on a float32 (batch, steps, 1)
tensor on the default device (256 × 2**20 × 1 = 1 GiB unless told otherwise):

- correctness: every run gets a fresh random input, and the output variable
  is poisoned with NaN before the call, so a skipped or stale computation
  cannot pass; the rows checked (first, middle, last) must agree with a
  float64 NumPy evaluation of the documented stencils within the float32
  rounding bound (m + 2)·2⁻²⁴·Σ|w·x| that the test suite uses;
- speed: the median time of the layer against the median time of a
  device-to-device copy of the same tensor, interleaved. Both read and write
  the tensor once, so copy time / layer time is the fraction of the copy's
  bandwidth the layer reaches (target ≥ 70%).

Prints one table; exits non-zero if any result is wrong.
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

CASES = [(1, 2), (2, 2), (2, 4), (1, 6), (4, 8)]
SPACING = 0.01


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


def reference_rows(x, order, accuracy):
    """float64 NumPy evaluation of padding 'same' on rows x[:, :, 0].

    Returns (derivative, rounding scale Σ|w·x|, samples per window m).
    """
    x = x.astype(np.float64)
    n = x.shape[1]
    radius = (order - 1) // 2 + accuracy // 2
    width = order + accuracy
    central = fdlayers.coefficients(order, range(-radius, radius + 1)) / SPACING ** order
    y = np.zeros_like(x)
    scale = np.zeros_like(x)
    for k, w in enumerate(central):
        part = x[:, k:n - 2 * radius + k]
        y[:, radius:n - radius] += w * part
        scale[:, radius:n - radius] += abs(w * part)
    for i in range(radius):
        left = fdlayers.coefficients(order, range(-i, width - i)) / SPACING ** order
        right = fdlayers.coefficients(order, range(i + 1 - width, i + 1)) / SPACING ** order
        y[:, i] = x[:, :width] @ left
        scale[:, i] = abs(x[:, :width]) @ abs(left)
        y[:, n - 1 - i] = x[:, n - width:] @ right
        scale[:, n - 1 - i] = abs(x[:, n - width:]) @ abs(right)
    return y, scale, width


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2 ** 20)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    synchronize, copy, device = backend_tools()
    shape = (args.batch, args.steps, 1)
    gib = np.prod(shape) * 4 / 2 ** 30
    print(f"fdlayers {fdlayers.__version__}, Keras {keras.__version__}, backend "
          f"{keras.backend.backend()}, device {device}")
    print(f"input {shape} float32 ({gib:.2f} GiB), padding 'same', "
          f"{args.rounds} interleaved rounds, medians\n")
    print(f"{'order':>5} {'acc':>3} {'max err/bound':>13} {'layer ms':>9} "
          f"{'copy ms':>8} {'GB/s':>7} {'of copy':>8}")
    rows = sorted({0, args.batch // 2, args.batch - 1})
    failures = 0
    seed = 0
    for order, accuracy in CASES:
        layer = fdlayers.FiniteDifference1D(order, SPACING, accuracy)
        layer_times, copy_times, worst = [], [], 0.0
        for _ in range(args.rounds + 1):  # the first round warms up
            seed += 1
            x = keras.random.normal(shape, seed=seed)
            synchronize(x)
            y = keras.ops.full(shape, float("nan"))  # poison
            synchronize(y)
            start = time.perf_counter()
            y = synchronize(layer(x))
            layer_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            synchronize(copy(x))
            copy_times.append(time.perf_counter() - start)

            host_x = keras.ops.convert_to_numpy(keras.ops.take(x, rows, axis=0))
            host_y = keras.ops.convert_to_numpy(keras.ops.take(y, rows, axis=0))
            want, scale, width = reference_rows(host_x[:, :, 0], order, accuracy)
            bound = (width + 2) * 2.0 ** -24 * scale
            error = np.abs(host_y[:, :, 0].astype(np.float64) - want)
            if not np.all(np.isfinite(host_y)) or np.any(error > bound):
                failures += 1
            worst = max(worst, float(np.max(error / np.maximum(bound, 1e-300))))
        layer_ms = statistics.median(layer_times[1:]) * 1e3
        copy_ms = statistics.median(copy_times[1:]) * 1e3
        rate = 2 * np.prod(shape) * 4 / (layer_ms / 1e3) / 1e9
        print(f"{order:>5} {accuracy:>3} {worst:13.3f} {layer_ms:9.3f} "
              f"{copy_ms:8.3f} {rate:7.1f} {copy_ms / layer_ms:8.0%}")
    if failures:
        print(f"\n{failures} run(s) gave a wrong or non-finite result")
        return 1
    print("\nall results within the float32 rounding bound of the float64 reference")
    return 0



if __name__ == "__main__":
    sys.exit(main())
