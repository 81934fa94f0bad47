"""The `fdlayers` command: demo and diff, their help, output and errors.

Most checks call `cli.main` in-process (TensorFlow loads once); a few run the
real `python -m fdlayers` and `fdlayers` commands. References are
independent of fdlayers: `numpy.gradient`, and polynomials differentiated by
hand.
"""

import csv
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fdlayers import cli

needs_matplotlib = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None, reason="--plot needs matplotlib")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# TensorFlow 2.21 logs these through absl when `import fdlayers` imports it,
# before the command runs and whatever TF_CPP_MIN_LOG_LEVEL says: they are
# not the command's output.
_TENSORFLOW_LOG = re.compile(
    r"^(WARNING: All log messages before absl|[IWEF]\d{4} |To enable the following)")


def run(*args, cwd=None, command=None):
    command = command or [sys.executable, "-m", "fdlayers"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([*command, *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env=env)


def own_lines(stderr):
    return [line for line in stderr.splitlines() if not _TENSORFLOW_LOG.match(line)]


def call(capsys, *args):
    """`fdlayers ARGS` in-process: (exit status, stdout, stderr)."""
    try:
        status = cli.main([str(a) for a in args])
    except SystemExit as exit:
        status = exit.code
    out, err = capsys.readouterr()
    return status, out, err


def write_csv(path, header, *columns):
    """Columns of numbers (written exactly) or of text, under `header`."""
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        for row in zip(*columns):
            writer.writerow([repr(float(v)) if isinstance(v, float) else v
                             for v in row])


def read_csv(path):
    with open(path, newline="") as file:
        header, *rows = list(csv.reader(file))
    return header, rows


def column(header, rows, name):
    return np.array([float(row[header.index(name)]) for row in rows])


@pytest.fixture
def here(tmp_path, monkeypatch):
    """A scratch directory as the working directory: outputs land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def uneven_times(rng, steps, end=3.0):
    """Strictly increasing, non-uniform sample times from 0 to `end`."""
    t = np.cumsum(rng.uniform(0.5, 1.5, steps))
    return (t - t[0]) * end / (t[-1] - t[0])


# demo --------------------------------------------------------------------------

def test_demo_reports_small_errors_and_the_accuracy_as_rate(tmp_path):
    """The README's main job: the table, and the figure by default."""
    plot = importlib.util.find_spec("matplotlib") is not None
    result = run("demo", "--steps", "48", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert own_lines(result.stderr) == []
    out = result.stdout
    assert "(1, 1024, 1)" in out and "[3.]" in out
    rows = re.findall(r"^\s*(\S+)\s+(\d)\s+(\d)\s+(\w+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)$",
                      out, flags=re.M)
    assert len(rows) >= 20
    for function, order, accuracy, padding, *errors, rate in rows:
        if rate == "exact":
            # A polynomial of degree < order + accuracy: rounding only
            # (values up to 5e3, weights up to ≈ 2e6 for order 4).
            assert float(errors[0]) < 1e-4 and float(errors[2]) < 1e-4
        elif function == "sin":
            # The observed rate reaches the accuracy (or more, where the
            # leading error term vanishes at the edge t = 0).
            assert float(rate) > int(accuracy) - 0.3, (function, order, accuracy)
    if plot:
        assert "wrote fdlayers-demo.png" in out
        assert (tmp_path / "fdlayers-demo.png").read_bytes().startswith(PNG_MAGIC)
    else:
        assert "no figure: matplotlib is not installed" in out


def test_demo_without_matplotlib_notes_the_missing_figure(capsys, here,
                                                          monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
    assert cli.main(["demo", "--steps", "16"]) == 0
    out, err = capsys.readouterr()
    assert ("(no figure: matplotlib is not installed; pip install "
            "'fdlayers[plot]' or pip install matplotlib)") in out
    assert err == "" and not list(here.glob("*.png"))


def test_demo_no_plot_writes_nothing(capsys, here):
    assert cli.main(["demo", "--steps", "16", "--no-plot"]) == 0
    out, _ = capsys.readouterr()
    assert "wrote" not in out and "no figure" not in out
    assert not list(here.glob("*.png"))


@pytest.mark.parametrize("args,words", [
    (["--help"], ["demo", "diff", "status 2"]),
    (["demo", "--help"], ["--steps", "--plot"]),
    (["diff", "--help"], ["--time-column", "--column", "-o OUT", "d<order>_<name>",
                          "valid", "(steps, channels)", "Exit status"]),
])
def test_help(capsys, args, words):
    status, out, err = call(capsys, *args)
    assert status == 0 and err == ""
    assert out.startswith("usage: fdlayers")
    for word in words:
        assert word in out


@pytest.mark.parametrize("args,message", [
    (["demo", "--steps", "3"], "expected an integer from 16 to 1000000, got '3'"),
    (["demo", "--steps", "many"], "expected an integer from 16 to 1000000, got 'many'"),
    # Once a ResourceExhaustedError traceback: now bounded like the others.
    (["demo", "--steps", "10000000000"], "expected an integer from 16 to "
                                         "1000000, got '10000000000'"),
    (["demo", "--spacing", "-1"], "expected a positive number at most 1e+06, got '-1'"),
    (["demo", "--spacing", "inf"], "expected a positive number at most 1e+06, got 'inf'"),
    (["diff", "x.csv", "--delimiter", "ab"], "argument --delimiter: expected one "
                                             "character"),
    (["diff", "x.csv", "--missing", "guess"], "argument --missing: invalid choice: 'guess'"),
    (["diff", "x.csv", "--order", "99999999999999999999"],
     "expected an integer from 0 to 1000"),
    (["transmogrify"], "invalid choice"),
    ([], "required"),
])
def test_bad_arguments_exit_with_one_line(capsys, args, message):
    status, out, err = call(capsys, *args)
    assert status == 2
    assert len(err.splitlines()) == 1 and err.startswith("fdlayers")
    assert message in err


def test_plot_without_matplotlib_is_one_line(capsys, here, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails
    write_csv("data.csv", ["x"], [float(i * i) for i in range(8)])
    for args in (["demo", "--plot"], ["diff", "data.csv", "--plot", "data.png"]):
        status, out, err = call(capsys, *args)
        assert status == 2 and out == ""
        assert err == f"fdlayers {args[0]}: error: --plot needs matplotlib, which " \
                      "is not installed (pip install 'fdlayers[plot]' or pip " \
                      "install matplotlib)\n"
    assert sorted(p.name for p in here.iterdir()) == ["data.csv"]


# diff: results ------------------------------------------------------------------

def test_csv_on_a_non_uniform_time_column_matches_numpy_gradient(capsys, here, rng):
    t = uneven_times(rng, 40)
    x, y = np.sin(2 * t), np.exp(-t)
    labels = [f"s{i}" for i in range(40)]
    write_csv("walk.csv", ["t", "x", "label", "y"], t, x, labels, y)

    status, out, err = call(capsys, "diff", "walk.csv", "--time-column", "t")

    assert (status, err) == (0, "")
    assert out.splitlines() == [
        "walk.csv: 40 rows; differentiating x, y along column 't' (0 to 3); "
        "copying label (not numeric)",
        "order 1, accuracy 2, padding 'same', float64",
        "wrote walk.d1.csv: 40 rows; columns t, x, label, y, d1_x, d1_y",
    ]
    header, rows = read_csv("walk.d1.csv")
    assert header == ["t", "x", "label", "y", "d1_x", "d1_y"]
    # The original cells are copied as they were written.
    assert [row[:4] for row in rows] == read_csv("walk.csv")[1]
    for name, values in (("x", x), ("y", y)):
        reference = np.gradient(values, t, edge_order=2)
        np.testing.assert_allclose(column(header, rows, "d1_" + name), reference,
                                   rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("order,accuracy,padding", [
    (2, 4, "same"), (3, 2, "valid"), (2, 2, "valid"), (1, 3, "causal"), (4, 2, "same"),
])
@pytest.mark.parametrize("grid", ["time column", "spacing"])
def test_polynomials_are_exact_and_rows_stay_aligned(capsys, here, rng, grid,
                                                     order, accuracy, padding):
    # Degree order + accuracy - 1: differentiated exactly on any grid.
    coefficients = rng.uniform(-1, 1, order + accuracy)
    p = np.polynomial.Polynomial(coefficients)
    steps = 30
    t = uneven_times(rng, steps) if grid == "time column" else np.arange(steps) * 0.125
    write_csv("poly.csv", ["t", "p"], t, p(t))
    where = (["--time-column", "t"] if grid == "time column"
             else ["--spacing", "0.125", "--column", "p"])

    status, out, err = call(capsys, "diff", "poly.csv", "--order", order,
                            "--accuracy", accuracy, "--padding", padding, *where)

    assert (status, err) == (0, ""), err
    header, rows = read_csv(f"poly.d{order}.csv")
    assert header == ["t", "p", f"d{order}_p"]
    times, result = column(header, rows, "t"), column(header, rows, f"d{order}_p")
    if padding == "valid":
        # The rows without a full stencil are gone at both ends; the others
        # keep their time.
        assert len(rows) < steps and f"wrote poly.d{order}.csv: {len(rows)} rows " \
            "(padding 'valid' drops" in out
        start = int(np.flatnonzero(t == times[0])[0])
        np.testing.assert_array_equal(times, t[start:start + len(rows)])
        assert 0 < start and start + len(rows) < steps
    else:
        np.testing.assert_array_equal(times, t)
    truth = p.deriv(order)(times)
    if padding == "causal":
        # Rows without order + accuracy - 1 rows of history are less
        # accurate by design, and the first `order` rows have no estimate.
        np.testing.assert_array_equal(result[:order], 0.0)
        result, truth = result[order + accuracy - 1:], truth[order + accuracy - 1:]
    np.testing.assert_allclose(result, truth, rtol=1e-7, atol=1e-7)


def test_npy_series_and_arrays(capsys, here):
    # 1-D: one period of sin, periodic padding, against the analytic -sin.
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    np.save("wave.npy", np.sin(t))
    status, out, err = call(capsys, "diff", "wave.npy", "--order", "2",
                            "--accuracy", "4", "--padding", "periodic",
                            "--spacing", t[1])
    assert (status, err) == (0, "")
    assert "wave.npy: 64 steps; differentiating x with spacing 0.0981748" in out
    result = np.load("wave.d2.npy")
    assert result.shape == (64,) and result.dtype == np.float64
    np.testing.assert_allclose(result, -np.sin(t), atol=1e-5)

    # 2-D (steps, channels), integers: a quadratic per channel, exact.
    i = np.arange(12)
    np.save("counts.npy", np.stack([3 * i * i, i * i - 5 * i], axis=1))
    status, out, err = call(capsys, "diff", "counts.npy", "--order", "2",
                            "--spacing", "0.5")
    assert (status, err) == (0, "")
    assert "counts.npy: 12 steps; differentiating x0, x1 with spacing 0.5" in out
    result = np.load("counts.d2.npy")
    assert result.shape == (12, 2)
    np.testing.assert_allclose(result, [[24.0, 8.0]] * 12, rtol=1e-12)


def test_output_format_follows_the_extension(capsys, here):
    t = np.arange(10) * 0.5
    write_csv("data.csv", ["t", "x", "y"], t, t ** 2, 3 * t)

    # CSV -> .npy: the derivative columns alone, (steps, channels).
    assert call(capsys, "diff", "data.csv", "--spacing", "0.5", "--column", "x",
                "--column", "y", "-o", "slopes.npy")[0] == 0
    np.testing.assert_allclose(np.load("slopes.npy"), np.stack([2 * t, 3 + 0 * t], 1),
                               rtol=1e-12, atol=1e-12)

    # CSV -> CSV under another name; the padding name is case-insensitive.
    os.mkdir("out")
    assert call(capsys, "diff", "data.csv", "--column", "y", "--spacing", "0.5",
                "--padding", "VALID", "-o", "out/y.CSV")[0] == 0
    header, rows = read_csv("out/y.CSV")
    assert header == ["t", "x", "y", "d1_y"] and len(rows) == 8
    np.testing.assert_allclose(column(header, rows, "d1_y"), 3.0)

    # .npy -> CSV: columns x0, x1 and their derivatives.
    np.save("pair.npy", np.stack([t, -t], axis=1))
    assert call(capsys, "diff", "pair.npy", "-o", "pair.csv")[0] == 0
    header, rows = read_csv("pair.csv")
    assert header == ["x0", "x1", "d1_x0", "d1_x1"] and len(rows) == 10
    np.testing.assert_array_equal(column(header, rows, "x1"), -t)
    np.testing.assert_allclose(column(header, rows, "d1_x1"), -0.5, rtol=1e-12)

    # .npy -> .npy, extension in capitals: written as named, not "x.NPY.npy".
    assert call(capsys, "diff", "pair.npy", "-o", "P.NPY")[0] == 0
    assert np.load("P.NPY").shape == (10, 2)


def test_csv_without_header_and_with_a_byte_order_mark(capsys, here):
    Path("raw.csv").write_text("0,1\n1,4\n2,9\n3,16\n")
    assert call(capsys, "diff", "raw.csv", "--no-header", "--time-column", "col1")[0] == 0
    header, rows = read_csv("raw.d1.csv")
    assert header == ["col1", "col2", "d1_col2"]
    np.testing.assert_allclose(column(header, rows, "d1_col2"), [2, 4, 6, 8], rtol=1e-12)

    Path("excel.csv").write_bytes("\ufefftime, level\n0,1\n1,3\n2,5\n".encode())
    status, out, err = call(capsys, "diff", "excel.csv", "--time-column", "time")
    assert (status, err) == (0, "")
    header, rows = read_csv("excel.d1.csv")
    assert header == ["time", "level", "d1_level"]


@needs_matplotlib
def test_plot_writes_a_figure(capsys, here):
    t = np.linspace(0, 3, 50)
    write_csv("data.csv", ["t", "x"], t, np.cos(t))
    status, out, err = call(capsys, "diff", "data.csv", "--time-column", "t",
                            "--padding", "valid", "--plot", "figure.png")
    assert (status, err) == (0, "")
    assert out.splitlines()[-1] == "wrote figure.png"
    assert Path("figure.png").read_bytes().startswith(PNG_MAGIC)


# diff: errors -------------------------------------------------------------------

_FILES = {
    "good.csv": "t,x,label\n0,1,a\n1,2,b\n2,4,c\n3,8,d\n",
    "empty.csv": "",
    "blank.csv": "\n\n",
    "header.csv": "t,x\n",
    "word.csv": "t,x\n0,1\n1,abc\n2,3\n",
    "hole.csv": "t,x\n0,1\n1,\n2,3\n",
    "nan.csv": "t,x\n0,1\n1,nan\n2,3\n",
    "ragged.csv": "t,x\n0,1\n1,2,3\n2,3\n",
    "numbers.csv": "0,1\n1,2\n2,3\n",
    "twice.csv": "t,x,x\n0,1,2\n1,2,3\n2,3,4\n",
    "words.csv": "name,label\na,b\nc,d\ne,f\n",
    "short.csv": "t,x\n0,1\n1,2\n",
    "back.csv": "t,x\n0,1\n1,2\n1,3\n2,4\n",
    "again.csv": "t,x,d1_x\n0,1,0\n1,2,0\n2,4,0\n",
    "data.txt": "0 1\n",
}


@pytest.fixture
def files(here):
    for name, text in _FILES.items():
        Path(name).write_text(text)
    Path("latin.csv").write_bytes(b"t,x\n0,\xe9\n")
    os.mkdir("folder.csv")
    np.save("cube.npy", np.zeros((4, 3, 2)))
    np.save("scalar.npy", np.float64(1.0))
    np.save("strings.npy", np.array(["a", "b", "c"]))
    np.save("gap.npy", np.array([[0, 1], [1, 2], [2, 3], [3, np.nan]]))
    np.save("line.npy", np.arange(5.0))
    Path("junk.npy").write_bytes(b"not a numpy file")
    return here


@pytest.mark.parametrize("args,message", [
    # files
    (["nope.csv"], "no such file: nope.csv"),
    (["folder.csv"], "folder.csv is a directory, not a data file"),
    (["empty.csv"], "empty.csv is empty"),
    (["blank.csv"], "blank.csv is empty"),
    (["header.csv"], "header.csv has a header but no data rows"),
    (["latin.csv"], "cannot read latin.csv: it is not UTF-8 text"),
    (["data.txt"], "input file data.txt has the unknown extension '.txt': "
                   "expected .csv or .npy"),
    (["junk.npy"], "cannot read junk.npy: it is not a NumPy .npy file"),
    # CSV contents
    (["word.csv"], "word.csv line 3, column 'x': 'abc' is not a number"),
    (["hole.csv"], "hole.csv line 3, column 'x' is empty"),
    (["nan.csv"], "nan.csv line 3, column 'x': 'nan' is not a finite number"),
    (["ragged.csv"], "ragged.csv line 3 has 3 fields, but there are 2 columns (t, x)"),
    (["numbers.csv"], "numbers.csv line 1 holds numbers, not column names: add a "
                      "header row, or pass --no-header"),
    (["twice.csv"], "twice.csv has two columns named 'x' (columns 2 and 3)"),
    (["words.csv"], "words.csv has no numeric column to differentiate; its "
                    "columns are name, label"),
    (["good.csv", "--column", "z"], "no column 'z' in good.csv; its columns are "
                                    "t, x, label"),
    (["good.csv", "--time-column", "time"], "no column 'time' in good.csv"),
    (["good.csv", "--column", "label"], "good.csv line 2, column 'label': 'a' is "
                                        "not a number"),
    (["good.csv", "--time-column", "t", "--column", "t"],
     "column 't' is the time column; it cannot be differentiated too"),
    (["back.csv", "--time-column", "t"], "time column 't' must increase strictly: "
                                         "back.csv line 4 has 1 after 1 on line 3"),
    (["short.csv"], "short.csv has 2 rows; order 1, accuracy 2, padding 'same' "
                    "need at least 3"),
    (["good.csv", "--order", "2", "--accuracy", "4"],
     "good.csv has 4 rows; order 2, accuracy 4, padding 'same' need at least 6"),
    (["again.csv"], "again.csv already has a column 'd1_x'; pick the columns to "
                    "differentiate with --column"),
    # .npy contents
    (["cube.npy"], "cube.npy has shape (4, 3, 2): expected a 1-D series (steps,) "
                   "or a 2-D array (steps, channels)"),
    (["scalar.npy"], "scalar.npy has shape ()"),
    (["strings.npy"], "strings.npy holds values of dtype <U1: expected real numbers"),
    (["gap.npy"], "gap.npy[3, 1] is nan: values must be finite"),
    (["line.npy", "--order", "4", "--accuracy", "4", "--padding", "valid"],
     "line.npy has 5 steps along axis 0; order 4, accuracy 4, padding 'valid' "
     "need at least 7"),
    (["line.npy", "--time-column", "t"], "--time-column needs a CSV file"),
    (["line.npy", "--column", "x"], "--column needs a CSV file"),
    # arguments: fdlayers' own messages
    (["good.csv", "--order", "0"], "`order` must be a positive integer. "
                                   "Received: order=0"),
    (["good.csv", "--order", "1.5"], "argument --order: expected an integer from "
                                     "0 to 1000, got '1.5'"),
    (["good.csv", "--accuracy", "3"], "`accuracy` must be even for a central stencil"),
    (["good.csv", "--padding", "sideways"], "`padding` must be one of 'same', "
                                            "'valid', 'periodic', 'causal'. "
                                            "Received: padding='sideways'"),
    (["good.csv", "--spacing", "-1"], "`spacing` must be a positive finite "
                                      "number. Received: spacing=-1.0"),
    (["good.csv", "--spacing", "nan"], "Received: spacing=nan"),
    (["good.csv", "--time-column", "t", "--padding", "periodic"],
     "with sample coordinates: a coordinate vector does not define a period"),
    (["good.csv", "--time-column", "t", "--spacing", "2"],
     "argument --spacing: not allowed with argument --time-column"),
    (["--order", "2"], "the following arguments are required: FILE"),
    # outputs
    (["good.csv", "-o", "out.json"], "output out.json has the unknown extension "
                                     "'.json': expected .csv or .npy"),
    (["good.csv", "-o", "./good.csv"], "-o ./good.csv is the input file good.csv"),
    (["good.csv", "-o", "./good.csv", "--force"], "-o ./good.csv is the input file"),
    (["good.csv", "-o", "missing/out.csv"], "cannot write missing/out.csv: "
                                            "No such file or directory"),
])
def test_bad_input_exits_2_with_one_line(capsys, files, args, message):
    before = sorted(p.name for p in files.iterdir())
    status, out, err = call(capsys, "diff", *args)
    assert status == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith("fdlayers diff: error: ")
    assert message in err
    assert out == ""
    assert sorted(p.name for p in files.iterdir()) == before  # nothing written


@needs_matplotlib
def test_unknown_figure_format(capsys, files):
    status, out, err = call(capsys, "diff", "good.csv", "--plot", "figure.xyz")
    assert status == 2 and out == ""
    assert err.startswith("fdlayers diff: error: --plot figure.xyz: matplotlib "
                          "cannot write 'xyz'; use one of ")
    assert ".png" in err and len(err.splitlines()) == 1


# the installed commands -----------------------------------------------------------

def _console_script():
    name = "fdlayers.exe" if os.name == "nt" else "fdlayers"
    script = Path(sys.executable).parent / name
    return str(script) if script.exists() else shutil.which("fdlayers")


def test_the_commands_run_as_installed(tmp_path):
    """`python -m fdlayers` and the `fdlayers` console script: a result, and
    an error as one line with no traceback."""
    t = np.linspace(0, 1, 11)
    write_csv(tmp_path / "data.csv", ["t", "x"], t, t ** 3)
    result = run("diff", "data.csv", "--time-column", "t", "--order", "3",
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert own_lines(result.stderr) == []
    assert "wrote data.d3.csv: 11 rows; columns t, x, d3_x" in result.stdout
    header, rows = read_csv(tmp_path / "data.d3.csv")
    np.testing.assert_allclose(column(header, rows, "d3_x"), 6.0, rtol=1e-8)

    script = _console_script()
    if script is None:
        pytest.skip("the fdlayers console script is not installed")
    result = run("diff", "data.csv", "--column", "y", cwd=tmp_path, command=[script])
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert own_lines(result.stderr) == [
        "fdlayers diff: error: no column 'y' in data.csv; its columns are t, x"]
