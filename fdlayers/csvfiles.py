"""CSV files for `fdlayers diff`: read with pyarrow, checked strictly, written back.

pyarrow's CSV engine reads and writes (C++, two threads where there are two
cores); fdlayers reads every cell as text and decides itself what is a
number, so that the rules are its own and strict: ASCII digits, an optional
sign, one decimal mark ('.' or, with `--decimal ,`, ','), an optional
exponent; no '1_0', no '１', no '0x10', no 'nan' or 'inf'. Keeping the text
also means that every column the command does not differentiate is written
back exactly as it was read.

Errors name the file, the line (counted as an editor counts them, blank
lines and lines inside quoted fields included) and the column; finding the
line rescans the file with Python's `csv` module, on the error path only.
"""

import csv
import io
import math
import re

import numpy as np

from fdlayers.datafiles import CommandError, Table, listing, read_error

# Delimiters that detection chooses from, in order of preference on a tie.
DELIMITERS = (",", ";", "\t")
MISSING = ("error", "drop", "interpolate")

_NUMBER = r"[+-]?(?:[0-9]+(?:{d}[0-9]*)?|{d}[0-9]+)(?:[eE][+-]?[0-9]+)?"
_NOT_FINITE = re.compile(r"[+-]?(?:nan|inf|infinity)", re.IGNORECASE)
# Cells per batch of the column-wise checks: one batch for a wide file (one
# call per check, not one per column), a few columns at a time for a tall one.
_CELLS_PER_BATCH = 1 << 20


def describe_delimiter(delimiter):
    return {"\t": "tab", " ": "space"}.get(delimiter, repr(delimiter))


def detect_delimiter(path, decimal):
    """The delimiter of `path`'s first non-blank line: the most frequent of
    `DELIMITERS` outside quotes (',' where the line has none; never the
    decimal mark)."""
    line = _first_line(path)
    candidates = [d for d in DELIMITERS if d != decimal]
    counts = {d: 0 for d in candidates}
    quoted = False
    for char in line:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in counts:
            counts[char] += 1
    best = max(candidates, key=lambda d: counts[d])  # max keeps the first on ties
    return best if counts[best] else candidates[0]


def _first_line(path):
    try:
        with open(path, "rb") as file:
            head = file.read(1 << 16)
    except OSError as error:
        raise read_error(path, error) from None
    text = head.decode("utf-8-sig", errors="replace")
    for line in text.splitlines():
        if line.strip():
            return line
    return ""


def read_csv(path, columns=None, time_column=None, header=True,
             delimiter=",", decimal=".", missing="error"):
    """Read a CSV file into a `Table`: a header row of names (unless
    `header` is False: col1, col2, ...), then one row per sample.

    Differentiates `columns` (names), else every numeric column but the time
    column: a column is numeric when most of its non-empty cells are
    numbers, and then every non-empty cell must be one. `time_column` holds
    numbers or ISO 8601 dates/times (then seconds since the first row).
    Empty cells in the columns used are handled by `missing`: 'error',
    'drop' (the whole row), or 'interpolate' (linearly in time, between
    values; not at either end). Blank lines are skipped.
    """
    import pyarrow as pa

    text = _read_text(path, delimiter)
    if text.num_rows == 0:
        raise CommandError(f"{path} is empty")
    if header:
        names = [_cell(text.column(k)[0]).strip() for k in range(text.num_columns)]
        names = _check_names(path, names)
        text = text.slice(1)
        if not text.num_rows:
            raise CommandError(f"{path} has a header but no data rows")
    else:
        names = [f"col{k + 1}" for k in range(text.num_columns)]
    where = _Lines(path, delimiter, header, decimal)
    number = _Numbers(decimal)

    def find(name):
        if name not in names:
            raise CommandError(
                f"no column {name!r} in {path}; its columns are "
                f"{listing(names, 20)}{_delimiter_hint(names, delimiter)}")
        return names.index(name)

    time = None if time_column is None else find(time_column)
    if columns:
        chosen = [find(name) for name in dict.fromkeys(columns)]
        if time in chosen:
            raise CommandError(
                f"column {time_column!r} is the time column; it cannot be "
                "differentiated too")
    else:
        candidates = [k for k in range(len(names)) if k != time]
        chosen = [k for k, numeric in zip(candidates, number.mostly_numbers(
            [text.column(k) for k in candidates])) if numeric]
        if not chosen:
            raise CommandError(
                f"{path} has no numeric column to differentiate; its "
                f"columns are {listing(names, 20)}"
                f"{_delimiter_hint(names, delimiter)}"
                f"{_decimal_hint(text, candidates, decimal)}")
    values = np.empty((text.num_rows, len(chosen)))
    empty = np.zeros(text.num_rows, dtype=bool)
    gaps = {}
    for j, k in enumerate(chosen):
        column, holes = number.parse(text.column(k))
        if isinstance(column, int):
            raise _bad_cell(where, column, names[k], text.column(k),
                            columns is None)
        values[:, j] = column
        if holes.any():
            gaps[names[k]] = holes
            empty |= holes
    times = origin = None
    if time is not None:
        times, holes, origin = _times(number, text.column(time), where,
                                      names[time])
        if holes.any():
            if missing != "drop":
                raise CommandError(
                    f"{where.cell(int(np.argmax(holes)), names[time])} is empty: "
                    "a time is needed on every row (--missing drop skips "
                    "such rows)")
            empty |= holes
    notes = []
    keep = None
    if empty.any():
        if missing == "error":
            row, name = min((int(np.argmax(holes)), name)
                            for name, holes in gaps.items())
            raise CommandError(
                f"{where.cell(row, name)} is empty; pass --missing drop or "
                "--missing interpolate to accept empty cells")
        if missing == "drop":
            keep = np.flatnonzero(~empty)
            values = values[keep]
            times = None if times is None else times[keep]
            notes.append(f"--missing drop: dropped {int(empty.sum())} of "
                         f"{text.num_rows} rows with an empty cell")
        else:
            axis = times if times is not None else np.arange(text.num_rows, dtype=float)
            filled = 0
            for j, k in enumerate(chosen):
                holes = gaps.get(names[k])
                if holes is None:
                    continue
                inside = np.flatnonzero(~holes)
                if not inside.size or holes[0] or holes[-1]:
                    row = 0 if holes[0] else text.num_rows - 1
                    raise CommandError(
                        f"{where.cell(row, names[k])} is empty and has no "
                        f"value {'before' if row == 0 else 'after'} it to "
                        "interpolate from; use --missing drop")
                values[holes, j] = np.interp(axis[holes], axis[inside],
                                             values[inside, j])
                filled += int(holes.sum())
            notes.append(f"--missing interpolate: filled {filled} empty "
                         f"cell{'s' if filled != 1 else ''} linearly")
    if times is not None:
        _check_increasing(times, where, names[time], text.column(time), keep)
        if origin is not None:
            times = times - times[0]
    copied = [name for k, name in enumerate(names) if k != time and k not in chosen]
    return Table(names, [names[k] for k in chosen], values,
                 time=time_column, times=times, copied=copied, source=text,
                 rows=keep, delimiter=delimiter, decimal=decimal,
                 time_origin=origin, notes=notes)


def _read_text(path, delimiter):
    """Every cell of `path` as text: a pyarrow Table with columns f0, f1, ..."""
    import pyarrow as pa
    from pyarrow import csv as arrow_csv

    width = _width(path, delimiter)
    if width == 0:
        raise CommandError(f"{path} is empty")
    _check_quotes(path, delimiter, width)
    try:
        return arrow_csv.read_csv(
            path,
            read_options=arrow_csv.ReadOptions(
                autogenerate_column_names=True, block_size=1 << 24),
            parse_options=arrow_csv.ParseOptions(
                delimiter=delimiter, newlines_in_values=True),
            convert_options=arrow_csv.ConvertOptions(
                column_types={f"f{k}": pa.string() for k in range(width)},
                strings_can_be_null=False, quoted_strings_can_be_null=False))
    except OSError as error:
        raise read_error(path, error) from None
    except pa.ArrowInvalid as error:
        if "UTF8" in str(error) or "UTF-8" in str(error):
            raise CommandError(f"cannot read {path}: it is not UTF-8 text") from None
        problem = _Lines(path, delimiter, True).structure_error(width)
        detail = str(error).splitlines()[0]
        raise problem or CommandError(f"cannot read {path} as CSV: {detail}") from None


def _check_quotes(path, delimiter, width):
    """pyarrow reads a quote left open at the end of the file, or text after
    a closing quote, without a word; Python's csv module in strict mode
    does not. So a file with any quote is rescanned (C speed, but a second
    pass): a CSV without quotes costs one search for the character."""
    with open(path, "rb") as file:
        while chunk := file.read(1 << 24):
            if b'"' in chunk:
                break
        else:
            return
    problem = _Lines(path, delimiter, True).structure_error(width)
    if problem is not None:
        raise problem


def _width(path, delimiter):
    """The number of fields of the first record (0 for an empty file)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as file:
            for row in _reader(file, delimiter):
                if row:
                    return len(row)
    except OSError as error:
        raise read_error(path, error) from None
    except UnicodeDecodeError:
        raise CommandError(f"cannot read {path}: it is not UTF-8 text") from None
    except csv.Error:
        return 1  # arrow reports it, and the rescan says where
    return 0


def _reader(file, delimiter, strict=False):
    csv.field_size_limit(1 << 30)
    return csv.reader(file, delimiter=delimiter, strict=strict)


def _cell(scalar):
    value = scalar.as_py()
    return "" if value is None else value


def _check_names(path, names):
    """The header's names, checked: unique, empty ones named colK."""
    given = {}
    for k, name in enumerate(names):
        if name:
            if name in given:
                raise CommandError(
                    f"{path} has two columns named {name!r} (columns "
                    f"{given[name] + 1} and {k + 1})")
            given[name] = k
    filled = []
    for k, name in enumerate(names):
        if not name:
            name = f"col{k + 1}"
            if name in given:
                raise CommandError(
                    f"{path}: column {k + 1} has no name in the header, and "
                    f"{name!r}, the name it would get, is column "
                    f"{given[name] + 1}'s; name it in the header")
        filled.append(name)
    if all(_looks_numeric(name) for name in filled):
        raise CommandError(
            f"{path} line 1 holds numbers, not column names: add a "
            "header row, or pass --no-header")
    return filled


def _looks_numeric(text):
    return re.fullmatch(_NUMBER.format(d=r"[.,]"), text) is not None


def _delimiter_hint(names, delimiter):
    """A hint where the one column's name looks like several joined."""
    if len(names) != 1:
        return ""
    for other in DELIMITERS:
        if other != delimiter and other in names[0]:
            return (f" (one column: is the delimiter {describe_delimiter(other)}? "
                    "pass --delimiter)")
    return ""


def _decimal_hint(text, candidates, decimal):
    """A hint where the cells would be numbers with the other decimal mark."""
    other = "," if decimal == "." else "."
    for k in candidates:
        cells = [cell.strip() for cell in text.column(k).slice(0, 20).to_pylist()]
        if any(re.fullmatch(_NUMBER.format(d=re.escape(other)), cell)
               for cell in cells if other in cell):
            return f" (numbers with a decimal {'comma' if other == ',' else 'point'}? pass --decimal {other})"
    return ""


class _Numbers:
    """Strict number parsing of text columns, with `decimal` as the mark."""

    def __init__(self, decimal):
        self.decimal = decimal
        self.pattern = "^" + _NUMBER.format(d=re.escape(decimal)) + "$"

    def _flags(self, column):
        """(is a number, is empty) per cell, as NumPy booleans."""
        import pyarrow.compute as pc

        trimmed = pc.utf8_trim_whitespace(column)
        numeric = pc.match_substring_regex(trimmed, self.pattern)
        empty = pc.equal(pc.utf8_length(trimmed), 0)
        return (numeric.to_numpy(zero_copy_only=False),
                empty.to_numpy(zero_copy_only=False), trimmed)

    def mostly_numbers(self, columns):
        """Per column: whether most of its non-empty cells are numbers."""
        import pyarrow as pa

        result = []
        rows = len(columns[0]) if columns else 0
        step = max(1, _CELLS_PER_BATCH // max(rows, 1))
        for start in range(0, len(columns), step):
            batch = columns[start:start + step]
            chunks = [chunk for column in batch for chunk in column.chunks]
            numeric, empty, _ = self._flags(pa.chunked_array(chunks, pa.string()))
            numeric = numeric.reshape(len(batch), rows)
            filled = (~empty).reshape(len(batch), rows).sum(axis=1)
            result.extend((2 * numeric.sum(axis=1) > filled) & (filled > 0))
        return result

    def parse(self, column):
        """`(values, empty)`: float64 values (NaN where empty) and the empty
        cells, or `(row, None)` for the first cell that is not a number."""
        import pyarrow as pa
        import pyarrow.compute as pc

        numeric, empty, trimmed = self._flags(column)
        bad = ~(numeric | empty)
        if bad.any():
            return int(np.argmax(bad)), None
        if self.decimal != ".":
            trimmed = pc.replace_substring(trimmed, self.decimal, ".")
        trimmed = pc.if_else(pa.array(empty), pa.scalar(None, pa.string()), trimmed)
        values = pc.cast(trimmed, pa.float64()).to_numpy(zero_copy_only=False)
        values = np.asarray(values, dtype=np.float64)
        huge = np.isinf(values)  # 1e999 is a number, but not a finite one
        if huge.any():
            return int(np.argmax(huge)), None
        return values, empty


def _bad_cell(where, row, name, column, automatic):
    text = _cell(column[row])
    kind = ("finite number" if _NOT_FINITE.fullmatch(text.strip())
            or re.fullmatch(_NUMBER.format(d=re.escape(where.decimal)),
                            text.strip()) else "number")
    hint = ("; pick the columns to differentiate with --column" if automatic
            else "")
    other = "," if where.decimal == "." else "."
    if other in text and re.fullmatch(_NUMBER.format(d=re.escape(other)), text.strip()):
        hint = f" (a decimal {'comma' if other == ',' else 'point'}? pass --decimal {other})"
    return CommandError(f"{where.cell(row, name)}: {text!r} is not a {kind}{hint}")


def _times(number, column, where, name):
    """The time column as float64, with its empty cells: numbers as they
    are, ISO 8601 dates/times as seconds (origin: the first row's text)."""
    values, empty = number.parse(column)
    if not isinstance(values, int):
        return values, empty, None
    import pyarrow as pa
    import pyarrow.compute as pc

    trimmed = pc.utf8_trim_whitespace(column)
    empty = pc.equal(pc.utf8_length(trimmed), 0).to_numpy(zero_copy_only=False)
    present = pc.if_else(pa.array(empty), pa.scalar(None, pa.string()), trimmed)
    for unit in (pa.timestamp("ns"), pa.timestamp("ns", tz="UTC")):
        try:
            stamps = pc.cast(present, unit)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        nanoseconds = stamps.cast(pa.int64()).to_numpy(zero_copy_only=False)
        nanoseconds = np.asarray(nanoseconds, dtype=np.float64)
        first = int(np.argmax(~empty))
        seconds = (nanoseconds - nanoseconds[first]) / 1e9
        return seconds, empty, _cell(trimmed[first])
    row = _first_bad_time(trimmed, empty)
    text = _cell(column[row])
    raise CommandError(
        f"{where.cell(row, name)}: {text!r} is neither a number nor an ISO "
        "8601 date/time (e.g. 2024-03-01 or 2024-03-01T12:30:00Z; all "
        "with a zone offset or all without)")


def _first_bad_time(trimmed, empty):
    """The first cell that breaks the time column, on the error path."""
    import datetime

    aware = None
    for row, text in enumerate(trimmed.to_pylist()):
        if empty[row]:
            continue
        try:
            stamp = datetime.datetime.fromisoformat(text)
        except ValueError:
            return row
        if aware is None:
            aware = stamp.tzinfo is not None
        elif aware != (stamp.tzinfo is not None):
            return row
    return 0


def _check_increasing(times, where, name, column, keep):
    bad = np.flatnonzero(~(np.diff(times) > 0))
    if bad.size:
        i, j = bad[0], bad[0] + 1
        if keep is not None:
            i, j = keep[i], keep[j]
        line, next_line = where.line(i), where.line(j)
        raise CommandError(
            f"time column {name!r} must increase strictly: {where.path} line "
            f"{next_line} has {_cell(column[int(j)]).strip()} after "
            f"{_cell(column[int(i)]).strip()} on line {line}")


class _Lines:
    """Line numbers of data rows, found by rescanning the file (errors only)."""

    def __init__(self, path, delimiter, header, decimal="."):
        self.path, self.delimiter, self.header = path, delimiter, header
        self.decimal = decimal

    def line(self, row):
        """The line on which data row `row` (0-based) starts."""
        target = row + (1 if self.header else 0)
        with open(self.path, newline="", encoding="utf-8-sig") as file:
            reader = _reader(file, self.delimiter)
            record, previous = 0, 0
            for fields in reader:
                if fields:
                    if record == target:
                        return previous + 1
                    record += 1
                previous = reader.line_num
        return previous

    def cell(self, row, name):
        return f"{self.path} line {self.line(row)}, column {name!r}"

    def structure_error(self, width):
        """The first record with the wrong number of fields or broken
        quotes, as a CommandError; None where there is none."""
        names = None
        try:
            with open(self.path, newline="", encoding="utf-8-sig") as file:
                reader = _reader(file, self.delimiter, strict=True)
                previous = 0
                for fields in reader:
                    if fields:
                        if names is None:
                            names = fields
                        elif len(fields) != width:
                            return CommandError(
                                f"{self.path} line {previous + 1} has "
                                f"{len(fields)} fields, but there "
                                f"{'is 1 column' if width == 1 else f'are {width} columns'}"
                                f" ({listing(c.strip() for c in names)})")
                    previous = reader.line_num
        except csv.Error as error:
            return CommandError(
                f"{self.path} line {previous + 1}: {_quote_problem(str(error))}")
        return None


def _quote_problem(message):
    if "unexpected end of data" in message or "EOF" in message:
        return ("a quoted field is never closed (a '\"' opens it and no "
                "'\"' ends it before the end of the file)")
    if "expected after" in message:
        return ("text follows the closing quote of a quoted field; quote the "
                "whole field and double any '\"' inside it")
    return f"malformed quoting ({message})"


def write_csv(file, table, names, derivative, first, stop):
    """Write rows `first:stop` of `table` with their derivative to the open
    binary `file`: the header, every original column as it was read (a
    .npy input's as the shortest text that reads back as the same float64),
    then `names`; in the input's delimiter and decimal mark."""
    import pyarrow as pa
    from pyarrow import csv as arrow_csv

    header = io.StringIO()
    csv.writer(header, delimiter=table.delimiter,
               lineterminator="\n").writerow(table.header + names)
    file.write(header.getvalue().encode())
    source = table.source
    if source is not None and table.rows is not None:
        source = source.take(pa.array(table.rows))
    batch = max(1, (1 << 20) // max(len(table.header) + len(names), 1))
    options = arrow_csv.WriteOptions(include_header=False,
                                     delimiter=table.delimiter,
                                     quoting_style="none")
    fallback = arrow_csv.WriteOptions(include_header=False,
                                      delimiter=table.delimiter,
                                      quoting_style="needed")
    for start in range(first, stop, batch):
        end = min(start + batch, stop)
        if source is not None:
            columns = list(source.slice(start, end - start).columns)
        else:
            columns = [_text(table.values[start:end, k], table.decimal)
                       for k in range(table.values.shape[1])]
        columns += [_text(derivative[start - first:end - first, k], table.decimal)
                    for k in range(derivative.shape[1])]
        part = pa.Table.from_arrays(
            columns, names=[f"f{k}" for k in range(len(columns))])
        # Each batch goes through memory first, so that a batch that needs
        # quotes is written once, whole, and not after a partial attempt.
        buffer = pa.BufferOutputStream()
        try:
            arrow_csv.write_csv(part, buffer, options)
        except pa.ArrowInvalid:
            # A cell holds the delimiter, a quote or a line break: quote
            # every text cell of this batch, as CSV requires.
            buffer = pa.BufferOutputStream()
            arrow_csv.write_csv(part, buffer, fallback)
        file.write(memoryview(buffer.getvalue()))
    return table.header + names


def _text(values, decimal):
    """float64 values as the shortest text that reads back the same."""
    import pyarrow as pa
    import pyarrow.compute as pc

    text = pc.cast(pa.array(np.ascontiguousarray(values)), pa.string())
    if decimal != ".":
        text = pc.replace_substring(text, ".", decimal)
    return text
