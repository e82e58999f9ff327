"""``python -m sasrec`` and the ``sasrec`` command (also ``torchrun --nproc_per_node=N -m sasrec train ...``)."""

import signal
import sys


def main(argv: list[str] | None = None, only: str | None = None) -> int:
    """The command line (:func:`sasrec.cli.main`'s arguments), with Ctrl-C and SIGTERM held while its modules
    import (see :func:`sasrec.stops.held`) and ignored once it is done."""
    from sasrec import stops  # imports nothing heavy

    with stops.held() as received:
        from sasrec.cli import main as cli_main
    if received:
        print(stops.starting_message(received), file=sys.stderr)
        return 128 + received[0]
    status = cli_main(argv, only)
    for signum in stops.DEFERRED:  # the work is done and reported: a late stop must not turn it into a failure
        signal.signal(signum, signal.SIG_IGN)
    return status


if __name__ == "__main__":
    sys.exit(main())
