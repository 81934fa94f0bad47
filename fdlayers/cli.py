"""The `fdlayers` command line.

    fdlayers demo   differentiate arange series with FiniteDifference1D on
                    the Keras backend, print the errors against the
                    analytic derivatives and draw them (fdlayers-demo.png)
    fdlayers diff   differentiate the columns of a CSV or .npy file

Here: the arguments, `diff`, and how every command ends. Exit status: 0
on success; 2 for an error in the arguments or in the data, reported as
one line on stderr (`fdlayers diff: error: ...`), never as a traceback.
`diff` computes with NumPy in float64 (fdlayers.arrays), so it loads no
Keras backend; `--help` and argument errors load nothing heavy. Every file
is written whole or not at all (fdlayers.outputs). The demo is
fdlayers.demo; figures, fdlayers.figures (matplotlib is optional: without
it `demo` skips its figure, and an explicit `--plot` is an error).
"""

import argparse
import contextlib
import math
import os
import signal
import sys

from fdlayers import demo, figures
from fdlayers.datafiles import CommandError, check_extension, listing


# diff ------------------------------------------------------------------------

def _check_arguments(args, uniform):
    """fdlayers' own checks of the method's arguments and the spacing.

    Returns:
        The stencil layout: its `min_length`, and for padding 'valid' how
        many rows each end loses.
    """
    from fdlayers import savgol, stencils

    if not (math.isfinite(args.spacing) and args.spacing > 0):
        raise CommandError("`spacing` must be a positive finite number. "
                           f"Received: spacing={args.spacing!r}")
    padding = args.padding.lower() if isinstance(args.padding, str) else args.padding
    try:
        if args.method == "savgol":
            for option, value in (("--accuracy", args.accuracy),):
                if value is not None:
                    raise CommandError(
                        f"{option} is for --method fd; a Savitzky–Golay "
                        "derivative's accuracy follows --window and --polyorder")
            args.window = 5 if args.window is None else args.window
            args.polyorder = 2 if args.polyorder is None else args.polyorder
            return savgol.plan(args.order, args.window, args.polyorder, padding)
        for option, value in (("--window", args.window), ("--polyorder", args.polyorder)):
            if value is not None:
                raise CommandError(f"{option} is for --method savgol")
        accuracy = 2 if args.accuracy is None else args.accuracy
        if not uniform:
            return stencils.windows(args.order, accuracy, padding)
        return stencils.plan(args.order, accuracy, padding)
    except (TypeError, ValueError) as error:
        raise CommandError(str(error)) from None


def _edge_rows(layout, padding):
    """Rows without an output at the start and at the end of the series."""
    if padding != "valid":
        return 0, 0
    from fdlayers import stencils

    if isinstance(layout, stencils.Windows):  # a non-uniform grid
        return layout.left, layout.right
    radius = layout.width // 2  # the central stencil of a uniform grid
    return radius, radius


def _output_path(args, extension):
    if args.output is None:
        stem, _ = os.path.splitext(args.file)
        return f"{stem}.d{args.order}{extension}"
    check_extension(args.output, "output")
    return args.output


def _check_input(path):
    from fdlayers.datafiles import read_error

    try:
        with open(path, "rb"):
            pass
    except OSError as error:
        raise read_error(path, error) from None


def _read(args, extension, say):
    if extension == ".csv":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise CommandError(
                "CSV files need pyarrow, a dependency of fdlayers that is not "
                "installed (pip install pyarrow)") from None
        from fdlayers import csvfiles

        delimiter = args.delimiter
        decimal = args.decimal or "."
        if delimiter is None:
            delimiter = csvfiles.detect_delimiter(args.file, decimal)
            if delimiter != ",":
                say(f"{args.file}: delimiter {csvfiles.describe_delimiter(delimiter)} "
                    "(detected; --delimiter sets it)")
        if delimiter == decimal:
            raise CommandError(
                f"--delimiter {delimiter!r} and --decimal {decimal!r} are the "
                "same character; a CSV with decimal commas separates its "
                "cells with ';' or tabs")
        return csvfiles.read_csv(args.file, args.column, args.time_column,
                                 args.header, delimiter, decimal,
                                 args.missing or "error")
    for option, given in (("--column", args.column),
                          ("--time-column", args.time_column),
                          ("--no-header", not args.header),
                          ("--delimiter", args.delimiter),
                          ("--decimal", args.decimal),
                          ("--missing", args.missing)):
        if given:
            raise CommandError(
                f"{option} needs a CSV file; every column of a .npy file "
                "is differentiated, with a uniform --spacing")
    from fdlayers.datafiles import read_npy

    return read_npy(args.file)


def _uniform_step(table, path):
    """The one step of a time column with uniform steps, for a
    Savitzky–Golay derivative (which needs a uniform grid)."""
    import numpy as np

    steps = np.diff(table.times)
    step = (table.times[-1] - table.times[0]) / (len(table.times) - 1)
    if np.abs(steps - step).max() > 1e-9 * abs(step):
        raise CommandError(
            f"--method savgol needs uniform sampling, but time column "
            f"{table.time!r} of {path} has steps from {steps.min():g} to "
            f"{steps.max():g}; use --method fd, which takes any spacing")
    return step


def diff(args, say):
    """Differentiate a data file and write the derivative next to it."""
    extension = check_extension(args.file, "input file")
    uniform = args.time_column is None
    layout = _check_arguments(args, uniform or args.method == "savgol")
    padding = args.padding.lower()
    _check_input(args.file)
    output = _output_path(args, extension)
    planned = [("-o" if args.output else "output", output)]
    if args.plot:
        figures.check_path(args.plot)
        planned.append(("--plot", args.plot))
    from fdlayers import outputs

    outputs.check_outputs(args.file, planned, args.force)

    table = _read(args, extension, say)
    steps = "rows" if extension == ".csv" else "steps"
    if table.steps < layout.min_length:
        raise CommandError(
            f"{args.file} has {table.steps} "
            f"{'rows' if extension == '.csv' else 'steps along axis 0'}"
            f"{' with a value' if table.rows is not None else ''}; "
            f"{_method_text(args)} need at least {layout.min_length}")
    unit = ""
    if table.time_origin is not None:
        unit = "_per_s" if args.order == 1 else f"_per_s{args.order}"
    names = [f"d{args.order}_{name}{unit}" for name in table.names]
    if output.lower().endswith(".csv"):
        header = set(table.header)
        for name in names:
            if name in header:
                raise CommandError(
                    f"{args.file} already has a column {name!r}; pick the "
                    "columns to differentiate with --column")

    from fdlayers import arrays

    if args.method == "savgol":
        spacing = args.spacing if uniform else _uniform_step(table, args.file)
        derivative = arrays.savitzky_golay(table.values, args.order, args.window,
                                           args.polyorder, spacing, padding)
    else:
        spacing = args.spacing if uniform else table.times
        derivative = arrays.derivative(table.values, args.order, spacing,
                                       args.accuracy or 2, padding)
    first, last = _edge_rows(layout, padding)
    stop = table.steps - last
    with outputs.atomic(output, args.force) as file:
        if output.lower().endswith(".npy"):
            from fdlayers.datafiles import write_npy

            write_npy(file, table, derivative)
            columns = names
        else:
            from fdlayers import csvfiles

            columns = csvfiles.write_csv(file, table, names, derivative, first, stop)

    import numpy as np

    if table.time is not None:
        times = table.times
        if table.time_origin is not None:
            along = (f"along column {table.time!r} (ISO 8601: seconds since "
                     f"{table.time_origin}, 0 to {times[-1]:g})")
        else:
            along = f"along column {table.time!r} ({times[0]:g} to {times[-1]:g})"
    else:
        times = None
        along = f"with spacing {args.spacing:g}"
    for note in table.notes:
        say(f"{args.file}: {note}")
    copied = (f"; copying {listing(table.copied)}"
              f"{'' if args.column else ' (not numeric)'}" if table.copied else "")
    dropped = (f" (padding 'valid' drops {first} at the start and {last} at "
               "the end)" if first or last else "")
    say(f"{args.file}: {table.steps} {steps}; differentiating "
        f"{listing(table.names)} {along}{copied}")
    say(f"{_method_text(args)}, float64")
    say(f"wrote {output}: {stop - first} {steps}{dropped}; "
        f"columns {listing(columns)}")
    if args.plot:
        if times is None:  # only now: as long as the file, for the figure alone
            times = np.arange(table.steps) * args.spacing
        _diff_figure(args.plot, args.force, table, times, slice(first, stop),
                     derivative, names, f"{os.path.basename(args.file)}: "
                     f"{_method_text(args)}")
        say(f"wrote {args.plot}")
    return 0


def _method_text(args):
    padding = args.padding.lower()
    if args.method == "savgol":
        return (f"Savitzky–Golay order {args.order}, window {args.window}, "
                f"polyorder {args.polyorder}, padding {padding!r}")
    return (f"order {args.order}, accuracy {args.accuracy or 2}, "
            f"padding {padding!r}")


def _diff_figure(path, force, table, times, rows, derivative, names, title):
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
    xlabel = table.time or "t = step × spacing"
    if table.time_origin is not None:
        xlabel = f"seconds since {table.time_origin}"
    bottom.set(xlabel=xlabel, ylabel="derivative")
    if len(names) <= 10:  # a longer legend would hide the curves
        top.legend(fontsize=8)
        bottom.legend(fontsize=8)
    figures.save(figure, path, force)


# parser ----------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, `prog: error: message`."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {' '.join(str(message).split())}\n")


_DIFF_EPILOG = """\
files:
  CSV    a header row of column names, then one row per sample, UTF-8;
         the delimiter is detected (',' ';' or tab, with a note) unless
         --delimiter gives it. Every numeric column but the time column is
         differentiated unless --column picks some; columns of text (labels,
         dates) are copied unchanged. Numbers are strict: ASCII digits, a
         sign, one decimal mark ('.', or ',' with --decimal ,), an exponent;
         nan, inf, 1_0 or 0x10 are errors naming their line. An empty cell
         is an error unless --missing drops its row or interpolates it.
         A --time-column holds numbers, or ISO 8601 dates/times (2024-03-01,
         2024-03-01T12:30:00Z), then read as seconds since the first row:
         the derivative columns are named d<order>_<name>_per_s<order>.
  .npy   a 1-D series (steps,) or a 2-D array (steps, channels): axis 0 is
         the steps axis, every channel is differentiated, with --spacing.

output (-o OUT, by extension; default next to the data with the order in
the name: data.csv -> data.d1.csv, data.npy -> data.d1.npy):
  CSV    the original columns as they were read, then d<order>_<name> for
         each differentiated column (a .npy input's columns are x, or x0,
         x1, ...), each value written as the shortest text that reads back
         as the same float64, in the input's delimiter and decimal mark.
  .npy   the derivative alone, float64: (steps,) for a 1-D .npy input,
         else (steps, channels), channels in column order.
  Every output (and --plot) is checked before any work, written to a
  temporary file beside it and renamed into place when complete: on an
  error or a signal, an existing file is left as it was. An existing file
  is replaced only with --force; the input file never is, by any name.

padding:
  same      every row, one-sided stencils of the same accuracy at the ends
  valid     only rows with a full stencil: the rows at each end are dropped,
            and with them their time and other columns, so rows stay aligned
  causal    past rows only; the first <order> rows have no estimate and are 0
            (--method fd only)
  periodic  the series wraps around (uniform spacing only)

The arithmetic is NumPy's, in float64, with fdlayers' stencils, whatever
KERAS_BACKEND says. Exit status: 0 on success, 2 for any error in the
arguments or the data (one line on stderr).

examples:
  fdlayers diff walk.csv --time-column t --order 2 --accuracy 4 --plot walk.png
  fdlayers diff co2.csv --time-column date --missing interpolate
  fdlayers diff noisy.npy --method savgol --window 11 --polyorder 3 -o slope.npy
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
        help="differentiate arange series and print the errors against the "
             "analytic derivatives",
        description="Differentiate arange series (tf.range on TensorFlow) "
                    "with FiniteDifference1D on the Keras backend, in "
                    "float64, for several orders, accuracies and paddings, "
                    "and print the errors against the analytic derivatives.",
    )
    demo_parser.add_argument(
        "--steps", type=_steps, default=64,
        help=f"number of samples, {_MIN_STEPS} to {_MAX_STEPS} (default 64)")
    demo_parser.add_argument(
        "--spacing", type=_spacing, default=0.1,
        help=f"sample spacing h, positive, at most {_MAX_SPACING:g} (default 0.1)")
    figure = demo_parser.add_mutually_exclusive_group()
    figure.add_argument(
        "--plot", nargs="?", const=demo.DEFAULT_FIGURE, metavar="PNG",
        help="draw derivatives of sin t and the error against h to this "
             f"figure (default {demo.DEFAULT_FIGURE}, written whenever matplotlib "
             "is installed and rewritten on every run)")
    figure.add_argument("--no-plot", action="store_true",
                        help="do not write the figure")
    demo_parser.add_argument("-f", "--force", action="store_true",
                             help="replace an existing --plot file")
    demo_parser.set_defaults(run=demo.run, parser=demo_parser)

    diff_parser = commands.add_parser(
        "diff",
        help="differentiate the columns of a CSV or .npy file",
        description="Differentiate the columns of a CSV or .npy file along "
                    "its rows with\nfdlayers' stencils, in float64, and write "
                    "the derivative next to the data.",
        epilog=_DIFF_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    diff_parser.add_argument("file", metavar="FILE", help="a .csv or .npy file")
    diff_parser.add_argument(
        "--column", action="append", metavar="NAME",
        help="a CSV column to differentiate; repeat for several (default: "
             "every numeric column but the time column)")
    diff_parser.add_argument(
        "--order", type=_order, default=1, metavar="N",
        help="derivative order, an integer ≥ 1 (≥ 0 with --method savgol; "
             "default 1)")
    diff_parser.add_argument(
        "--method", choices=("fd", "savgol"), default="fd",
        help="fd: finite differences (default); savgol: the derivative of a "
             "Savitzky–Golay least-squares fit, for noisy data")
    diff_parser.add_argument(
        "--accuracy", type=_small_int, metavar="A",
        help="fd: formal order of accuracy, an integer ≥ 1, even unless "
             "--padding causal (default 2)")
    diff_parser.add_argument(
        "--window", type=_small_int, metavar="W",
        help="savgol: samples per fit, odd (default 5)")
    diff_parser.add_argument(
        "--polyorder", type=_small_int, metavar="P",
        help="savgol: degree of the fitted polynomial, < window (default 2)")
    diff_parser.add_argument(
        "--padding", default="same", metavar="P",
        help="same, valid, causal or periodic (default same; see below)")
    where = diff_parser.add_mutually_exclusive_group()
    where.add_argument("--spacing", type=float, default=1.0, metavar="H",
                       help="uniform sample spacing (default 1)")
    where.add_argument(
        "--time-column", metavar="NAME",
        help="a CSV column of sample times, strictly increasing, possibly "
             "non-uniform: numbers, or ISO 8601 dates/times (seconds since "
             "the first row); it is copied, not differentiated")
    diff_parser.add_argument(
        "--delimiter", type=_delimiter, metavar="D",
        help="the CSV's cell delimiter: one character, or 'tab' (default: "
             "detected among ',' ';' and tab)")
    diff_parser.add_argument(
        "--decimal", choices=(".", ","),
        help="the decimal mark of the CSV's numbers (default '.')")
    diff_parser.add_argument(
        "--missing", choices=("error", "drop", "interpolate"),
        help="empty cells in the columns used: error (default), drop their "
             "rows, or interpolate linearly in time")
    diff_parser.add_argument(
        "--no-header", dest="header", action="store_false",
        help="the CSV has no header row; its columns are col1, col2, ...")
    diff_parser.add_argument("-o", "--output", metavar="OUT",
                             help="output file, .csv or .npy (default: see below)")
    diff_parser.add_argument(
        "--plot", metavar="PNG",
        help="also draw the data and the derivative against time (any "
             "format matplotlib writes: .png, .pdf, .svg, ...)")
    diff_parser.add_argument("-f", "--force", action="store_true",
                             help="replace existing output files")
    diff_parser.set_defaults(run=diff, parser=diff_parser)
    return parser


def _number_type(kind, allowed, description):
    """An argparse type: `kind(text)` where `allowed(value)`, else a message."""
    def parse(text):
        try:
            value = kind(text)
        except (ValueError, OverflowError):
            value = None
        if value is None or not allowed(value):
            raise argparse.ArgumentTypeError(f"expected {description}, got {text!r}")
        return value
    return parse


# The demo differentiates 2 × steps samples, 52 times: a million is seconds
# of work and megabytes; beyond it, only a longer wait.
_MIN_STEPS, _MAX_STEPS = 16, 1_000_000
_MAX_SPACING = 1e6
_steps = _number_type(int, lambda n: _MIN_STEPS <= n <= _MAX_STEPS,
                      f"an integer from {_MIN_STEPS} to {_MAX_STEPS}")
_spacing = _number_type(float, lambda h: math.isfinite(h) and 0 < h <= _MAX_SPACING,
                        f"a positive number at most {_MAX_SPACING:g}")
# fdlayers' own checks bound these further (order + accuracy, the window);
# this bound keeps a typo of a huge number from reaching them as a bignum.
_order = _number_type(int, lambda n: 0 <= n <= 1000, "an integer from 0 to 1000")
_small_int = _number_type(int, lambda n: 0 <= n <= 1000, "an integer from 0 to 1000")


def _delimiter(text):
    value = {"tab": "\t", "\\t": "\t", "space": " "}.get(text.lower(), text)
    if len(value) != 1 or value in "\"\r\n":
        raise argparse.ArgumentTypeError(
            f"expected one character other than a quote or a line break, or "
            f"'tab', got {text!r}")
    return value


class _Terminated(BaseException):
    """SIGTERM or SIGHUP, raised where the program is so that every
    temporary file is removed on the way out."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


def _on_signal(signum, frame):
    raise _Terminated(signum)


def main(argv=None):
    """Run the command in `argv` (default `sys.argv[1:]`); return 0.

    Errors exit through `SystemExit(2)` after one line on stderr, as
    argparse's own do; `--help` exits with `SystemExit(0)`. Output to a
    closed pipe (`fdlayers diff ... | head -1`) is dropped silently.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    lines = []
    parser = None
    try:
        handlers = _catch_signals()
        try:
            args = build_parser().parse_args(argv)
            parser = args.parser
            # Printed when the work is done: a closed stdout cannot
            # interrupt it halfway.
            status = args.run(args, lines.append)
            _print(lines)
            return status
        finally:
            _restore_signals(handlers)
    except CommandError as error:
        parser.error(str(error))
    except BrokenPipeError:
        _silence_stdout()
        return 0
    except KeyboardInterrupt:
        _fail(parser, "interrupted; no output file was changed", 130)
    except _Terminated as stop:
        name = signal.Signals(stop.signum).name
        _fail(parser, f"stopped by {name}; no output file was changed",
              128 + stop.signum)
    except MemoryError:
        _fail(parser, "out of memory; try a smaller file, or fewer columns "
                      "with --column", 2)
    except Exception as error:  # a bug: still one line, and the exit status
        _fail(parser, f"unexpected {type(error).__name__}: "
                      f"{' '.join(str(error).split())} (a bug in fdlayers; "
                      "please report it with the command that caused it)", 2)


def _print(lines):
    try:
        for line in lines:
            print(line)
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
    lines.clear()


def _silence_stdout():
    """Point stdout at /dev/null, so that Python's flush at exit does not
    report the closed pipe."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _fail(parser, message, status):
    prog = parser.prog if parser is not None else "fdlayers"
    with contextlib.suppress(OSError):
        sys.stderr.write(f"{prog}: error: {message}\n")
    sys.exit(status)


def _catch_signals():
    """SIGTERM and SIGHUP raise `_Terminated` (only in the main thread,
    where Python runs signal handlers)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}
    handlers = {}
    for name in ("SIGTERM", "SIGHUP"):
        number = getattr(signal, name, None)
        if number is not None:
            handlers[number] = signal.signal(number, _on_signal)
    return handlers


def _restore_signals(handlers):
    for number, handler in handlers.items():
        signal.signal(number, handler)


if __name__ == "__main__":
    sys.exit(main())
