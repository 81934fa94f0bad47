"""CSV files for `fdlayers diff`: read with pyarrow, checked strictly, written back.

pyarrow's CSV engine parses the file (C++) in blocks of a few MB; fdlayers
reads every cell as text and decides itself what is a number, so that the
rules are its own and strict: ASCII digits, an optional sign, one decimal
mark ('.' or, with `--decimal ,`, ','), an optional exponent; no '1_0', no
'１', no '0x10', no 'nan' or 'inf'. Only the float64 values of the columns
used are kept; writing a CSV parses the file a second time, block by block,
so that every column the command does not differentiate is written back
exactly as it was read, and the text of the whole file is never in memory.

Errors name the file, the line (counted as an editor counts them, blank
lines and lines inside quoted fields included) and the column; finding the
line rescans the file with Python's `csv` module, on the error path only.
"""

import csv
import io
import os
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
    source = _Source(path, delimiter, header)
    names = source.names
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
        candidates = [find(name) for name in dict.fromkeys(columns)]
        if time in candidates:
            raise CommandError(
                f"column {time_column!r} is the time column; it cannot be "
                "differentiated too")
    else:
        candidates = [k for k in range(len(names)) if k != time]
    scan = _scan(source, candidates, time, number)
    if scan.rows == 0:
        raise CommandError(f"{path} has a header but no data rows")
    if columns:
        chosen = list(range(len(candidates)))
    else:
        chosen = [j for j in range(len(candidates))
                  if 2 * scan.numbers[j] > scan.filled[j] > 0]
        if not chosen:
            raise CommandError(
                f"{path} has no numeric column to differentiate; its "
                f"columns are {listing(names, 20)}"
                f"{_delimiter_hint(names, delimiter)}"
                f"{_decimal_hint(scan.sample, decimal)}")
    for j in chosen:
        if scan.bad[j] >= 0:
            raise _bad_cell(where, scan.bad[j], names[candidates[j]],
                            columns is None)
    values = scan.values(chosen)
    empty = np.zeros(scan.rows, dtype=bool)
    gaps = {}
    for j in chosen:
        holes = scan.empty(j)
        if holes.any():
            gaps[names[candidates[j]]] = holes
            empty |= holes
    times = origin = None
    if time is not None:
        times, holes, origin = scan.times(where, names[time])
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
                         f"{scan.rows} rows with an empty cell")
        else:
            axis = times if times is not None else np.arange(scan.rows, dtype=float)
            filled = 0
            for j, k in enumerate(candidates[c] for c in chosen):
                holes = gaps.get(names[k])
                if holes is None:
                    continue
                inside = np.flatnonzero(~holes)
                if not inside.size or holes[0] or holes[-1]:
                    row = 0 if holes[0] else scan.rows - 1
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
        _check_increasing(times, where, names[time], keep)
        if origin is not None:
            times = times - times[0]
    used = {candidates[j] for j in chosen}
    copied = [name for k, name in enumerate(names) if k != time and k not in used]
    return Table(names, [names[candidates[j]] for j in chosen], values,
                 time=time_column, times=times, copied=copied, source=source,
                 rows=keep, delimiter=delimiter, decimal=decimal,
                 time_origin=origin, notes=notes)


class _Source:
    """A CSV file as blocks of text cells (pyarrow RecordBatches of strings,
    columns f0, f1, ...), header row removed; read as often as needed."""

    def __init__(self, path, delimiter, header):
        self.path, self.delimiter, self.header = path, delimiter, header
        self._kept = None
        first = _first_record(path, delimiter)
        self.width = len(first)
        if self.width == 0:
            raise CommandError(f"{path} is empty")
        self.bound = _check_quotes(path, delimiter, self.width)
        if header:
            self.names = _check_names(path, [name.strip() for name in first])
        else:
            self.names = [f"col{k + 1}" for k in range(self.width)]

    def _batches(self):
        if self.width > _WIDE and os.path.getsize(self.path) <= _KEEP_BYTES:
            yield self._wide_batch()
            return
        try:
            # A Python file, not the path: given a path, pyarrow reads far
            # ahead of the blocks it hands out (the whole file, in its pool).
            file = open(self.path, "rb")
        except OSError as error:
            raise read_error(self.path, error) from None
        with file:
            yield from self._arrow_batches(file)

    def _arrow_batches(self, file):
        import pyarrow as pa
        from pyarrow import csv as arrow_csv

        try:
            reader = arrow_csv.open_csv(
                file,
                read_options=arrow_csv.ReadOptions(
                    autogenerate_column_names=True, block_size=_BLOCK_BYTES),
                parse_options=arrow_csv.ParseOptions(
                    delimiter=self.delimiter, newlines_in_values=True),
                convert_options=arrow_csv.ConvertOptions(
                    column_types={f"f{k}": pa.string() for k in range(self.width)},
                    strings_can_be_null=False, quoted_strings_can_be_null=False))
            for batch in reader:
                yield batch
        except OSError as error:
            raise read_error(self.path, error) from None
        except pa.ArrowInvalid as error:
            if "UTF8" in str(error) or "UTF-8" in str(error):
                raise CommandError(
                    f"cannot read {self.path}: it is not UTF-8 text") from None
            problem = _Lines(self.path, self.delimiter, True).structure_error(self.width)
            detail = str(error).splitlines()[0]
            raise problem or CommandError(
                f"cannot read {self.path} as CSV: {detail}") from None

    def _wide_batch(self):
        """A small file of many columns in one block, parsed by Python's csv
        module: pyarrow's reader sets up a converter per column, seconds
        and a GB for 100 000 columns, while there are few rows to parse."""
        import pyarrow as pa

        try:
            with open(self.path, newline="", encoding="utf-8-sig") as file:
                records = [row for row in _reader(file, self.delimiter, strict=True)
                           if row]
        except UnicodeDecodeError:
            raise CommandError(f"cannot read {self.path}: it is not UTF-8 text") from None
        except csv.Error:
            records = None
        if records is None or any(len(row) != self.width for row in records):
            raise _Lines(self.path, self.delimiter, True).structure_error(self.width)
        rows = len(records)
        cells = pa.array([row[k] for k in range(self.width) for row in records],
                         pa.string())
        return pa.RecordBatch.from_arrays(
            [cells.slice(k * rows, rows) for k in range(self.width)],
            names=[f"f{k}" for k in range(self.width)])

    def batches(self):
        """The data rows, block by block. A small file's blocks are kept
        after the first pass: opening a reader costs about 20 µs per
        column, seconds for 100 000 columns, for a second pass."""
        if self._kept is not None:
            yield from self._kept
            return
        keep = os.path.getsize(self.path) <= _KEEP_BYTES
        kept = []
        skip = self.header
        for batch in self._batches():
            if skip and batch.num_rows:
                batch, skip = batch.slice(1), False
            if batch.num_rows:
                if keep:
                    kept.append(batch)
                yield batch
        if keep:
            self._kept = kept


# Bytes of text per block: large enough for pyarrow's parser to run at full
# speed (2 MB is as fast as 8 MB on a 200 MB file), small enough that the
# blocks in flight and their checks stay a few tens of MB (8 MB: 330 MB).
_BLOCK_BYTES = 1 << 21
# Files up to this size are parsed once, not once per pass.
_KEEP_BYTES = 1 << 25
# Columns beyond which a small file is parsed by Python's csv module.
_WIDE = 1000


class _Scan:
    """What one pass over the data found, per candidate column.

    The values go straight into arrays sized by the file's line breaks (an
    upper bound on its rows; pages never written cost no memory), so that
    no block is held, and nothing is copied, after the pass.
    """

    def __init__(self, count, bound, time):
        self.rows = 0
        self.numbers = np.zeros(count, dtype=np.int64)
        self.filled = np.zeros(count, dtype=np.int64)
        self.bad = np.full(count, -1, dtype=np.int64)
        self._values = np.empty((bound, count))
        self._empty = np.empty((bound, count), dtype=bool)
        self._times = np.empty(bound) if time else None
        self._time_empty = np.empty(bound, dtype=bool) if time else None
        self.kinds = set()
        self.origin = None
        self.sample = []

    def add(self, values, empty, time=None):
        start, stop = self.rows, self.rows + values.shape[1]
        self._values[start:stop] = values.T
        self._empty[start:stop] = empty.T
        if time is not None:
            kind, times, holes, origin = time
            self._times[start:stop] = times
            self._time_empty[start:stop] = holes
            if kind != "empty":
                self.kinds.add(kind)
            if self.origin is None:
                self.origin = origin
        self.rows = stop

    def values(self, chosen):
        """The chosen columns, float64 (rows, len(chosen)): a view where
        they are all the candidates."""
        if list(chosen) == list(range(self._values.shape[1])):
            return self._values[:self.rows]
        return self._values[:self.rows, chosen]

    def empty(self, j):
        return self._empty[:self.rows, j]

    def times(self, where, name):
        """(times, empty, origin): numbers as they are, or ISO 8601
        dates/times as seconds since the first (origin: its text)."""
        values, empty = self._times[:self.rows], self._time_empty[:self.rows]
        if len(self.kinds) > 1 or "bad" in self.kinds:
            row = _first_bad_time(where, name, self.rows)
            raise CommandError(
                f"{where.cell(row, name)}: {where.text(row, name)!r} is neither "
                "a number nor an ISO 8601 date/time (e.g. 2024-03-01 or "
                "2024-03-01T12:30:00Z; all with a zone offset or all without)")
        if self.kinds <= {"number"}:
            return values, empty, None
        first = int(np.argmax(~empty))
        return (values - values[first]) / 1e9, empty, self.origin


def _scan(source, candidates, time, number):
    """One pass: per candidate column, its float64 values (NaN where not a
    number), empty cells, counts of numbers and of non-empty cells, and
    its first cell that is not a number; the time column's values."""
    import pyarrow as pa

    scan = _Scan(len(candidates), source.bound, time is not None)
    for batch in source.batches():
        rows = batch.num_rows
        columns = [batch.column(k) for k in candidates]
        if not scan.sample and columns:
            scan.sample = [pa.array(column.slice(0, 20).to_pylist(), pa.string())
                           for column in columns]
        if columns:
            values, numeric, empty = number.convert(columns, rows)
            bad = ~(numeric | empty)
            scan.numbers += numeric.sum(axis=1)
            scan.filled += (~empty).sum(axis=1)
            for j in np.flatnonzero(bad.any(axis=1) & (scan.bad < 0)):
                scan.bad[j] = scan.rows + int(np.argmax(bad[j]))
        else:
            values, empty = np.empty((0, rows)), np.zeros((0, rows), bool)
        scan.add(values, empty, None if time is None
                 else number.times(batch.column(time), rows))
    # pyarrow's allocator keeps freed blocks for reuse; the pass is over.
    pa.default_memory_pool().release_unused()
    return scan


def _check_quotes(path, delimiter, width):
    """pyarrow reads a quote left open at the end of the file, or text after
    a closing quote, without a word; Python's csv module in strict mode
    does not. So a file with any quote is rescanned (C speed, but a second
    pass: about 1 s per 100 MB); a CSV without quotes costs one search.

    Returns:
        The number of line breaks: at least the number of records after
        the first, so that the values can be stored as they are read.
    """
    breaks, quoted = 0, False
    with open(path, "rb") as file:
        while chunk := file.read(1 << 24):
            breaks += chunk.count(b"\n") + chunk.count(b"\r")
            quoted = quoted or b'"' in chunk
    if quoted:
        problem = _Lines(path, delimiter, True).structure_error(width)
        if problem is not None:
            raise problem
    return breaks + 1


def _first_record(path, delimiter):
    """The fields of the first record: the header, or the first row ([]
    for an empty file). Python's csv module parses CSV as pyarrow does."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as file:
            for row in _reader(file, delimiter):
                if row:
                    return row
    except OSError as error:
        raise read_error(path, error) from None
    except UnicodeDecodeError:
        raise CommandError(f"cannot read {path}: it is not UTF-8 text") from None
    except csv.Error as error:
        raise CommandError(f"{path} line 1: {_quote_problem(str(error))}") from None
    return []


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


def _decimal_hint(sample, decimal):
    """A hint where cells would be numbers with the other decimal mark."""
    other = "," if decimal == "." else "."
    pattern = _NUMBER.format(d=re.escape(other))
    for column in sample:
        if any(other in cell and re.fullmatch(pattern, cell.strip())
               for cell in column.to_pylist()):
            return (f" (numbers with a decimal "
                    f"{'comma' if other == ',' else 'point'}? pass --decimal {other})")
    return ""


class _Numbers:
    """Strict number parsing of text cells, with `decimal` as the mark."""

    def __init__(self, decimal):
        self.decimal = decimal
        self.pattern = "^" + _NUMBER.format(d=re.escape(decimal)) + "$"

    def convert(self, columns, rows):
        """Columns of one block at once (one call per check, however many
        columns): `(values, numeric, empty)`, each `(len(columns), rows)`;
        values are float64, NaN where the cell is not a finite number."""
        import pyarrow as pa
        import pyarrow.compute as pc

        # One contiguous array: a kernel call per chunk would cost more
        # than the copy where a wide file makes every column a chunk.
        cells = pa.concat_arrays(
            [chunk for column in columns
             for chunk in getattr(column, "chunks", [column])])
        trimmed = pc.utf8_trim_whitespace(cells)
        numeric = pc.match_substring_regex(trimmed, self.pattern)
        empty = pc.equal(pc.binary_length(trimmed), 0)
        if self.decimal != ".":
            trimmed = pc.replace_substring(trimmed, self.decimal, ".")
        text = pc.if_else(numeric, trimmed, pa.scalar(None, pa.string()))
        # A copy that NumPy owns: a view would keep pyarrow's buffer, and
        # with it the allocator's memory, for as long as the values live.
        values = np.array(pc.cast(text, pa.float64()).to_numpy(zero_copy_only=False),
                          dtype=np.float64).reshape(len(columns), rows)
        numeric = numeric.to_numpy(zero_copy_only=False).reshape(len(columns), rows)
        # 1e999 is a number, but not a finite one: it counts as a bad cell.
        numeric &= np.isfinite(values)
        empty = empty.to_numpy(zero_copy_only=False).reshape(len(columns), rows)
        return values, numeric, empty

    def times(self, column, rows):
        """A block of the time column: (kind, float64 values, empty, the
        first non-empty cell's text for dates). kind: 'number', 'naive' or
        'aware' (ISO 8601 without or with zone offsets; values are then
        nanoseconds), 'empty', or 'bad'."""
        import pyarrow as pa
        import pyarrow.compute as pc

        values, numeric, empty = self.convert([column], rows)
        values, numeric, empty = values[0], numeric[0], empty[0]
        if empty.all():
            return "empty", values, empty, None
        if (numeric | empty).all():
            return "number", values, empty, None
        trimmed = pc.utf8_trim_whitespace(column)
        present = pc.if_else(pa.array(empty), pa.scalar(None, pa.string()), trimmed)
        first = _cell(trimmed[int(np.argmax(~empty))])
        for kind, unit in (("naive", pa.timestamp("ns")),
                           ("aware", pa.timestamp("ns", tz="UTC"))):
            try:
                stamps = pc.cast(present, unit)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                continue
            nanoseconds = stamps.cast(pa.int64()).to_numpy(zero_copy_only=False)
            return kind, nanoseconds.astype(np.float64), empty, first
        return "bad", values, empty, None


def _bad_cell(where, row, name, automatic):
    text = where.text(row, name)
    kind = ("finite number" if _NOT_FINITE.fullmatch(text.strip())
            or re.fullmatch(_NUMBER.format(d=re.escape(where.decimal)),
                            text.strip()) else "number")
    hint = ("; pick the columns to differentiate with --column" if automatic
            else "")
    other = "," if where.decimal == "." else "."
    if other in text and re.fullmatch(_NUMBER.format(d=re.escape(other)), text.strip()):
        hint = f" (a decimal {'comma' if other == ',' else 'point'}? pass --decimal {other})"
    return CommandError(f"{where.cell(row, name)}: {text!r} is not a {kind}{hint}")


def _first_bad_time(where, name, rows):
    """The first row that breaks the time column, on the error path: not
    ISO 8601, or a number among dates, or with a zone offset where the
    first date has none (or the reverse)."""
    import datetime

    aware = None
    for row, text in enumerate(where.column(name)):
        text = text.strip()
        if not text:
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


def _check_increasing(times, where, name, keep):
    bad = np.flatnonzero(~(np.diff(times) > 0))
    if bad.size:
        i, j = int(bad[0]), int(bad[0]) + 1
        if keep is not None:
            i, j = int(keep[i]), int(keep[j])
        raise CommandError(
            f"time column {name!r} must increase strictly: {where.path} line "
            f"{where.line(j)} has {where.text(j, name).strip()} after "
            f"{where.text(i, name).strip()} on line {where.line(i)}")


class _Lines:
    """Line numbers and cells of data rows, found by rescanning the file
    with Python's csv module (error paths only)."""

    def __init__(self, path, delimiter, header, decimal="."):
        self.path, self.delimiter, self.header = path, delimiter, header
        self.decimal = decimal

    def _records(self):
        """(first line, fields) of every record, header included."""
        with open(self.path, newline="", encoding="utf-8-sig") as file:
            reader = _reader(file, self.delimiter)
            previous = 0
            for fields in reader:
                if fields:
                    yield previous + 1, fields
                previous = reader.line_num

    def _locate(self, row):
        target = row + (1 if self.header else 0)
        for index, (line, fields) in enumerate(self._records()):
            if index == target:
                return line, fields
        return 0, []

    def _index(self, name):
        names = next(iter(self._records()))[1] if self.header else None
        if names is None:
            return int(name[3:]) - 1  # col<k>
        names = [n.strip() for n in names]
        if name in names:
            return names.index(name)
        return int(name[3:]) - 1  # an unnamed column, named col<k>

    def line(self, row):
        """The line on which data row `row` (0-based) starts."""
        return self._locate(row)[0]

    def text(self, row, name):
        fields = self._locate(row)[1]
        return fields[self._index(name)]

    def column(self, name):
        """Every data cell of column `name`, in order."""
        k = self._index(name)
        records = self._records()
        if self.header:
            next(records, None)
        for _, fields in records:
            yield fields[k] if k < len(fields) else ""

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
    then `names`; in the input's delimiter and decimal mark. A CSV input is
    read again, block by block, for its cells."""
    import pyarrow as pa
    from pyarrow import csv as arrow_csv

    header = io.StringIO()
    csv.writer(header, delimiter=table.delimiter,
               lineterminator="\n").writerow(table.header + names)
    file.write(header.getvalue().encode())
    options = [arrow_csv.WriteOptions(include_header=False, delimiter=table.delimiter,
                                      quoting_style=style)
               for style in ("none", "needed")]

    def write(columns, rows):
        """Columns of one block, and the derivative of output rows `rows`."""
        columns = columns + _texts(derivative[rows], table.decimal)
        part = pa.Table.from_arrays(columns, names=[f"f{k}" for k in range(len(columns))])
        # Through memory first, so that a block that needs quotes is
        # written once, whole, and not after a partial attempt.
        buffer = pa.BufferOutputStream()
        try:
            arrow_csv.write_csv(part, buffer, options[0])
        except pa.ArrowInvalid:
            # A cell holds the delimiter, a quote or a line break: quote
            # every text cell of this block, as CSV requires.
            buffer = pa.BufferOutputStream()
            arrow_csv.write_csv(part, buffer, options[1])
        file.write(memoryview(buffer.getvalue()))

    if table.source is None:
        batch = max(1, (1 << 20) // max(len(table.header) + len(names), 1))
        for start in range(first, stop, batch):
            end = min(start + batch, stop)
            write(_texts(table.values[start:end], table.decimal),
                  slice(start - first, end - first))
        return table.header + names
    keep = None
    if table.rows is not None:
        keep = np.zeros(table.rows[-1] + 1 if len(table.rows) else 0, dtype=bool)
        keep[table.rows] = True
    row = 0   # data rows of the file read so far
    kept = 0  # of them, rows of the table (all but dropped ones)
    for batch in table.source.batches():
        rows = batch.num_rows
        if keep is not None:
            mask = np.zeros(rows, dtype=bool)
            part = keep[row:row + rows]
            mask[:part.size] = part
            indices = np.flatnonzero(mask)
        else:
            indices = np.arange(rows)
        # Table rows of this block, and those inside first:stop.
        numbers = kept + np.arange(indices.size)
        inside = (numbers >= first) & (numbers < stop)
        row += rows
        kept += indices.size
        if not inside.any():
            continue
        chosen = indices[inside]
        if chosen.size == rows:
            columns = list(batch.columns)
        else:
            columns = list(batch.take(pa.array(chosen)).columns)
        write(columns, numbers[inside] - first)
    return table.header + names


def _texts(values, decimal):
    """The columns of float64 `values` (rows, columns) as text: the
    shortest that reads back as the same float64. One conversion for all
    columns (a file may have 100 000), then zero-copy slices."""
    import pyarrow as pa
    import pyarrow.compute as pc

    rows, count = values.shape
    text = pc.cast(pa.array(np.ascontiguousarray(values.T).reshape(-1)), pa.string())
    if decimal != ".":
        text = pc.replace_substring(text, ".", decimal)
    return [text.slice(k * rows, rows) for k in range(count)]
