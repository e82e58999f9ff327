"""Command-line values: converters that turn an option's text into a value or refuse it in one line.

Each converter raises :class:`argparse.ArgumentTypeError` saying what the option needs and what it got
(``must be >= 1, got 0``); argparse puts the option's name in front and :mod:`sasrec.cli` prints that one
line and exits with status 2. Parsing checks values alone; output locations are checked after parsing
(:func:`check_output_dir`, :func:`check_output_file`), before any work, because whether an existing file may
be replaced depends on ``--force``.
"""

from __future__ import annotations

import argparse
import math
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sasrec.errors import ConfigError

Converter = Callable[[str], Any]

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")  # uvicorn's
URL_SCHEMES = ("http", "https", "ftp", "file")  # what urllib.request opens


def _shown(text: str) -> str:
    """``text`` as given, quoted only where quotes are needed to see it (empty, spaces)."""
    return text if text and text.strip() == text and " " not in text else repr(text)


def _refuse(requirement: str, text: str) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(f"must be {requirement}, got {_shown(text)}")


def _bounds(minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f"from {minimum} to {maximum}"
    if minimum is not None:
        return f">= {minimum}"
    return f"<= {maximum}" if maximum is not None else ""


def integer(minimum: int | None = None, maximum: int | None = None) -> Converter:
    """An int in ``[minimum, maximum]`` (either bound optional)."""
    requirement = f"an integer {_bounds(minimum, maximum)}".strip()

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise _refuse(requirement, text) from None
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise _refuse(requirement, text)
        return value

    return convert


def number(minimum: float, *, above: bool = False) -> Converter:
    """A finite float ``>= minimum`` (``> minimum`` when ``above``)."""
    requirement = f"a finite number {'>' if above else '>='} {minimum:g}"

    def convert(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise _refuse(requirement, text) from None
        if not math.isfinite(value) or value < minimum or (above and value == minimum):
            raise _refuse(requirement, text)
        return value

    return convert


def config_value(name: str) -> Converter:
    """A value of the :class:`sasrec.config.Config` field ``name``, held to the rules of ``Config.validate``."""
    from sasrec.config import LIMITS, field_problem, field_type

    parse = field_type(name)
    requirement = f"{'an integer' if parse is int else 'a number'} {LIMITS[name].requirement}"

    def convert(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError:
            raise _refuse(requirement, text) from None
        problem = field_problem(name, value)
        if problem:
            raise argparse.ArgumentTypeError(f"{problem}, got {_shown(text)}")
        return value

    return convert


def device(text: str) -> str:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (whether CUDA is there is checked when the device is used)."""
    index = text.removeprefix("cuda:")
    if text in ("cpu", "cuda", "auto") or (index != text and index.isdigit()):
        return text
    raise _refuse("cpu, cuda, cuda:N or auto", text)


def dataset(text: str) -> str:
    """A dataset name (:data:`sasrec.data.registry.DATASETS`), the path of an existing file, or a bare ``NAME``
    (looked up as ``NAME.txt`` in ``--data-dir`` once that is known: :func:`sasrec.config.dataset_path`); an
    empty one is refused as :func:`path_text` refuses it (``Path("")`` is the current directory)."""
    from sasrec.data.registry import NAMES

    if not text.strip():
        raise _refuse(f"a dataset name ({', '.join(NAMES)}) or the path of a SASRec-format file", text)
    if text in NAMES or Path(text).is_file() or (Path(text).name == text and not Path(text).exists()):
        return text
    what = "is a directory" if Path(text).is_dir() else "is neither a dataset name nor a file"
    raise argparse.ArgumentTypeError(
        f"{_shown(text)} {what}; give a dataset name ({', '.join(NAMES)}) or a SASRec-format file"
    )


def path_text(text: str) -> str:
    """A path, as given. An empty one is refused: ``Path("")`` is the current directory, so ``--out ''``
    (an unset shell variable) would silently write there, or an optional path would be silently ignored."""
    if not text.strip():
        raise _refuse("a path", text)
    return text


def path(text: str) -> Path:
    """:func:`path_text` as a :class:`~pathlib.Path`."""
    return Path(path_text(text))


def host(text: str) -> str:
    """An address to bind; an empty one is refused (uvicorn would listen on every interface)."""
    if not text.strip():
        raise _refuse("an address, e.g. 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)", text)
    return text


def existing_file(text: str) -> Path:
    path = Path(path_text(text))
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text} not found")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory, not a file")
    return path


def not_a_file(text: str) -> str:
    """A directory that may not exist (yet), but not the name of an existing file."""
    path_text(text)
    if Path(text).exists() and not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, not a directory")
    return text


def metric(text: str) -> str:
    """A validation metric NAME@K, checked by :func:`sasrec.config.split_metric`."""
    if not text.strip():
        raise _refuse("NAME@K, e.g. NDCG@10", text)
    return text


def plain_name(text: str) -> str:
    """A file name without a directory part."""
    if not text or Path(text).name != text or text in (".", ".."):
        raise argparse.ArgumentTypeError(f"must be a plain file name (no directory), got {text!r}")
    return text


def url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme in URL_SCHEMES and (parts.netloc or parts.scheme == "file"):
        return text
    raise _refuse(f"a URL ({', '.join(URL_SCHEMES)}), e.g. https://example.org/mirror/", text)


def key_value(text: str) -> tuple[str, float | bool]:
    """``KEY=VALUE`` with VALUE a number or true/false."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise _refuse("KEY=VALUE, e.g. t=0.75", text)
    if value.lower() in ("true", "false"):
        return key, value.lower() == "true"
    try:
        return key, float(value)
    except ValueError:
        raise _refuse("KEY=VALUE with VALUE a number or true/false", text) from None


# ------------------------------------------------------------------------------------- former spellings


class _FormerSpelling(argparse.Action):
    """Stores into the current option's ``dest`` and remembers, in ``namespace.spelled``, that the user wrote
    the former spelling, so that later messages name the option as typed (see :func:`spelled`)."""

    def __init__(self, option_strings, dest, current: str, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.current = current

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)
        namespace.spelled = {**getattr(namespace, "spelled", {}), self.current: option_string}


def add_former_spelling(parser: argparse.ArgumentParser, former: str, current: argparse.Action) -> None:
    """Accept ``former``, hidden from ``--help``, as another spelling of the option ``current`` (the Action
    ``add_argument`` returned), so that scripts written before a rename keep working, silently."""
    parser.add_argument(
        former,
        action=_FormerSpelling,
        current=current.option_strings[0],
        dest=current.dest,
        nargs=current.nargs,
        const=current.const,
        type=current.type,
        choices=current.choices,
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )


def spelled(args: argparse.Namespace, option: str) -> str:
    """``option`` as the user wrote it: its former spelling if that was used (:func:`add_former_spelling`)."""
    return getattr(args, "spelled", {}).get(option, option)


# ------------------------------------------------------------------------------------- output locations


def _nearest_existing(path: Path) -> Path:
    return next(p for p in (path, *path.parents) if p.exists())


def _probe(option: str, path: Path, directory: Path) -> None:
    """Raise ConfigError unless a file can be created in ``directory`` (the probe leaves nothing behind)."""
    if not directory.is_dir():
        raise ConfigError(f"{option} {path}: {directory} is a file, not a directory")
    try:
        tempfile.TemporaryFile(dir=directory).close()
    except OSError as exc:
        raise ConfigError(
            f"{option} {path}: cannot write in {directory} ({exc.strerror}); choose a writable location"
        ) from None


def check_output_dir(option: str, path: str | Path) -> None:
    """Raise ConfigError unless ``path`` is, or can be made, a directory this process can write in."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path} is a file, not a directory")
    _probe(option, path, _nearest_existing(path))


def check_output_file(option: str, path: str | Path, force: bool, make_parents: bool) -> None:
    """Raise ConfigError unless ``path`` can be written: not a directory, not an existing file unless
    ``force``, and in a writable directory (which must exist unless the writer makes ``make_parents``)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{option} {path} is a directory; give a file name")
    if path.exists() and not force:
        raise ConfigError(f"{option} {path} already exists; pass --force to overwrite it")
    if not make_parents and not path.parent.is_dir():
        raise ConfigError(f"{option} {path}: the directory {path.parent} does not exist")
    check_writable(option, path)


def check_writable(option: str, path: str | Path) -> None:
    """Raise ConfigError unless a file can be created at ``path``: its directory, or the nearest existing
    one above it (for a writer that makes the missing ones), is a directory this process can write in."""
    path = Path(path)
    _probe(option, path, _nearest_existing(path.parent))


def check_listen(host: str, port: int) -> None:
    """Raise ConfigError unless a server could listen on ``host:port`` now (as uvicorn binds it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"--host {host} --port {port}: cannot listen there ({exc.strerror}); choose "
                "another --port, or a --host address of this machine"
            ) from None
