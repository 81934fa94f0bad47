"""Plot a derivative taken by FiniteDifference1D against the analytic one.

Samples sin(t) on a coarse tf.range grid, differentiates it with accuracies
2, 4 and 6 (padding "same", edges included), and draws the estimates and the
error at every point, edges included, to docs/derivative.png.

    python examples/plot_derivative.py [OUTPUT.png]
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
OUTPUT = (pathlib.Path("derivative.png") if FAST else
          pathlib.Path(__file__).resolve().parent.parent / "docs" / "derivative.png")

h = 0.25
t = tf.cast(tf.range(33), tf.float64) * h  # 0 .. 8
x = tf.reshape(tf.sin(t), (1, -1, 1))
truth = np.cos(t.numpy())

fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
fine = np.linspace(0, float(t[-1]), 400)
top.plot(fine, np.cos(fine), color="0.6", lw=3, label="cos t (analytic)")
bottom.set_yscale("log")
for accuracy, marker in [(2, "o"), (4, "s"), (6, "^")]:
    layer = fdlayers.FiniteDifference1D(order=1, spacing=h, accuracy=accuracy,
                                        dtype="float64")
    y = layer(x).numpy()[0, :, 0]
    error = np.abs(y - truth)
    print(f"accuracy {accuracy}: max error {error.max():.2e} "
          f"(edges {max(error[0], error[-1]):.2e})")
    top.plot(t, y, marker, ms=4, fillstyle="none",
             label=f"FiniteDifference1D, accuracy {accuracy}")
    bottom.plot(t, error, marker + "-", ms=4, lw=1, label=f"accuracy {accuracy}")
top.set_ylabel("d/dt sin t")
top.set_title(f"First derivative of sin t sampled with h = {h}")
top.legend(loc="lower right", fontsize=8)
bottom.set_ylabel("|error|")
bottom.set_xlabel("t")
bottom.legend(fontsize=8, ncol=3)
bottom.set_title("Error at every point: the edges keep the accuracy", fontsize=10)
fig.tight_layout()

output = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else OUTPUT
output.parent.mkdir(parents=True, exist_ok=True)
fig.savefig(output, dpi=110)
print(f"wrote {output}")
