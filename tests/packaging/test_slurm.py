"""Scaling on SLURM: the job-array script's participant selection and the command it runs (with a
stub ``apptainer`` that records its arguments), the documented Nipype plugin file as the CLI
reads it, and, where Debian's slurm-wlm is installed, a real one-node cluster
(scripts/slurm/local_cluster.sh) running a workflow through Nipype's SLURM plugin and the
array script through ``sbatch --array``.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARRAY = ROOT / "scripts" / "slurm" / "participant_array.sbatch"
PLUGIN_FILE = ROOT / "scripts" / "slurm" / "plugin_slurm.yml"
LOCAL_CLUSTER = ROOT / "scripts" / "slurm" / "local_cluster.sh"

STUB = """#!/bin/bash
# records its arguments, one per line, per array task
printf '%s\\n' "$@" > "$STUB_DIR/apptainer.${SLURM_ARRAY_TASK_ID:-none}.args"
"""


@pytest.fixture
def stub_env(tmp_path):
    """PATH with a stub ``apptainer``; the folder its argument files go to."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "apptainer").write_text(STUB)
    (bin_dir / "apptainer").chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "STUB_DIR": str(tmp_path),
           "HOME": str(tmp_path), "USER": getpass.getuser()}
    return env


def bids(tmp_path: Path, subjects: list[str], participants_tsv: str | None = None) -> Path:
    root = tmp_path / "bids"
    for subject in subjects:
        (root / f"sub-{subject}" / "anat").mkdir(parents=True)
    if participants_tsv is not None:
        (root / "participants.tsv").write_text(participants_tsv)
    return root


def run_array(*args, env, cwd, task=None, **extra):
    environment = {**env, **extra}
    if task is not None:
        environment["SLURM_ARRAY_TASK_ID"] = str(task)
    return subprocess.run(["bash", str(ARRAY), *map(str, args)], capture_output=True,
                          text=True, env=environment, cwd=cwd, timeout=60)


def test_labels_from_participants_tsv_in_file_order(tmp_path, stub_env):
    root = bids(tmp_path, ["01", "02", "10"],
                "age\tparticipant_id\r\n50\tsub-10\r\n60\tsub-01\r\n\r\n")
    listed = run_array("--list", root, env=stub_env, cwd=tmp_path)
    assert listed.stdout.split() == ["10", "01"]
    assert run_array("--count", root, env=stub_env, cwd=tmp_path).stdout.strip() == "2"


def test_labels_from_folders_when_no_participants_tsv(tmp_path, stub_env):
    root = bids(tmp_path, ["10", "02", "01"])
    assert run_array("--list", root, env=stub_env, cwd=tmp_path).stdout.split() == [
        "01", "02", "10"]


def test_array_task_runs_the_documented_apptainer_command(tmp_path, stub_env):
    root = bids(tmp_path, ["01", "02"], "participant_id\tage\nsub-01\t1\nsub-02\t2\n")
    models = tmp_path / "models"
    models.mkdir()
    result = run_array(root, tmp_path / "out", "--model", "mybundle", env=stub_env,
                       cwd=tmp_path, task=2, SLURM_CPUS_PER_TASK="4",
                       SLURM_MEM_PER_NODE="16384", SCRATCH=str(tmp_path / "scratch"),
                       MODELS_DIR=str(models), GPU="1")
    assert result.returncode == 0, result.stderr
    arguments = (tmp_path / "apptainer.2.args").read_text().splitlines()
    work = tmp_path / "scratch" / "stroke-lesion-app-work"
    assert arguments == [
        "run", "--cleanenv", "-B", f"{root}:/bids:ro", "-B", f"{tmp_path / 'out'}:/out",
        "-B", f"{work}:/work", "-B", f"{models}:/models:ro", "--nv",
        str(tmp_path / "stroke-lesion-app.sif"), "/bids", "/out", "participant",
        "--participant-label", "02", "-w", "/work/sub-02", "--nprocs", "4",
        "--mem-gb", "16384MB", "--model", "mybundle"]
    assert work.is_dir() and (tmp_path / "out").is_dir()


def test_arguments_the_app_accepts(tmp_path, stub_env):
    """The options the array script adds parse with the app's own command line."""
    from stroke_lesion_app.cli.run import cli

    root = bids(tmp_path, ["01"])
    assert run_array(root, tmp_path / "out", env=stub_env, cwd=tmp_path, task=1,
                     SLURM_MEM_PER_NODE="16384").returncode == 0
    arguments = (tmp_path / "apptainer.1.args").read_text().splitlines()
    app_args = arguments[arguments.index(str(tmp_path / "stroke-lesion-app.sif")) + 1:]
    context = cli.make_context("stroke-lesion-app", app_args)
    assert context.params["participant_labels"] == ["01"]
    assert context.params["nprocs"] == 1 and context.params["mem_gb"] == pytest.approx(16.0)


@pytest.mark.parametrize("task", [0, 3, "x"])
def test_task_outside_the_participants_is_an_error(tmp_path, stub_env, task):
    root = bids(tmp_path, ["01", "02"])
    result = run_array(root, tmp_path / "out", env=stub_env, cwd=tmp_path, task=task)
    assert result.returncode == 2 and "outside 1-2" in result.stderr
    assert not list(tmp_path.glob("apptainer.*.args"))


def test_not_an_array_task(tmp_path, stub_env):
    root = bids(tmp_path, ["01"])
    result = run_array(root, tmp_path / "out", env=stub_env, cwd=tmp_path)
    assert result.returncode != 0 and "sbatch --array" in result.stderr


def plugin_settings_as_the_cli_reads_them(tmp_path) -> dict:
    """``--plugin-settings scripts/slurm/plugin_slurm.yml`` through the CLI's own parsing, then
    the NipypeSettings mapping run.py makes."""
    from stroke_lesion_app.cli.run import cli
    from stroke_lesion_app.config import NipypeSettings

    context = cli.make_context("stroke-lesion-app", [
        str(tmp_path / "bids"), str(tmp_path / "out"), "participant",
        "--plugin-settings", str(PLUGIN_FILE)])
    content = context.params["plugin_settings"]
    settings = NipypeSettings(plugin=content["plugin"], plugin_args=dict(content["plugin_args"]))
    return settings.plugin_settings()


def test_plugin_file_is_a_valid_slurm_setting(tmp_path):
    settings = plugin_settings_as_the_cli_reads_them(tmp_path)
    assert settings["plugin"] == "SLURM"
    args = settings["plugin_args"]
    assert "--cpus-per-task=2" in args["sbatch_args"] and args["max_jobs"] == 50
    # Nipype only adds its own -o/-e when the text "-o"/"-e" is absent from sbatch_args
    assert "-o" not in args["sbatch_args"] and "-e" not in args["sbatch_args"]
    assert "mp_context" not in args  # MultiProc-only defaults are not mixed in


# --------------------------------------------------------------------- a real one-node cluster

def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """A running SLURM cluster: the one SLURM_CONF points at, else a local one started with
    scripts/slurm/local_cluster.sh (root and Debian's slurm-wlm + munge needed)."""
    if shutil.which("sbatch") is None:
        pytest.skip("sbatch not found: SLURM tests need Debian's slurm-wlm and munge "
                    "(apt-get install slurm-wlm munge)")
    saved = os.environ.get("SLURM_CONF")
    if saved and subprocess.run(["sinfo", "-h"], capture_output=True, timeout=20).returncode == 0:
        yield saved
        return
    if os.geteuid() != 0 or not Path("/usr/sbin/slurmctld").exists():
        pytest.skip("no SLURM cluster answers and starting one needs root and slurmctld")
    state = tmp_path_factory.mktemp("slurm")
    state.chmod(0o755)
    env = {**os.environ, "SLURMCTLD_PORT": str(_free_port()), "SLURMD_PORT": str(_free_port())}
    started = subprocess.run(["bash", str(LOCAL_CLUSTER), "start", str(state)], env=env,
                             capture_output=True, text=True, timeout=120)
    try:
        if started.returncode != 0:
            pytest.fail(f"local_cluster.sh start failed: {started.stdout}{started.stderr}")
        os.environ["SLURM_CONF"] = str(state / "slurm.conf")
        yield os.environ["SLURM_CONF"]
    finally:
        subprocess.run(["bash", str(LOCAL_CLUSTER), "stop", str(state)], capture_output=True,
                       timeout=60)
        if saved is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = saved


def double(x):
    """Node function: twice the input, and the SLURM job that ran it."""
    import os

    return 2 * x, os.environ.get("SLURM_JOB_ID", "")


def test_workflow_through_nipypes_slurm_plugin(slurm_cluster, tmp_path, monkeypatch):
    """The documented plugin file, as the CLI reads it, runs a two-node workflow as SLURM
    jobs (one per node, in dependency order)."""
    from nipype import Function, Node, Workflow, config
    from nipype.pipeline.engine.utils import load_resultfile

    monkeypatch.setenv("LOGNAME", os.environ.get("LOGNAME") or getpass.getuser())
    settings = plugin_settings_as_the_cli_reads_them(tmp_path)
    first = Node(Function(input_names=["x"], output_names=["y", "job"], function=double),
                 name="first")
    second = Node(Function(input_names=["x"], output_names=["y", "job"], function=double),
                  name="second")
    first.inputs.x = 3
    workflow = Workflow(name="slurm_wf", base_dir=str(tmp_path / "work"))
    workflow.config["execution"] = {"remove_unnecessary_outputs": False}  # keep first.job
    workflow.connect(first, "y", second, "x")
    previous = config.get("execution", "poll_sleep_duration")
    config.set("execution", "poll_sleep_duration", "0.5")
    try:
        workflow.run(**settings)
    finally:
        config.set("execution", "poll_sleep_duration", previous)
    results = {name: load_resultfile(tmp_path / "work" / "slurm_wf" / name /
                                     f"result_{name}.pklz").outputs
               for name in ("first", "second")}
    assert results["first"].y == 6 and results["second"].y == 12
    jobs = [results["first"].job, results["second"].job]
    assert all(job.isdigit() for job in jobs) and jobs[0] != jobs[1], jobs
    assert list((tmp_path / "work" / "slurm_wf" / "batch").glob("slurm-*.out"))


def test_job_array_under_sbatch(slurm_cluster, tmp_path, stub_env):
    """`sbatch --array=1-N` with the script as documented (resources lowered to fit)."""
    root = bids(tmp_path, ["01", "02"])
    count = run_array("--count", root, env=stub_env, cwd=tmp_path).stdout.strip()
    (tmp_path / "logs").mkdir()
    env = {**os.environ, **stub_env, "SLURM_CONF": slurm_cluster}
    submitted = subprocess.run(
        ["sbatch", "--parsable", f"--array=1-{count}", "--cpus-per-task=1", "--mem=100M",
         str(ARRAY), str(root), str(tmp_path / "out")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert submitted.returncode == 0, submitted.stderr
    job = submitted.stdout.strip().split(";")[0]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        queue = subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True,
                               env=env, timeout=30)
        if not queue.stdout.strip():
            break
        time.sleep(0.5)
    logs = "".join(path.read_text() for path in (tmp_path / "logs").glob("*.out"))
    for task, label in ((1, "01"), (2, "02")):
        arguments = (tmp_path / f"apptainer.{task}.args").read_text().splitlines()
        assert arguments[arguments.index("--participant-label") + 1] == label, logs
        assert arguments[arguments.index("--nprocs") + 1] == "1"
        assert arguments[arguments.index("--mem-gb") + 1] == "100MB"
    assert "task 2 of 2: sub-02" in logs
