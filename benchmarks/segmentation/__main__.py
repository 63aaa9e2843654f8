"""``python -m benchmarks.segmentation``: see :mod:`benchmarks.segmentation`."""

import sys

from benchmarks.segmentation.cli import main

if __name__ == "__main__":
    sys.exit(main())
