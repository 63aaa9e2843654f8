"""Run as a script (``python node_tool.py durations WORK`` / ``replay NODE_DIR OUT``) by
:mod:`benchmarks.participant_nodes.cli`, with the code version under test first on
``PYTHONPATH``: it unpickles Nipype nodes and results, which imports that version's
interfaces. It prints one JSON line. Imports nothing heavy at module level.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def node_durations(work: Path) -> dict:
    """``{node name: seconds}`` from every ``result_<node>.pklz`` under ``work``."""
    from nipype.utils.filemanip import loadpkl

    durations = {}
    for path in sorted(work.rglob("result_*.pklz")):
        result = loadpkl(path)
        runtime = getattr(result, "runtime", None)
        duration = getattr(runtime, "duration", None) if runtime is not None else None
        if duration is not None:
            durations[path.parent.name] = round(float(duration), 2)
    return durations


def replay(node_dir: Path, out: Path) -> dict:
    """Run the node pickled in ``node_dir`` again, in a new folder; its time and peak memory."""
    from nipype import config
    from nipype.utils.filemanip import loadpkl

    config.update_config({"execution": {"check_version": False,
                                        "remove_unnecessary_outputs": False}})
    node = loadpkl(node_dir / "_node.pklz")
    node.base_dir = str(out)
    node._output_dir = None  # the pickle remembers the original folder (and its cache)
    start = time.perf_counter()
    node.run()
    seconds = time.perf_counter() - start
    peak_kb = next(int(line.split()[1]) for line in
                   Path("/proc/self/status").read_text().splitlines()
                   if line.startswith("VmHWM:"))
    return {"seconds": round(seconds, 2), "peak_rss_bytes": peak_kb * 1024}


def main(argv: list[str]) -> int:
    command, *args = argv
    if command == "durations":
        print(json.dumps(node_durations(Path(args[0]))))
    elif command == "replay":
        print(json.dumps(replay(Path(args[0]), Path(args[1]))))
    else:
        raise SystemExit(f"unknown command {command!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
