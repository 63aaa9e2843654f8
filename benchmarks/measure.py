"""Measurements shared by the benchmarks: memory readings, a watched subprocess, the machine.

Standard library only at import time (``torch`` is imported inside
:func:`machine_description`): worker processes import this module before they measure.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import subprocess
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

GB = 1024**3


def status_kb(field: str, pid: str = "self") -> int:
    """A ``kB`` field (``VmRSS``, ``VmHWM``, ...) of ``/proc/<pid>/status``; 0 when absent."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def meminfo_bytes(field: str) -> int:
    """A field of ``/proc/meminfo`` (``MemTotal``, ``MemAvailable``, ...) in bytes."""
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def mem_available() -> int:
    """Memory the machine has available, in bytes."""
    return meminfo_bytes("MemAvailable")


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its live descendants (from ``/proc/*/stat``)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                # the command name (field 2) may hold spaces; the parent pid follows ") S "
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def tree_rss(pid: int) -> int:
    """Sum of the resident sets of ``pid`` and its descendants, in bytes (shared pages counted
    once per process, so an upper bound)."""
    total = 0
    for member in process_tree(pid):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, PermissionError):
            total += status_kb("VmRSS", str(member)) * 1024
    return total


def watch(proc: subprocess.Popen, mem_cap: int, timeout: float,
          tree: bool = False) -> tuple[str | None, int]:
    """Wait for ``proc``; kill it above ``mem_cap`` bytes, under 2 GB free, or after ``timeout``.

    Parameters
    ----------
    proc : subprocess.Popen
        The process to watch (polled every 0.2 s).
    mem_cap : int
        Resident-set cap in bytes.
    timeout : float
        Seconds.
    tree : bool
        Count the resident sets of ``proc``'s descendants too (for commands that start worker
        processes); the process group is killed when a limit is passed (start ``proc`` with
        ``start_new_session=True`` for that).

    Returns
    -------
    killed : str or None
        Why the process was killed, ``None`` when it ended by itself.
    peak : int
        Highest resident set sampled (summed over the tree when ``tree``), bytes.
    """
    start, peak, killed = time.monotonic(), 0, None
    while proc.poll() is None:
        try:
            rss = tree_rss(proc.pid) if tree else status_kb("VmRSS", str(proc.pid)) * 1024
        except (FileNotFoundError, ProcessLookupError):
            break
        peak = max(peak, rss)
        if rss > mem_cap:
            killed = f"killed: resident set passed the {mem_cap / GB:.1f} GB cap"
        elif mem_available() < 2 * GB:
            killed = "killed: machine had < 2 GB available"
        elif time.monotonic() - start > timeout:
            killed = f"killed: over {timeout:.0f} s"
        if killed:
            if tree:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(os.getpgid(proc.pid), 9)
            proc.kill()
            break
        time.sleep(0.2)
    proc.wait()
    return killed, peak


def machine_description(threads: int) -> dict:
    """CPU, SIMD flags, memory, Python/torch versions, thread count, load average and date."""
    import torch

    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((l.split(":", 1)[1].strip() for l in cpuinfo.splitlines()
                  if l.startswith("model name")), platform.processor())
    flags = next((l.split(":", 1)[1].split() for l in cpuinfo.splitlines()
                  if l.startswith("flags")), [])
    simd = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    info = {
        "cpu": model, "logical_cpus": os.cpu_count(), "simd": simd,
        "memory_gb": round(meminfo_bytes("MemTotal") / GB, 1),
        "python": platform.python_version(), "torch": torch.__version__, "threads": threads,
        "load_average_start": os.getloadavg(),
        "date": dt.datetime.now().isoformat(timespec="seconds"),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    with contextlib.suppress(PackageNotFoundError):
        info["dynamic_network_architectures"] = version("dynamic_network_architectures")
    return info


def default_mem_cap(mem_cap_gb: float | None) -> int:
    """``--mem-cap-gb`` in bytes; ``None``: min(16 GB, 70 % of the available memory)."""
    return int((mem_cap_gb * GB) if mem_cap_gb else min(16 * GB, 0.7 * mem_available()))


def log(text: str) -> None:
    """Print ``[HH:MM:SS] text`` at once (progress of a long run)."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)
