"""Derivatives of noisy samples: FiniteDifference1D against SavitzkyGolay1D.

sin(t) sampled every h = 0.01 with white noise of deviation σ = 0.01 added.
A finite difference multiplies the noise by ≈ ‖w‖₂ / h (√2/(2h) ≈ 71 for the
first derivative at accuracy 2), so d/dt drowns; a Savitzky–Golay filter fits
a cubic to 41 samples around each point and differentiates the fit. The
example prints the RMS and worst errors of both, and draws them to
docs/noise.png.

    python examples/noise.py [OUTPUT.png]
"""

import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import fdlayers  # noqa: E402

FAST = os.environ.get("FDLAYERS_FAST") == "1"
# The README's figure, except in the quick runs of the tests (into the
# working directory, leaving the repository as it is).
OUTPUT = (pathlib.Path("noise.png") if FAST else
          pathlib.Path(__file__).resolve().parent.parent / "docs" / "noise.png")

h, sigma = 0.01, 0.01
t = tf.cast(tf.range(629), tf.float64) * h  # one period, 0 .. 6.28
rng = np.random.default_rng(0)
x = tf.reshape(tf.sin(t) + rng.normal(0.0, sigma, t.shape[0]), (1, -1, 1))
truth = np.cos(t.numpy())

estimates = {
    "FiniteDifference1D(order=1, accuracy=2)":
        fdlayers.FiniteDifference1D(order=1, spacing=h, dtype="float64"),
    "SavitzkyGolay1D(order=1, window=41, polyorder=3)":
        fdlayers.SavitzkyGolay1D(order=1, window=41, polyorder=3, spacing=h,
                                 dtype="float64"),
}
fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
top.plot(t, x.numpy()[0, :, 0], ".", ms=2, color="0.6",
         label=f"samples: sin t + noise (σ = {sigma})")
rms = {}
for (name, layer), color in zip(estimates.items(), ("tab:red", "tab:blue")):
    y = layer(x).numpy()[0, :, 0]
    error = y - truth
    rms[name] = np.sqrt(np.mean(error ** 2))
    print(f"{name}: RMS error {rms[name]:.3f}, worst {np.abs(error).max():.3f}")
    bottom.plot(t, y, color=color, lw=1 if color == "tab:red" else 2.5,
                alpha=0.8,
                label=f"{name.split('(')[0]}: RMS error {rms[name]:.3f}")
bottom.plot(t, truth, "k--", lw=1, label="cos t (analytic)")
ratio = rms[list(estimates)[0]] / rms[list(estimates)[1]]
print(f"Savitzky-Golay's RMS error is {ratio:.0f}x smaller")
top.set_ylabel("x(t)")
top.legend(loc="upper right", fontsize=8)
top.set_title(f"Noisy samples, h = {h}")
bottom.set_ylabel("dx/dt")
bottom.set_xlabel("t")
bottom.set_ylim(-3, 3)
bottom.legend(loc="lower left", fontsize=8)
bottom.set_title("First derivative: a finite difference amplifies the noise "
                 "by ~1/h", fontsize=10)
fig.tight_layout()

output = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else OUTPUT
output.parent.mkdir(parents=True, exist_ok=True)
fig.savefig(output, dpi=110)
print(f"wrote {output}")
