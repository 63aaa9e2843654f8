"""A killed run leaves no process behind, and a rerun resumes (as a cluster job at its time limit:
SIGTERM to the main process, or SIGKILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stroke_lesion_app.synthetic import synthesize_dataset

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _session_processes(session: int) -> list[int]:
    """PIDs of the live (not zombie) processes of a session."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, sid = fields[0], int(fields[3])
        if sid == session and state != "Z":
            found.append(int(entry.name))
    return found


def _start(bids: Path, out: Path, work: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "stroke_lesion_app", str(bids), str(out), "participant",
               "-w", str(work), "--nprocs", "2", "--skull-strip", "none",
               "--lesion-source", "manual", "--group-normalisation", "affine"]
    return subprocess.Popen(command, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=work.parent)


def _wait_for_registration(process: subprocess.Popen, work: Path, timeout: float = 240) -> Path:
    """Wait until the registration node runs (its folder exists, its result does not)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read()
        for node in work.rglob("register_template_wf/register"):
            if (node / "_inputs.pklz").exists() and not (node / "result_register.pklz").exists():
                return node
        time.sleep(0.2)
    raise AssertionError("registration never started")


def _assert_nothing_survives(process: subprocess.Popen, seconds: float = 10) -> None:
    process.wait(timeout=seconds)
    deadline = time.monotonic() + seconds
    while _session_processes(process.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _session_processes(process.pid) == []


def _finished_results(work: Path) -> dict[Path, int]:
    return {path: path.stat().st_mtime_ns for path in work.rglob("result_*.pklz")}


@pytest.fixture(scope="module")
def bids(tmp_path_factory):
    root = tmp_path_factory.mktemp("signals") / "bids"
    synthesize_dataset(root, n_subjects=1, seed=3, resolution=2)
    return root


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_run_leaves_no_process_and_the_rerun_resumes(bids, tmp_path, sig):
    out, work = tmp_path / "out", tmp_path / "work"
    process = _start(bids, out, work)
    _wait_for_registration(process, work)
    done_before = _finished_results(work)
    assert done_before  # conforming and N4 finished before the registration started
    os.kill(process.pid, sig)  # the main process only, as a scheduler may do
    _assert_nothing_survives(process)
    if sig == signal.SIGTERM:
        assert process.returncode == 128 + signal.SIGTERM
        assert "Received SIGTERM: stopped" in process.stdout.read()

    rerun = _start(bids, out, work)
    output, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, output
    after = _finished_results(work)
    for path, stamp in done_before.items():  # finished nodes were reused, not rerun
        assert after[path] == stamp, path
    assert any("register" in str(path) for path in set(after) - set(done_before))
    assert (out / "sub-01" / "anat" / "sub-01_desc-preproc_T1w.nii.gz").is_file()


def test_die_with_parent_kills_the_orphan(tmp_path):
    """The worker set-up on its own: a child of a killed parent is killed by the kernel."""
    script = tmp_path / "parent.py"
    script.write_text(
        "import multiprocessing, os, sys, time\n"
        "from stroke_lesion_app.cli.lifetime import die_with_parent\n"
        "def child():\n"
        "    die_with_parent()\n"
        "    print(os.getpid(), flush=True)  # ready: the request is in place\n"
        "    time.sleep(120)\n"
        "if __name__ == '__main__':\n"
        "    multiprocessing.get_context('fork').Process(target=child).start()\n"
        "    time.sleep(120)\n")
    parent = subprocess.Popen([sys.executable, str(script)], start_new_session=True,
                              stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    child = int(parent.stdout.readline())
    assert Path(f"/proc/{child}").exists()
    os.kill(parent.pid, signal.SIGKILL)
    _assert_nothing_survives(parent, seconds=5)
