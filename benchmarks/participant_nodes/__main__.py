"""``python -m benchmarks.participant_nodes``: see :mod:`benchmarks.participant_nodes`."""

import sys

from benchmarks.participant_nodes.cli import main

if __name__ == "__main__":
    sys.exit(main())
