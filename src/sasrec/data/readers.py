"""Streaming readers for raw interaction logs.

Every reader takes a path and returns an iterator of rows ``(user, item, timestamp, line_number)``:
``user`` and ``item`` are the original ids as strings, ``timestamp`` is an int (whole seconds, or a
position) or a :class:`~decimal.Decimal` (with a fraction of a second, kept exact), used only for ordering,
and ``line_number`` is the 1-based physical line of the file the row came from. Files are read line by
line (gzip-compressed files transparently, recognised by their ``.gz`` name or their magic bytes), so a raw
file is never held in memory. A UTF-8 byte-order mark at the start of a file is dropped.

Numbers follow one strict grammar, not Python's: an integer id is ASCII digits only (``+3``, ``1_0`` or
``٣`` are bad lines; leading zeros do not make a different id). A timestamp is an integer (kept exact, so
nanosecond clocks keep their order), a finite decimal such as ``1.5`` or ``1.7e9``, or an ISO-8601 date or
date-time (``2017-12-17``, ``2017-12-17T10:00:00.123456789+02:00``; without a zone it is read as UTC),
converted to Unix seconds. Decimals and fractions of a second are kept exactly (never rounded to a float,
which would merge ``1700000000.123456789`` and ``1700000000.123456788``) down to 10**-18 s
(:data:`FRACTION_DIGITS` digits after the point); a finer timestamp, ``nan``, ``inf`` and values outside the
int64 range are bad lines.

A CSV field cannot hold a line break: a quoted field that spans lines is a bad line that says so.

Bad input raises :class:`~sasrec.errors.DataError` naming the file, the line and the problem. With
``skip_bad_lines=True`` a bad line is skipped instead and counted in a :class:`ReadStats`. Problems that
make the rest of the file unreadable (missing file, empty file, missing header, truncated gzip) always raise.

Formats (see :data:`READERS`):

* ``sasrec``: ``user item`` per line; timestamp = line number (the file order is the time order).
* ``per-user``: ``user item item ...`` per line (e.g. S3-Rec's Beauty.txt); timestamp = running item index.
* ``movielens-dat``: GroupLens ``UserID::MovieID::Rating::Timestamp`` (ml-1m ``ratings.dat``).
* ``movielens-csv``: ``userId,movieId,rating,timestamp`` with a header (ml-latest, ml-20m, ...).
* ``amazon-json``: Amazon review JSON lines (2014 and 2018): ``reviewerID``, ``asin``, ``unixReviewTime``.
* ``amazon-csv``: Amazon "ratings only" CSV ``user,item,rating,timestamp`` without a header.
* ``steam``: UCSD ``steam_reviews.json.gz``: one Python-literal dict per line (not JSON) with ``username``,
  ``product_id`` and ``date`` (``YYYY-MM-DD``, converted to Unix seconds at midnight UTC).
* ``csv``: any CSV/TSV; the caller names the user, item and (optional) timestamp columns.
"""

from __future__ import annotations

import ast
import csv
import datetime as _dt
import decimal
import gzip
import itertools
import json
import math
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

from sasrec.errors import DataError, SASRecError

Timestamp = int | Decimal
"""Whole seconds (or a position) as an int; a fraction of a second as an exact Decimal."""

Row = tuple[str, str, Timestamp, int]
"""``(user, item, timestamp, line_number)``."""

Reader = Callable[..., Iterator[Row]]

_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"
_EPOCH_ORDINAL = _dt.date(1970, 1, 1).toordinal()
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_INT64 = 2**63
_INTEGER = re.compile(r"-?[0-9]+")
_DECIMAL = re.compile(r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_PLAIN_DECIMAL = re.compile(r"(-?[0-9]+)\.([0-9]*)")
_ISO_START = re.compile(r"[0-9]{4}-?[0-9]{2}")  # YYYY-MM or YYYYMM: worth trying as an ISO-8601 date
# Fractional seconds of an ISO-8601 time (hh:mm:ss.fff or hhmmss.fff); datetime keeps only 6 digits of them.
_ISO_FRACTION = re.compile(r"(?<=[T ][0-9]{2}:[0-9]{2}:[0-9]{2})[.,]([0-9]+)|(?<=[T ][0-9]{6})[.,]([0-9]+)")
FRACTION_DIGITS = 18
"""Digits after the point a timestamp may have: fractions are kept as integer units of 10**-18 s."""
_ATTO_INT = 10**FRACTION_DIGITS
_ATTO = Decimal(_ATTO_INT)
_EXACT = decimal.Context(prec=80, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)  # exact for int64 seconds + 18 digits


@dataclass
class ReadStats:
    """Counts filled in while a reader runs (pass one in to see them).

    Attributes:
        lines: physical lines read so far (blank lines and headers included).
        rows: rows yielded.
        skipped: bad lines skipped (only with ``skip_bad_lines=True``).
        examples: the first ``max_examples`` skipped lines as ``(line_number, problem)``.
    """

    lines: int = 0
    rows: int = 0
    skipped: int = 0
    examples: list[tuple[int, str]] = field(default_factory=list)
    max_examples: int = 5

    def record_skip(self, line: int, problem: str) -> None:
        self.skipped += 1
        if len(self.examples) < self.max_examples:
            self.examples.append((line, problem))

    def summary(self) -> str:
        """One line for the user, e.g. ``"skipped 3 bad lines (line 7: ...; ...)"``; "" if none."""
        if not self.skipped:
            return ""
        shown = "; ".join(f"line {n}: {p}" for n, p in self.examples)
        more = ", ..." if self.skipped > len(self.examples) else ""
        return f"skipped {self.skipped} bad line{'s' if self.skipped != 1 else ''} ({shown}{more})"


class BadLine(Exception):
    """Raised by a line parser; the reader turns it into a DataError or a skip."""


# ------------------------------------------------------------------------------------------- file access


def check_input_file(path: str | Path) -> Path:
    """Return ``path`` as a Path if it is an existing regular file, else raise DataError."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "file not found")
    if path.is_dir():
        raise DataError(path, "is a directory, expected a data file")
    return path


def _is_gzip(path: Path) -> bool:
    if path.suffix == ".gz":
        return True
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


def iter_lines(path: Path, stats: ReadStats | None = None) -> Iterator[tuple[int, bytes]]:
    """Yield ``(line_number, raw_bytes)`` for every line of ``path``, decompressing gzip on the fly.

    A UTF-8 byte-order mark at the start of line 1 is removed (spreadsheet exports write one).

    Raises:
        DataError: the file is not valid gzip, or ends early (truncated download).
    """
    opener = gzip.open if _is_gzip(path) else open
    number = 0
    with opener(path, "rb") as f:
        lines = iter(f)
        while True:
            try:
                raw = next(lines)
            except StopIteration:
                return
            except (EOFError, OSError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
                raise DataError(
                    path,
                    f"cannot read the file past this point ({exc}); is the gzip file truncated or corrupt?",
                    line=number + 1,
                ) from None
            number += 1
            if number == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM) :]
            if stats is not None:
                stats.lines = number
            yield number, raw


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise BadLine(f"not valid UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _parse_lines(
    path: Path,
    parse: Callable[[str, int], Iterable[tuple[str, str, Timestamp]]],
    *,
    skip_bad_lines: bool,
    stats: ReadStats | None,
    header: Callable[[str, int], None] | None = None,
) -> Iterator[Row]:
    """Drive a per-line ``parse(text, line_number)``: skip blank lines, handle errors, check for emptiness.

    ``header`` (if given) receives the first non-blank line instead of ``parse``; it may raise BadLine,
    which is always fatal.
    """
    stats = stats if stats is not None else ReadStats()
    seen_content = False
    for number, raw in iter_lines(path, stats):
        in_header = header is not None and not seen_content
        try:
            text = _decode(raw)
            if not text:
                continue
            seen_content = True
            if in_header:
                header(text, number)
                continue
            rows = list(parse(text, number))
        except BadLine as exc:
            if not skip_bad_lines or in_header:
                raise DataError(path, str(exc), line=number) from None
            stats.record_skip(number, str(exc))
            continue
        for user, item, timestamp in rows:
            stats.rows += 1
            yield user, item, timestamp, number
    if not seen_content:
        raise DataError(path, "file is empty")
    if header is not None and stats.rows == 0 and stats.skipped == 0:
        raise DataError(path, "file has a header but no data lines")


# ------------------------------------------------------------------------------------------ field helpers


def _split(text: str, sep: str | None, expected: int, layout: str) -> list[str]:
    fields = text.split(sep)
    if len(fields) != expected:
        raise BadLine(f"expected {expected} fields '{layout}', found {len(fields)}: {text[:80]!r}")
    return fields


def _int_id(name: str, value: str) -> str:
    """An integer id as its canonical string (no leading zeros), so ``007`` and ``7`` are one id."""
    value = value.strip()
    if not (value.isascii() and value.isdigit()):  # str.isdigit alone accepts "²" and "٣"
        raise BadLine(f"{name} {value[:40]!r} is not a non-negative integer (ASCII digits only)")
    return value.lstrip("0") or "0"


def _timestamp(name: str, value: str) -> Timestamp:
    """An integer (exact), a finite decimal (exact), or an ISO-8601 date/date-time as Unix seconds (module
    docstring). A value with a fraction of a second is a Decimal, any other an int.

    Raises:
        BadLine: anything else, with the accepted forms.
    """
    value = value.strip()
    if (value.isascii() and value.isdigit()) or _INTEGER.fullmatch(value):  # the common case tested first
        number: Timestamp = int(value)
    elif plain := _PLAIN_DECIMAL.fullmatch(value):  # 1700000000.123: the usual fractional form, read fast
        fraction = plain.group(2).rstrip("0")
        if len(fraction) > FRACTION_DIGITS:
            raise BadLine(_too_fine(name, value))
        # exact: a float would merge values 1e-7 s apart at today's Unix times
        number = Decimal(value) if fraction else int(plain.group(1))
    elif _DECIMAL.fullmatch(value):  # with an exponent
        number = Decimal(value)
        _sign, digits, exponent = number.as_tuple()  # number = digits * 10**exponent, read without rounding
        zeros = len(digits) - len("".join(map(str, digits)).rstrip("0"))
        if exponent + zeros >= 0 or not any(digits):  # a whole number
            number = int(number) if -_INT64 <= number < _INT64 else number
        elif exponent + zeros < -FRACTION_DIGITS:
            raise BadLine(_too_fine(name, value))
    elif _ISO_START.match(value):
        number = _iso_seconds(name, value)
    else:
        if value.lower().lstrip("+-") in ("nan", "inf", "infinity"):
            raise BadLine(f"{name} {value[:40]!r} is not a finite number")
        raise BadLine(
            f"{name} {value[:40]!r} is not a number or an ISO-8601 date/time "
            "(e.g. 1700000000, 1700000000.5 or 2023-11-14T22:13:20Z)"
        )
    if not -_INT64 <= number < _INT64:  # times are stored as int64 seconds (+ a fraction) for sorting
        raise BadLine(f"{name} {value[:40]!r} is out of range (beyond 64-bit integers)")
    return number


def _too_fine(name: str, value: str) -> str:
    return (
        f"{name} {value[:40]!r} has more than {FRACTION_DIGITS} digits after the point, finer than the "
        "1e-18 s kept exactly; round it"
    )


def _iso_seconds(name: str, value: str) -> Timestamp:
    """Unix seconds of an ISO-8601 date or date-time (naive ones are UTC); a Decimal if it has a fraction
    of a second (all its digits kept), else an int."""
    fraction = _ISO_FRACTION.search(value)
    digits = ""
    if fraction is not None:  # parsed here: datetime.fromisoformat drops digits after the sixth
        digits = fraction.group(1) or fraction.group(2)
        if len(digits) > FRACTION_DIGITS:
            raise BadLine(
                f"{name} {value[:40]!r} has more than {FRACTION_DIGITS} digits of a second, finer than "
                "the 1e-18 s kept exactly; round it"
            )
    try:
        moment = _dt.datetime.fromisoformat(
            value if fraction is None else value[: fraction.start()] + value[fraction.end() :]
        )
    except ValueError:
        raise BadLine(
            f"{name} {value[:40]!r} is not a valid ISO-8601 date/time (e.g. 2023-11-14 or 2023-11-14T22:13:20Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.UTC)
    seconds = (moment - _EPOCH) // _dt.timedelta(seconds=1)
    if not digits.strip("0"):
        return seconds
    return _EXACT.add(Decimal(seconds), Decimal(f"0.{digits}"))


def split_seconds(timestamp: int | float | Decimal | Fraction) -> tuple[int, int]:
    """``(whole, fraction)``: ``floor(timestamp)`` and the rest in integer units of 10**-18 s (``0 <= fraction
    < 10**18``), so that timestamps compare exactly as two int64 keys. Exact for ints and for the readers'
    Decimals (at most :data:`FRACTION_DIGITS` digits after the point); finer parts (of a float) are floored.
    """
    if isinstance(timestamp, int):
        return timestamp, 0
    if isinstance(timestamp, Decimal):  # exact at 80 digits: int64 seconds and 18 more at most from a reader
        exact = _EXACT.multiply(timestamp, _ATTO)
        units = int(exact)  # rounds toward 0; floor below:
        units -= units > exact
    else:
        units = math.floor(Fraction(timestamp) * _ATTO_INT)  # exact for float and Fraction
    return divmod(units, _ATTO_INT)


def _text_id(name: str, value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BadLine(f"{name} has unexpected type {type(value).__name__}")
    value = str(value).strip()
    if not value:
        raise BadLine(f"{name} is empty")
    return value


def _key(record: dict, key: str) -> object:
    try:
        return record[key]
    except KeyError:
        raise BadLine(f"missing key {key!r}") from None


# ---------------------------------------------------------------------------------------------- readers


def read_sasrec(path: str | Path, *, skip_bad_lines: bool = False, stats: ReadStats | None = None) -> Iterator[Row]:
    """``user item`` per line; the line number serves as the timestamp (file order = time order)."""
    path = check_input_file(path)

    def parse(text: str, number: int) -> list[tuple[str, str, int]]:
        user, item = _split(text, None, 2, "user item")
        return [(_int_id("user id", user), _int_id("item id", item), number)]

    return _parse_lines(path, parse, skip_bad_lines=skip_bad_lines, stats=stats)


def read_per_user(path: str | Path, *, skip_bad_lines: bool = False, stats: ReadStats | None = None) -> Iterator[Row]:
    """``user item item ...`` per line (one user's whole sequence); timestamp = running item index."""
    path = check_input_file(path)
    counter = itertools.count()

    def parse(text: str, number: int) -> list[tuple[str, str, int]]:
        fields = text.split()
        if len(fields) < 2:
            raise BadLine(f"expected 'user item [item ...]', found {len(fields)} field: {text[:80]!r}")
        user = _int_id("user id", fields[0])
        items = [_int_id("item id", f) for f in fields[1:]]
        return [(user, item, next(counter)) for item in items]

    return _parse_lines(path, parse, skip_bad_lines=skip_bad_lines, stats=stats)


def read_movielens_dat(
    path: str | Path, *, skip_bad_lines: bool = False, stats: ReadStats | None = None
) -> Iterator[Row]:
    """GroupLens ``UserID::MovieID::Rating::Timestamp`` (ml-1m ``ratings.dat``); ratings are ignored."""
    path = check_input_file(path)

    def parse(text: str, number: int) -> list[tuple[str, str, Timestamp]]:
        user, item, _rating, timestamp = _split(text, "::", 4, "UserID::MovieID::Rating::Timestamp")
        return [(_int_id("UserID", user), _int_id("MovieID", item), _timestamp("Timestamp", timestamp))]

    return _parse_lines(path, parse, skip_bad_lines=skip_bad_lines, stats=stats)


def _json_record(text: str) -> dict:
    """Parse a JSON line; fall back to a Python literal (some old Amazon dumps need ``eval``)."""
    try:
        record = json.loads(text, parse_float=Decimal)  # all digits of a fractional time
    except ValueError as json_exc:
        try:
            record = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise BadLine(f"malformed JSON ({json_exc})") from None
    if not isinstance(record, dict):
        raise BadLine(f"expected a JSON object, found {type(record).__name__}")
    return record


def read_amazon_json(
    path: str | Path, *, skip_bad_lines: bool = False, stats: ReadStats | None = None
) -> Iterator[Row]:
    """Amazon review JSON lines, 2014 (``reviews_Beauty.json.gz``) or 2018 (``All_Beauty.json.gz``) format.

    Uses ``reviewerID``, ``asin`` and ``unixReviewTime``; the rating (``overall``) is ignored (implicit
    feedback, as in the paper).
    """
    path = check_input_file(path)

    def parse(text: str, number: int) -> list[tuple[str, str, Timestamp]]:
        record = _json_record(text)
        user = _text_id("reviewerID", _key(record, "reviewerID"))
        item = _text_id("asin", _key(record, "asin"))
        timestamp = _key(record, "unixReviewTime")
        if isinstance(timestamp, bool) or not isinstance(timestamp, int | float | Decimal | str):
            raise BadLine(f"unixReviewTime has unexpected type {type(timestamp).__name__}")
        return [(user, item, _timestamp("unixReviewTime", str(timestamp)))]

    return _parse_lines(path, parse, skip_bad_lines=skip_bad_lines, stats=stats)


def _date_seconds(value: object) -> int:
    if not isinstance(value, str):
        raise BadLine(f"date has unexpected type {type(value).__name__}")
    try:
        day = _dt.date.fromisoformat(value.strip())
    except ValueError:
        raise BadLine(f"date {value[:40]!r} is not YYYY-MM-DD") from None
    return (day.toordinal() - _EPOCH_ORDINAL) * 86400


def read_steam(path: str | Path, *, skip_bad_lines: bool = False, stats: ReadStats | None = None) -> Iterator[Row]:
    """UCSD Steam reviews (``steam_reviews.json.gz``): one Python-literal dict per line, parsed safely with
    :func:`ast.literal_eval`. Uses ``username``, ``product_id`` and ``date`` (day resolution, so many ties:
    they keep file order downstream)."""
    path = check_input_file(path)

    def parse(text: str, number: int) -> list[tuple[str, str, int]]:
        try:
            record = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
            raise BadLine(f"malformed line, expected a Python dict literal ({type(exc).__name__})") from None
        if not isinstance(record, dict):
            raise BadLine(f"expected a dict, found {type(record).__name__}")
        user = _text_id("username", _key(record, "username"))
        item = _text_id("product_id", _key(record, "product_id"))
        return [(user, item, _date_seconds(_key(record, "date")))]

    return _parse_lines(path, parse, skip_bad_lines=skip_bad_lines, stats=stats)


def _csv_fields(text: str, delimiter: str) -> list[str]:
    try:
        return next(csv.reader([text], delimiter=delimiter, strict=True))
    except csv.Error as exc:
        if text.count('"') % 2:  # an unclosed quote: the field goes on on the next line
            raise BadLine(
                "a quoted field is not closed on this line; line breaks inside a field are not supported: "
                "remove them from the file's fields (or check for a stray '\"')"
            ) from None
        raise BadLine(f"malformed CSV ({exc})") from None


def read_csv(
    path: str | Path,
    *,
    user_col: str | int = "user",
    item_col: str | int = "item",
    time_col: str | int | None = "timestamp",
    delimiter: str = ",",
    header: bool = True,
    skip_bad_lines: bool = False,
    stats: ReadStats | None = None,
) -> Iterator[Row]:
    """Generic delimited file (CSV, TSV, ...).

    With ``header=True`` the columns are found by name in the first line (a chosen name the header holds twice
    is refused as ambiguous); with ``header=False`` they are 0-based indexes. Every data line must have as
    many fields as the header (or as the first data line).
    Without ``time_col`` the line number is the timestamp (file order = time order).
    """
    path = check_input_file(path)
    if len(delimiter) != 1:
        raise SASRecError(f"the delimiter must be one character, not {delimiter!r}")
    wanted = {"user": user_col, "item": item_col, "time": time_col}
    layout: dict[str, int | None] = {}
    width: list[int] = []  # fields per line, fixed by the header or the first data line

    def resolve(names: list[str] | None) -> None:
        for role, col in wanted.items():
            if col is None:
                layout[role] = None
            elif names is None:
                layout[role] = _column_index(col, role)
            elif str(col) not in names:
                raise BadLine(f"header has no {role} column {str(col)!r} (columns: {', '.join(names)[:200]})")
            elif names.count(str(col)) > 1:
                # Taking the first of two same-named columns would silently read the wrong one half the time.
                at = ", ".join(str(i + 1) for i, name in enumerate(names) if name == str(col))
                raise BadLine(
                    f"header names the {role} column {str(col)!r} more than once (fields {at} of "
                    f"{', '.join(names)[:200]}); rename the duplicates so that each column name is unique"
                )
            else:
                layout[role] = names.index(str(col))

    def read_header(text: str, number: int) -> None:
        names = [n.strip() for n in _csv_fields(text, delimiter)]
        resolve(names)
        width.append(len(names))

    if not header:
        resolve(None)

    def parse(text: str, number: int) -> list[tuple[str, str, Timestamp]]:
        fields = _csv_fields(text, delimiter)
        if not width:
            needed = 1 + max(i for i in layout.values() if i is not None)
            if len(fields) < needed:
                raise BadLine(f"expected at least {needed} fields, found {len(fields)}: {text[:80]!r}")
            width.append(len(fields))
        if len(fields) != width[0]:
            raise BadLine(f"expected {width[0]} fields, found {len(fields)}: {text[:80]!r}")
        user = _text_id("user id", fields[layout["user"]])
        item = _text_id("item id", fields[layout["item"]])
        t = layout["time"]
        return [(user, item, number if t is None else _timestamp("timestamp", fields[t]))]

    return _parse_lines(path, parse, skip_bad_lines=skip_bad_lines, stats=stats, header=read_header if header else None)


def _column_index(col: str | int, role: str) -> int:
    try:
        index = int(col)
    except ValueError:
        raise SASRecError(f"without a header the {role} column must be a 0-based index, not {col!r}") from None
    if index < 0:
        raise SASRecError(f"the {role} column index must be >= 0, not {index}")
    return index


def read_movielens_csv(
    path: str | Path, *, skip_bad_lines: bool = False, stats: ReadStats | None = None
) -> Iterator[Row]:
    """MovieLens CSV ``userId,movieId,rating,timestamp`` with a header line (ml-latest, ml-20m, ml-25m)."""
    return read_csv(
        path,
        user_col="userId",
        item_col="movieId",
        time_col="timestamp",
        delimiter=",",
        header=True,
        skip_bad_lines=skip_bad_lines,
        stats=stats,
    )


def read_amazon_csv(path: str | Path, *, skip_bad_lines: bool = False, stats: ReadStats | None = None) -> Iterator[Row]:
    """Amazon "ratings only" CSV ``user,item,rating,timestamp`` (no header), e.g. ``ratings_Beauty.csv``."""
    return read_csv(
        path,
        user_col=0,
        item_col=1,
        time_col=3,
        delimiter=",",
        header=False,
        skip_bad_lines=skip_bad_lines,
        stats=stats,
    )


READERS: dict[str, Reader] = {
    "sasrec": read_sasrec,
    "per-user": read_per_user,
    "movielens-dat": read_movielens_dat,
    "movielens-csv": read_movielens_csv,
    "amazon-json": read_amazon_json,
    "amazon-csv": read_amazon_csv,
    "steam": read_steam,
    "csv": read_csv,
}
"""Format name -> reader. Every reader accepts ``(path, *, skip_bad_lines=False, stats=None)``;
``csv`` also takes ``user_col``, ``item_col``, ``time_col``, ``delimiter`` and ``header``."""


def read_rows(fmt: str, path: str | Path, **options: object) -> Iterator[Row]:
    """Look up ``fmt`` in :data:`READERS` and read ``path`` with it."""
    try:
        reader = READERS[fmt]
    except KeyError:
        raise SASRecError(f"unknown format {fmt!r}; choose one of: {', '.join(READERS)}") from None
    return reader(path, **options)
