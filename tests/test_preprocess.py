"""The paper's preprocessing rules, the output files and the ``sasrec preprocess`` arguments."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from helpers import FIXTURES, shared_file

from sasrec import atomic
from sasrec.atomic import write_files as write_atomically
from sasrec.data import download, preprocess, registry
from sasrec.data.dataset import file_sha256, read_sasrec_file
from sasrec.data.preprocess import keep_mask, preprocess_file, preprocess_rows
from sasrec.data.readers import read_rows
from sasrec.errors import ConfigError, DataError, SASRecError

CSV_OPTIONS = {"user_col": "user", "item_col": "item", "time_col": "time"}


def rows_of(triples: list[tuple[str, str, int]]) -> list[tuple[str, str, int, int]]:
    return [(u, i, t, n) for n, (u, i, t) in enumerate(triples, start=1)]


def decoded(result: preprocess.Processed) -> list[list[str]]:
    """Each user's sequence as original item ids, users in new-id order."""
    return [[result.item_ids[i - 1] for i in seq] for seq in result.sequences.to_lists()]


# ------------------------------------------------------------------------------------------------- rules


def test_one_pass_filter_keeps_short_users_but_kcore_drops_them():
    # min count 2. Item "y" has 1 row, so (c, y) goes; c still had 2 raw rows, so it stays with 1 row.
    rows = rows_of([("a", "x1", 1), ("a", "x2", 2), ("b", "x1", 3), ("b", "x2", 4), ("c", "x1", 5), ("c", "y", 6)])
    one_pass = preprocess_rows(rows, min_count=2)
    assert decoded(one_pass) == [["x1", "x2"], ["x1", "x2"], ["x1"]]
    assert one_pass.user_ids == ["a", "b", "c"]
    kcore = preprocess_rows(rows, min_count=2, kcore=True)
    assert decoded(kcore) == [["x1", "x2"], ["x1", "x2"]]
    assert kcore.user_ids == ["a", "b"]


def test_kcore_cascades_until_stable():
    rng = np.random.default_rng(2)
    users, items = rng.zipf(1.3, 1500) % 150, rng.zipf(1.3, 1500) % 150  # long-tailed, so filtering cascades
    one = keep_mask(users, items, 5)
    kcore = keep_mask(users, items, 5, kcore=True)
    for keep in (one, kcore):  # nothing outside the raw-count filter survives
        assert not (keep & ((np.bincount(users)[users] < 5) | (np.bincount(items)[items] < 5))).any()
    assert (one >= kcore).all() and one.sum() > kcore.sum() > 0
    assert (np.bincount(users[kcore])[np.unique(users[kcore])] >= 5).all()
    assert (np.bincount(items[kcore])[np.unique(items[kcore])] >= 5).all()
    assert (np.bincount(users[one])[np.unique(users[one])] < 5).any()  # one pass leaves short users


def test_counts_are_taken_on_the_raw_file_including_repeats():
    # "a" rates "x" twice: 2 raw rows count twice, as in the reference code.
    rows = rows_of([("a", "x", 1), ("a", "x", 2), ("b", "y", 3)])
    assert decoded(preprocess_rows(rows, min_count=2)) == [["x", "x"]]


def test_exact_duplicates_count_by_default_and_dedupe_drops_them_before_filtering():
    # "a" has x twice at time 1 (an exact duplicate) and x again at time 2 (a real repeat).
    rows = rows_of([("a", "x", 1), ("a", "x", 1), ("a", "x", 2), ("b", "x", 1), ("b", "y", 1), ("b", "y", 1)])
    paper = preprocess_rows(rows, min_count=2)
    assert decoded(paper) == [["x", "x", "x"], ["x", "y", "y"]]
    assert (paper.duplicates, paper.duplicates_kept) == (2, 2)
    deduped = preprocess_rows(rows, min_count=2, dedupe=True)
    assert decoded(deduped) == [["x", "x"], ["x"]]  # y has 1 row left, so it no longer passes the filter
    assert (deduped.duplicates, deduped.duplicates_kept) == (2, 0)


def test_integer_timestamps_beyond_float_precision_keep_their_order():
    # Nanosecond clock values 1 ns apart: equal as float64, so the old code kept file order.
    t = 1_700_000_000_000_000_000
    rows = rows_of([("u", "c", t + 2), ("u", "b", t + 1), ("u", "a", t), ("u", "half", 2.5), ("u", "two", 2)])
    assert decoded(preprocess_rows(rows, min_count=1)) == [["two", "half", "a", "b", "c"]]
    rows = rows_of([("u", "x", t + 1), ("u", "x", t)])  # not duplicates, however close
    assert preprocess_rows(rows, min_count=1).duplicates == 0


@pytest.mark.parametrize(
    ("header", "late", "early"),
    [
        # 1 ns apart: equal as float64 (spacing 2.4e-7 s at these times), so a float sort keeps file order.
        ("user,item,time", "1700000000.123456789", "1700000000.123456788"),
        ("user,item,time", "2023-11-14T22:13:20.123456789Z", "2023-11-14T22:13:20.123456788Z"),
        ("user,item,time", "2023-11-14T22:13:20.0000001+00:00", "2023-11-14T22:13:20Z"),
        ("user,item,time", "1.000000000000000002", "1.000000000000000001"),  # 1e-18 apart: the finest kept
    ],
)
def test_fractional_timestamps_beyond_float_precision_keep_their_order(tmp_path, header, late, early):
    raw = tmp_path / "log.csv"
    raw.write_text(f"{header}\nu,late,{late}\nu,early,{early}\n")
    preprocess_file(raw, tmp_path, "out", "csv", reader_options=CSV_OPTIONS, min_count=1, progress=False)
    rows = (tmp_path / "out.txt").read_text().split()
    item_map = dict(line.split("\t") for line in (tmp_path / "out.item_map.tsv").read_text().splitlines()[1:])
    assert [item_map[i] for i in rows[1::2]] == ["early", "late"]


def test_amazon_json_fractional_time_keeps_all_digits(tmp_path):
    raw = tmp_path / "reviews.json"
    lines = [
        {"reviewerID": "u", "asin": a, "unixReviewTime": t}
        for a, t in (("late", "1700000000.123456789"), ("early", "1700000000.123456788"))
    ]
    # Written as JSON numbers, not strings: a float parse of them would merge the two.
    raw.write_text(
        "".join(json.dumps(r).replace(f'"{r["unixReviewTime"]}"', r["unixReviewTime"]) + "\n" for r in lines)
    )
    times = [t for _u, _i, t, _n in read_rows("amazon-json", raw)]
    assert times == [Decimal("1700000000.123456789"), Decimal("1700000000.123456788")]
    assert decoded(preprocess_rows(read_rows("amazon-json", raw), min_count=1)) == [["early", "late"]]


def test_timestamp_finer_than_kept_is_a_line_error(tmp_path):
    raw = tmp_path / "log.csv"
    raw.write_text("user,item,time\nu,a,1\nu,b,1.0000000000000000001\n")
    with pytest.raises(DataError, match="line 3.*more than 18 digits after the point"):
        preprocess_file(raw, tmp_path, "out", "csv", reader_options=CSV_OPTIONS, min_count=1, progress=False)
    assert not (tmp_path / "out.txt").exists()


def test_stable_sort_by_time_ties_keep_file_order():
    rows = rows_of([("u", "late", 30), ("u", "tie1", 10), ("u", "tie2", 10), ("u", "early", 5), ("u", "tie3", 10)])
    result = preprocess_rows(rows, min_count=1)
    assert decoded(result) == [["early", "tie1", "tie2", "tie3", "late"]]


def test_items_numbered_by_first_kept_appearance_in_file_order():
    # "drop" is rare; "b" first appears in a dropped row (user "z" is rare) but is numbered when first kept.
    rows = rows_of(
        [
            ("z", "b", 1),
            ("u", "c", 9),
            ("u", "a", 1),
            ("v", "a", 2),
            ("v", "b", 3),
            ("u", "b", 5),
            ("v", "c", 1),
            ("w", "drop", 0),
        ]
    )
    result = preprocess_rows(rows, min_count=2)
    assert result.item_ids == ["c", "a", "b"]  # file order of first kept row, not time order
    assert result.sequences.to_lists() == [[2, 3, 1], [1, 2, 3]]  # u: a@1 b@5 c@9; v: c@1 a@2 b@3


def test_users_numbered_by_first_kept_interaction():
    # "late" appears first in the file, but its first row is dropped; "early" has the first kept row.
    rows = rows_of(
        [
            ("late", "rare", 1),
            ("early", "x", 2),
            ("late", "x", 3),
            ("late", "y", 4),
            ("early", "y", 5),
            ("late", "rare2", 6),
        ]
    )
    result = preprocess_rows(rows, min_count=2)
    assert result.user_ids == ["early", "late"]
    assert decoded(result) == [["x", "y"], ["x", "y"]]


def test_nothing_left_is_an_error():
    with pytest.raises(SASRecError, match="no interactions left"):
        preprocess_rows(rows_of([("a", "x", 1)]), min_count=5)
    with pytest.raises(ConfigError):
        preprocess_rows(rows_of([("a", "x", 1)]), min_count=-1)


# ------------------------------------------------------------------------------------------- output files


def test_outputs_and_stats(tmp_path):
    src = FIXTURES / "steam_reviews_sample.json"
    stats = preprocess_file(src, tmp_path, "Steamlet", "steam", min_count=2, dataset="steam", progress=False)
    seqs = read_sasrec_file(tmp_path / "Steamlet.txt")
    # dave (1 row) and item 400 (1 row) go; users: alice, Bob's Den, carol in order of first kept row.
    assert seqs.to_lists() == [[1, 3, 2], [2, 3, 1], [2, 1, 3]]
    user_map = (tmp_path / "Steamlet.user_map.tsv").read_text().splitlines()
    item_map = (tmp_path / "Steamlet.item_map.tsv").read_text().splitlines()
    assert user_map == ["new_id\toriginal_id", "1\talice", "2\tBob's Den", "3\tcarol"]
    assert item_map == ["new_id\toriginal_id", "1\t100", "2\t200", "3\t300"]
    on_disk = json.loads((tmp_path / "Steamlet.stats.json").read_text())
    assert on_disk == stats
    assert (stats["users"], stats["items"], stats["interactions"]) == (3, 3, 9)
    assert stats["raw"] == {
        "rows": 10,
        "users": 4,
        "items": 4,
        "duplicates": 0,
        "lines": 10,
        "skipped_lines": 0,
        "skipped_examples": [],
    }
    assert stats["duplicates"] == 0 and stats["settings"]["dedupe"] is False
    assert stats["length"] == {"min": 3, "mean": 3.0, "median": 3.0, "p90": 3.0, "p99": 3.0, "max": 3}
    assert stats["settings"]["min_count"] == 2 and stats["settings"]["kcore"] is False
    assert stats["source"]["sha256"] == file_sha256(src)


def test_map_escapes_tabs_and_newlines(tmp_path):
    path = tmp_path / "log.tsv"
    path.write_text('user\titem\n"a\tb"\ti1\n"c\\d"\ti1\n')
    options = {"user_col": "user", "item_col": "item", "time_col": None, "delimiter": "\t"}
    preprocess_file(path, tmp_path, "esc", "csv", min_count=1, progress=False, reader_options=options)
    assert (tmp_path / "esc.user_map.tsv").read_text().splitlines()[1:] == ["1\ta\\tb", "2\tc\\\\d"]


def test_refuses_to_overwrite_without_force(tmp_path):
    src = FIXTURES / "steam_reviews_sample.json"
    preprocess_file(src, tmp_path, "S", "steam", min_count=2, progress=False)
    (tmp_path / "S.txt").write_text("keep me\n")
    with pytest.raises(SASRecError, match="S.txt already exists.*pass --force"):
        preprocess_file(src, tmp_path, "S", "steam", min_count=2, progress=False)
    assert (tmp_path / "S.txt").read_text() == "keep me\n"
    preprocess_file(src, tmp_path, "S", "steam", min_count=2, progress=False, force=True)
    assert read_sasrec_file(tmp_path / "S.txt").num_users == 3
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    good, bad = tmp_path / "good.txt", tmp_path / "bad.txt"

    def fail(path: Path) -> None:
        path.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomically({good: lambda p: p.write_text("done"), bad: fail})
    assert list(tmp_path.iterdir()) == []  # neither target, nor temporary files


def _stale_temps(directory: Path, target: str) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name.startswith(f".{target}.") and p.suffix == ".tmp")


def test_temp_files_of_a_killed_run_are_removed_by_the_next(tmp_path):
    target = tmp_path / "out" / "S.txt"
    script = (
        f"import time; from pathlib import Path; from sasrec.atomic import write_files as write_atomically; "
        f"write_atomically({{Path({str(target)!r}): lambda p: (p.write_text('half'), time.sleep(60))}})"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.monotonic() + 30
        while not (target.parent.exists() and _stale_temps(target.parent, "S.txt")):
            assert time.monotonic() < deadline and child.poll() is None, "the writer never started"
            time.sleep(0.05)
    finally:
        child.kill()  # SIGKILL: no cleanup runs
        child.wait()
    assert len(_stale_temps(target.parent, "S.txt")) == 1 and not target.exists()
    write_atomically({target: lambda p: p.write_text("done")})
    assert target.read_text() == "done"
    assert _stale_temps(target.parent, "S.txt") == []


def test_temp_files_that_cannot_be_checked_are_removed_when_old(tmp_path):
    target = tmp_path / "S.txt"
    old = tmp_path / ".S.txt.abcd1234.tmp"  # no process in the name (older naming, or another host)
    old.write_text("older naming")
    os.utime(old, (time.time() - 2 * atomic.STALE_AFTER_S,) * 2)
    remote_old = tmp_path / ".S.txt.12345@elsewhere.ijkl9012.tmp"
    remote_old.write_text("another host's, dead long ago")
    fresh = tmp_path / ".S.txt.12345@elsewhere.efgh5678.tmp"
    fresh.write_text("another host's, maybe still writing")
    other = tmp_path / ".S.txt.gz.123.abcd1234.tmp"  # belongs to another target
    other.write_text("not ours")
    for path in (old, remote_old, other):
        os.utime(path, (time.time() - 2 * atomic.STALE_AFTER_S,) * 2)
    write_atomically({target: lambda p: p.write_text("done")})
    assert _stale_temps(tmp_path, "S.txt") == [fresh, other]


def test_temp_files_of_a_live_writer_are_kept(tmp_path):
    target = tmp_path / "S.txt"
    live = tmp_path / f".S.txt.{os.getppid()}@{socket.gethostname()}.abcd1234.tmp"
    live.write_text("still writing")
    write_atomically({target: lambda p: p.write_text("done")})
    assert live.exists()


def test_download_part_files_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".raw.json.gz.{int(dead.stdout)}@{socket.gethostname()}.abcd1234.part"
    stale.write_bytes(b"half a download")
    download._write_atomically(tmp_path / "raw.json.gz", lambda out: out.write(b"all"))
    assert [p.name for p in tmp_path.iterdir()] == ["raw.json.gz"]


def test_bad_input_is_a_data_error_naming_the_line(tmp_path):
    path = tmp_path / "ratings.dat"
    path.write_text("1::2::5::100\n1::2::5\n")
    with pytest.raises(DataError, match=r"ratings.dat, line 2: expected 4 fields"):
        preprocess_file(path, tmp_path, "x", "movielens-dat", progress=False)
    assert not list(tmp_path.glob("x.*"))


def test_skip_bad_lines_is_recorded_in_stats(tmp_path):
    path = tmp_path / "ratings.dat"
    path.write_text("1::2::5::100\nbroken\n1::3::5::101\n")
    stats = preprocess_file(path, tmp_path, "x", "movielens-dat", min_count=1, skip_bad_lines=True, progress=False)
    assert stats["raw"]["skipped_lines"] == 1
    assert stats["raw"]["skipped_examples"][0]["line"] == 2
    assert stats["interactions"] == 2


# ---------------------------------------------------------------------------------------------------- CLI


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    preprocess.add_arguments(parser)
    return parser.parse_args(argv)


def test_run_with_preset_and_format(tmp_path, capsys):
    args = parse(
        [
            "--dataset",
            "steam",
            "--input",
            str(FIXTURES / "steam_reviews_sample.json"),
            "--out",
            str(tmp_path),
            "--min-count",
            "2",
        ]
    )
    assert preprocess.run(args) == 0
    out = capsys.readouterr().out
    assert "Steam.txt" in out and "3 users, 3 items, 9 interactions" in out
    assert (tmp_path / "Steam.stats.json").exists()


def test_run_counts_duplicates_in_summary_and_stats(tmp_path, capsys):
    path = tmp_path / "log.csv"
    path.write_text("user,item,time\n" + "u,a,1\nu,a,1\nu,b,2\nv,a,1\nv,b,3\nv,b,3\nv,b,3\n")
    argv = [
        "--format",
        "csv",
        "--input",
        str(path),
        "--user-col",
        "user",
        "--item-col",
        "item",
        "--time-col",
        "time",
        "--min-count",
        "1",
    ]
    assert preprocess.run(parse([*argv, "--out", str(tmp_path / "paper")])) == 0
    assert (
        "3 exact duplicate rows (same user, item and time): kept as the paper does, 3 of them in the "
        "output; --dedupe drops them"
    ) in capsys.readouterr().out
    stats = json.loads((tmp_path / "paper" / "log.stats.json").read_text())
    assert (stats["raw"]["duplicates"], stats["duplicates"], stats["interactions"]) == (3, 3, 7)
    assert preprocess.run(parse([*argv, "--out", str(tmp_path / "dedupe"), "--dedupe"])) == 0
    assert "3 exact duplicate rows (same user, item and time): dropped (--dedupe)" in capsys.readouterr().out
    stats = json.loads((tmp_path / "dedupe" / "log.stats.json").read_text())
    assert (stats["raw"]["duplicates"], stats["duplicates"], stats["interactions"]) == (3, 0, 4)
    assert stats["settings"]["dedupe"] is True
    assert read_sasrec_file(tmp_path / "dedupe" / "log.txt").to_lists() == [[1, 2], [1, 2]]


def test_iso_timestamps_order_rows(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user,item,time\nu,late,2020-01-02T00:00:00Z\nu,early,2020-01-01\nu,mid,2020-01-01T12:00\n")
    options = {"user_col": "user", "item_col": "item", "time_col": "time", "delimiter": ","}
    preprocess_file(path, tmp_path, "iso", "csv", min_count=1, progress=False, reader_options=options)
    assert (tmp_path / "iso.item_map.tsv").read_text().splitlines()[1:] == ["1\tlate", "2\tearly", "3\tmid"]
    assert read_sasrec_file(tmp_path / "iso.txt").to_lists() == [[2, 3, 1]]


def test_run_generic_tsv(tmp_path, capsys):
    args = parse(
        [
            "--format",
            "csv",
            "--input",
            str(FIXTURES / "events.tsv"),
            "--out",
            str(tmp_path),
            "--user-col",
            "session",
            "--item-col",
            "product",
            "--time-col",
            "ts",
            "--delimiter",
            "tab",
            "--min-count",
            "1",
        ]
    )
    assert preprocess.run(args) == 0
    assert read_sasrec_file(tmp_path / "events.txt").to_lists() == [[2, 1], [2]]  # s1: p8@20 p9@30


@pytest.mark.parametrize(
    "argv",
    [
        ["--input", "x"],  # no dataset, no format
        ["--format", "csv", "--input", "x"],  # csv without columns
        ["--dataset", "ml-1m", "--input", "x", "--user-col", "u"],  # column option without csv
        ["--format", "csv", "--input", "x", "--user-col", "u", "--item-col", "i", "--delimiter", "::"],
    ],
)
def test_run_rejects_bad_option_combinations(argv, tmp_path):
    with pytest.raises(ConfigError):
        preprocess.run(parse([*argv, "--out", str(tmp_path)]))


def test_run_refuses_an_ambiguous_csv_header_and_writes_nothing(tmp_path):
    raw = tmp_path / "raw.csv"
    raw.write_text("user,item,item,ts\n" + "".join(f"u{n % 2},a{n},b{n},{n}\n" for n in range(10)))
    argv = ["--format", "csv", "--input", str(raw), "--user-col", "user", "--item-col", "item", "--time-col", "ts"]
    with pytest.raises(DataError) as caught:
        preprocess.run(parse([*argv, "--min-count", "1", "--out", str(tmp_path / "out")]))
    message = str(caught.value)
    assert message.startswith(f"{raw}, line 1: header names the item column 'item' more than once (fields 2, 3 ")
    assert "\n" not in message
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_run_without_input_points_at_download(tmp_path):
    args = parse(["--dataset", "beauty", "--raw-dir", str(tmp_path), "--out", str(tmp_path)])
    with pytest.raises(ConfigError, match="reviews_Beauty.json.gz does not exist.*--download"):
        preprocess.run(args)


# ----------------------------------------------------------------------- real samples vs. a plain reference


def reference(rows: list[tuple[str, str, float]], min_count: int = 5) -> tuple[list, list, list]:
    """kang205/SASRec DataProcessing.py re-stated in plain Python (an independent check)."""
    count_u: dict[str, int] = defaultdict(int)
    count_i: dict[str, int] = defaultdict(int)
    for u, i, _ in rows:
        count_u[u] += 1
        count_i[i] += 1
    user_map: dict[str, int] = {}
    item_map: dict[str, int] = {}
    per_user: dict[int, list] = {}
    for u, i, t in rows:
        if count_u[u] < min_count or count_i[i] < min_count:
            continue
        uid = user_map.setdefault(u, len(user_map) + 1)
        iid = item_map.setdefault(i, len(item_map) + 1)
        per_user.setdefault(uid, []).append((t, iid))
    seqs = [[iid for _, iid in sorted(per_user[uid], key=lambda x: x[0])] for uid in sorted(per_user)]
    return list(user_map), list(item_map), seqs


@pytest.mark.parametrize(
    ("sample", "dataset"),
    [
        ("raw_samples/reviews_Musical_Instruments_5.json", "beauty"),
        ("raw_samples/ml-1m_ratings_sample100k.dat", "ml-1m"),
    ],
)
def test_real_sample_matches_plain_reference(tmp_path, sample, dataset):
    path = shared_file(sample)
    fmt = registry.DATASETS[dataset].raw_format
    stats = preprocess_file(path, tmp_path, "out", fmt, dataset=dataset, progress=False)
    users, items, seqs = reference([(u, i, t) for u, i, t, _ in read_rows(fmt, path)])
    assert read_sasrec_file(tmp_path / "out.txt").to_lists() == seqs
    assert (tmp_path / "out.user_map.tsv").read_text().split("\n")[1:-1] == [
        f"{n}\t{u}" for n, u in enumerate(users, 1)
    ]
    assert (tmp_path / "out.item_map.tsv").read_text().split("\n")[1:-1] == [
        f"{n}\t{i}" for n, i in enumerate(items, 1)
    ]
    assert (stats["users"], stats["items"]) == (len(users), len(items))


def test_amazon_2018_sample_duplicates():
    # The 2018 "5-core" files repeat reviews verbatim; the 2014 sample above has none.
    path = shared_file("raw_samples/All_Beauty_5.json")
    rows = [(u, i, t) for u, i, t, _ in read_rows("amazon-json", path)]
    paper = preprocess_rows(rows_of(rows))
    assert (paper.duplicates, paper.duplicates_kept) == (1108, 1090) == (len(rows) - len(set(rows)), 1090)
    deduped = preprocess_rows(rows_of(rows), dedupe=True)
    assert (deduped.sequences.num_users, len(deduped.sequences.items), deduped.duplicates_kept) == (194, 994, 0)


@pytest.mark.parametrize("stop", [KeyboardInterrupt, OSError])
def test_a_write_stopped_midway_leaves_no_directory_it_made(stop: type[BaseException], tmp_path: Path) -> None:
    """Ctrl-C while `sasrec preprocess` wrote its files left the --out directory behind, empty."""
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("the user's")

    def fails(path: Path) -> None:
        raise stop()

    writers = {tmp_path / "new" / "deep" / "a.txt": lambda p: p.write_text("a"), tmp_path / "new" / "b.txt": fails}
    with pytest.raises(stop):
        write_atomically(writers)
    assert not (tmp_path / "new").exists()
    with pytest.raises(stop):
        write_atomically({tmp_path / "mine" / "a.txt": fails})
    assert os.listdir(tmp_path / "mine") == ["keep.txt"]
