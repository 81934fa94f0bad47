"""Section 11 of bench.py: the `fdlayers diff` command on files.

Every run is a fresh process, timed from start to exit, its peak resident
memory read from `os.wait4`; ratios are to a peer measured in the same run:

  a. a CSV of about 200 MB, 7 columns (a time column and 6 series, 2.6 M
     rows): `fdlayers diff big.csv --time-column t`, against pandas
     (`read_csv`, `numpy.gradient` on the time column, `to_csv`) doing the
     same work: read, differentiate 6 columns on the (non-uniform) grid,
     write the original columns and the 6 derivatives;
  b. a CSV of 100 000 columns and 5 rows, against the same pandas peer;
  c. a `.npy` file of 200 MB: peak memory as a multiple of the file;
  d. the start: `fdlayers --help`, a file error, and `import fdlayers`
     (what every command cost when the command imported the package).

    python benchmarks/bench.py --only 11     # ≈ 2 minutes on 2 cores
    python benchmarks/command.py --quick     # 20 MB and 10 000 columns
"""

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PEER = textwrap.dedent("""
    import sys
    import numpy as np
    import pandas as pd
    source, target, time_column = sys.argv[1:4]
    frame = pd.read_csv(source)
    names = [c for c in frame.columns if c != time_column]
    if time_column == "-":
        spacing = 1.0
        names = list(frame.columns)
    else:
        spacing = frame[time_column].to_numpy()
    derivatives = {"d1_" + name: np.gradient(frame[name].to_numpy(), spacing,
                                             edge_order=2) for name in names}
    frame = pd.concat([frame, pd.DataFrame(derivatives, index=frame.index)],
                      axis=1)
    frame.to_csv(target, index=False)
""")


def measure(command):
    """(seconds, peak resident MB) of `command`, a fresh process."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    with tempfile.TemporaryFile() as errors:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                   stderr=errors, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        errors.seek(0)
        error = errors.read().decode(errors="replace")
    return seconds, usage.ru_maxrss / 1024, process.returncode, error


def _fdlayers(*args):
    return [sys.executable, "-m", "fdlayers", *args]


def _peer(*args):
    return [sys.executable, "-c", PEER, *args]


def write_tall(path, rows, rng):
    """A time column (uneven steps) and 6 random walks, 6 decimals each."""
    import pyarrow as pa
    from pyarrow import csv as arrow_csv

    t = np.round(np.cumsum(rng.uniform(0.5, 1.5, rows)), 6)
    walks = np.round(np.cumsum(rng.normal(0, 1, (rows, 6)), axis=0), 6)
    table = pa.table({"t": t, **{f"s{k}": walks[:, k] for k in range(6)}})
    with open(path, "wb") as file:  # a plain header, as pandas writes it
        file.write(b"t,s0,s1,s2,s3,s4,s5\n")
        arrow_csv.write_csv(table, file, arrow_csv.WriteOptions(
            include_header=False, quoting_style="none"))


def write_wide(path, columns, rng):
    values = np.round(rng.normal(0, 1, (5, columns)), 6)
    with open(path, "w") as file:
        file.write(",".join(f"c{k}" for k in range(columns)) + "\n")
        for row in values:
            file.write(",".join(map(repr, row.tolist())) + "\n")


def _row(label, ours, peer=None):
    seconds, megabytes, status, error = ours
    if status:
        return f"{label:<34} failed: {error.strip().splitlines()[-1]}"
    text = f"{label:<34} {seconds:8.2f} s {megabytes:8.0f} MB"
    if peer is not None:
        text += (f"   pandas {peer[0]:7.2f} s {peer[1]:6.0f} MB   ratio "
                 f"{seconds / peer[0]:4.2f}× time, {megabytes / peer[1]:4.2f}× memory")
    return text


def _write(kind, path, size):
    """Write a data file in a process of its own: the peak memory that a
    child reports includes its parent's at the fork, so this one stays
    small."""
    subprocess.run([sys.executable, __file__, "--write", kind, path, str(size)],
                   check=True)


def main(quick=False):
    # Not imported here: this process's memory would count in its
    # children's peak (see _write).
    import importlib.util

    pandas = importlib.util.find_spec("pandas")
    rows = 260_000 if quick else 2_600_000
    columns = 10_000 if quick else 100_000
    print("\n11. fdlayers diff on files (fresh processes; peak = max resident)")
    with tempfile.TemporaryDirectory() as folder:
        big = os.path.join(folder, "big.csv")
        _write("tall", big, rows)
        size = os.path.getsize(big) / 2 ** 20
        ours = measure(_fdlayers("diff", big, "--time-column", "t", "-f",
                                 "-o", os.path.join(folder, "ours.csv")))
        peer = (measure(_peer(big, os.path.join(folder, "peer.csv"), "t"))
                if pandas else None)
        print(_row(f"a. {size:.0f} MB CSV, 7 columns", ours, peer))

        wide = os.path.join(folder, "wide.csv")
        _write("wide", wide, columns)
        size = os.path.getsize(wide) / 2 ** 20
        ours = measure(_fdlayers("diff", wide, "-f", "-o",
                                 os.path.join(folder, "wide.d1.csv")))
        peer = (measure(_peer(wide, os.path.join(folder, "wide.peer.csv"), "-"))
                if pandas else None)
        print(_row(f"b. {columns} columns × 5 rows ({size:.1f} MB)", ours, peer))

        array = os.path.join(folder, "big.npy")
        _write("npy", array, rows * 5)
        size = os.path.getsize(array) / 2 ** 20
        ours = measure(_fdlayers("diff", array, "-f", "--order", "2",
                                 "--accuracy", "4"))
        print(_row(f"c. {size:.0f} MB .npy (steps, 2)", ours)
              + f"   peak / file {ours[1] / size:.2f}×")
        baseline = measure([sys.executable, "-c", "import numpy"])
        print(f"   (a Python process that imports NumPy alone: "
              f"{baseline[1]:.0f} MB)")

        for label, command in (
                ("d. fdlayers --help", _fdlayers("--help")),
                ("   fdlayers diff missing.csv", _fdlayers("diff", "missing.csv")),
                ("   python -c 'import fdlayers'",
                 [sys.executable, "-c", "import fdlayers"])):
            seconds, megabytes, _, _ = measure(command)
            print(f"{label:<34} {seconds:8.2f} s {megabytes:8.0f} MB")
    if pandas is None:
        print("(pandas is not installed: no peer; pip install pandas)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a 20 MB CSV, 10 000 columns, a 20 MB .npy")
    parser.add_argument("--write", nargs=3, metavar=("KIND", "PATH", "SIZE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write:
        kind, path, size = args.write
        generator = np.random.default_rng(0)
        if kind == "npy":
            np.save(path, generator.normal(0, 1, (int(size), 2)))
        else:
            {"tall": write_tall, "wide": write_wide}[kind](path, int(size), generator)
    else:
        main(args.quick)
