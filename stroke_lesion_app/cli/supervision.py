"""Nothing of a run outlives it: signal handling and worker supervision for Nipype's MultiProc.

A cluster stops a job at its time limit with SIGTERM, then SIGKILL a few seconds later, often
to the main process only. Nipype's MultiProc plugin runs nodes in a
:class:`~concurrent.futures.ProcessPoolExecutor` whose workers come from a forkserver; on its
own, a killed main process leaves the forkserver and its workers running as orphans, still
writing into the work folder that the resubmitted job then uses. Two mechanisms close that gap:

* **SIGTERM / SIGINT** (:func:`stop_on_signals`): the main process kills the pool's workers,
  logs one line and exits (143 / 130) within a second; the forkserver then sees its parent gone
  and exits on its own.
* **SIGKILL of the main process**, which no handler sees: the forkserver asks the kernel to
  kill it when the main process dies, and every worker asks the same of the forkserver (Linux
  ``PR_SET_PDEATHSIG``, :mod:`.lifetime`). Python's forkserver alone would wait for its
  workers, which hold its "alive" pipe open, so no worker computes on for minutes.

:class:`SupervisedMultiProcPlugin` is Nipype's own MultiProc plugin with that worker set-up; the
scheduling is Nipype's. A rerun with the same work folder reuses every node that finished
(Nipype's cache) and reruns the others.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import weakref
from collections.abc import Iterator

from nipype.pipeline.plugins.multiproc import MultiProcPlugin, process_initializer

from stroke_lesion_app.cli.lifetime import die_with_parent

__all__ = ["SupervisedMultiProcPlugin", "kill_workers", "stop_on_signals", "worker_initializer"]

LOGGER = logging.getLogger("stroke_lesion_app.cli")

#: Module the forkserver imports when it starts: it makes the forkserver die with this process.
FORKSERVER_PRELOAD = "stroke_lesion_app.cli.forkserver_preload"
#: Pools of the plugins alive in this process (the signal handler kills their workers).
_POOLS: weakref.WeakSet = weakref.WeakSet()


#: Nipype's logging settings a worker copies from the main process.
_LOGGING_KEYS = ("workflow_level", "interface_level", "utils_level")


def worker_initializer(cwd: str, logging_levels: dict | None = None) -> None:
    """Set up one MultiProc worker: Nipype's own set-up, the main process's Nipype log levels
    (a fresh worker would log at Nipype's defaults), then :func:`die_with_parent`."""
    process_initializer(cwd)
    if logging_levels:
        from nipype import config as nipype_config
        from nipype import logging as nipype_logging

        nipype_config.update_config({"logging": dict(logging_levels)})
        nipype_logging.update_logging(nipype_config)
    die_with_parent()


class SupervisedMultiProcPlugin(MultiProcPlugin):
    """Nipype's MultiProc plugin whose workers die with the run (see the module docstring).

    Takes the same ``plugin_args`` as ``MultiProc`` (``n_procs``, ``memory_gb``,
    ``mp_context``, …).
    """

    def __init__(self, plugin_args=None):
        super().__init__(plugin_args=plugin_args)
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # Nipype's pool has started no worker yet (they start on the first submission):
        # replace it by one whose workers run worker_initializer.
        self.pool.shutdown(wait=False)
        context = multiprocessing.get_context(self.plugin_args.get("mp_context"))
        if context.get_start_method() == "forkserver":
            context.set_forkserver_preload(["__main__", FORKSERVER_PRELOAD])
        from nipype import config as nipype_config

        levels = {key: nipype_config.get("logging", key) for key in _LOGGING_KEYS}
        self.pool = ProcessPoolExecutor(
            max_workers=self.processors, initializer=worker_initializer,
            initargs=(self._cwd, levels), mp_context=context)
        _POOLS.add(self.pool)


def kill_workers() -> int:
    """SIGKILL every worker of the pools alive in this process; returns how many."""
    killed = 0
    for pool in list(_POOLS):
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            if process.is_alive():
                with contextlib.suppress(OSError):
                    process.kill()
                    killed += 1
    return killed


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """While the block runs, SIGTERM and SIGINT stop the run at once: workers are killed, one
    line is logged, and the process exits with 128 + the signal number.

    Nothing half-written appears under a final output name (outputs are written to temporary
    names and renamed), and Nipype reruns the unfinished nodes next time.
    """
    def stop(signum, frame):
        killed = kill_workers()
        LOGGER.error("Received %s: stopped (%d worker(s) killed). Rerun the same command with "
                     "the same -w/--work-dir to resume: finished steps are reused.",
                     signal.Signals(signum).name, killed)
        for handler in logging.getLogger().handlers:
            with contextlib.suppress(Exception):
                handler.flush()
        os._exit(128 + signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
