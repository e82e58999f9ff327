"""Reading SASRec-format files: id spaces (unused, absurd and overflowing ids), strict numbers, BOM."""

from __future__ import annotations

import argparse
import gzip
import tracemalloc
from pathlib import Path

import pytest
from helpers import shared_file

from sasrec.data import preprocess
from sasrec.data.dataset import MAX_ID, load_sasrec_file, read_sasrec_file
from sasrec.errors import DataError


def write(tmp_path: Path, text: str | bytes, name: str = "log.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def error_of(path: Path) -> DataError:
    with pytest.raises(DataError) as info:
        read_sasrec_file(path)
    return info.value


# ------------------------------------------------------------------------------------------- unused ids


def test_catalogue_of_mostly_unused_ids_is_refused_with_the_fix(tmp_path):
    # 40 distinct items whose ids reach 200,000: the model would have 199,960 items nobody has.
    lines = [f"{u} {5000 * (4 * (u - 1) + j)}" for u in range(1, 11) for j in range(1, 5)]
    path = write(tmp_path, "\n".join(lines) + "\n")
    error = error_of(path)
    message = str(error)
    assert message.startswith(f"{path}: 199,960 of the item ids 1..200,000 never occur (only 40 distinct")
    assert error.line is None and "\n" not in message
    assert f"sasrec preprocess --format sasrec --min-count 1 --input {path} --out" in message


def test_the_suggested_command_renumbers_and_writes_id_maps(tmp_path, capsys):
    path = write(tmp_path, "7 5\n7 200000\n7 9\n3 9\n3 200000\n3 5\n3 99999999999999999999\n")
    with pytest.raises(DataError, match="raw key"):
        read_sasrec_file(path)
    parser = argparse.ArgumentParser()
    preprocess.add_arguments(parser)
    out = tmp_path / "renumbered"
    args = parser.parse_args(["--format", "sasrec", "--min-count", "1", "--input", str(path), "--out", str(out)])
    assert preprocess.run(args) == 0
    seqs, usage = load_sasrec_file(out / "log.txt")
    assert seqs.to_lists() == [[1, 2, 3], [3, 2, 1, 4]]  # users by first appearance: 7, then 3
    assert (usage.unused_items, usage.unused_users) == (0, 0)
    items = (out / "log.item_map.tsv").read_text().splitlines()
    assert items == ["new_id\toriginal_id", "1\t5", "2\t200000", "3\t9", "4\t99999999999999999999"]
    assert (out / "log.user_map.tsv").read_text().splitlines()[1:] == ["1\t7", "2\t3"]


def test_some_unused_ids_load_and_are_reported_on_one_line(tmp_path, capsys):
    # items 1..4 with 3 unused is refused, 1..4 with 1 unused loads; users 1, 2, 5 leave 2 unused ids.
    path = write(tmp_path, "1 1\n1 2\n2 1\n2 4\n5 2\n")
    seqs = read_sasrec_file(path)
    assert seqs.num_items == 4 and seqs.to_lists() == [[1, 2], [1, 4], [2]]
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"{path}: 1 of the item ids 1..4 never occur")
    assert "2 of the user ids 1..5 never occur (users are numbered 1..3 in ascending id order)" in err
    _, usage = load_sasrec_file(path)
    assert (usage.max_item, usage.items, usage.max_user, usage.users) == (4, 3, 5, 3)
    read_sasrec_file(path, report=False)
    assert capsys.readouterr().err == ""


def test_exactly_half_unused_loads_more_than_half_is_refused(tmp_path):
    assert read_sasrec_file(write(tmp_path, "1 1\n1 2\n1 6\n", "half.txt"), report=False).num_items == 6
    with pytest.raises(DataError, match="4 of the item ids 1..7 never occur"):
        read_sasrec_file(write(tmp_path, "1 1\n1 2\n1 7\n", "more.txt"))


@pytest.mark.parametrize(("name", "users", "items"), [("ml-1m.txt", 6040, 3416), ("Video.txt", 31013, 23715)])
def test_paper_files_have_dense_ids_and_load_silently(name, users, items, capsys):
    seqs, usage = load_sasrec_file(shared_file(name))
    assert (usage.max_user, usage.users, usage.max_item, usage.items) == (users, users, items, items)
    assert (seqs.num_users, seqs.num_items) == (users, items)
    read_sasrec_file(shared_file(name))
    assert capsys.readouterr().err == ""


# -------------------------------------------------------------------------------------------- absurd ids


@pytest.mark.parametrize(
    ("line", "what"),
    [
        ("1 3000000000", "item id 3000000000"),
        ("1 99999999999999999999", "item id 99999999999999999999"),  # overflows int64
        ("3000000000 1", "user id 3000000000"),
        ("99999999999999999999 1", "user id 99999999999999999999"),
        ("1 " + "9" * 5000, "item id " + "9" * 40 + "..."),  # beyond Python's int() digit limit
        (f"1 {MAX_ID + 1}", f"item id {MAX_ID + 1}"),
    ],
)
def test_absurd_id_is_a_line_error_before_any_allocation(tmp_path, line, what):
    path = write(tmp_path, f"1 1\n2 2\n\n{line}\n")
    tracemalloc.start()
    try:
        error = error_of(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert error.line == 4
    assert f"{what} is larger than 2,147,483,647" in str(error)
    assert "sasrec preprocess --format sasrec" in str(error)
    assert peak < 5_000_000  # nothing sized by the id (an item table for 3e9 ids is 24 GB)


def test_largest_valid_id_is_refused_as_unused_without_a_table_of_that_size(tmp_path):
    path = write(tmp_path, f"1 1\n1 {MAX_ID}\n")
    tracemalloc.start()
    try:
        error = error_of(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "2,147,483,645 of the item ids 1..2,147,483,647 never occur" in str(error)
    assert peak < 5_000_000


def test_leading_zeros_are_the_same_id(tmp_path):
    assert read_sasrec_file(write(tmp_path, "01 002\n1 1\n")).to_lists() == [[2, 1]]


# ------------------------------------------------------------------------------------- malformed numbers


@pytest.mark.parametrize(
    ("content", "line", "fragment"),
    [
        ("1 1\n1 +3\n", 2, "item id '+3' is not a positive integer"),
        ("1 1\n1 1_0\n", 2, "item id '1_0' is not a positive integer"),
        ("1 1\n-1 2\n", 2, "user id '-1' is not a positive integer"),
        ("1 1\n1 2.0\n", 2, "item id '2.0' is not a positive integer"),
        ("1 1\n1 1e3\n", 2, "item id '1e3' is not a positive integer"),
        ("1 1\n1 \u0663\n", 2, "item id '\u0663' is not a positive integer"),  # an Arabic-Indic digit
        ("1 1\n\n1 0\n", 3, "item id 0 must be a positive"),
        ("1 1\n1 2 3\n", 2, "expected 2 fields"),
        ("1 1\n1\x0b2\n", 2, "unexpected character '\\x0b'"),
        ("1 1\n2 1\n1 3\n", 3, "user 1 appears again after other users"),
        ("1 1\n\n\n2 1\n\n1 3\n", 6, "user 1 appears again after other users"),
    ],
)
def test_malformed_line_is_named(tmp_path, content, line, fragment):
    path = write(tmp_path, content)
    error = error_of(path)
    assert error.line == line and fragment in str(error), str(error)
    assert str(error).startswith(f"{path}, line {line}: ")


# ------------------------------------------------------------------------------------------------------ BOM


@pytest.mark.parametrize("compressed", [False, True])
def test_utf8_bom_is_ignored(tmp_path, compressed):
    content = b"\xef\xbb\xbf1 1\n1 2\n2 2\n"
    if compressed:
        path = write(tmp_path, gzip.compress(content), "log.txt.gz")
    else:
        path = write(tmp_path, content)
    assert read_sasrec_file(path).to_lists() == [[1, 2], [2]]
