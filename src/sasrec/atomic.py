"""Atomic file writes: a file appears complete under its name, or not at all.

Every writer fills a hidden temporary file next to its target (``.NAME.PID@HOST.XXXXXXXX.tmp``) and moves
it into place with ``os.replace``. A writer killed with kill -9 cannot clean up, so each write first removes
the temporary files that dead writers left for the same target. This is the only module that writes files
this way; run directories, checkpoints, preprocessing outputs, downloads and exports all go through it.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from sasrec.errors import SASRecError


def refuse_overwrite(paths: Iterable[Path], force: bool) -> None:
    """Raise SASRecError if any of ``paths`` exists, unless ``force``."""
    existing = [p for p in paths if p.exists()]
    if existing and not force:
        others = f" (and {len(existing) - 1} more output files)" if len(existing) > 1 else ""
        raise SASRecError(f"{existing[0]} already exists{others}; pass --force to overwrite")


STALE_AFTER_S = 3600.0
"""A temporary file whose writer cannot be checked (another host) is stale after this long unmodified."""


def temp_beside(target: Path, suffix: str = ".tmp") -> tuple[int, Path]:
    """Create a temporary file next to ``target`` (``mkstemp``: returns an open fd and the path).

    It is hidden and named after ``target``, this process and host: ``.NAME.PID@HOST.XXXXXXXX.tmp``. First,
    such files left for ``target`` by a writer that died (a kill -9 skips every cleanup) are removed: on
    this host when their process is gone, from other hosts when unmodified for :data:`STALE_AFTER_S`.
    """
    remove_stale_temps(target, suffix)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.{os.getpid()}@{_host()}.", suffix=suffix)
    return fd, Path(tmp)


def remove_stale_temps(target: Path, suffix: str = ".tmp") -> list[Path]:
    """Remove the temporary files of dead writers of ``target`` (see :func:`temp_beside`); returns them.

    Names without a process (an older naming) count as another host's: removed once old.
    """
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(?:(\d+)@(.+)\.)?[a-z0-9_]{{8}}{re.escape(suffix)}")
    removed = []
    try:
        candidates = list(target.parent.iterdir())
    except OSError:  # the directory does not exist yet: nothing to clean
        return removed
    for path in candidates:
        match = pattern.fullmatch(path.name)
        if match is None:
            continue
        pid, host = match.groups()
        try:
            if pid is not None and host == _host():
                stale = not _process_alive(int(pid))
            else:
                stale = time.time() - path.stat().st_mtime > STALE_AFTER_S
            if stale:
                path.unlink()
                removed.append(path)
        except OSError:  # vanished meanwhile, or not ours to remove: leave it
            continue
    return removed


def _host() -> str:
    return socket.gethostname().replace("/", "_") or "localhost"


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def write_files(writers: dict[Path, Callable[[Path], None]], force: bool = False) -> None:
    """Write several files so that each appears complete or not at all.

    Each writer fills a temporary file in the target's directory (:func:`temp_beside`, which also removes
    those of killed runs); only when all succeeded are they moved into place with ``os.replace``. Refuses to
    overwrite an existing target unless ``force``.
    """
    refuse_overwrite(writers, force)
    temps: dict[Path, Path] = {}
    made: list[Path] = []  # the directories this call created, removed again if it fails or is stopped
    try:
        for path, write in writers.items():
            for directory in reversed([p for p in (path.parent, *path.parent.parents) if not p.exists()]):
                try:
                    directory.mkdir()
                    made.append(directory)
                except FileExistsError:  # made meanwhile by another process: not ours to remove
                    pass
            fd, tmp = temp_beside(path)
            os.close(fd)
            temps[path] = tmp
            write(temps[path])
            os.chmod(tmp, default_mode())  # mkstemp creates 0600; give the usual permissions
        for path, tmp in temps.items():
            os.replace(tmp, path)
    except BaseException:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)
        for directory in reversed(made):
            with contextlib.suppress(OSError):  # not empty: something else was written there meanwhile
                directory.rmdir()
        raise
    finally:
        for tmp in temps.values():
            tmp.unlink(missing_ok=True)


def write_file(path: str | Path, write: Callable[[Any], Any], mode: str = "w", suffix: str = ".tmp") -> Any:
    """Call ``write(f)`` on a temporary file opened with ``mode`` beside ``path``, then move it into place.

    Returns what ``write`` returns. The file gets the usual permissions (0o666 less the umask).
    """
    path = Path(path)
    fd, tmp = temp_beside(path, suffix)
    try:
        with os.fdopen(fd, mode) as f:
            result = write(f)
        os.chmod(tmp, default_mode())  # mkstemp creates 0600
        os.replace(tmp, path)
        return result
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    write_file(path, lambda f: f.write(text))


def default_mode() -> int:
    """The mode a newly created file gets (0o666 less the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
