"""``python -m benchmarks.mscsa_overhead``: see :mod:`benchmarks.mscsa_overhead`."""

import sys

from benchmarks.mscsa_overhead.cli import main

if __name__ == "__main__":
    sys.exit(main())
