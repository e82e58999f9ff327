"""Turn a raw interaction log into a SASRec-format dataset, following the paper's preprocessing.

The rules are those of kang205/SASRec ``data/DataProcessing.py`` (see ``shared/data/PROVENANCE.md``):

1. Implicit feedback: every interaction is kept whatever its rating.
2. Interactions are counted per user and per item on the whole raw file, and every row whose user or item
   has fewer than ``min_count`` (5) rows is dropped, in ONE pass: users left with fewer than 5 rows stay.
   ``kcore=True`` instead repeats the filter until every user and item has at least ``min_count`` rows.
   Exact duplicates (same user, item and timestamp) count and are kept, as in the paper's script; they are
   counted in the stats, and ``dedupe=True`` keeps only the first of each before filtering.
3. Users are numbered 1.. in the order of their first kept row, items 1.. in the order of their first
   appearance among kept rows (both in file order).
4. Each user's rows are stable-sorted by timestamp (ties keep file order); output is grouped by user id.

Outputs in the output directory, written atomically (temporary file + ``os.replace``): ``NAME.txt``
(SASRec format), ``NAME.user_map.tsv`` and ``NAME.item_map.tsv`` (``new_id<TAB>original_id``; a tab,
newline or backslash inside an original id is written as ``\\t``, ``\\n``, ``\\\\``) and ``NAME.stats.json``.
Temporary files left by a killed run are removed by the next write to the same outputs.

The raw file is read once, streaming; only compact arrays (two int32 codes, an int64 timestamp and an int64
fraction of a second per row) and one dict entry per distinct user and item are held in memory.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from sasrec import argtypes
from sasrec.atomic import refuse_overwrite, write_files
from sasrec.data import registry
from sasrec.data.dataset import Sequences, file_sha256, write_sasrec_file
from sasrec.data.readers import READERS, ReadStats, Row, read_rows, split_seconds
from sasrec.errors import ConfigError, SASRecError

OUTPUT_SUFFIXES = {
    "sequences": ".txt",
    "user_map": ".user_map.tsv",
    "item_map": ".item_map.tsv",
    "stats": ".stats.json",
}

_DELIMITERS = {"tab": "\t", "\\t": "\t", "comma": ",", "space": " ", "semicolon": ";", "pipe": "|"}


# ---------------------------------------------------------------------------------------------- pipeline


@dataclass(frozen=True)
class RawLog:
    """The raw rows as compact arrays; ``users``/``items`` are codes into ``user_ids``/``item_ids``
    (numbered by first appearance in the raw file), in file order.

    A timestamp ``t`` is held as ``times = floor(t)`` (int64 seconds) plus ``fractions``, the rest in integer
    units of 10**-18 s (int64 in ``[0, 10**18)``, see :func:`~sasrec.data.readers.split_seconds`): timestamps
    then compare exactly however large or fine (a float64 would merge nanosecond clock values beyond 2**53,
    and decimals 1e-7 s apart at today's Unix times).
    """

    users: np.ndarray
    items: np.ndarray
    times: np.ndarray
    fractions: np.ndarray
    user_ids: list[str]
    item_ids: list[str]

    def __len__(self) -> int:
        return len(self.users)


@dataclass(frozen=True)
class Processed:
    """The result: ``sequences`` (user ``u`` is file user ``u + 1``) and the original id of every new id.

    ``duplicates``: raw rows that repeat an earlier row's user, item and timestamp; ``duplicates_kept``: how
    many of them are in ``sequences`` (0 with ``dedupe``).
    """

    sequences: Sequences
    user_ids: list[str]  # user_ids[new_id - 1] = original user id
    item_ids: list[str]  # item_ids[new_id - 1] = original item id
    duplicates: int = 0
    duplicates_kept: int = 0


def collect(rows: Iterable[Row]) -> RawLog:
    """Read all rows into compact arrays, interning the string ids (one dict entry per distinct id).

    Timestamps are ints, Decimals (as the readers give) or floats within the int64 range (the readers check
    this, naming the line).
    """
    user_code: dict[str, int] = {}
    item_code: dict[str, int] = {}
    users, items, times, fractions = array("i"), array("i"), array("q"), array("q")
    for user, item, timestamp, _line in rows:
        u = user_code.get(user)
        if u is None:
            u = user_code[user] = len(user_code)
        i = item_code.get(item)
        if i is None:
            i = item_code[item] = len(item_code)
        users.append(u)
        items.append(i)
        if type(timestamp) is int:  # the common case, without a call
            times.append(timestamp)
            fractions.append(0)
        else:
            whole, fraction = split_seconds(timestamp)
            times.append(whole)
            fractions.append(fraction)
    return RawLog(
        np.frombuffer(users, dtype=np.int32).astype(np.int64),
        np.frombuffer(items, dtype=np.int32).astype(np.int64),
        np.frombuffer(times, dtype=np.int64).copy(),
        np.frombuffer(fractions, dtype=np.int64).copy(),
        list(user_code),
        list(item_code),
    )


def duplicate_mask(log: RawLog) -> np.ndarray:
    """``(len(log),)`` bool: True for a row with the same user, item and timestamp as an earlier row."""
    pair = log.users * len(log.item_ids) + log.items  # codes are int32, so this fits in int64
    order = np.lexsort((log.fractions, log.times, pair))  # stable: equal rows stay in file order
    same = np.ones(max(len(log) - 1, 0), dtype=bool)
    for key in (pair, log.times, log.fractions):
        k = key[order]
        same &= k[1:] == k[:-1]
    duplicate = np.zeros(len(log), dtype=bool)
    duplicate[order[1:]] = same  # within a group of equal rows, all but the first in file order
    return duplicate


def keep_mask(
    users: np.ndarray, items: np.ndarray, min_count: int, kcore: bool = False, rows: np.ndarray | None = None
) -> np.ndarray:
    """Rows to keep: those whose user and item have at least ``min_count`` rows.

    One pass over the raw counts (the paper), or with ``kcore`` repeated until nothing changes. ``rows``
    (bool mask) restricts both the counting and the result to those rows (default: all).
    """
    keep = np.ones(len(users), dtype=bool) if rows is None else rows.copy()
    if min_count <= 1:
        return keep
    while True:
        user_count = np.bincount(users, weights=keep, minlength=1)
        item_count = np.bincount(items, weights=keep, minlength=1)
        new_keep = keep & (user_count[users] >= min_count) & (item_count[items] >= min_count)
        if not kcore or new_keep.sum() == keep.sum():
            return new_keep
        keep = new_keep


def _number_by_first_appearance(codes: np.ndarray, num_codes: int) -> tuple[np.ndarray, np.ndarray]:
    """Renumber ``codes`` 1.. by first appearance; returns (new id of each row, old code of each new id)."""
    unique, first = np.unique(codes, return_index=True)
    old_codes = unique[np.argsort(first, kind="stable")]
    new_id = np.zeros(num_codes, dtype=np.int64)
    new_id[old_codes] = np.arange(1, len(old_codes) + 1)
    return new_id[codes], old_codes


def build(log: RawLog, keep: np.ndarray) -> Processed:
    """Number users and items by first kept appearance and sort each user's rows by time (stable)."""
    users, items = log.users[keep], log.items[keep]
    times, fractions = log.times[keep], log.fractions[keep]
    new_users, user_codes = _number_by_first_appearance(users, len(log.user_ids))
    new_items, item_codes = _number_by_first_appearance(items, len(log.item_ids))
    order = np.lexsort((np.arange(len(users)), fractions, times, new_users))  # last key is the primary one
    lengths = np.bincount(new_users, minlength=len(user_codes) + 1)[1:]
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    sequences = Sequences(offsets, new_items[order], len(item_codes))
    return Processed(sequences, [log.user_ids[c] for c in user_codes], [log.item_ids[c] for c in item_codes])


def preprocess_log(
    log: RawLog, min_count: int = 5, kcore: bool = False, source: object = "input", dedupe: bool = False
) -> Processed:
    """Apply the paper's rules (module docstring) to collected rows; ``dedupe`` drops exact duplicates first."""
    if min_count < 0:
        raise ConfigError(f"min count must be >= 0, not {min_count}")
    if not len(log):
        raise SASRecError(f"{source}: no interactions (0 rows); give a log with one row per interaction")
    duplicate = duplicate_mask(log)
    keep = keep_mask(log.users, log.items, min_count, kcore, rows=~duplicate if dedupe else None)
    if not keep.any():
        raise SASRecError(
            f"{source}: no interactions left after keeping users and items with at least "
            f"{min_count} interactions (raw: {len(log)} rows, {len(log.user_ids)} users, "
            f"{len(log.item_ids)} items); try a lower --min-count"
        )
    result = build(log, keep)
    return dataclasses.replace(result, duplicates=int(duplicate.sum()), duplicates_kept=int((duplicate & keep).sum()))


def preprocess_rows(
    rows: Iterable[Row], min_count: int = 5, kcore: bool = False, dedupe: bool = False, source: object = "input"
) -> Processed:
    """Apply the paper's rules (module docstring) to raw rows, e.g. from a reader; ``source`` names them in
    errors."""
    return preprocess_log(collect(rows), min_count, kcore, source=source, dedupe=dedupe)


def length_stats(lengths: np.ndarray) -> dict[str, float]:
    """min / mean / median / p90 / p99 / max of the per-user sequence lengths."""
    return {
        "min": int(lengths.min()),
        "mean": round(float(lengths.mean()), 4),
        "median": float(np.median(lengths)),
        "p90": float(np.percentile(lengths, 90)),
        "p99": float(np.percentile(lengths, 99)),
        "max": int(lengths.max()),
    }


# ------------------------------------------------------------------------------------------------ output


def output_paths(output_dir: str | Path, name: str) -> dict[str, Path]:
    """The four output files for dataset ``name`` in ``output_dir``."""
    if not name or Path(name).name != name or name in (".", ".."):
        raise ConfigError(f"the dataset name must be a plain file name, not {name!r}")
    return {key: Path(output_dir) / f"{name}{suffix}" for key, suffix in OUTPUT_SUFFIXES.items()}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _write_map(ids: list[str], path: Path) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("new_id\toriginal_id\n")
        f.writelines(f"{n}\t{_escape(v)}\n" for n, v in enumerate(ids, start=1))


def _write_json(data: dict, path: Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
        f.write("\n")


def write_outputs(
    result: Processed, output_dir: str | Path, name: str, stats: dict, force: bool = False
) -> dict[str, Path]:
    """Write the sequences, the two id maps and the stats of ``result``; returns the paths."""
    paths = output_paths(output_dir, name)
    write_files(
        {
            paths["sequences"]: lambda p: write_sasrec_file(result.sequences, p),
            paths["user_map"]: lambda p: _write_map(result.user_ids, p),
            paths["item_map"]: lambda p: _write_map(result.item_ids, p),
            paths["stats"]: lambda p: _write_json(stats, p),
        },
        force=force,
    )
    return paths


# --------------------------------------------------------------------------------------------- file-level


def preprocess_file(
    input_path: str | Path,
    output_dir: str | Path,
    name: str,
    fmt: str,
    *,
    reader_options: dict | None = None,
    min_count: int = 5,
    kcore: bool = False,
    dedupe: bool = False,
    skip_bad_lines: bool = False,
    force: bool = False,
    dataset: str | None = None,
    progress: bool = True,
) -> dict:
    """Read ``input_path`` (format ``fmt``), preprocess it and write the outputs; returns the stats dict.

    ``dedupe`` drops exact duplicate rows (same user, item and timestamp) before filtering; either way
    their number is in ``stats["raw"]["duplicates"]``.

    Raises:
        DataError: bad input (see :mod:`sasrec.data.readers`).
        SASRecError: outputs exist and ``force`` is False, or nothing is left after filtering.
    """
    paths = output_paths(output_dir, name)
    refuse_overwrite(paths.values(), force)  # fail before the (possibly long) read
    if min_count < 0:
        raise ConfigError(f"min count must be >= 0, not {min_count}")
    reader_options = dict(reader_options or {})
    read_stats = ReadStats()
    rows = read_rows(fmt, input_path, skip_bad_lines=skip_bad_lines, stats=read_stats, **reader_options)
    rows = tqdm(
        rows,
        desc=f"reading {Path(input_path).name}",
        unit=" rows",
        unit_scale=True,
        mininterval=0.5,
        disable=None if progress else True,
    )
    log = collect(rows)

    def status(text: str) -> None:
        # Each later step takes seconds per million rows (filtering and numbering ~2, checksum ~4 for JSON,
        # writing ~10): a line before each keeps a long run from looking stuck, in a log file too.
        if progress:
            print(text, file=sys.stderr, flush=True)

    status(f"filtering and numbering {len(log):,} rows")
    result = preprocess_log(log, min_count, kcore, source=input_path, dedupe=dedupe)
    seqs = result.sequences
    status(f"checksumming {input_path}")
    stats = {
        "name": name,
        "users": seqs.num_users,
        "items": seqs.num_items,
        "interactions": int(len(seqs.items)),
        "duplicates": result.duplicates_kept,
        "length": length_stats(seqs.lengths),
        "raw": {
            "rows": len(log),
            "users": len(log.user_ids),
            "items": len(log.item_ids),
            "duplicates": result.duplicates,
            "lines": read_stats.lines,
            "skipped_lines": read_stats.skipped,
            "skipped_examples": [{"line": n, "problem": p} for n, p in read_stats.examples],
        },
        "settings": {
            "dataset": dataset,
            "format": fmt,
            "min_count": min_count,
            "filter": "iterative k-core" if kcore else "one pass on raw counts (paper)",
            "kcore": kcore,
            "dedupe": dedupe,
            "skip_bad_lines": skip_bad_lines,
            "reader_options": reader_options,
        },
        "source": {
            "path": str(Path(input_path).resolve()),
            "bytes": Path(input_path).stat().st_size,
            "sha256": file_sha256(input_path),
        },
        "outputs": {key: p.name for key, p in paths.items()},
    }
    status(f"writing {len(seqs.items):,} interactions to {output_dir}")
    write_outputs(result, output_dir, name, stats, force=force)
    return stats


# ---------------------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``sasrec preprocess`` (and ``data_preprocessing.py``)."""
    names = registry.with_raw_format()
    parser.add_argument(
        "--dataset", choices=names, help=f"a public dataset ({', '.join(names)}): sets the raw format and output name"
    )
    parser.add_argument("--input", type=argtypes.path, help="raw interaction file (.gz is read transparently)")
    out = parser.add_argument(
        "--out", metavar="DIR", type=argtypes.path, default=Path("data"), help="output directory (default: data)"
    )
    argtypes.add_former_spelling(parser, "--output", out)
    parser.add_argument(
        "--name", type=argtypes.plain_name, help="output NAME.txt (default: the dataset's name or the input's stem)"
    )
    parser.add_argument("--format", choices=sorted(READERS), help="raw format (default: the dataset's)")
    parser.add_argument("--user-col", help="--format csv: user column (name; 0-based index if --no-header)")
    parser.add_argument("--item-col", help="--format csv: item column")
    parser.add_argument("--time-col", help="--format csv: timestamp column (default: none, file order)")
    parser.add_argument("--delimiter", default=",", help="--format csv: one character, or tab/space/...")
    parser.add_argument("--no-header", action="store_true", help="--format csv: the file has no header line")
    parser.add_argument(
        "--min-count",
        type=argtypes.integer(0),
        default=5,
        help="drop rows whose user or item has fewer interactions (default: 5)",
    )
    parser.add_argument(
        "--kcore", action="store_true", help="iterate the filter to a k-core (the paper filters once on raw counts)"
    )
    parser.add_argument(
        "--dedupe",
        action="store_true",
        help="drop exact duplicate rows (same user, item and timestamp) before filtering; the paper keeps them",
    )
    parser.add_argument(
        "--skip-bad-lines", action="store_true", help="skip and count malformed lines instead of stopping at the first"
    )
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")
    parser.add_argument(
        "--download", action="store_true", help="download the dataset's public raw file first (into --raw-dir)"
    )
    parser.add_argument(
        "--raw-dir",
        metavar="DIR",
        type=argtypes.path,
        default=Path("data/raw"),
        help="where --download puts raw files, and where they are looked for (data/raw)",
    )


def _reader_options(args: argparse.Namespace, fmt: str) -> dict:
    given = {
        k: v
        for k, v in (("--user-col", args.user_col), ("--item-col", args.item_col), ("--time-col", args.time_col))
        if v is not None
    }
    if fmt != "csv":
        if given or args.no_header or args.delimiter != ",":
            raise ConfigError(f"{', '.join(given) or '--delimiter/--no-header'} only apply to --format csv")
        return {}
    if args.user_col is None or args.item_col is None:
        raise ConfigError("--format csv needs --user-col and --item-col (and usually --time-col)")
    named: dict[str | int, str] = {}  # column (a header name; without a header, its index) -> option
    for option, col in given.items():
        key = int(col) if args.no_header and col.strip().isdigit() else col
        if key in named:
            raise ConfigError(f"{named[key]} and {option} both name column {col!r}; each needs its own column")
        named[key] = option
    delimiter = _DELIMITERS.get(args.delimiter, args.delimiter)
    if len(delimiter) != 1:
        raise ConfigError(f"--delimiter must be one character or one of {', '.join(_DELIMITERS)}")
    return {
        "user_col": args.user_col,
        "item_col": args.item_col,
        "time_col": args.time_col,
        "delimiter": delimiter,
        "header": not args.no_header,
    }


def _input_path(args: argparse.Namespace) -> Path:
    if args.input is not None and args.download:
        raise ConfigError("give either --input or --download, not both")
    if args.input is not None:
        return args.input
    if args.dataset is None:
        raise ConfigError("give --input PATH (or --dataset NAME with --download)")
    from sasrec.data import download  # only with --download: it loads the network modules

    if args.download:
        return download.download(args.dataset, args.raw_dir)
    source = registry.get(args.dataset).source
    local = Path(args.raw_dir) / source.raw_file
    if local.exists():
        return local
    raise ConfigError(
        f"no --input given and {local} does not exist; pass --input PATH, or --download to fetch {source.url}"
    )


def run(args: argparse.Namespace) -> int:
    """Run ``sasrec preprocess`` with parsed ``args``; prints a summary and returns 0."""
    dataset = registry.get(args.dataset) if args.dataset else None
    fmt = args.format or (dataset.raw_format if dataset else None)
    if fmt is None:
        raise ConfigError("give --dataset NAME or --format FORMAT")
    options = _reader_options(args, fmt)
    input_path = _input_path(args)
    name = args.name or (dataset.output_name if dataset else Path(input_path).name.split(".")[0])
    stats = preprocess_file(
        input_path,
        args.out,
        name,
        fmt,
        reader_options=options,
        min_count=args.min_count,
        kcore=args.kcore,
        dedupe=args.dedupe,
        skip_bad_lines=args.skip_bad_lines,
        force=args.force,
        dataset=args.dataset,
    )
    print(summary(stats, Path(args.out)))
    return 0


def summary(stats: dict, output_dir: Path) -> str:
    """A few human-readable lines about a finished run."""
    raw, length = stats["raw"], stats["length"]
    lines = [
        f"wrote {output_dir / stats['outputs']['sequences']} (+ id maps and {stats['outputs']['stats']})",
        f"  {stats['users']:,} users, {stats['items']:,} items, {stats['interactions']:,} interactions; "
        f"length min {length['min']}, median {length['median']:g}, mean {length['mean']:.2f}, "
        f"max {length['max']}",
        f"  raw: {raw['rows']:,} rows, {raw['users']:,} users, {raw['items']:,} items; "
        f"filter: min count {stats['settings']['min_count']}, {stats['settings']['filter']}",
    ]
    if raw["duplicates"]:
        handled = (
            "dropped (--dedupe)"
            if stats["settings"]["dedupe"]
            else f"kept as the paper does, {stats['duplicates']:,} of them in the output; --dedupe drops them"
        )
        lines.append(f"  {raw['duplicates']:,} exact duplicate rows (same user, item and time): {handled}")
    if raw["skipped_lines"]:
        first = "; ".join(f"line {e['line']}: {e['problem']}" for e in raw["skipped_examples"][:3])
        lines.append(f"  skipped {raw['skipped_lines']:,} bad lines ({first})")
    return "\n".join(lines)
