"""Streaming raw-format readers: real samples (when the shared data is present), fixtures, bad input."""

from __future__ import annotations

import gzip
import shutil
from decimal import Decimal
from pathlib import Path

import pytest
from helpers import FIXTURES, shared_file

from sasrec.data.dataset import read_sasrec_file
from sasrec.data.readers import READERS, ReadStats, read_csv, read_rows
from sasrec.errors import DataError, SASRecError


def gzipped(path: Path, tmp_path: Path) -> Path:
    out = tmp_path / (path.name + ".gz")
    with open(path, "rb") as src, gzip.open(out, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return out


def summary(rows: list) -> tuple[int, int, int]:
    return len(rows), len({r[0] for r in rows}), len({r[1] for r in rows})


def test_registry_lists_every_format():
    assert set(READERS) == {
        "sasrec",
        "per-user",
        "movielens-dat",
        "movielens-csv",
        "amazon-json",
        "amazon-csv",
        "steam",
        "csv",
    }
    with pytest.raises(SASRecError, match="unknown format"):
        read_rows("parquet", FIXTURES / "events.tsv")


# --------------------------------------------------------------------------------------------- real data


@pytest.mark.parametrize("compressed", [False, True])
def test_movielens_dat_sample(tmp_path, compressed):
    path = shared_file("raw_samples/ml-1m_ratings_sample100k.dat")
    if compressed:
        path = gzipped(path, tmp_path)
    rows = list(read_rows("movielens-dat", path))
    assert summary(rows) == (100_000, 5958, 3312)  # PROVENANCE.md
    assert rows[0] == ("5488", "488", 959821507, 1)
    assert rows[-1][3] == 100_000
    assert min(r[2] for r in rows) == 956704519 and max(r[2] for r in rows) == 1046368462


@pytest.mark.parametrize("compressed", [False, True])
def test_amazon_json_2014_sample(tmp_path, compressed):
    path = shared_file("raw_samples/reviews_Musical_Instruments_5.json")
    if compressed:
        path = gzipped(path, tmp_path)
    rows = list(read_rows("amazon-json", path))
    assert summary(rows) == (10_261, 1429, 900)
    assert rows[0] == ("A2IBPI20UZIR0U", "1384719342", 1393545600, 1)


def test_amazon_json_2018_sample():
    rows = list(read_rows("amazon-json", shared_file("raw_samples/All_Beauty_5.json")))
    assert summary(rows) == (5269, 991, 85)
    assert rows[0] == ("A3CIUOJXQ5VDQ2", "B0000530HU", 1472688000, 1)


def test_sasrec_reader_agrees_with_read_sasrec_file():
    path = shared_file("Video.txt")
    rows = list(read_rows("sasrec", path))
    assert summary(rows) == (287_107, 31_013, 23_715)
    seqs = read_sasrec_file(path)
    assert [int(r[1]) for r in rows] == seqs.items.tolist()
    assert [r[2] for r in rows] == list(range(1, len(rows) + 1))  # timestamp = line index


def test_per_user_sample():
    rows = list(read_rows("per-user", shared_file("Beauty_S3Rec_5core.txt")))
    assert summary(rows) == (198_502, 22_363, 12_101)
    assert [r[1] for r in rows[:5]] == ["1", "2", "3", "4", "5"] and rows[0][0] == "1"
    assert [r[2] for r in rows[:7]] == list(range(7))  # running item index keeps the line order
    assert rows[5][3] == 2  # the second user's first item comes from line 2


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.mark.parametrize("compressed", [False, True])
def test_steam_python_literal_lines(tmp_path, compressed):
    path = FIXTURES / "steam_reviews_sample.json"
    if compressed:
        path = gzipped(path, tmp_path)
    rows = list(read_rows("steam", path))
    assert summary(rows) == (10, 4, 4)
    assert rows[0] == ("alice", "100", 1513468800, 1)  # 2017-12-17 00:00 UTC
    assert rows[1][0] == "Bob's Den"  # repr() switches to double quotes for this one
    assert rows[7] == ("dave", "400", 1435968000, 8)


def test_steam_rejects_json_style_literals(tmp_path):
    path = tmp_path / "steam.json"
    path.write_text('{"username": "a", "product_id": "1", "date": "2017-01-01", "early_access": false}\n')
    with pytest.raises(DataError, match=r"line 1: malformed line"):
        list(read_rows("steam", path))


@pytest.mark.parametrize("compressed", [False, True])
def test_movielens_csv(tmp_path, compressed):
    path = FIXTURES / "movielens_ratings.csv"
    if compressed:
        path = gzipped(path, tmp_path)
    rows = list(read_rows("movielens-csv", path))
    assert rows[0] == ("7", "42", 1100000300, 2)  # line 1 is the header
    assert summary(rows) == (6, 3, 5)


def test_amazon_csv():
    rows = list(read_rows("amazon-csv", FIXTURES / "amazon_ratings.csv"))
    assert rows[0] == ("AUSERALPHA0001", "B0ITEM0001", 1369699200, 1)
    assert summary(rows) == (4, 3, 2)


@pytest.mark.parametrize("compressed", [False, True])
def test_generic_tsv_by_column_name(tmp_path, compressed):
    path = FIXTURES / "events.tsv"
    if compressed:
        path = gzipped(path, tmp_path)
    rows = list(read_csv(path, user_col="session", item_col="product", time_col="ts", delimiter="\t"))
    assert rows == [("s1", "p9", 30, 2), ("s2", "p8", 10, 3), ("s1", "p8", 20, 4)]


def test_generic_csv_without_header_or_time(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("u1;i1\nu2;i2\n\nu1;i3\n")
    rows = list(read_csv(path, user_col=0, item_col=1, time_col=None, delimiter=";", header=False))
    assert rows == [("u1", "i1", 1, 1), ("u2", "i2", 2, 2), ("u1", "i3", 4, 4)]  # blank line 3 skipped


def test_generic_csv_missing_column_names_the_columns():
    with pytest.raises(DataError, match=r"events.tsv, line 1: header has no user column 'user' \(columns: s"):
        list(read_csv(FIXTURES / "events.tsv", delimiter="\t"))


@pytest.mark.parametrize("role", ["user", "item", "time"])
def test_generic_csv_refuses_a_chosen_column_name_the_header_holds_twice(tmp_path, role):
    columns = {"user": "user,user,item,ts", "item": "user,item,item,ts", "time": "ts,user,item,ts"}[role]
    path = tmp_path / "log.csv"
    path.write_text(f"{columns}\nu1,i1,i2,5\n")
    name = {"user": "user", "item": "item", "time": "ts"}[role]
    with pytest.raises(DataError, match=rf"log.csv, line 1: header names the {role} column '{name}' more than once"):
        list(read_csv(path, user_col="user", item_col="item", time_col="ts"))


def test_generic_csv_allows_a_repeated_column_name_it_does_not_read(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user,note,item,note\nu1,x,i1,y\n")
    assert list(read_csv(path, user_col="user", item_col="item", time_col=None)) == [("u1", "i1", 2, 2)]


def test_reader_is_lazy():
    rows = read_rows("sasrec", FIXTURES / "events.tsv")  # would fail on line 1, but nothing is read yet
    with pytest.raises(DataError):
        next(rows)


# ------------------------------------------------------------------------------------------------ bad input


def _truncated_gzip(tmp_path: Path) -> Path:
    path = tmp_path / "ratings.dat.gz"
    data = gzip.compress(b"".join(b"%d::%d::5::%d\n" % (i, i, 1000 + i) for i in range(1, 2000)))
    path.write_bytes(data[: len(data) // 2])
    return path


GOOD_JSON = b'{"reviewerID": "A", "asin": "B", "unixReviewTime": 1}\n'
BAD_INPUTS = [
    # (format, file content, expected line, message fragment)
    ("sasrec", b"", None, "file is empty"),
    ("sasrec", b"\n  \n", None, "file is empty"),
    ("sasrec", b"1 1\n1 2 3\n", 2, "expected 2 fields"),
    ("sasrec", b"1 1\n1 x\n", 2, "item id 'x' is not a non-negative integer"),
    ("per-user", b"1 2 3\n4\n", 2, "expected 'user item"),
    ("per-user", b"1 2 3\nu 1\n", 2, "user id 'u' is not"),
    ("movielens-dat", b"1::2::5::100\n1::3::5\n", 2, "expected 4 fields"),
    ("movielens-dat", b"1::2::5::100\n1::3.5::5::100\n", 2, "MovieID '3.5' is not"),
    ("movielens-dat", b"1::2::5::100\n1::3::5::soon\n", 2, "Timestamp 'soon' is not a number"),
    ("movielens-csv", b"user,movie,rating,timestamp\n1,2,5,100\n", 1, "header has no user column 'userId'"),
    ("movielens-csv", b"userId,movieId,rating,timestamp\n", None, "header but no data lines"),
    ("movielens-csv", b"userId,movieId,rating,timestamp\n1,2,5,100\n1,2,5\n", 3, "expected 4 fields"),
    ("amazon-csv", b"A,B,5.0,100\nA,B,5.0\n", 2, "expected 4 fields"),
    ("amazon-json", GOOD_JSON + b'{"reviewerID": "A", "asin"\n', 2, "malformed JSON"),
    ("amazon-json", GOOD_JSON + b'{"asin": "B", "unixReviewTime": 1}\n', 2, "missing key 'reviewerID'"),
    ("amazon-json", b"[1, 2]\n", 1, "expected a JSON object"),
    (
        "steam",
        b"{'username': 'a', 'product_id': '1', 'date': '2017-01-01'}\n{'username': 'a', 'date'\n",
        2,
        "malformed line",
    ),
    (
        "steam",
        b"{'username': 'a', 'product_id': '1', 'date': '2017-01-01'}\n{'username': 'a', 'date': 'x'}\n",
        2,
        "missing key 'product_id'",
    ),
    ("steam", b"{'username': 'a', 'product_id': '1', 'date': '17/01/01'}\n", 1, "is not YYYY-MM-DD"),
    ("movielens-dat", b"1::2::5::100\n\xff\xfe::2::5::100\n", 2, "not valid UTF-8"),
]


@pytest.mark.parametrize(("fmt", "content", "line", "fragment"), BAD_INPUTS)
def test_bad_input_names_file_and_line(tmp_path, fmt, content, line, fragment):
    path = tmp_path / "input.data"
    path.write_bytes(content)
    with pytest.raises(DataError) as info:
        list(read_rows(fmt, path))
    message = str(info.value)
    assert str(path) in message and fragment in message
    assert info.value.line == line
    if line is not None:
        assert f"line {line}:" in message


def test_missing_file_fails_when_the_reader_is_created(tmp_path):
    with pytest.raises(DataError, match="file not found") as info:
        read_rows("amazon-json", tmp_path / "nope.json.gz")
    assert str(tmp_path / "nope.json.gz") in str(info.value)
    with pytest.raises(DataError, match="is a directory"):
        read_rows("sasrec", tmp_path)


def test_empty_gzip_file(tmp_path):
    path = tmp_path / "empty.json.gz"
    path.write_bytes(gzip.compress(b""))
    with pytest.raises(DataError, match="file is empty"):
        list(read_rows("amazon-json", path))


def test_truncated_gzip(tmp_path):
    path = _truncated_gzip(tmp_path)
    stats = ReadStats()
    with pytest.raises(DataError, match="truncated or corrupt") as info:
        for _ in read_rows("movielens-dat", path, skip_bad_lines=True, stats=stats):
            pass
    assert str(path) in str(info.value)
    assert info.value.line == stats.lines + 1 > 1


def test_not_gzip_despite_the_name(tmp_path):
    path = tmp_path / "plain.json.gz"
    path.write_text('{"reviewerID": "A", "asin": "B", "unixReviewTime": 1}\n')
    with pytest.raises(DataError, match=r"line 1: cannot read"):
        list(read_rows("amazon-json", path))


def test_skip_bad_lines_counts_and_keeps_examples(tmp_path):
    path = tmp_path / "ratings.dat"
    lines = ["1::2::5::100", "oops", "1::3::5::101", "2::x::4::5", "", "2::3::4::6"] + ["bad"] * 6
    path.write_text("\n".join(lines) + "\n")
    stats = ReadStats()
    rows = list(read_rows("movielens-dat", path, skip_bad_lines=True, stats=stats))
    assert [r[3] for r in rows] == [1, 3, 6]
    assert stats.rows == 3 and stats.skipped == 8 and stats.lines == 12
    assert [n for n, _ in stats.examples] == [2, 4, 7, 8, 9]  # the first 5 only
    assert "MovieID 'x'" in stats.examples[1][1]
    assert stats.summary().startswith("skipped 8 bad lines (line 2: expected 4 fields")


def test_skip_bad_lines_does_not_skip_a_bad_header(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text("user,item\n1,2\n")
    with pytest.raises(DataError, match="line 1: header has no user column"):
        list(read_rows("movielens-csv", path, skip_bad_lines=True))


# ---------------------------------------------------------------------------------- byte-order mark, numbers

BOM = b"\xef\xbb\xbf"


@pytest.mark.parametrize(
    ("fmt", "content", "first"),
    [
        ("movielens-csv", BOM + b"userId,movieId,rating,timestamp\n1,2,5,100\n", ("1", "2", 100, 2)),
        ("movielens-dat", BOM + b"1::2::5::100\n", ("1", "2", 100, 1)),
        ("amazon-json", BOM + GOOD_JSON, ("A", "B", 1, 1)),
        ("amazon-csv", BOM + b"A,B,5.0,100\n", ("A", "B", 100, 1)),
        ("sasrec", BOM + b"1 2\n", ("1", "2", 1, 1)),
        ("per-user", BOM + b"1 2 3\n", ("1", "2", 0, 1)),
        ("steam", BOM + b"{'username': 'a', 'product_id': '1', 'date': '1970-01-02'}\n", ("a", "1", 86400, 1)),
    ],
)
@pytest.mark.parametrize("compressed", [False, True])
def test_utf8_bom_is_stripped_in_every_reader(tmp_path, fmt, content, first, compressed):
    path = tmp_path / "input.data"
    path.write_bytes(gzip.compress(content) if compressed else content)
    assert next(read_rows(fmt, path)) == first


def test_csv_header_with_bom_finds_the_first_column(tmp_path):
    path = tmp_path / "log.csv"
    path.write_bytes(BOM + b"user_id,item_id,ts\nu1,i1,5\n")
    assert list(read_csv(path, user_col="user_id", item_col="item_id", time_col="ts")) == [("u1", "i1", 5, 2)]


@pytest.mark.parametrize(
    ("fmt", "line", "fragment"),
    [
        ("sasrec", b"+3 1", "user id '+3' is not a non-negative integer"),
        ("sasrec", b"1 1_0", "item id '1_0' is not a non-negative integer"),
        ("per-user", b"1 2 \xd9\xa3", "item id '\u0663' is not a non-negative integer"),  # str.isdigit says yes
        ("per-user", b"1 2 \xc2\xb2", "item id '\u00b2' is not a non-negative integer"),  # superscript two
        ("movielens-dat", b"1::2::5::nan", "Timestamp 'nan' is not a finite number"),
        ("movielens-dat", b"1::2::5::inf", "Timestamp 'inf' is not a finite number"),
        ("movielens-dat", b"1::2::5::-Infinity", "Timestamp '-Infinity' is not a finite number"),
        ("movielens-dat", b"1::2::5::1e400", "Timestamp '1e400' is out of range"),
        ("movielens-dat", b"1::2::5::1_000", "Timestamp '1_000' is not a number or an ISO-8601 date/time"),
        ("movielens-dat", b"1::2::5::+100", "Timestamp '+100' is not a number"),
        ("movielens-dat", b"1::2::5::99999999999999999999", "Timestamp '99999999999999999999' is out of range"),
        ("movielens-dat", b"1::2::5::2023-13-01", "Timestamp '2023-13-01' is not a valid ISO-8601 date/time"),
        ("amazon-json", b'{"reviewerID": "A", "asin": "B", "unixReviewTime": NaN}', "unixReviewTime 'nan' is not"),
        ("amazon-csv", b"A,B,5.0,Infinity", "timestamp 'Infinity' is not a finite number"),
    ],
)
def test_malformed_number_is_a_line_error(tmp_path, fmt, line, fragment):
    path = tmp_path / "input.data"
    path.write_bytes(b"\n" + line + b"\n")
    with pytest.raises(DataError) as info:
        list(read_rows(fmt, path))
    assert info.value.line == 2 and fragment in str(info.value), str(info.value)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1700000000123456789", 1700000000123456789),  # a nanosecond clock: kept exact, as an int
        ("-5", -5),
        ("1.5", Decimal("1.5")),  # a fraction of a second: exact, never a float
        ("1.7e9", 1_700_000_000),
        ("1700000000.123456789", Decimal("1700000000.123456789")),
        ("2017-12-17", 1513468800),
        ("2017-12-17T10:00:00", 1513504800),  # no zone: UTC
        ("2017-12-17 10:00:00+02:00", 1513497600),
        ("2017-12-17T10:00:00Z", 1513504800),
        ("2017-12-17T10:00:00.25Z", Decimal("1513504800.25")),
        ("2017-12-17T10:00:00.123456789Z", Decimal("1513504800.123456789")),  # datetime keeps only 6 digits
        ("2017-12-17T10:00:00.000Z", 1513504800),
    ],
)
def test_timestamp_forms(tmp_path, text, seconds):
    path = tmp_path / "log.csv"
    path.write_text(f"user,item,time\nu,i,{text}\n")
    (row,) = read_csv(path, user_col="user", item_col="item", time_col="time")
    assert row[2] == seconds and type(row[2]) is type(seconds)
