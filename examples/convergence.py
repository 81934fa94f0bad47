"""How fast the error falls with the spacing: the accuracy, made visible.

Differentiates sin(t) on [0, 2] sampled on tf.range grids with spacings
h = 2^-2 .. 2^-8, in float64, for accuracies 2, 4 and 6 (order 1 and 2,
padding "same"), and plots the maximum error against h on log-log axes,
interior points and edge points (the one-sided windows) apart. A line of
slope `accuracy` is drawn through each series; the fitted slope (over the
points well above rounding) is printed and written in the legend. Where the
error reaches the float64 rounding floor, eps·Σ|w|/h^order (grey), the
curve turns up: a smaller h no longer helps.

    python examples/convergence.py [OUTPUT.png]   # default docs/convergence.png
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
from fdlayers import stencils  # noqa: E402

FAST = os.environ.get("FDLAYERS_FAST") == "1"
# The README's figure, except in the quick runs of the tests (into the
# working directory, leaving the repository as it is).
OUTPUT = (pathlib.Path("convergence.png") if FAST else
          pathlib.Path(__file__).resolve().parent.parent / "docs" / "convergence.png")
EXPONENTS = range(2, 7 if FAST else 9)
ACCURACIES = (2, 4, 6)
ORDERS = (1, 2)


def errors(order, accuracy, h):
    """Max |error| at interior and edge points on [0, 2] with spacing h."""
    steps = int(round(2 / h)) + 1
    t = tf.cast(tf.range(steps), tf.float64) * h
    x = tf.reshape(tf.sin(t), (1, -1, 1))
    y = fdlayers.FiniteDifference1D(order, h, accuracy, dtype="float64")(x)
    error = np.abs(y.numpy()[0, :, 0] - np.sin(t.numpy() + order * np.pi / 2))
    edge_rows = stencils.plan(order, accuracy, "same").head.shape[0]
    edge = np.zeros(steps, dtype=bool)
    edge[:edge_rows] = edge[steps - edge_rows:] = True
    return error[~edge].max(), error[edge].max()


def rounding_floor(order, accuracy, h):
    """eps · Σ|w| / h**order: the float64 rounding error of the estimate
    (for |x| ≤ 1), below which no spacing can push the error."""
    weights = stencils.plan(order, accuracy, "same").weights
    return np.finfo(np.float64).eps * np.abs(weights).sum() / h ** order


def slope(h, e, floor):
    """Least-squares slope of log e against log h over the points whose
    error is well above the rounding floor (at least the two coarsest)."""
    keep = e > 1000 * floor
    keep[:2] = True
    return np.polyfit(np.log(h[keep]), np.log(e[keep]), 1)[0]


fig, panels = plt.subplots(1, len(ORDERS), figsize=(11, 4.5), sharey=True)
h = np.array([2.0 ** -k for k in EXPONENTS])
colors = {2: "tab:blue", 4: "tab:orange", 6: "tab:green"}
print(f"{'order':>5} {'acc':>3} {'slope interior':>15} {'slope edges':>12}")
for order, panel in zip(ORDERS, panels):
    for accuracy in ACCURACIES:
        interior, edges = np.array([errors(order, accuracy, s) for s in h]).T
        floor = rounding_floor(order, accuracy, h)
        fitted = slope(h, interior, floor), slope(h, edges, floor)
        print(f"{order:>5} {accuracy:>3} {fitted[0]:15.2f} {fitted[1]:12.2f}")
        color = colors[accuracy]
        panel.loglog(h, interior, "o-", color=color,
                     label=f"acc {accuracy} interior (slope {fitted[0]:.2f})")
        panel.loglog(h, edges, "s--", color=color, fillstyle="none",
                     label=f"acc {accuracy} edges (slope {fitted[1]:.2f})")
        # Reference line of slope `accuracy` through the coarsest interior point.
        panel.loglog(h, interior[0] * (h / h[0]) ** accuracy, ":", color=color,
                     lw=1)
    panel.loglog(h, rounding_floor(order, 2, h), "-", color="0.7", lw=4,
                 alpha=0.5, label="float64 rounding floor")
    panel.set_title(f"order {order}: d{'²' if order == 2 else ''}/dt"
                    f"{'²' if order == 2 else ''} sin t, padding 'same'")
    panel.set_xlabel("spacing h")
    panel.grid(True, which="major", alpha=0.3)
    panel.legend(fontsize=7, loc="lower right")
panels[0].set_ylabel("max |error|")
fig.suptitle("Error against spacing: slope = accuracy, at the edges too "
             "(dotted: slope = accuracy; grey: rounding)", fontsize=11)
fig.tight_layout()

output = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else OUTPUT
output.parent.mkdir(parents=True, exist_ok=True)
fig.savefig(output, dpi=110)
print(f"wrote {output}")
