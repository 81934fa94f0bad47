"""Derivatives of 2-D fields: gradient magnitude, Laplacian and vorticity.

A smooth analytic image f(x, y) (a Gaussian bump on a sinusoidal
background) and an analytic flow (a Taylor–Green cell plus a uniform shear)
are sampled on a grid of [0, 1]² that includes the edges. The example takes
|∇f| with `Gradient`, ∇²f with `Laplacian` and the vorticity
ω = ∂v_y/∂x − ∂v_x/∂y with `Curl`, at accuracies 2 and 4 (padding "same":
edges and corners included), prints the largest and the RMS error of each
against its closed form, and draws the fields and the error of the
Laplacian to docs/fields.png.

The grid is indexed (x, y) (`indexing="ij"`: axis 0 is x, axis 1 is y),
so the components of the velocity are stored (v_x, v_y) and `Curl`'s
∂v₁/∂s₀ − ∂v₀/∂s₁ is the usual ω. (On an image stored (y, x) it is −ω.)

    python examples/fields.py [OUTPUT.png]
"""

import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import fdlayers  # noqa: E402

FAST = os.environ.get("FDLAYERS_FAST") == "1"
# The README's figure, except in the quick runs of the tests (into the
# working directory, leaving the repository as it is).
OUTPUT = (pathlib.Path("fields.png") if FAST else
          pathlib.Path(__file__).resolve().parent.parent / "docs" / "fields.png")

n = 65 if FAST else 129  # points per axis, edges included
s = np.linspace(0.0, 1.0, n)
h = s[1] - s[0]
x, y = np.meshgrid(s, s, indexing="ij")

# The image: f = g + b, a Gaussian bump g of width w at (a, c) and a
# background b = 0.3 sin(2πx) cos(πy).
a, c, w = 0.35, 0.6, 0.15
g = np.exp(-((x - a) ** 2 + (y - c) ** 2) / (2 * w ** 2))
b = 0.3 * np.sin(2 * np.pi * x) * np.cos(np.pi * y)
f = g + b
f_x = -(x - a) / w ** 2 * g + 0.6 * np.pi * np.cos(2 * np.pi * x) * np.cos(np.pi * y)
f_y = -(y - c) / w ** 2 * g - 0.3 * np.pi * np.sin(2 * np.pi * x) * np.sin(np.pi * y)
grad_norm = np.hypot(f_x, f_y)
laplacian = (((x - a) ** 2 + (y - c) ** 2) / w ** 4 - 2 / w ** 2) * g \
    - 5 * np.pi ** 2 * b

# The flow: a Taylor–Green cell v = (sin πx cos πy, −cos πx sin πy), whose
# vorticity is 2π sin πx sin πy, plus a shear (y², 0) of vorticity −2y.
v_x = np.sin(np.pi * x) * np.cos(np.pi * y) + y ** 2
v_y = -np.cos(np.pi * x) * np.sin(np.pi * y)
vorticity = 2 * np.pi * np.sin(np.pi * x) * np.sin(np.pi * y) - 2 * y

image = f[None, :, :, None]                   # (batch, x, y, channels)
velocity = np.stack([v_x, v_y], -1)[None]     # (batch, x, y, (v_x, v_y))


def errors(estimate, exact):
    error = np.asarray(estimate) - exact
    return np.abs(error).max(), np.sqrt(np.mean(error ** 2)), error


results = {}
print(f"{n} × {n} grid of [0, 1]², h = {h:.4g}, padding 'same' (edges and "
      "corners included), float64")
print(f"{'quantity':<14}{'layer':<24}{'accuracy':>9}{'max error':>12}"
      f"{'RMS error':>12}")
for accuracy in (2, 4):
    options = dict(spacing=h, accuracy=accuracy, dtype="float64")
    gradient = np.asarray(fdlayers.Gradient(**options)(image))[0]  # (x, y, 2)
    estimates = {
        "|grad f|": ("Gradient", np.hypot(gradient[..., 0], gradient[..., 1]),
                     grad_norm),
        "laplacian f": ("Laplacian",
                        np.asarray(fdlayers.Laplacian(**options)(image))[0, ..., 0],
                        laplacian),
        "vorticity": ("Curl",
                      np.asarray(fdlayers.Curl(**options)(velocity))[0, ..., 0],
                      vorticity),
    }
    for name, (layer, estimate, exact) in estimates.items():
        worst, rms, error = errors(estimate, exact)
        results[name, accuracy] = estimate, error
        print(f"{name:<14}{layer + f'(accuracy={accuracy})':<24}{accuracy:>9}"
              f"{worst:>12.2e}{rms:>12.2e}")

fig, panels = plt.subplots(2, 3, figsize=(11, 6.8))
extent = (0, 1, 0, 1)


def show(ax, values, title, cmap="viridis", centred=False):
    # Arrays are (x, y): imshow wants rows of y.
    norm = (matplotlib.colors.TwoSlopeNorm(0.0, values.min(), values.max())
            if centred else None)
    im = ax.imshow(values.T, origin="lower", extent=extent, cmap=cmap,
                   norm=norm)
    ax.set_title(title, fontsize=10)
    ax.set_xticks([0, 0.5, 1])
    ax.set_yticks([0, 0.5, 1])
    fig.colorbar(im, ax=ax, shrink=0.85)


show(panels[0, 0], f, "image f(x, y)")
show(panels[0, 1], results["|grad f|", 4][0], "|∇f|: Gradient (accuracy 4)")
show(panels[0, 2], results["laplacian f", 4][0], "∇²f: Laplacian (accuracy 4)",
     cmap="RdBu_r", centred=True)
speed = np.hypot(v_x, v_y)
show(panels[1, 0], speed, "flow v: speed and direction", cmap="Greys")
step = max(n // 16, 1)
panels[1, 0].quiver(x[::step, ::step], y[::step, ::step],
                    v_x[::step, ::step], v_y[::step, ::step], color="tab:blue")
show(panels[1, 1], results["vorticity", 4][0], "ω = ∂v_y/∂x − ∂v_x/∂y: Curl (accuracy 4)",
     cmap="RdBu_r", centred=True)
error = np.abs(results["laplacian f", 4][1])
show(panels[1, 2], np.log10(np.maximum(error, 1e-16)),
     "log₁₀ |error| of ∇²f, accuracy 4\n(edges and corners included)",
     cmap="magma")
fig.suptitle(f"Fields on a {n} × {n} grid: fdlayers against the closed forms",
             fontsize=11)
fig.tight_layout()

output = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else OUTPUT
output.parent.mkdir(parents=True, exist_ok=True)
fig.savefig(output, dpi=100)
print(f"wrote {output}")
