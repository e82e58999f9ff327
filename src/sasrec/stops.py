"""How a command stops on Ctrl-C (SIGINT) and SIGTERM: one line saying what was kept, never a traceback.

SIGTERM (``kill``, a scheduler's stop) is handled as Ctrl-C while training (:func:`sigterm_as_interrupt`);
an epoch's files are written with both held (:func:`deferred`); the clean-up after a stop runs with both
ignored (:func:`ignored`); and a stop while a command starts (importing torch, which may abort the process
if interrupted inside its C++ code) is held until the imports are done (:func:`held`). Handlers can only be
set in the main thread; elsewhere each helper changes nothing. Imports no torch: the command line uses it
before torch is loaded.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

DEFERRED = (signal.SIGINT, signal.SIGTERM)  # the stops: Ctrl-C and SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C (the last saved epoch is kept); ``sasrec`` exits with 143 (128 + 15)."""

    exit_status = 128 + signal.SIGTERM


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM (``kill``, a scheduler's stop) raises :class:`Terminated`. Signal handlers can
    only be set in the main thread; elsewhere SIGTERM keeps its default action."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: object) -> None:
        raise Terminated()

    previous = _install(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        restore(signal.SIGTERM, previous)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM are held (not lost) and acted on when it ends, so an epoch's
    checkpoints and log line are written whole. Only in the main thread, where handlers run."""
    with held() as received:
        yield
    for signum in dict.fromkeys(received):  # delivered to the handlers held() put back
        handler = signal.getsignal(signum)
        if callable(handler):
            handler(signum, None)  # raises KeyboardInterrupt or Terminated
        elif handler == signal.SIG_DFL:
            os.kill(os.getpid(), signum)


def _install(signum: int, handler: Any) -> Any:
    """``signal.signal(signum, handler)``, except that a signal the process was started ignoring stays
    ignored (SIGINT of a job started with ``&`` from a script, SIGTERM under some supervisors): honouring it
    only at some moments would make a stop depend on when it arrives. Returns the handler to restore."""
    if signal.getsignal(signum) == signal.SIG_IGN:
        return signal.SIG_IGN
    return signal.signal(signum, handler)


def restore(signum: int, handler: Any) -> None:
    """Put back a handler that ``signal.signal`` returned; None (one installed from C, which Python cannot
    reinstall) is left to the code that installed it."""
    if handler is not None:
        signal.signal(signum, handler)


@contextlib.contextmanager
def ignored() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM are ignored: the clean-up after a first stop (a second Ctrl-C in
    quick succession) runs to its end instead of breaking off with a traceback. The handlers are restored
    after it, so a Python session keeps its Ctrl-C. Only in the main thread, where handlers can be set."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in DEFERRED}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            restore(signum, handler)


def reason(exc: BaseException) -> str:
    """How a stop is named in its message: ``interrupted`` (Ctrl-C) or ``terminated (SIGTERM)``."""
    return "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"


@contextlib.contextmanager
def held() -> Iterator[list[int]]:
    """Within the block, SIGINT and SIGTERM are recorded, not acted on; yields the list they are recorded in,
    for the caller to report after the block. For a command's start: Ctrl-C while torch imports would raise
    inside its C++ initialisation, which aborts the process ("terminate called after throwing ...")."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {signum: _install(signum, lambda n, frame: received.append(n)) for signum in DEFERRED}
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            restore(signum, handler)


def mark_reported(exc: BaseException) -> None:
    """Note on ``exc`` that the stop was reported (what was kept), so the command line does not repeat it."""
    exc.reported = True  # type: ignore[attr-defined]


def was_reported(exc: BaseException) -> bool:
    """Whether the stop's message was printed already (:func:`mark_reported`)."""
    return getattr(exc, "reported", False)


def starting_message(received: list[int]) -> str:
    """The line for a stop received while a command started: nothing has been written yet."""
    what = "terminated (SIGTERM)" if signal.SIGTERM in received else "interrupted"
    return f"{what} while starting; nothing was written"
