"""`python evaluate.py --help`: the same as `sasrec evaluate` (the founding document's command)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))  # works before `pip install -e .` too

from sasrec.__main__ import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(only="evaluate"))
