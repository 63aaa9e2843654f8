"""``python -m benchmarks.preprocessing``: see :mod:`benchmarks.preprocessing`."""

import sys

from benchmarks.preprocessing.cli import main

if __name__ == "__main__":
    sys.exit(main())
