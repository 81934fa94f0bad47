"""The `fdlayers` command: demo and diff, their help, output and errors.

Most checks call `cli.main` in-process; the real `python -m fdlayers` and
`fdlayers` commands run where the process itself is the point: what it
imports, what reaches its stderr, signals, file size limits, closed pipes,
concurrent runs. `diff` loads no backend, so those processes are cheap.
References are independent of fdlayers: `numpy.gradient`,
`scipy.signal.savgol_filter`, local polynomial fits, and polynomials
differentiated by hand. Real files: tests/data (see its README.md).
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

import background
from fdlayers import cli, demo

needs_matplotlib = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None, reason="--plot needs matplotlib")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(*args, cwd=None, command=None):
    command = command or [sys.executable, "-m", "fdlayers"]
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as a user's shell has it
    return subprocess.run([*command, *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env=env)


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

def _demo(directory):
    return run("demo", "--steps", "48", cwd=directory), Path(directory)


def start_background_runs(config, items):
    """The demo, in a fresh process, in the background
    (tests/background.py)."""
    if any(item.name.startswith("test_demo_reports") for item in items):
        background.submit(config, "demo", _demo)


def test_demo_reports_small_errors_and_the_accuracy_as_rate(request):
    """The README's main job: the table, and the figure by default."""
    plot = importlib.util.find_spec("matplotlib") is not None
    result, tmp_path = background.submit(request.config, "demo",
                                         _demo).result()
    assert result.returncode == 0, result.stderr[-2000:]
    # Not a line of TensorFlow's absl logging either (it ignores
    # TF_CPP_MIN_LOG_LEVEL): the demo keeps it off the terminal.
    assert result.stderr == ""
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
    assert result.stderr == ""
    assert "wrote data.d3.csv: 11 rows; columns t, x, d3_x" in result.stdout
    header, rows = read_csv(tmp_path / "data.d3.csv")
    np.testing.assert_allclose(column(header, rows, "d3_x"), 6.0, rtol=1e-8)

    script = _console_script()
    if script is None:
        pytest.skip("the fdlayers console script is not installed")
    result = run("diff", "data.csv", "--column", "y", cwd=tmp_path, command=[script])
    assert result.returncode == 2
    assert result.stderr == (
        "fdlayers diff: error: no column 'y' in data.csv; its columns are t, x\n")


# never lose a file ------------------------------------------------------------------

DATA = Path(__file__).resolve().parent / "data"


def _files(folder):
    """Every name in `folder`, hidden ones (temporary files) included."""
    return sorted(p.name for p in Path(folder).iterdir())


@pytest.mark.parametrize("link", ["hard", "symbolic", "symbolic back"])
def test_the_input_is_never_an_output_by_another_name(capsys, here, link):
    np.save("data.npy", np.arange(8.0) ** 2)
    before = Path("data.npy").read_bytes()
    if link == "hard":
        os.link("data.npy", "data.d1.npy")
    elif link == "symbolic":
        os.symlink("data.npy", "data.d1.npy")
    else:  # the input is the link, the default output its target
        os.rename("data.npy", "data.d1.npy")
        os.symlink("data.d1.npy", "data.npy")
    for force in ([], ["--force"]):
        status, out, err = call(capsys, "diff", "data.npy", *force)
        assert status == 2 and out == ""
        assert err == ("fdlayers diff: error: output data.d1.npy is the input file "
                       "data.npy (the same file by another name); choose another "
                       "output name\n")
    os.symlink("data.npy", "alias.npy")
    status, _, err = call(capsys, "diff", "data.npy", "-o", "alias.npy", "-f")
    assert status == 2 and "-o alias.npy is the input file data.npy" in err
    assert Path("data.npy").read_bytes() == before


def test_an_existing_output_needs_force(capsys, here):
    write_csv("data.csv", ["t", "x"], *np.array([[0.0, 1, 2, 3], [0.0, 1, 4, 9]]))
    for path in ("data.d1.csv", "keep.csv", "figure.png"):
        Path(path).write_text("precious\n")
    for args, option in ((["data.csv"], "output data.d1.csv"),
                         (["data.csv", "-o", "keep.csv"], "-o keep.csv"),
                         (["data.csv", "-o", "new.csv", "--plot", "figure.png"],
                          "--plot figure.png")):
        status, out, err = call(capsys, "diff", *args)
        assert (status, out) == (2, "")
        assert err == (f"fdlayers diff: error: {option} exists; pass --force (-f) "
                       "to replace it\n")
    assert all(Path(p).read_text() == "precious\n"
               for p in ("data.d1.csv", "keep.csv", "figure.png"))
    assert _files(".") == ["data.csv", "data.d1.csv", "figure.png", "keep.csv"]

    assert call(capsys, "diff", "data.csv", "-f")[0] == 0
    header, rows = read_csv("data.d1.csv")
    np.testing.assert_allclose(column(header, rows, "d1_x"), [0, 2, 4, 6])


@needs_matplotlib
def test_every_output_is_checked_before_any_work(capsys, here):
    write_csv("data.csv", ["x"], [float(i * i) for i in range(8)])
    status, out, err = call(capsys, "diff", "data.csv", "--plot", "/nonexistent/x.png")
    assert (status, out) == (2, "")
    assert err == ("fdlayers diff: error: cannot write /nonexistent/x.png: "
                   "No such file or directory\n")
    assert _files(".") == ["data.csv"]  # no data file before the figure fails


def test_a_signal_mid_write_keeps_the_old_file(capsys, here, monkeypatch):
    """SIGTERM while the output is half written: the previous output stays
    whole, and no temporary file is left."""
    import signal

    from fdlayers import csvfiles

    write_csv("data.csv", ["x"], [float(i * i) for i in range(8)])
    Path("data.d1.csv").write_text("the previous, complete result\n")

    def half_then_sigterm(file, *args):
        file.write(b"x,d1_x\n0,1\n1,")
        os.kill(os.getpid(), signal.SIGTERM)
    monkeypatch.setattr(csvfiles, "write_csv", half_then_sigterm)
    status, out, err = call(capsys, "diff", "data.csv", "-f")
    assert status == 128 + signal.SIGTERM and out == ""
    assert err == ("fdlayers diff: error: stopped by SIGTERM; no output file "
                   "was changed\n")
    assert Path("data.d1.csv").read_text() == "the previous, complete result\n"
    assert _files(".") == ["data.csv", "data.d1.csv"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def _limit_file_size():
    import resource

    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))


def _big_csv(path, rows):
    t = np.arange(rows) * 0.01
    with open(path, "w") as file:
        file.write("t,x,y\n")
        np.savetxt(file, np.stack([t, np.sin(t), np.cos(t)], 1), delimiter=",",
                   fmt="%.17g")


@pytest.mark.skipif(os.name != "posix", reason="RLIMIT_FSIZE is POSIX")
def test_a_write_that_fails_midway_keeps_the_old_file(here):
    """The file system refuses the output halfway (a file size limit, as a
    full disk would): one line, status 2, the old output intact."""
    _big_csv("big.csv", 20_000)  # an output of about 1.4 MB
    Path("big.d1.csv").write_text("t,x,y,d1_x,d1_y\n0,0,1,1,0\n")
    before = Path("big.d1.csv").read_bytes()
    result = subprocess.run([sys.executable, "-m", "fdlayers", "diff", "big.csv",
                             "--time-column", "t", "-f"], capture_output=True,
                            text=True, timeout=120, preexec_fn=_limit_file_size)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == "fdlayers diff: error: cannot write big.d1.csv: File too large\n"
    assert Path("big.d1.csv").read_bytes() == before
    assert _files(".") == ["big.csv", "big.d1.csv"]


def test_two_runs_writing_one_output_at_once(here):
    """Each run writes a file of its own and renames it: the result is one
    run's output, whole. Without --force, the run that finds the other's
    file there refuses, at the start or at the rename."""
    _big_csv("big.csv", 10_000)
    command = [sys.executable, "-m", "fdlayers", "diff", "big.csv", "--time-column",
               "t", "-o", "out.csv"]
    for force in (["--force"], []):
        runs = [subprocess.Popen(command + [*force, "--order", str(order)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 text=True) for order in (1, 2)]
        results = [(run.wait(timeout=120), run.stderr.read()) for run in runs]
        for run in runs:
            run.stderr.close()
        if force:
            assert results == [(0, ""), (0, "")]
        else:
            assert sorted(status for status, _ in results) == [0, 2]
            assert any("out.csv exists" in err or "out.csv appeared" in err
                       for _, err in results)
        header, rows = read_csv("out.csv")
        assert len(rows) == 10_000 and header[:3] == ["t", "x", "y"]
        order = int(header[3][1])
        t = column(header, rows, "t")
        expected = np.cos(t) if order == 1 else -np.sin(t)
        np.testing.assert_allclose(column(header, rows, header[3]), expected, atol=1e-3)
        assert _files(".") == ["big.csv", "out.csv"]
        os.remove("out.csv")


# right numbers, quietly, on every backend -----------------------------------------------

def _run_quietly(*args, backend="tensorflow", cwd=None, stdout=subprocess.PIPE):
    """`python -X importtime -m fdlayers ARGS`: (status, stdout, its own
    stderr lines, the top-level packages it imported)."""
    env = dict(os.environ, KERAS_BACKEND=backend)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as a user's shell has it
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "fdlayers",
                             *map(str, args)], stdout=stdout, stderr=subprocess.PIPE,
                            text=True, timeout=300, cwd=cwd, env=env)
    imports = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)", result.stderr,
                         flags=re.M)
    lines = [line for line in result.stderr.splitlines()
             if not line.startswith("import time:")]
    return result.returncode, result.stdout, lines, {m.split(".")[0] for m in imports}


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_diff_computes_in_float64_on_any_backend_and_loads_none(tmp_path, backend):
    """Once float32 on JAX (max error 0.333 here): the command computes with
    NumPy in float64, and imports no backend at all."""
    t = np.arange(2000) * 0.001
    write_csv(tmp_path / "s.csv", ["x"], np.sin(3 * t))
    status, out, err, imported = _run_quietly(
        "diff", "s.csv", "--spacing", "0.001", "--order", "2", backend=backend,
        cwd=tmp_path)
    assert (status, err) == (0, []), err
    assert "float64" in out
    header, rows = read_csv(tmp_path / "s.d2.csv")
    error = np.abs(column(header, rows, "d2_x") - (-9 * np.sin(3 * t))).max()
    assert error < 1e-4  # float32 rounding alone would be ~0.1
    assert not imported & {"tensorflow", "keras", "jax", "torch"}


def test_help_and_errors_load_no_backend(tmp_path):
    for args, expected in ((["--help"], None),
                           (["diff", "--help"], None),
                           (["diff", "data.csv", "--order", "x"], "argument --order"),
                           (["diff", "nope.csv"], "no such file: nope.csv"),
                           (["demo", "--steps", "1"], "expected an integer")):
        status, out, err, imported = _run_quietly(*args, cwd=tmp_path)
        assert not imported & {"tensorflow", "keras", "jax", "torch"}, args
        if expected is None:
            assert (status, err) == (0, []) and out.startswith("usage: fdlayers")
        else:
            assert status == 2 and len(err) == 1 and expected in err[0], err


def test_a_closed_stdout_is_quiet(tmp_path):
    write_csv(tmp_path / "w.csv", ["x"], [float(i) for i in range(10)])
    for args in (["diff", "w.csv"], ["diff", "--help"]):
        read, write = os.pipe()
        os.close(read)  # `| true`: nobody reads
        with os.fdopen(write, "w") as closed:
            status, _, err, _ = _run_quietly(*args, cwd=tmp_path, stdout=closed)
        assert (status, err) == (0, []), err
    assert (tmp_path / "w.d1.csv").exists()


def test_a_npy_header_promising_too_much_is_one_line(capsys, here):
    # 80 bytes claiming 10**11 float64 values: once an _ArrayMemoryError.
    with open("huge.npy", "wb") as file:
        np.lib.format.write_array_header_1_0(
            file, {"descr": "<f8", "fortran_order": False, "shape": (10 ** 11,)})
    status, out, err = call(capsys, "diff", "huge.npy")
    assert (status, out) == (2, "")
    assert err == ("fdlayers diff: error: huge.npy is truncated: its header promises "
                   "shape (100000000000,) of float64 (800000000000 bytes), the file "
                   "holds 0\n")


def test_the_demo_refuses_a_float32_backend():
    """JAX computes in float32 unless JAX_ENABLE_X64 is set before it loads
    (the demo sets it); where it is not, the demo says so in one line
    rather than print float32 rounding as float64 errors. The demo on JAX
    and PyTorch: tests/test_cli_backends.py."""
    keras = pytest.importorskip("keras")
    with pytest.raises(cli.CommandError, match=r"^the .* backend computed in "
                       r"float32, not float64"):
        demo._check_float64(keras, np.zeros(3, np.float32))


# real CSV files --------------------------------------------------------------------

def _copy(name):
    shutil.copy(DATA / name, name)


def _dates_in_seconds(texts):
    days = np.array(texts, dtype="datetime64[D]")
    return (days - days[0]).astype(np.int64) * 86400.0


def test_co2_with_missing_weeks(capsys, here):
    _copy("co2_weekly.csv")
    status, out, err = call(capsys, "diff", "co2_weekly.csv", "--time-column", "date")
    assert (status, out) == (2, "")
    assert err == ("fdlayers diff: error: co2_weekly.csv line 8, column 'co2' is "
                   "empty; pass --missing drop or --missing interpolate to accept "
                   "empty cells\n")

    _, source = read_csv("co2_weekly.csv")
    seconds = _dates_in_seconds([row[0] for row in source])
    present = np.array([row[1] != "" for row in source])
    values = np.array([float(row[1]) if row[1] else np.nan for row in source])

    status, out, err = call(capsys, "diff", "co2_weekly.csv", "--time-column", "date",
                            "--missing", "drop")
    assert (status, err) == (0, "")
    assert out.splitlines()[:2] == [
        "co2_weekly.csv: --missing drop: dropped 47 of 400 rows with an empty cell",
        "co2_weekly.csv: 353 rows; differentiating co2 along column 'date' (ISO "
        "8601: seconds since 1958-03-29, 0 to 2.41315e+08)"]
    header, rows = read_csv("co2_weekly.d1.csv")
    assert header == ["date", "co2", "d1_co2_per_s"]
    assert [row[:2] for row in rows] == [row for row in source if row[1]]
    np.testing.assert_allclose(
        column(header, rows, "d1_co2_per_s"),
        np.gradient(values[present], seconds[present], edge_order=2), rtol=1e-10)

    status, out, err = call(capsys, "diff", "co2_weekly.csv", "--time-column", "date",
                            "--missing", "interpolate", "-o", "filled.csv")
    assert (status, err) == (0, "")
    assert "--missing interpolate: filled 47 empty cells linearly" in out
    header, rows = read_csv("filled.csv")
    assert [row[:2] for row in rows] == source  # the empty cells stay empty
    filled = np.interp(seconds, seconds[present], values[present])
    np.testing.assert_allclose(column(header, rows, "d1_co2_per_s"),
                               np.gradient(filled, seconds, edge_order=2), rtol=1e-10)


def test_macrodata_with_semicolons_and_decimal_commas(capsys, here):
    _copy("macrodata_semicolon.csv")
    status, out, err = call(capsys, "diff", "macrodata_semicolon.csv")
    assert status == 2
    assert err.endswith("has no numeric column to differentiate; its columns are "
                        "quarter_end, realgdp, realcons, realinv, unemp, cpi (numbers "
                        "with a decimal comma? pass --decimal ,)\n")

    status, out, err = call(capsys, "diff", "macrodata_semicolon.csv", "--decimal", ",",
                            "--time-column", "quarter_end", "--column", "realgdp",
                            "--order", "2", "--accuracy", "4")
    assert (status, err) == (0, "")
    assert out.splitlines()[0] == ("macrodata_semicolon.csv: delimiter ';' (detected; "
                                   "--delimiter sets it)")
    with open("macrodata_semicolon.d2.csv", newline="") as file:
        header, *rows = list(csv.reader(file, delimiter=";"))
    assert header == ["quarter_end", "realgdp", "realcons", "realinv", "unemp", "cpi",
                      "d2_realgdp_per_s2"]
    with open("macrodata_semicolon.csv", newline="") as file:
        assert [row[:6] for row in rows] == list(csv.reader(file, delimiter=";"))[1:]
    numbers = [[float(cell.replace(",", ".")) for cell in row[1:]] for row in rows]
    gdp, result = np.array(numbers)[:, 0], np.array(numbers)[:, -1]
    seconds = _dates_in_seconds([row[0] for row in rows])
    # Quarters are 90 to 92 days: a non-uniform grid; order 2, accuracy 4
    # is exact for polynomials of degree 5, so compare with findiff-free
    # local fits: a quintic through each window of 6 points.
    interior = []
    for i in range(2, len(gdp) - 3):
        window = slice(i - 2, i + 4)
        scale = 1e7
        fit = np.polynomial.Polynomial.fit(seconds[window] / scale, gdp[window], 5)
        interior.append(fit.deriv(2)(seconds[i] / scale) / scale ** 2)
    np.testing.assert_allclose(result[2:-3], interior, rtol=1e-6,
                               atol=1e-9 * np.abs(interior).max())


def test_tab_separated_macrodata(capsys, here):
    _copy("macrodata_tab.csv")
    status, out, err = call(capsys, "diff", "macrodata_tab.csv", "--column", "realgdp",
                            "--column", "infl", "--spacing", "0.25")
    assert (status, err) == (0, "")
    assert out.splitlines()[:2] == [
        "macrodata_tab.csv: delimiter tab (detected; --delimiter sets it)",
        "macrodata_tab.csv: 203 rows; differentiating realgdp, infl with spacing "
        "0.25; copying year, quarter"]
    with open("macrodata_tab.d1.csv", newline="") as file:
        header, *rows = list(csv.reader(file, delimiter="\t"))
    gdp = np.array([float(row[2]) for row in rows])
    np.testing.assert_allclose([float(row[4]) for row in rows],
                               np.gradient(gdp, 0.25, edge_order=2), rtol=1e-12)


def test_savitzky_golay_matches_scipy(capsys, here, rng):
    signal = pytest.importorskip("scipy.signal")
    t = np.arange(120) * 0.05
    x = np.sin(t) + rng.normal(0, 0.05, t.size)
    write_csv("noisy.csv", ["t", "x"], t, x)
    for args, padding in (([], "interp"), (["--padding", "valid"], None)):
        status, out, err = call(capsys, "diff", "noisy.csv", "--time-column", "t",
                                "--method", "savgol", "--window", "11", "--polyorder",
                                "3", "-f", *args)
        assert (status, err) == (0, ""), err
        assert "Savitzky–Golay order 1, window 11, polyorder 3" in out
        header, rows = read_csv("noisy.d1.csv")
        expected = signal.savgol_filter(x, 11, 3, deriv=1, delta=0.05,
                                        mode=padding or "interp")
        if padding is None:
            expected = expected[5:-5]
        np.testing.assert_allclose(column(header, rows, "d1_x"), expected,
                                   rtol=1e-9, atol=1e-9)


_REAL_FILES = {
    "underscore.csv": "t,x\n0,1\n1,1_0\n2,3\n",
    "arabic.csv": "t,x\n0,1\n1,\u0661\n2,3\n",
    "fullwidth.csv": "t,x\n0,1\n1,\uff11\n2,3\n",
    "hex.csv": "t,x\n0,1\n1,0x10\n2,3\n",
    "huge.csv": "t,x\n0,1\n1,1e999\n2,3\n",
    "noname.csv": "col2,,z\n1,2,3\n2,3,4\n3,4,5\n",
    "open.csv": 't,x,label\n0,1,a\n1,2,"b\n2,3,c\n',
    "after.csv": 't,x,label\n0,1,a\n1,2,"b"c\n2,3,d\n',
    "labels.csv": "t,x,label\n0,1,a\n1,2,7\n2,4,c\n3,8,d\n",
    "typo.csv": "t,x,label\n0,1,a\n1,2,b\n2,oops,c\n3,8,d\n",
    "dates.csv": "when,x\n2024-03-01T00:00:00Z,1\n2024-03-01T00:00:10+00:00,2\n"
                 "2024-03-01T00:00:20,3\n",
    "semi.csv": "t;x\n0;1\n1;2\n2;4\n",
    "quoted.csv": 't,x,label\n0,1,"a, b"\n1,2,"say ""hi"""\n2,4,"two\nlines"\n3,8,d\n',
}


@pytest.fixture
def real_files(here):
    for name, text in _REAL_FILES.items():
        Path(name).write_text(text, encoding="utf-8")
    return here


@pytest.mark.parametrize("args,message", [
    (["underscore.csv"], "underscore.csv line 3, column 'x': '1_0' is not a number"),
    (["arabic.csv"], "arabic.csv line 3, column 'x': '\u0661' is not a number"),
    (["fullwidth.csv"], "fullwidth.csv line 3, column 'x': '\uff11' is not a number"),
    (["hex.csv"], "hex.csv line 3, column 'x': '0x10' is not a number"),
    (["huge.csv"], "huge.csv line 3, column 'x': '1e999' is not a finite number"),
    (["noname.csv"], "noname.csv: column 2 has no name in the header, and 'col2', "
                     "the name it would get, is column 1's; name it in the header"),
    (["open.csv"], "open.csv line 3: a quoted field is never closed"),
    (["after.csv"], "after.csv line 3: text follows the closing quote of a quoted "
                    "field"),
    (["typo.csv"], "typo.csv line 4, column 'x': 'oops' is not a number; pick the "
                   "columns to differentiate with --column"),
    (["dates.csv", "--time-column", "when"],
     "dates.csv line 4, column 'when': '2024-03-01T00:00:20' is neither a number "
     "nor an ISO 8601 date/time"),
    (["semi.csv", "--delimiter", ",", "--column", "x"],
     "no column 'x' in semi.csv; its columns are t;x (one column: is the delimiter "
     "';'? pass --delimiter)"),
    (["semi.csv", "--decimal", ",", "--delimiter", ","], "--delimiter ',' and "
                                                         "--decimal ',' are the same"),
    (["semi.csv", "--missing", "drop", "-o", "x.npy", "--method", "savgol",
      "--accuracy", "4"], "--accuracy is for --method fd"),
    (["semi.csv", "--window", "5"], "--window is for --method savgol"),
    (["semi.csv", "--method", "savgol", "--window", "4"], "`window` must be odd"),
    (["semi.csv", "--method", "savgol", "--padding", "causal"], "Received: "
                                                                "padding='causal'"),
])
def test_real_file_errors_are_accurate(capsys, real_files, args, message):
    status, out, err = call(capsys, "diff", *args)
    assert (status, out) == (2, "")
    assert len(err.splitlines()) == 1 and message in err, err


def test_text_quotes_and_dates_are_read_as_written(capsys, real_files):
    # One number-like cell does not make a text column numeric.
    status, out, err = call(capsys, "diff", "labels.csv", "--time-column", "t")
    assert (status, err) == (0, "")
    assert "differentiating x along column 't' (0 to 3); copying label (not numeric)" in out
    assert read_csv("labels.d1.csv")[1][1][:3] == ["1", "2", "7"]

    # Quoted delimiters, quotes and line breaks survive the round trip.
    assert call(capsys, "diff", "quoted.csv", "--time-column", "t")[0] == 0
    header, rows = read_csv("quoted.d1.csv")
    assert [row[2] for row in rows] == ["a, b", 'say "hi"', "two\nlines", "d"]
    np.testing.assert_allclose(column(header, rows, "d1_x"),
                               np.gradient([1, 2, 4, 8], edge_order=2))

    # ISO 8601 with zone offsets, read as seconds since the first row.
    Path("zoned.csv").write_text("when,x\n2024-03-01T01:00:00+01:00,0\n"
                                 "2024-03-01T00:00:10Z,20\n2024-03-01T00:00:30Z,60\n"
                                 "2024-03-01T00:01:00Z,120\n")
    status, out, err = call(capsys, "diff", "zoned.csv", "--time-column", "when")
    assert (status, err) == (0, "")
    assert "seconds since 2024-03-01T01:00:00+01:00, 0 to 60" in out
    header, rows = read_csv("zoned.d1.csv")
    assert header == ["when", "x", "d1_x_per_s"]
    np.testing.assert_allclose(column(header, rows, "d1_x_per_s"), 2.0, rtol=1e-12)


def test_a_file_of_many_columns(capsys, here, rng):
    """Columns scale linearly (once three scans of every column per column):
    1 500 columns, read in one pass by the wide-file path."""
    values = rng.normal(size=(6, 1500))
    names = [f"c{k}" for k in range(1500)]
    write_csv("wide.csv", names, *values.T)
    status, out, err = call(capsys, "diff", "wide.csv", "--spacing", "0.5")
    assert (status, err) == (0, "")
    header, rows = read_csv("wide.d1.csv")
    assert header == names + [f"d1_{n}" for n in names] and len(rows) == 6
    result = np.array([[float(v) for v in row[1500:]] for row in rows])
    np.testing.assert_allclose(result, np.gradient(values, 0.5, axis=0, edge_order=2),
                               rtol=1e-12, atol=1e-12)
    with open("wide.csv", "a") as file:
        file.write("1,2\n")
    status, _, err = call(capsys, "diff", "wide.csv", "-f")
    assert status == 2
    assert "wide.csv line 8 has 2 fields, but there are 1500 columns" in err


def test_the_readme_example_prints_what_it_shows(capsys, here):
    """The command line section's example, run as written, prints its
    output block, and the head of the file it shows."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("## Command line"):]
    command, shown = re.search(r"```bash\n(.*?)```\n\n```\n(.*?)```", section,
                               flags=re.S).groups()
    diff_line, head_line = command.strip().splitlines()
    os.makedirs("tests/data")
    _copy("co2_weekly.csv")
    shutil.move("co2_weekly.csv", "tests/data/co2_weekly.csv")
    status, out, err = call(capsys, *diff_line.split()[1:])
    assert (status, err) == (0, "")
    lines = int(head_line.split()[1].lstrip("-"))
    with open(head_line.split()[2]) as file:
        head = [next(file).rstrip("\n") for _ in range(lines)]
    got, want = out.splitlines() + head, shown.strip().splitlines()
    assert [_DECIMAL.sub("#", line) for line in got] == [
        _DECIMAL.sub("#", line) for line in want]
    # A derivative's last digits follow the order its terms are summed in,
    # which library releases change (they cancel to 1e-13 relative here).
    np.testing.assert_allclose(
        [float(v) for line in got for v in _DECIMAL.findall(line)],
        [float(v) for line in want for v in _DECIMAL.findall(line)],
        rtol=1e-12)


_DECIMAL = re.compile(r"-?\d+\.\d*(?:e[-+]?\d+)?")
