#!/usr/bin/env bash
# Smoke test of a built image, offline (`podman run --network none`), as the image's non-root
# user, with the input dataset mounted read-only:
#
#   bash scripts/container_smoke_test.sh [IMAGE]        # default stroke-lesion-app:latest
#   make container-smoke [IMAGE=stroke-lesion-app:latest-cpu]
#
# Needs an image from scripts/build_container.sh (and its containers.conf). Steps:
#   1. --version, --help; the user inside is uid 1000 (not root); the template files the image
#      holds and the source the app picks (templateflow when the image was built with
#      TEMPLATES=fetch, nilearn's copy with TEMPLATES=none: label io.github.stroke-lesion-app.templates).
#   2. `stroke-lesion-model synthesize` writes the demo dataset (2 subjects, seed 0, 2 mm) in the
#      image; then participant (one container per subject, timed) and group with the default
#      bundle (demo), input read-only; the input is unchanged afterwards (sha256 of every file).
#   3. scripts/container_check_outputs.py checks the outputs inside the image as
#      tests/integration/test_participant.py does; the logs hold no download attempt; the host's
#      bids-validator-deno (if installed: .venv) reports no error.
#   4. Apptainer semantics without Apptainer (scripts/apptainer_podman_stub.sh): `env -i` plus
#      Singularity.def's %environment, %runscript and %test, read-only root, tmpfs /tmp and home,
#      a uid the image does not know; then scripts/slurm/participant_array.sbatch, array task 1,
#      runs one subject through the stub into a second output folder, checked the same way.
# SMOKE_DIR (default /var/tmp/stroke-lesion-app-container/smoke-<tag>) keeps data, outputs and
# logs; SKIP_APPTAINER=1 skips step 4; NPROCS (default 2). Exit status: 0 passed, 1 failed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
IMAGE=${1:-${IMAGE:-stroke-lesion-app:latest}}
WORK=${CONTAINER_WORK:-/var/tmp/stroke-lesion-app-container}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$WORK/containers.conf}
NPROCS=${NPROCS:-2}
SMOKE=${SMOKE_DIR:-$WORK/smoke-$(echo "${IMAGE##*:}" | tr -c 'A-Za-z0-9.\n-' _)}
[ -f "$CONTAINERS_CONF" ] || { echo "$0: $CONTAINERS_CONF missing; run scripts/build_container.sh" >&2; exit 1; }
podman image exists "$IMAGE" || { echo "$0: no image $IMAGE; run scripts/build_container.sh" >&2; exit 1; }

log() { printf '[smoke %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
fail() { log "FAIL: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
run=(podman run --rm --network none)

rm -rf "$SMOKE"
mkdir -p "$SMOKE/data" "$SMOKE/work" "$SMOKE/logs"
chown 1000:1000 "$SMOKE/data" "$SMOKE/work"
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
templates=$(podman image inspect --format '{{index .Labels "io.github.stroke-lesion-app.templates"}}' "$IMAGE")
variant=$(podman image inspect --format '{{index .Labels "io.github.stroke-lesion-app.torch-variant"}}' "$IMAGE")
log "image $IMAGE: $(awk -v s="$size" 'BEGIN { printf "%.2f GB", s / 1e9 }'), torch variant ${variant:-?}, templates ${templates:-?}"
case $templates in
fetch) source_expected=templateflow ;;
none) source_expected=nilearn
      log "WARNING: image built with TEMPLATES=none: no TemplateFlow files inside; expecting nilearn's copy" ;;
*) fail "image label io.github.stroke-lesion-app.templates is '${templates}'" ;;
esac

# 1. --version, --help, user, templates ---------------------------------------------------------
version=$("${run[@]}" "$IMAGE" --version) || fail "--version"
log "--version: $version"
"${run[@]}" "$IMAGE" --help > "$SMOKE/logs/help.txt" || fail "--help"
grep -q "participant" "$SMOKE/logs/help.txt" || fail "--help does not mention participant"
[ "$("${run[@]}" --entrypoint id "$IMAGE" -u)" = 1000 ] || fail "the image's user is not uid 1000"
"${run[@]}" --entrypoint python "$IMAGE" -c "
import os, pathlib
from stroke_lesion_app.core import templates as t
files = t.get_template()
home = pathlib.Path(os.environ['TEMPLATEFLOW_HOME'])
found = sorted(p.name for p in home.rglob('*.nii.gz') if p.stat().st_size > 0)
print(f'template source {files.source}; {len(found)} TemplateFlow NIfTI files in {home}')
assert files.source == '$source_expected', f'template source {files.source}, expected $source_expected'
" | tee "$SMOKE/logs/templates.txt" || fail "template check"

# 2. demo dataset, participant per subject, group -------------------------------------------------
start=$(now)
"${run[@]}" --entrypoint stroke-lesion-model -v "$SMOKE/data:/data" "$IMAGE" \
    synthesize /data/bids --subjects 2 --seed 0 --resolution 2 > "$SMOKE/logs/synthesize.log" 2>&1 \
    || { cat "$SMOKE/logs/synthesize.log"; fail "synthesize"; }
log "demo dataset synthesized in the image in $(since "$start") s"
checksums() { (cd "$SMOKE/data/bids" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum); }
checksums > "$SMOKE/logs/bids.sha256"
mkdir -p "$SMOKE/data/out"
chown 1000:1000 "$SMOKE/data/out"
mounts=(-v "$SMOKE/data/bids:/data/bids:ro" -v "$SMOKE/data/out:/data/out" -v "$SMOKE/work:/work")
printf 'subject\tseconds\n' > "$SMOKE/times.tsv"
for label in $(find "$SMOKE/data/bids" -mindepth 1 -maxdepth 1 -type d -name 'sub-*' -printf '%f\n' | sed 's/^sub-//' | LC_ALL=C sort); do
    start=$(now)
    "${run[@]}" "${mounts[@]}" "$IMAGE" /data/bids /data/out participant --participant-label "$label" \
        -w "/work/sub-$label" --nprocs "$NPROCS" > "$SMOKE/logs/participant-$label.log" 2>&1 \
        || { tail -n 30 "$SMOKE/logs/participant-$label.log"; fail "participant sub-$label"; }
    seconds=$(since "$start")
    printf '%s\t%s\n' "$label" "$seconds" >> "$SMOKE/times.tsv"
    log "participant sub-$label: $seconds s in the container (load average now: $(cut -d ' ' -f 1-3 /proc/loadavg) on $(nproc) CPUs)"
done
start=$(now)
"${run[@]}" "${mounts[@]}" "$IMAGE" /data/bids /data/out group > "$SMOKE/logs/group.log" 2>&1 \
    || { tail -n 30 "$SMOKE/logs/group.log"; fail "group"; }
log "group: $(since "$start") s"
checksums | cmp -s - "$SMOKE/logs/bids.sha256" || fail "the read-only input changed"

# 3. outputs, downloads, validator --------------------------------------------------------------
"${run[@]}" --entrypoint python -v "$SMOKE/data:/data:ro" \
    -v "$ROOT/scripts/container_check_outputs.py:/opt/check/container_check_outputs.py:ro" "$IMAGE" \
    /opt/check/container_check_outputs.py /data/bids /data/out --template-source "$source_expected" \
    || fail "output checks"
if grep -i -n -E "download|urlopen|connection (refused|error)|name resolution" "$SMOKE"/logs/*.log; then
    fail "the logs mention a download or a connection"
fi
log "no download or connection attempt in the logs (and --network none: none possible)"
VALIDATOR=${VALIDATOR:-$ROOT/.venv/bin/bids-validator-deno}
if [ -x "$VALIDATOR" ]; then
    "$VALIDATOR" "$SMOKE/data/out" --format json > "$SMOKE/logs/validator.json" 2>/dev/null || true
    python3 - "$SMOKE/logs/validator.json" <<'PYTHON' || fail "BIDS validator errors"
import json, sys
issues = json.load(open(sys.argv[1]))["issues"]["issues"]
errors = [(i["code"], i.get("location")) for i in issues if i.get("severity") == "error"]
print(f"[smoke] bids-validator-deno (host): {len(errors)} errors, "
      f"{sum(i.get('severity') == 'warning' for i in issues)} warnings")
sys.exit(1 if errors else 0)
PYTHON
else
    log "bids-validator-deno not found at $VALIDATOR: validator skipped (not in the image)"
fi

# 4. Apptainer semantics through the stub -----------------------------------------------------
if [ -z "${SKIP_APPTAINER:-}" ]; then
    stub=(env APPTAINER_STUB_IMAGE="$IMAGE" bash "$ROOT/scripts/apptainer_podman_stub.sh")
    "${stub[@]}" run --cleanenv stroke-lesion-app.sif --version > "$SMOKE/logs/apptainer-version.txt" \
        || fail "apptainer-like run --version"
    log "apptainer-like (env -i + %environment + %runscript, read-only root): $(cat "$SMOKE/logs/apptainer-version.txt")"
    "${stub[@]}" exec --cleanenv stroke-lesion-app.sif /usr/bin/env > "$SMOKE/logs/apptainer-env.txt"
    for assignment in STROKE_LESION_APP_CONTAINER=apptainer TEMPLATEFLOW_HOME=/opt/templateflow \
                      PYTHONNOUSERSITE=1 STROKE_LESION_APP_MODELS=/models; do
        grep -q "^$assignment\$" "$SMOKE/logs/apptainer-env.txt" \
            || fail "%environment under env -i did not set $assignment"
    done
    if "${stub[@]}" test stroke-lesion-app.sif > "$SMOKE/logs/apptainer-test.log" 2>&1; then
        log "apptainer-like %test: passed ($(tail -n 1 "$SMOKE/logs/apptainer-test.log"))"
    elif [ "$templates" = none ]; then
        log "apptainer-like %test: FAILED as it must on a TEMPLATES=none image: $(grep -o 'template from [a-z]*, not TEMPLATEFLOW_HOME' "$SMOKE/logs/apptainer-test.log" || tail -n 1 "$SMOKE/logs/apptainer-test.log")"
    else
        cat "$SMOKE/logs/apptainer-test.log"
        fail "apptainer-like %test"
    fi
    mkdir -p "$SMOKE/slurm/out" "$SMOKE/slurm/work" "$SMOKE/slurm/logs"
    chmod 777 "$SMOKE/slurm/out" "$SMOKE/slurm/work"
    start=$(now)
    (cd "$SMOKE/slurm" && env SLURM_ARRAY_TASK_ID=1 SLURM_CPUS_PER_TASK="$NPROCS" \
        SIF="$SMOKE/slurm/stroke-lesion-app.sif" WORK_ROOT="$SMOKE/slurm/work" \
        APPTAINER="$ROOT/scripts/apptainer_podman_stub.sh" APPTAINER_STUB_IMAGE="$IMAGE" \
        bash "$ROOT/scripts/slurm/participant_array.sbatch" "$SMOKE/data/bids" "$SMOKE/slurm/out") \
        > "$SMOKE/logs/slurm-task1.log" 2>&1 || { tail -n 30 "$SMOKE/logs/slurm-task1.log"; fail "SLURM array task 1 through the stub"; }
    log "SLURM array task 1 (sub-01) through the apptainer stub: $(since "$start") s"
    "${run[@]}" --entrypoint python -v "$SMOKE/data/bids:/data/bids:ro" -v "$SMOKE/slurm/out:/data/out:ro" \
        -v "$ROOT/scripts/container_check_outputs.py:/opt/check/container_check_outputs.py:ro" "$IMAGE" \
        /opt/check/container_check_outputs.py /data/bids /data/out --template-source "$source_expected" \
        --participant-label 01 --no-group || fail "outputs of the SLURM task"
    grep -q '"Type": "apptainer"' "$SMOKE/slurm/out/dataset_description.json" \
        || fail "dataset_description.json of the SLURM run does not record Container Type apptainer"
fi
log "PASSED: $IMAGE ($(awk -v s="$size" 'BEGIN { printf "%.2f GB", s / 1e9 }')); per subject: $(tail -n +2 "$SMOKE/times.tsv" | awk '{ printf "sub-%s %s s; ", $1, $2 }')"
