"""The data files that `fdlayers diff` differentiates: their `Table`, .npy files.

CSV files are read and written by `fdlayers.csvfiles`, NumPy `.npy` files
here; both give a `Table` of float64 values. Every problem with a file or
its values is a `CommandError` whose message names the file and where in it.
"""

import dataclasses
import os


class CommandError(Exception):
    """An error in the arguments or the data: one line on stderr, status 2."""


_DATA_EXTENSIONS = (".csv", ".npy")


@dataclasses.dataclass
class Table:
    """A data file as read, ready to differentiate.

    Attributes:
        header: the names of all its columns, for CSV output.
        names: the columns to differentiate; `values` their samples,
            float64 of shape (steps, channels).
        time: the time column's name and `times` its float64 samples, or
            None and None; `time_origin`, where the column holds ISO 8601
            dates/times, the first row's (then `times` are seconds since it).
        copied: the columns neither differentiated nor time (not numeric).
        vector: whether the file held one series as a 1-D .npy array.
        source: a CSV file's cells as text (a pyarrow Table, one column per
            header name) and `rows` the ones kept (None: all), so that CSV
            output copies them as they were; None for .npy.
        delimiter, decimal: how the CSV file wrote its cells, and how the
            output writes them.
        notes: lines to tell the user about how the file was read.
    """

    header: list
    names: list
    values: object
    time: str = None
    times: object = None
    copied: list = dataclasses.field(default_factory=list)
    vector: bool = False
    source: object = None
    rows: object = None
    delimiter: str = ","
    decimal: str = "."
    time_origin: str = None
    notes: list = dataclasses.field(default_factory=list)

    @property
    def steps(self):
        return self.values.shape[0]


def check_extension(path, what):
    extension = os.path.splitext(path)[1].lower()
    if extension not in _DATA_EXTENSIONS:
        raise CommandError(
            f"{what} {path} has the unknown extension "
            f"{extension or '(none)'!r}: expected .csv or .npy")
    return extension


def read_error(path, error):
    if isinstance(error, FileNotFoundError):
        return CommandError(f"no such file: {path}")
    if isinstance(error, IsADirectoryError):
        return CommandError(f"{path} is a directory, not a data file")
    return CommandError(f"cannot read {path}: {error.strerror or error}")


def listing(names, limit=8):
    """`a, b, c`, shortened to `a, b, ... z (N columns)` past `limit`."""
    names = list(names)
    if len(names) <= limit:
        return ", ".join(names)
    return f"{', '.join(names[:limit - 2])}, ..., {names[-1]} ({len(names)} columns)"


def read_npy(path):
    """Read a .npy file: a 1-D series (steps,) or a 2-D array (steps,
    channels) of real numbers, all finite; axis 0 is the steps axis.

    The header is checked against the file's size before any data is
    read, so that a file claiming more data than it holds is an error, not
    an allocation of that much memory.
    """
    import numpy as np

    try:
        with open(path, "rb") as file:
            dtype, shape = _npy_header(path, file)
            if dtype.kind not in "iuf":
                raise CommandError(
                    f"{path} holds values of dtype {dtype}: expected real numbers")
            if len(shape) not in (1, 2):
                raise CommandError(
                    f"{path} has shape {shape}: expected a 1-D series (steps,) "
                    "or a 2-D array (steps, channels)")
            needed = dtype.itemsize * int(np.prod(shape, dtype=object))
            held = os.fstat(file.fileno()).st_size - file.tell()
            if held < needed:
                raise CommandError(
                    f"{path} is truncated: its header promises shape {shape} "
                    f"of {dtype} ({needed} bytes), the file holds {held}")
            file.seek(0)
            values = np.load(file, allow_pickle=False)
    except OSError as error:
        raise read_error(path, error) from None
    except (ValueError, EOFError):
        raise CommandError(f"cannot read {path}: it is not a NumPy .npy file") from None
    # In place where the file already holds float64: no second copy.
    values = values.astype(np.float64, copy=False)
    finite = np.isfinite(values)
    if not finite.all():
        bad = tuple(np.argwhere(~finite)[0])
        raise CommandError(
            f"{path}[{', '.join(map(str, bad))}] is {values[bad]}: values "
            "must be finite")
    del finite
    vector = values.ndim == 1
    if vector:
        names, values = ["x"], values[:, np.newaxis]
    else:
        names = [f"x{k}" for k in range(values.shape[1])]
    return Table(names, names, values, vector=vector)


def _npy_header(path, file):
    """(dtype, shape) from a .npy header, or a CommandError."""
    from numpy.lib import format as npy

    not_npy = CommandError(f"cannot read {path}: it is not a NumPy .npy file")
    try:
        version = npy.read_magic(file)
        if version == (1, 0):
            shape, _, dtype = npy.read_array_header_1_0(file)
        elif version in ((2, 0), (3, 0)):
            shape, _, dtype = npy.read_array_header_2_0(file)
        else:
            raise not_npy
    except (ValueError, EOFError):
        raise not_npy from None
    if dtype.hasobject:
        raise CommandError(
            f"{path} holds values of dtype {dtype}: expected real numbers")
    return dtype, shape


def write_npy(file, table, derivative):
    """Write the derivative alone to the open binary `file`: (steps,) for a
    1-D .npy input, else (steps, channels)."""
    import numpy as np

    np.save(file, derivative[:, 0] if table.vector else derivative)
