"""Processes that die with their parent (Linux ``PR_SET_PDEATHSIG``); no heavy imports, since
the forkserver imports this at start (:mod:`.forkserver_preload`)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal

__all__ = ["die_with_parent"]

#: Linux prctl option: the signal delivered to this process when its parent dies.
_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent exits (Linux only).

    Returns
    -------
    bool
        Whether the request was accepted (``False`` off Linux or without libc's ``prctl``).
    """
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        accepted = libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
    if accepted and os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), sig)
    return accepted
