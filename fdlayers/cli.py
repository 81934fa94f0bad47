"""The `fdlayers` command line.

    fdlayers demo      differentiate tf.range series and report the errors
                       against the analytic derivatives
"""

import argparse
import math
import os
import sys

# (name, f, derivative of order n) on float64 tensors; the derivatives are
# written out analytically so that the demo compares with the truth.
_FUNCTIONS = {
    "t^5": (lambda t: t ** 5,
            lambda t, n: math.perm(5, n) * t ** (5 - n)),
    "sin": (lambda t: _tf().sin(t),
            lambda t, n: _tf().sin(t + n * math.pi / 2)),
    "e^(t/2)": (lambda t: _tf().exp(t / 2),
            lambda t, n: _tf().exp(t / 2) / 2 ** n),
}

_CASES = [  # (order, accuracy, padding)
    (1, 2, "same"), (1, 4, "same"), (1, 6, "same"),
    (2, 2, "same"), (2, 4, "same"), (3, 2, "same"), (4, 4, "same"),
    (2, 4, "valid"), (1, 3, "causal"), (2, 2, "periodic"),
]


def _tf():
    import tensorflow as tf

    return tf


def _errors(function, order, accuracy, padding, steps, spacing):
    """Max |error| at the interior and edge points of one differentiation."""
    import numpy as np

    import fdlayers
    from fdlayers import stencils

    tf = _tf()
    f, df = _FUNCTIONS[function]
    if padding == "periodic":
        # One full period on the grid, so that the wrap-around is smooth.
        spacing = 2 * math.pi / steps
    t = tf.cast(tf.range(steps), tf.float64) * spacing
    x = tf.reshape(f(t), (1, steps, 1))
    y = fdlayers.FiniteDifference1D(order, spacing, accuracy, padding,
                                    dtype="float64")(x).numpy()[0, :, 0]
    truth = df(t, order).numpy()
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


def demo(args):
    """Print the error table and the original tf.range example."""
    import keras
    import numpy as np

    import fdlayers

    tf = _tf()
    print(f"fdlayers {fdlayers.__version__}, Keras {keras.__version__} "
          f"({keras.backend.backend()} backend)\n")

    x = tf.reshape(tf.range(3, 3075, 3), (1, 1024, 1))
    model = keras.Sequential([keras.Input((None, 1)),
                              fdlayers.FiniteDifference1D(order=1)])
    y = model(x).numpy()
    print("d/dt of tf.range(3, 3075, 3) as a (1, 1024, 1) batch:")
    print(f"  output shape {y.shape}, values {np.unique(y)} "
          f"(expected 3.0 at all 1024 points)\n")

    h = args.spacing
    print(f"Max |error| against the analytic derivative, float64, "
          f"{args.steps} steps, spacing h (periodic: one period):")
    header = (f"{'f(t)':>8} {'order':>5} {'acc':>3} {'padding':>8} "
              f"{'interior(h)':>12} {'edges(h)':>10} {'interior(h/2)':>13} "
              f"{'edges(h/2)':>10} {'rate':>5}")
    print(header)
    print("-" * len(header))
    for function in _FUNCTIONS:
        for order, accuracy, padding in _CASES:
            if padding == "periodic" and function != "sin":
                continue  # only sin is periodic on the grid
            coarse = _errors(function, order, accuracy, padding, args.steps, h)
            fine = _errors(function, order, accuracy, padding,
                           2 * args.steps, h / 2)
            worst_coarse = np.nanmax(coarse[:2])
            worst_fine = np.nanmax(fine[:2])
            rate = (math.log2(worst_coarse / worst_fine)
                    if worst_fine > 0 and worst_coarse > 1e-12 else float("nan"))
            rate_text = "exact" if function == "t^5" and order + accuracy > 5 else f"{rate:5.2f}"
            print(f"{function:>8} {order:>5} {accuracy:>3} {padding:>8} "
                  f"{coarse[0]:12.2e} {_edge_text(coarse[1]):>10} "
                  f"{fine[0]:13.2e} {_edge_text(fine[1]):>10} {rate_text:>5}")
    print("\nedges: the points that use a one-sided window ('-': none). rate: "
          "log2 of the worst error's\nratio when h halves; it approaches the "
          "accuracy (or exceeds it where the leading\nerror term vanishes). "
          "Polynomials of degree < order + accuracy are exact.")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="fdlayers",
        description="Finite-difference derivatives of sampled series.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser(
        "demo",
        help="differentiate tf.range series and print the errors against the "
             "analytic derivatives",
        description="Differentiate tf.range series with FiniteDifference1D "
                    "for several orders, accuracies and paddings, and print "
                    "the errors against the analytic derivatives.",
    )
    demo_parser.add_argument("--steps", type=_steps, default=64,
                             help="number of samples (default 64)")
    demo_parser.add_argument("--spacing", type=_spacing, default=0.1,
                             help="sample spacing h (default 0.1)")
    demo_parser.set_defaults(run=demo)
    return parser


def _number(kind, allowed, description):
    """An argparse type: `kind(text)` where `allowed(value)`, else a message."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not allowed(value):
            raise argparse.ArgumentTypeError(f"expected {description}, got {text!r}")
        return value
    return parse


_steps = _number(int, lambda n: n >= 16, "an integer ≥ 16")
_spacing = _number(float, lambda h: math.isfinite(h) and h > 0, "a positive number")


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
