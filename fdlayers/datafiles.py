"""Reading and writing the data files that `fdlayers diff` differentiates.

CSV (a header row, then one row per sample) and NumPy `.npy` files, read in
float64 into a `Table`; every problem with a file or its values is a
`CommandError` whose message names the file, line and column.
"""

import csv
import dataclasses
import math
import os


class CommandError(Exception):
    """An error in the arguments or the data: one line on stderr, status 2."""


_DATA_EXTENSIONS = (".csv", ".npy")


@dataclasses.dataclass
class Table:
    """A data file as read, ready to differentiate.

    Attributes:
        header: the names of all its columns, for CSV output; `rows` their
            cells as text, one list per sample (None for .npy: `cells` makes
            them from `values`).
        names: the columns to differentiate; `values` their samples,
            float64 of shape (steps, channels).
        time: the time column's name and `times` its float64 samples, or
            None and None.
        copied: the columns neither differentiated nor time (not numeric).
        vector: whether the file held one series as a 1-D .npy array.
    """

    header: list
    rows: list
    names: list
    values: object
    time: str = None
    times: object = None
    copied: list = dataclasses.field(default_factory=list)
    vector: bool = False

    @property
    def steps(self):
        return self.values.shape[0]

    def cells(self, start, stop):
        """Rows `start:stop` of all the columns, as text."""
        if self.rows is not None:
            return self.rows[start:stop]
        return [[repr(v) for v in row] for row in self.values[start:stop].tolist()]


def check_extension(path, what):
    extension = os.path.splitext(path)[1].lower()
    if extension not in _DATA_EXTENSIONS:
        raise CommandError(
            f"{what} {path} has the unknown extension "
            f"{extension or '(none)'!r}: expected .csv or .npy")
    return extension


def _read_error(path, error):
    if isinstance(error, FileNotFoundError):
        return CommandError(f"no such file: {path}")
    if isinstance(error, IsADirectoryError):
        return CommandError(f"{path} is a directory, not a data file")
    return CommandError(f"cannot read {path}: {error.strerror or error}")


def _number(text):
    """`text` as a float, or None where it is not a number."""
    try:
        return float(text)
    except ValueError:
        return None


def listing(names, limit=8):
    """`a, b, c`, shortened to `a, b, ... z (N columns)` past `limit`."""
    names = list(names)
    if len(names) <= limit:
        return ", ".join(names)
    return f"{', '.join(names[:limit - 2])}, ..., {names[-1]} ({len(names)} columns)"


def read_csv(path, columns=None, time_column=None, header=True):
    """Read a CSV file: a header row of names, then one row per sample.

    Differentiates `columns` (names), else every numeric column but the time
    column: a column is numeric when any of its values is a number, and then
    every value must be a finite number. Blank lines are skipped.
    """
    try:
        # utf-8-sig: spreadsheets often start their CSV exports with a BOM.
        with open(path, newline="", encoding="utf-8-sig") as file:
            reader = csv.reader(file)
            records = [(reader.line_num, row) for row in reader if row]
    except OSError as error:
        raise _read_error(path, error) from None
    except UnicodeDecodeError:
        raise CommandError(f"cannot read {path}: it is not UTF-8 text") from None
    except csv.Error as error:
        raise CommandError(f"cannot read {path} as CSV: {error}") from None
    if not records:
        raise CommandError(f"{path} is empty")
    if header:
        (line, names), records = records[0], records[1:]
        names = [name.strip() or f"col{k + 1}" for k, name in enumerate(names)]
        if all(_number(name) is not None for name in names):
            raise CommandError(
                f"{path} line {line} holds numbers, not column names: add a "
                "header row, or pass --no-header")
        for k, name in enumerate(names):
            if name in names[:k]:
                raise CommandError(
                    f"{path} has two columns named {name!r} (columns "
                    f"{names.index(name) + 1} and {k + 1})")
        if not records:
            raise CommandError(f"{path} has a header but no data rows")
    else:
        names = [f"col{k + 1}" for k in range(len(records[0][1]))]
    for line, row in records:
        if len(row) != len(names):
            raise CommandError(
                f"{path} line {line} has {len(row)} fields, but there are "
                f"{len(names)} columns ({listing(names)})")

    def find(name):
        if name not in names:
            raise CommandError(
                f"no column {name!r} in {path}; its columns are {listing(names, 20)}")
        return names.index(name)

    time = None if time_column is None else find(time_column)
    if columns:
        chosen = [find(name) for name in dict.fromkeys(columns)]
        if time in chosen:
            raise CommandError(
                f"column {time_column!r} is the time column; it cannot be "
                "differentiated too")
    else:
        chosen = [k for k in range(len(names)) if k != time and any(
            _number(row[k]) is not None for _, row in records)]
        if not chosen:
            raise CommandError(
                f"{path} has no numeric column to differentiate; its "
                f"columns are {listing(names, 20)}")
    values = [_column(path, records, k, names[k]) for k in chosen]
    times = None
    if time is not None:
        times = _column(path, records, time, names[time])
        _check_increasing(path, records, time, names[time], times)
    copied = [name for k, name in enumerate(names) if k != time and k not in chosen]
    import numpy as np

    return Table(names, [row for _, row in records],
                 [names[k] for k in chosen], np.stack(values, axis=1),
                 time_column, times, copied)


def _column(path, records, k, name):
    """Column `k` as float64, or a CommandError naming the line of a bad value."""
    import numpy as np

    values = np.empty(len(records))
    for i, (line, row) in enumerate(records):
        value = _number(row[k])
        if value is None or not math.isfinite(value):
            where = f"{path} line {line}, column {name!r}"
            if not row[k].strip():
                raise CommandError(f"{where} is empty")
            kind = "number" if value is None else "finite number"
            raise CommandError(f"{where}: {row[k]!r} is not a {kind}")
        values[i] = value
    return values


def _check_increasing(path, records, k, name, times):
    import numpy as np

    bad = np.flatnonzero(~(np.diff(times) > 0))
    if bad.size:
        i = bad[0]
        (line, row), (next_line, next_row) = records[i], records[i + 1]
        raise CommandError(
            f"time column {name!r} must increase strictly: {path} line "
            f"{next_line} has {next_row[k].strip()} after {row[k].strip()} "
            f"on line {line}")


def read_npy(path):
    """Read a .npy file: a 1-D series (steps,) or a 2-D array (steps,
    channels) of real numbers, all finite; axis 0 is the steps axis."""
    import numpy as np

    try:
        values = np.load(path, allow_pickle=False)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as error:
        raise _read_error(path, error) from None
    except (OSError, ValueError, EOFError):
        # np.load names pickles for any file without the .npy magic number.
        raise CommandError(f"cannot read {path}: it is not a NumPy .npy file") from None
    if not isinstance(values, np.ndarray):
        raise CommandError(f"cannot read {path}: it is not a NumPy .npy file")
    if values.dtype.kind not in "iuf":
        raise CommandError(
            f"{path} holds values of dtype {values.dtype}: expected real numbers")
    if values.ndim not in (1, 2):
        raise CommandError(
            f"{path} has shape {values.shape}: expected a 1-D series (steps,) "
            "or a 2-D array (steps, channels)")
    values = values.astype(np.float64)
    bad = np.argwhere(~np.isfinite(values))
    if bad.size:
        index = ", ".join(map(str, bad[0]))
        raise CommandError(
            f"{path}[{index}] is {values[tuple(bad[0])]}: values must be finite")
    vector = values.ndim == 1
    if vector:
        names, values = ["x"], values[:, np.newaxis]
    else:
        names = [f"x{k}" for k in range(values.shape[1])]
    return Table(names, None, names, values, vector=vector)


def write(output, table, names, derivative, first, stop):
    """Write the derivative of rows `first:stop`; return the columns written."""
    import numpy as np

    try:
        if output.lower().endswith(".npy"):
            with open(output, "wb") as file:  # np.save(name) appends ".npy"
                np.save(file, derivative[:, 0] if table.vector else derivative)
            return names
        with open(output, "w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file, lineterminator="\n")
            writer.writerow(table.header + names)
            for row, values in zip(table.cells(first, stop), derivative.tolist()):
                # repr: the shortest text that reads back as the same float64.
                writer.writerow(row + [repr(v) for v in values])
        return table.header + names
    except OSError as error:
        raise CommandError(f"cannot write {output}: {error.strerror or error}") from None
