"""`fdlayers demo`: FiniteDifference1D on the Keras backend, against the truth.

Differentiates arange series (`tf.range` on TensorFlow) for several orders,
accuracies and paddings in float64, prints the errors against the analytic
derivatives and the observed rate as the spacing halves, and draws them.
The backend's runtime logs are kept off the terminal; a backend that would
compute in float32 is refused in one line.
"""

import contextlib
import math
import os
import re
import sys

from fdlayers import figures
from fdlayers.datafiles import CommandError

DEFAULT_FIGURE = "fdlayers-demo.png"

# f and its derivative of order n, on float64 NumPy arrays; the derivatives
# are written out analytically so that the demo compares with the truth.
_FUNCTIONS = {
    "t^5": (lambda np, t: t ** 5,
            lambda np, t, n: math.perm(5, n) * t ** (5 - n)),
    "sin": (lambda np, t: np.sin(t),
            lambda np, t, n: np.sin(t + n * math.pi / 2)),
    "e^(t/2)": (lambda np, t: np.exp(t / 2),
                lambda np, t, n: np.exp(t / 2) / 2 ** n),
}

_CASES = [  # (order, accuracy, padding)
    (1, 2, "same"), (1, 4, "same"), (1, 6, "same"),
    (2, 2, "same"), (2, 4, "same"), (3, 2, "same"), (4, 4, "same"),
    (2, 4, "valid"), (1, 3, "causal"), (2, 2, "periodic"),
]

# Lines that TensorFlow's C++ runtime writes through absl straight to file
# descriptor 2 while it loads and on its first ops, whatever
# TF_CPP_MIN_LOG_LEVEL says (2.21: oneDNN, CUDA probes): not the command's.
_NATIVE_LOG = re.compile(
    r"^(WARNING: All log messages before absl|[IWEF]\d{4} \d\d:\d\d:\d\d"
    r"|To enable the following instructions|\S+\.cc:\d+\])")


@contextlib.contextmanager
def _quiet_native_logs():
    """Keep the backend runtime's own log lines off the terminal: file
    descriptor 2 goes to a scratch file meanwhile, and everything else in
    it (a Python warning, say) is passed on afterwards."""
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as scratch:
        os.dup2(scratch.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            scratch.seek(0)
            for line in scratch.read().decode(errors="replace").splitlines():
                if line.strip() and not _NATIVE_LOG.match(line):
                    print(line, file=sys.stderr)


def _backend():
    """Keras on the backend of KERAS_BACKEND, able to compute in float64."""
    if os.environ.get("KERAS_BACKEND", "").lower() == "jax" and "jax" not in sys.modules:
        # JAX computes in float32 unless 64-bit types are enabled before it
        # loads; the demo's table is float64.
        os.environ.setdefault("JAX_ENABLE_X64", "1")
    import keras

    return keras


def _check_float64(keras, y):
    if y.dtype.name != "float64":
        backend = keras.backend.backend()
        hint = (" (JAX computes in float32 unless JAX_ENABLE_X64=1 is set "
                "before it loads)" if backend == "jax" else "")
        raise CommandError(
            f"the {backend} backend computed in {y.dtype.name}, not float64"
            f"{hint}; the demo's errors would be float32 rounding")


def _errors(keras, function, order, accuracy, padding, steps, spacing):
    """Max |error| at the interior and edge points of one differentiation."""
    import numpy as np

    from fdlayers import layers, stencils

    f, df = _FUNCTIONS[function]
    if padding == "periodic":
        # One full period on the grid, so that the wrap-around is smooth.
        spacing = 2 * math.pi / steps
    t = np.arange(steps, dtype=np.float64) * spacing
    x = f(np, t).reshape(1, steps, 1)
    layer = layers.FiniteDifference1D(order, spacing, accuracy, padding,
                                      dtype="float64")
    y = keras.ops.convert_to_numpy(layer(x))
    _check_float64(keras, y)
    y = y[0, :, 0]
    truth = df(np, t, order)
    plan = stencils.plan(order, accuracy, padding)
    edge = np.zeros(steps, dtype=bool)
    if padding == "valid":
        cut = (steps - y.size) // 2
        truth = truth[cut:steps - cut]
        edge = edge[cut:steps - cut]
    elif padding == "causal":
        # Steps without the full history have reduced accuracy by design.
        y, truth, edge = y[plan.min_length - 1:], truth[plan.min_length - 1:], edge[plan.min_length - 1:]
    elif padding == "same":
        edge[:plan.head.shape[0]] = True
        edge[steps - plan.tail.shape[0]:] = True
    error = np.abs(y - truth)
    interior = float(error[~edge].max())
    edges = float(error[edge].max()) if edge.any() else float("nan")
    return interior, edges, spacing


def _edge_text(error):
    return "-" if math.isnan(error) else f"{error:.2e}"


def run(args, say):
    """Print the original arange example and the error table, and draw
    the derivatives and the convergence to a figure (`--plot PNG`, default
    fdlayers-demo.png; skipped with a note where matplotlib is missing,
    unless asked for by name, and with `--no-plot`)."""
    plot = args.plot
    if plot is None:  # the default figure, where matplotlib is installed
        plot = DEFAULT_FIGURE if figures.has_matplotlib() else None
        if plot is None and not args.no_plot:
            say("(no figure: matplotlib is not installed; "
                "pip install 'fdlayers[plot]' or pip install matplotlib)\n")
    if args.no_plot:
        plot = None
    if plot:
        from fdlayers import outputs

        figures.check_path(plot)
        # The demo's own figure is rewritten on every run; any other
        # existing file is replaced only with --force.
        outputs.check_outputs(None, [("--plot", plot)],
                              args.force or plot == DEFAULT_FIGURE)
    with _quiet_native_logs():
        _demo_table(args, say)
        if plot:
            _demo_figure(plot, args.force or plot == DEFAULT_FIGURE)
    if plot:
        say(f"\nwrote {plot}")
    return 0


def _demo_table(args, say):
    keras = _backend()
    import numpy as np

    import fdlayers
    from fdlayers import layers

    backend = keras.backend.backend()
    say(f"fdlayers {fdlayers.__version__}, Keras {keras.__version__} "
        f"({backend} backend)\n")

    # The question fdlayers answers: d/dt of tf.range(3, 3075, 3), as a
    # batch of one series; keras.ops.arange is tf.range on TensorFlow.
    x = keras.ops.reshape(keras.ops.arange(3, 3075, 3), (1, 1024, 1))
    model = keras.Sequential([keras.Input((None, 1)), layers.FiniteDifference1D(order=1)])
    y = keras.ops.convert_to_numpy(model(x))
    source = "tf.range" if backend == "tensorflow" else "keras.ops.arange"
    say(f"d/dt of {source}(3, 3075, 3) as a (1, 1024, 1) batch:")
    say(f"  output shape {y.shape}, values {np.unique(y)} "
        f"(expected 3.0 at all 1024 points)\n")

    h = args.spacing
    say(f"Max |error| against the analytic derivative, float64, "
        f"{args.steps} steps, spacing h (periodic: one period):")
    header = (f"{'f(t)':>8} {'order':>5} {'acc':>3} {'padding':>8} "
              f"{'interior(h)':>12} {'edges(h)':>10} {'interior(h/2)':>13} "
              f"{'edges(h/2)':>10} {'rate':>5}")
    say(header)
    say("-" * len(header))
    for function in _FUNCTIONS:
        for order, accuracy, padding in _CASES:
            if padding == "periodic" and function != "sin":
                continue  # only sin is periodic on the grid
            coarse = _errors(keras, function, order, accuracy, padding, args.steps, h)
            fine = _errors(keras, function, order, accuracy, padding,
                           2 * args.steps, h / 2)
            worst_coarse = np.nanmax(coarse[:2])
            worst_fine = np.nanmax(fine[:2])
            rate = (math.log2(worst_coarse / worst_fine)
                    if worst_fine > 0 and worst_coarse > 1e-12 else float("nan"))
            rate_text = "exact" if function == "t^5" and order + accuracy > 5 else f"{rate:5.2f}"
            say(f"{function:>8} {order:>5} {accuracy:>3} {padding:>8} "
                f"{coarse[0]:12.2e} {_edge_text(coarse[1]):>10} "
                f"{fine[0]:13.2e} {_edge_text(fine[1]):>10} {rate_text:>5}")
    say("\nedges: the points that use a one-sided window ('-': none). rate: "
        "log2 of the worst error's\nratio when h halves; it approaches the "
        "accuracy (or exceeds it where the leading\nerror term vanishes). "
        "Polynomials of degree < order + accuracy are exact.")


def _demo_figure(path, force):
    """Two panels: sin(t) on a coarse grid and its derivatives of orders 1-3
    (edges included); the max |error| against h, whose slope is the accuracy."""
    import keras
    import numpy as np
    from matplotlib.figure import Figure

    from fdlayers import ops

    def derivative(x, order, h, accuracy):
        y = ops.derivative(x.reshape(1, -1, 1), order, h, accuracy)
        return keras.ops.convert_to_numpy(y)[0, :, 0]

    figure = Figure(figsize=(10, 4.2), layout="constrained")
    left, right = figure.subplots(1, 2)
    t = np.linspace(0, 2 * np.pi, 17)
    fine = np.linspace(0, 2 * np.pi, 400)
    for order, color in zip(range(4), ("0.4", "C0", "C1", "C2")):
        left.plot(fine, np.sin(fine + order * np.pi / 2), color=color, lw=1,
                  label="sin t" if order == 0 else f"order {order}")
        if order:
            left.plot(t, derivative(np.sin(t), order, t[1] - t[0], 2), "o",
                      color=color, ms=4, fillstyle="none")
    left.set(xlabel="t", title="sin t, 17 samples: derivatives (accuracy 2, "
             "marks) and truth (lines)")
    left.title.set_fontsize(9)
    left.legend(fontsize=8)

    # e^(t/2) on [0, 2]: smooth but not periodic, so the edges count.
    for order, accuracy in [(1, 2), (1, 4), (1, 6), (2, 2), (2, 4), (3, 2)]:
        hs, errors = [], []
        for steps in (16, 32, 64, 128, 256, 512):
            t = np.linspace(0, 2, steps)
            y = derivative(np.exp(t / 2), order, t[1] - t[0], accuracy)
            hs.append(t[1] - t[0])
            errors.append(np.abs(y - np.exp(t / 2) / 2 ** order).max())
        right.loglog(hs, errors, "o-", ms=3, lw=1,
                     label=f"order {order}, accuracy {accuracy}")
    right.set(xlabel="spacing h", ylabel="max |error|, edges included",
              title="e^(t/2) on [0, 2]: the error falls as h^accuracy\n"
                    "until float64 rounding takes over")
    right.title.set_fontsize(9)
    right.legend(fontsize=8)
    figures.save(figure, path, force)
