"""Download the public raw files of the paper's datasets (``sasrec download NAME``).

Downloads stream to a temporary file next to the target, are checked against a pinned sha256 where one
is known, and are then moved into place atomically, so an interrupted download never leaves a partial file
under the final name. A download that fails leaves nothing it created behind: no partial file, no archive
that could not be extracted, no (empty) folder it made. Without network access the download fails after
``timeout`` seconds with a message saying which URL failed and where to put the file by hand.

What is fetched for each dataset, and its checksum, is in :mod:`sasrec.data.registry`.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import shutil
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

from tqdm import tqdm

from sasrec import argtypes
from sasrec.atomic import write_file
from sasrec.data import registry
from sasrec.data.registry import Source
from sasrec.errors import SASRecError

DEFAULT_TIMEOUT = 10.0
_CHUNK = 1 << 20


def get_source(name: str) -> Source:
    """Where dataset ``name``'s raw file comes from; SASRecError naming the downloadable datasets otherwise."""
    dataset = registry.DATASETS.get(name)
    if dataset is None or dataset.source is None:
        raise SASRecError(f"unknown dataset {name!r}; choose one of: {', '.join(registry.with_source())}")
    return dataset.source


def raw_path(name: str, dest_dir: str | Path) -> Path:
    """Where the raw interaction file of dataset ``name`` is (or will be) under ``dest_dir``."""
    return Path(dest_dir) / get_source(name).raw_file


def source_url(source: Source, base_url_override: str | None = None) -> str:
    """The URL to fetch: the public one, or the same file name under ``base_url_override`` (a mirror)."""
    if base_url_override is None:
        return source.url
    return base_url_override.rstrip("/") + "/" + source.filename


def download(
    name: str,
    dest_dir: str | Path,
    base_url_override: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    *,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Download dataset ``name``'s raw file into ``dest_dir`` and return the path of the interaction file.

    An already present raw file is reused unless ``force``. For a zip archive the interaction member is
    extracted next to it.

    Raises:
        SASRecError: unknown name, network failure or timeout (naming the URL and where to put the file by
            hand), or checksum / size mismatch (the bad download is discarded).
    """
    source = get_source(name)
    dest_dir = Path(dest_dir)
    raw = dest_dir / source.raw_file
    if raw.exists() and not force:
        print(f"{raw} already present, not downloading (pass --force to download again)")
        return raw
    target = dest_dir / source.filename
    url = source_url(source, base_url_override)
    had_archive = target.exists()
    with removing_new_folders(raw.parent):  # raw.parent is dest_dir or a folder in it
        fetch(url, target, source.sha256, source.size, timeout=timeout, progress=progress)
        if source.member:
            try:
                extract_member(target, source.member, raw)
            except BaseException:
                if not had_archive:  # this run's archive: of no use without its member
                    target.unlink(missing_ok=True)
                raise
    return raw


@contextlib.contextmanager
def removing_new_folders(folder: Path) -> Iterator[None]:
    """On an exception, remove ``folder`` and those of its parents that did not exist on entry, if empty."""
    new = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    try:
        yield
    except BaseException:
        for path in new:
            with contextlib.suppress(OSError):  # not empty (something else wrote there), or already gone
                path.rmdir()
        raise


def fetch(
    url: str,
    target: Path,
    sha256: str | None,
    size: int | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    progress: bool = True,
) -> str:
    """Stream ``url`` into ``target`` atomically, verifying ``sha256`` and ``size`` when given.

    Returns the sha256 of the downloaded file. On failure nothing is left: no partial ``target``, and no
    folder this call created for it.
    """
    with removing_new_folders(target.parent):
        target.parent.mkdir(parents=True, exist_ok=True)
        return _fetch(url, target, sha256, size, timeout=timeout, progress=progress)


def _fetch(url: str, target: Path, sha256: str | None, size: int | None, *, timeout: float, progress: bool) -> str:
    digest = hashlib.sha256()

    def copy(response, out) -> int:
        total = response.headers.get("Content-Length")
        bar = tqdm(
            total=int(total) if total and total.isdigit() else None,
            unit="B",
            unit_scale=True,
            desc=target.name,
            mininterval=0.5,
            disable=None if progress else True,
        )
        written = 0
        with bar:
            while block := response.read(_CHUNK):
                digest.update(block)
                out.write(block)
                written += len(block)
                bar.update(len(block))
        return written

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            written = _write_atomically(target, lambda out: copy(response, out))
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if type(exc) is urllib.error.URLError else exc
        raise SASRecError(
            f"could not download {url} ({reason}). If this machine has no internet access, "
            f"download the file elsewhere and put it at {target}"
        ) from None
    got = digest.hexdigest()
    problem = None
    if size is not None and written != size:
        problem = f"size mismatch: expected {size:,} bytes, got {written:,}"
    elif sha256 is not None and got != sha256:
        problem = f"sha256 mismatch: expected {sha256}, got {got}"
    if problem:
        target.unlink(missing_ok=True)
        raise SASRecError(
            f"{url}: {problem}; the download was discarded (a truncated transfer, or the file "
            "changed upstream). Try again, or fetch it by hand and check it"
        )
    pinned = "matches the pinned checksum" if sha256 else "not pinned, record it to check later copies"
    print(f"downloaded {target} ({written:,} bytes), sha256 {got} ({pinned})")
    return got


def _write_atomically(target: Path, write: Callable) -> int:
    """``write(binary_file)`` into ``target`` atomically; ``.part`` files of killed downloads are removed."""
    return write_file(target, write, mode="wb", suffix=".part")


def extract_member(archive: Path, member: str, dest: Path) -> Path:
    """Extract one ``member`` of zip ``archive`` to ``dest`` (atomically)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(archive) as zf, zf.open(member) as src:
            _write_atomically(dest, lambda out: shutil.copyfileobj(src, out, _CHUNK))
    except KeyError:
        raise SASRecError(f"{archive} has no member {member!r}; is it the right archive?") from None
    except zipfile.BadZipFile as exc:
        raise SASRecError(f"{archive} is not a valid zip file ({exc}); download it again") from None
    return dest


# ---------------------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``sasrec download NAME [--raw-dir DIR] [--preprocess [--out DIR]]``."""
    names = registry.with_source()
    parser.add_argument("dataset", metavar="NAME", choices=names, help=f"dataset to download: {', '.join(names)}")
    raw_dir = parser.add_argument(
        "--raw-dir",
        metavar="DIR",
        type=Path,
        default=Path("data/raw"),
        help="directory for the raw files (default: data/raw)",
    )
    argtypes.add_former_spelling(parser, "--dest", raw_dir)
    parser.add_argument(
        "--preprocess", action="store_true", help="then preprocess it with the paper's rules into --out"
    )
    out = parser.add_argument(
        "--out", metavar="DIR", type=Path, default=Path("data"), help="--preprocess: output directory (default: data)"
    )
    argtypes.add_former_spelling(parser, "--output", out)
    parser.add_argument("--base-url", type=argtypes.url, help="fetch the same file name from this mirror instead")
    parser.add_argument(
        "--timeout",
        type=argtypes.number(0, above=True),
        default=DEFAULT_TIMEOUT,
        help=f"network timeout in seconds (default: {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument(
        "--force", action="store_true", help="download again even if present, and overwrite preprocessed outputs"
    )
