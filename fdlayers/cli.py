"""The `fdlayers` command line.

    fdlayers demo   differentiate tf.range series, print the errors against
                    the analytic derivatives and draw them (fdlayers-demo.png)
    fdlayers diff   differentiate the columns of a CSV or .npy file

Exit status: 0 on success; 2 for an error in the arguments or in the data,
reported as one line on stderr (`fdlayers diff: error: ...`), never as a
traceback. matplotlib is optional: without it `demo` skips its figure, and
an explicit `--plot` is an error.
"""

import argparse
import math
import os
import sys

from fdlayers.datafiles import (CommandError, check_extension, listing,
                                read_csv, read_npy, write)


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


_DEMO_FIGURE = "fdlayers-demo.png"


def _has_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


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
    """Print the original tf.range example and the error table, and draw
    the derivatives and the convergence to a figure (`--plot PNG`, default
    fdlayers-demo.png; skipped with a note where matplotlib is missing,
    unless asked for by name, and with `--no-plot`)."""
    plot = args.plot
    if plot is None:  # the default figure, where matplotlib is installed
        plot = _DEMO_FIGURE if _has_matplotlib() else None
        if plot is None and not args.no_plot:
            print("(no figure: matplotlib is not installed; "
                  "pip install matplotlib)\n")
    if args.no_plot:
        plot = None
    if plot:
        _check_figure_path(plot)
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
    if plot:
        _demo_figure(plot)
        print(f"\nwrote {plot}")
    return 0


def _demo_figure(path):
    """Two panels: sin(t) on a coarse grid and its derivatives of orders 1-3
    (edges included); the max |error| against h, whose slope is the accuracy."""
    import numpy as np
    from matplotlib.figure import Figure

    import fdlayers

    def derivative(x, order, h, accuracy):
        y = fdlayers.derivative(x.reshape(1, -1, 1), order, h, accuracy)
        return np.asarray(y)[0, :, 0]

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
    _save_figure(figure, path)


# diff ------------------------------------------------------------------------

def _check_arguments(args):
    """fdlayers' own checks of order, accuracy, padding and spacing.

    Returns:
        The stencil layout: its `min_length`, and for padding 'valid' how
        many rows each end loses.
    """
    from fdlayers import ops, stencils

    try:
        order, _, accuracy, padding = ops.check_arguments(
            args.order, args.spacing, args.accuracy, args.padding)
        if args.time_column is not None:
            return stencils.windows(order, accuracy, padding)
        return stencils.plan(order, accuracy, padding)
    except (TypeError, ValueError) as error:
        raise CommandError(str(error)) from None


def _edge_rows(layout, padding):
    """Rows without an output at the start and at the end of the series."""
    if padding.lower() != "valid":
        return 0, 0
    from fdlayers import stencils

    if isinstance(layout, stencils.Windows):  # a non-uniform grid
        return layout.left, layout.right
    radius = layout.width // 2  # the central stencil of a uniform grid
    return radius, radius


def _output_path(args):
    if args.output is None:
        stem, extension = os.path.splitext(args.file)
        return f"{stem}.d{args.order}{extension}"
    check_extension(args.output, "output")
    if os.path.exists(args.output) and os.path.samefile(args.output, args.file):
        raise CommandError(f"refusing to overwrite the input file {args.file}")
    return args.output


def _read(args, extension):
    if extension == ".csv":
        return read_csv(args.file, args.column, args.time_column, args.header)
    for option, given in (("--column", args.column),
                          ("--time-column", args.time_column),
                          ("--no-header", not args.header)):
        if given:
            raise CommandError(
                f"{option} needs a CSV file; every column of a .npy file "
                "is differentiated, with a uniform --spacing")
    return read_npy(args.file)


def diff(args):
    """Differentiate a data file and write the derivative next to it."""
    import numpy as np

    import fdlayers

    extension = check_extension(args.file, "input file")
    layout = _check_arguments(args)
    if args.plot:
        _check_figure_path(args.plot)
    table = _read(args, extension)
    output = _output_path(args)
    padding = args.padding.lower()
    steps = "rows" if extension == ".csv" else "steps"
    if table.steps < layout.min_length:
        raise CommandError(
            f"{args.file} has {table.steps} "
            f"{'rows' if extension == '.csv' else 'steps along axis 0'}; order "
            f"{args.order}, accuracy {args.accuracy}, padding {padding!r} need "
            f"at least {layout.min_length}")
    names = [f"d{args.order}_{name}" for name in table.names]
    if output.lower().endswith(".csv"):
        for name in names:
            if name in table.header:
                raise CommandError(
                    f"{args.file} already has a column {name!r}; pick the "
                    "columns to differentiate with --column")

    spacing = table.times if table.times is not None else args.spacing
    derivative = np.asarray(fdlayers.derivative(
        table.values[np.newaxis], args.order, spacing, args.accuracy, padding))[0]
    first, last = _edge_rows(layout, padding)
    stop = table.steps - last
    columns = write(output, table, names, derivative, first, stop)

    if table.time is not None:
        times = table.times
        along = f"along column {table.time!r} ({times[0]:g} to {times[-1]:g})"
    else:
        times = np.arange(table.steps) * args.spacing
        along = f"with spacing {args.spacing:g}"
    copied = f"; copying {listing(table.copied)} (not numeric)" if table.copied else ""
    dropped = (f" (padding 'valid' drops {first} at the start and {last} at "
               "the end)" if first or last else "")
    print(f"{args.file}: {table.steps} {steps}; differentiating "
          f"{listing(table.names)} {along}{copied}")
    print(f"order {args.order}, accuracy {args.accuracy}, padding {padding!r}, float64")
    print(f"wrote {output}: {stop - first} {steps}{dropped}; "
          f"columns {listing(columns)}")
    if args.plot:
        _diff_figure(args.plot, table, times, slice(first, stop), derivative,
                     names, f"{os.path.basename(args.file)}: order {args.order}, "
                     f"accuracy {args.accuracy}, padding {padding!r}")
        print(f"wrote {args.plot}")
    return 0


def _diff_figure(path, table, times, rows, derivative, names, title):
    """The data (top) and its derivative (bottom) against time."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 5.5), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True)
    style = {"marker": "." if table.steps <= 200 else None, "lw": 1}
    for k, name in enumerate(table.names):
        line, = top.plot(times, table.values[:, k], label=name, **style)
        bottom.plot(times[rows], derivative[:, k], label=names[k],
                    color=line.get_color(), **style)
    top.set(ylabel="data", title=title)
    bottom.set(xlabel=table.time or "t = step × spacing", ylabel="derivative")
    if len(names) <= 10:  # a longer legend would hide the curves
        top.legend(fontsize=8)
        bottom.legend(fontsize=8)
    _save_figure(figure, path)


def _check_figure_path(path):
    """Fail early, before any work: without matplotlib, or for a format
    matplotlib cannot write."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise CommandError(
            "--plot needs matplotlib, which is not installed "
            "(pip install matplotlib)") from None
    formats = Figure().canvas.get_supported_filetypes()
    extension = os.path.splitext(path)[1].lower().lstrip(".")
    if extension not in formats:
        raise CommandError(
            f"--plot {path}: matplotlib cannot write {extension!r}; use one "
            f"of .{', .'.join(sorted(formats))}")


def _save_figure(figure, path):
    try:
        figure.savefig(path, dpi=110)
    except OSError as error:
        raise CommandError(f"cannot write {path}: {error.strerror or error}") from None


# parser ----------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, `prog: error: message`."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {' '.join(str(message).split())}\n")


_DIFF_EPILOG = """\
files:
  CSV    a header row of column names, then one row per sample, comma
         separated, UTF-8. Every numeric column but the time column is
         differentiated unless --column picks some; columns of text (labels,
         dates) are copied unchanged. Any non-number in a numeric column,
         an empty value, nan or inf is an error naming its line.
  .npy   a 1-D series (steps,) or a 2-D array (steps, channels): axis 0 is
         the steps axis, every channel is differentiated, with --spacing.

output (-o OUT, by extension; default next to the data with the order in
the name: data.csv -> data.d1.csv, data.npy -> data.d1.npy):
  CSV    the original columns, then d<order>_<name> for each differentiated
         column (a .npy input's columns are x, or x0, x1, ...), each value
         written as the shortest text that reads back as the same float64.
  .npy   the derivative alone, float64: (steps,) for a 1-D .npy input,
         else (steps, channels), channels in column order.

padding:
  same      every row, one-sided stencils of the same accuracy at the ends
  valid     only rows with a full stencil: the rows at each end are dropped,
            and with them their time and other columns, so rows stay aligned
  causal    past rows only; the first <order> rows have no estimate and are 0
  periodic  the series wraps around (uniform spacing only)

Exit status: 0 on success, 2 for any error in the
arguments or the data (one line on stderr).

example:
  fdlayers diff walk.csv --time-column t --order 2 --accuracy 4 --plot walk.png
"""


def build_parser():
    parser = _Parser(
        prog="fdlayers",
        description="Finite-difference derivatives of sampled series.",
        epilog="Errors exit with status 2 and one line on stderr.",
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
    figure = demo_parser.add_mutually_exclusive_group()
    figure.add_argument(
        "--plot", nargs="?", const=_DEMO_FIGURE, metavar="PNG",
        help="draw derivatives of sin t and the error against h to this "
             f"figure (default {_DEMO_FIGURE}, written whenever matplotlib "
             "is installed)")
    figure.add_argument("--no-plot", action="store_true",
                        help="do not write the figure")
    demo_parser.set_defaults(run=demo, parser=demo_parser)

    diff_parser = commands.add_parser(
        "diff",
        help="differentiate the columns of a CSV or .npy file",
        description="Differentiate the columns of a CSV or .npy file along "
                    "its rows with\nfdlayers, in float64, and write the "
                    "derivative next to the data.",
        epilog=_DIFF_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    diff_parser.add_argument("file", metavar="FILE", help="a .csv or .npy file")
    diff_parser.add_argument(
        "--column", action="append", metavar="NAME",
        help="a CSV column to differentiate; repeat for several (default: "
             "every numeric column but the time column)")
    diff_parser.add_argument("--order", type=int, default=1, metavar="N",
                             help="derivative order, an integer ≥ 1 (default 1)")
    diff_parser.add_argument(
        "--accuracy", type=int, default=2, metavar="A",
        help="formal order of accuracy, an integer ≥ 1, even unless "
             "--padding causal (default 2)")
    diff_parser.add_argument(
        "--padding", default="same", metavar="P",
        help="same, valid, causal or periodic (default same; see below)")
    where = diff_parser.add_mutually_exclusive_group()
    where.add_argument("--spacing", type=float, default=1.0, metavar="H",
                       help="uniform sample spacing (default 1)")
    where.add_argument(
        "--time-column", metavar="NAME",
        help="a CSV column of sample times, strictly increasing, possibly "
             "non-uniform; it is copied, not differentiated")
    diff_parser.add_argument(
        "--no-header", dest="header", action="store_false",
        help="the CSV has no header row; its columns are col1, col2, ...")
    diff_parser.add_argument("-o", "--output", metavar="OUT",
                             help="output file, .csv or .npy (default: see below)")
    diff_parser.add_argument(
        "--plot", metavar="PNG",
        help="also draw the data and the derivative against time (any "
             "format matplotlib writes: .png, .pdf, .svg, ...)")
    diff_parser.set_defaults(run=diff, parser=diff_parser)
    return parser


def _number_type(kind, allowed, description):
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


_steps = _number_type(int, lambda n: n >= 16, "an integer ≥ 16")
_spacing = _number_type(float, lambda h: math.isfinite(h) and h > 0, "a positive number")


def main(argv=None):
    """Run the command in `argv` (default `sys.argv[1:]`); return 0.

    Errors exit through `SystemExit(2)` after one line on stderr, as
    argparse's own do; `--help` exits with `SystemExit(0)`.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except CommandError as error:
        args.parser.error(str(error))


if __name__ == "__main__":
    sys.exit(main())
