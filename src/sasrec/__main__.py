"""``python -m sasrec`` and the ``sasrec`` command (also ``torchrun --nproc_per_node=N -m sasrec train ...``)."""

import sys


def main() -> int:
    """The command line, with Ctrl-C and SIGTERM held while its modules import (see :func:`sasrec.stops.held`)."""
    from sasrec import stops  # imports nothing heavy

    with stops.held() as received:
        from sasrec.cli import main as cli_main
    if received:
        print(stops.starting_message(received), file=sys.stderr)
        return 128 + received[0]
    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
