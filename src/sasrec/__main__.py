"""``python -m sasrec``: the ``sasrec`` command (also ``torchrun --nproc_per_node=N -m sasrec train ...``)."""

import sys

from sasrec.cli import main

if __name__ == "__main__":
    sys.exit(main())
