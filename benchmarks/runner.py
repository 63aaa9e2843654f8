"""A benchmark's worker function in a fresh interpreter, so that its peak memory is its own.

Worker side::

    python -m benchmarks.runner NAME CONFIG_JSON

imports ``benchmarks.<benchmark>.workers``, calls ``WORKERS[<kind>](config)`` for
``NAME = <benchmark>.<kind>`` (``segmentation.segment``, ``mscsa_overhead.paired``, ...) and
prints one line ``RESULT <json>``. ``python -m benchmarks.runner --list`` lists the names.

Parent side: :func:`spawn` starts that command, watches its resident set (and optionally its
process tree) with :func:`benchmarks.measure.watch`, and returns a :class:`WorkerRun`.

Only the standard library is imported here and in the ``benchmarks`` package; each worker
function imports what it measures.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

from benchmarks import ROOT
from benchmarks.measure import watch

RESULT_PREFIX = "RESULT "
#: the benchmarks whose measurements run in worker processes (``benchmarks/<name>/workers.py``)
WITH_WORKERS = ("preprocessing", "mscsa_overhead", "segmentation")


def resolve(name: str) -> Callable[[dict], dict]:
    """The worker function ``<benchmark>.<kind>``: ``WORKERS[kind]`` of
    ``benchmarks.<benchmark>.workers``.

    Raises
    ------
    KeyError
        No such worker.
    """
    benchmark, _, kind = name.partition(".")
    if benchmark not in WITH_WORKERS or not kind:
        raise KeyError(f"{name}: not a worker (see python -m benchmarks.runner --list)")
    module = importlib.import_module(f"benchmarks.{benchmark}.workers")
    try:
        return module.WORKERS[kind]
    except KeyError:
        raise KeyError(f"{name}: not a worker of {benchmark} "
                       f"({', '.join(sorted(module.WORKERS))})") from None


def worker_names() -> list[str]:
    """Every registered worker, as ``<benchmark>.<kind>``."""
    names = []
    for benchmark in WITH_WORKERS:
        module = importlib.import_module(f"benchmarks.{benchmark}.workers")
        names += [f"{benchmark}.{kind}" for kind in module.WORKERS]
    return names


@dataclass
class WorkerRun:
    """What :func:`spawn` saw of one worker process.

    Attributes
    ----------
    result : dict or None
        The worker function's return value; ``None`` when it failed or was killed.
    error : str or None
        Why there is no result: ``"killed: ..."`` (see :func:`~benchmarks.measure.watch`) or
        ``"worker failed (rc N): <end of stderr>"``.
    killed : bool
        The parent killed the worker (memory cap, machine memory, timeout).
    wall_s : float
        From starting the interpreter to its exit, measured here.
    peak_rss_bytes : int
        Highest resident set sampled every 0.2 s (over the process tree with ``tree``); 0 when
        the worker was not watched.
    returncode : int
        Exit status of the worker process.
    """

    result: dict | None
    error: str | None
    killed: bool
    wall_s: float
    peak_rss_bytes: int
    returncode: int


def spawn(name: str, cfg: dict, *, env: dict | None = None, mem_cap: int | None = None,
          timeout: float | None = None, tree: bool = False, cwd=ROOT) -> WorkerRun:
    """Run worker ``name`` on ``cfg`` in a fresh interpreter and wait for it.

    Parameters
    ----------
    name : str
        ``<benchmark>.<kind>``, see :func:`resolve`.
    cfg : dict
        JSON-serialisable configuration, the worker function's argument.
    env : dict, optional
        Environment of the worker (default: this one); the repository root is put first on its
        ``PYTHONPATH`` so that ``benchmarks`` and ``stroke_lesion_app`` import from this checkout.
    mem_cap, timeout : int, float, optional
        Watch the worker (:func:`~benchmarks.measure.watch`): kill it above ``mem_cap`` bytes,
        when the machine has under 2 GB available, or after ``timeout`` seconds. Without both,
        the worker is simply waited for.
    tree : bool
        Watch the resident set of the worker's whole process tree and kill its process group
        (the worker is started in a new session).
    cwd : path
        Working directory of the worker.
    """
    resolve(name)  # fail here, not in the worker
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), env.get("PYTHONPATH"))))
    cmd = [sys.executable, "-m", "benchmarks.runner", name, json.dumps(cfg)]
    watched = mem_cap is not None or timeout is not None
    with tempfile.TemporaryFile("w+") as out_file, tempfile.TemporaryFile("w+") as err_file:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out_file, stderr=err_file, text=True, env=env,
                                cwd=cwd, start_new_session=tree)
        if watched:
            killed, peak = watch(proc, mem_cap if mem_cap is not None else 2**62,
                                 timeout if timeout is not None else float("inf"), tree=tree)
        else:
            killed, peak = None, 0
            proc.wait()
        wall = time.perf_counter() - start
        out_file.seek(0)
        err_file.seek(0)
        out, err = out_file.read(), err_file.read()
    if killed:
        return WorkerRun(None, killed, True, wall, peak, proc.returncode)
    for line in out.splitlines():
        if line.startswith(RESULT_PREFIX):
            return WorkerRun(json.loads(line[len(RESULT_PREFIX):]), None, False, wall, peak,
                             proc.returncode)
    return WorkerRun(None, f"worker failed (rc {proc.returncode}): {err.strip()[-800:]}", False,
                     wall, peak, proc.returncode)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.runner",
        description="Run one benchmark worker function in this process and print "
                    "'RESULT <json>' (the benchmarks start it as a fresh process).")
    parser.add_argument("name", nargs="?", help="<benchmark>.<kind>, see --list")
    parser.add_argument("config", nargs="?", help="the worker's configuration, JSON")
    parser.add_argument("--list", action="store_true", help="list the workers and exit")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(worker_names()))
        return 0
    if not args.name or args.config is None:
        parser.error("NAME and CONFIG are required")
    try:
        function = resolve(args.name)
    except KeyError as error:
        parser.error(str(error.args[0]))
    print(RESULT_PREFIX + json.dumps(function(json.loads(args.config))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
