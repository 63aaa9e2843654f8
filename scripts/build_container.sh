#!/usr/bin/env bash
# Build the stroke-lesion-app image with podman on a machine without Docker Hub (Debian
# bookworm host, run as root), from a Debian base made here with mmdebstrap:
#
#   bash scripts/build_container.sh                  # GPU-capable image (PyPI's CUDA torch)
#   VARIANT=cpu bash scripts/build_container.sh      # CPU-only variant (smaller, see below)
#   make container [VARIANT=cpu]                     # the same
#
# Steps (each prints its wall time; the last lines give the image size and largest layers):
#   1. apt-get install podman buildah runc mmdebstrap, when one is missing.
#   2. A containers.conf in $CONTAINER_WORK, passed with CONTAINERS_CONF (nothing in /etc
#      changes): runc (crun refuses this host's hybrid cgroups), cgroupfs, file events
#      logger, nofile/nproc ulimits root may set, and the host's CA bundle plus a pip.conf
#      mounted read-only at /etc/xdg/pip in every container, so pip in RUN steps trusts it.
#   3. localhost/debian:bookworm: mmdebstrap --variant=minbase from the mirror configured in
#      /etc/apt/sources.list* (or $DEBIAN_MIRROR), imported with podman import.
#   4. A stand-in for python:3.11-slim (Debian's python3 3.11 + venv + pip, python/pip links in
#      /usr/local/bin), tagged docker.io/library/python:3.11-slim and :3.11-slim-bookworm, so
#      the Dockerfile's FROM resolves with --pull=never.
#   5. The image from the repository's Dockerfile, with --pull=never, tagged
#      stroke-lesion-app:$VERSION[-cpu] and stroke-lesion-app:latest[-cpu].
# Steps 3 and 4 are skipped when their image exists (REBUILD_BASE=1 rebuilds them).
#
# Settings (environment variables):
#   VARIANT         cuda (default: PyPI's torch with its nvidia-* libraries) or cpu (triton and
#                   the CUDA libraries torch never loads on a CPU removed; Dockerfile ARG VARIANT)
#   CONTAINER_WORK  folder for containers.conf and the pip config (default
#                   /var/tmp/stroke-lesion-app-container)
#   DEBIAN_MIRROR   Debian mirror URL (default: the first one in /etc/apt/sources.list*)
#   WHEELHOUSE      a folder of wheels (e.g. pip download torch==2.14.1 torchvision==0.29.1
#                   -d DIR) mounted read-only at /wheelhouse in the build and given to pip as
#                   find-links, so torch is not downloaded again; PIP_EXTRA_INDEX_URL adds an
#                   index (file:// URLs of folders that are mounted too, see below)
#   PIP_INDEX_DIRS  space-separated local folders of a PEP 503 index, each mounted read-only
#                   at the same path and added as extra-index-url file://DIR/simple
#   TEMPLATES       fetch (TemplateFlow files downloaded in the build; the build fails when one
#                   cannot be fetched), none (no TemplateFlow files: the app uses nilearn's copy
#                   of MNI152NLin2009aSym), or auto (default: fetch when TemplateFlow's server
#                   answers or TEMPLATEFLOW_SEED is set, else none, with a warning)
#   TEMPLATEFLOW_SEED  a TEMPLATEFLOW_HOME holding tpl-MNI152NLin2009aSym (fetched elsewhere,
#                   e.g. TEMPLATEFLOW_HOME=DIR python scripts/fetch_templates.py), mounted at
#                   /templateflow-seed in the build and copied into the image
#   NO_CACHE=1      podman build --no-cache (measures a cold build)
#   BASE_ONLY=1     stop after step 4
#   PODMAN_BUILD_ARGS  more options for podman build
# Exit status: 0 built, 1 a step failed, 2 not root / not Debian-like.
set -euo pipefail
cd "$(dirname "$0")/.."

VARIANT=${VARIANT:-cuda}
case $VARIANT in cuda | cpu) ;; *) echo "$0: VARIANT must be cuda or cpu, not $VARIANT" >&2; exit 2 ;; esac
WORK=${CONTAINER_WORK:-/var/tmp/stroke-lesion-app-container}
VERSION=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' stroke_lesion_app/__init__.py)
SUFFIX=$([ "$VARIANT" = cpu ] && echo -cpu || true)
IMAGE=stroke-lesion-app:$VERSION$SUFFIX
BASE=localhost/debian:bookworm
PYTHON_STANDIN=docker.io/library/python:3.11-slim

log() { printf '[build_container %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
elapsed() { echo $(( $(date +%s) - $1 )); }

[ "$(id -u)" = 0 ] || { echo "$0: run as root (rootful podman; apt-get)" >&2; exit 2; }
command -v apt-get >/dev/null || { echo "$0: needs a Debian-like host (apt-get)" >&2; exit 2; }

# 1. Tools ------------------------------------------------------------------------------------
missing=()
for tool in podman buildah runc mmdebstrap; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah runc mmdebstrap >/dev/null
fi

# 2. containers.conf --------------------------------------------------------------------------
mkdir -p "$WORK/pip"
cp /etc/ssl/certs/ca-certificates.crt "$WORK/pip/ca.crt"
volumes=("\"$WORK/pip:/etc/xdg/pip:ro\"")
if [ -n "${TEMPLATEFLOW_SEED:-}" ]; then
    TEMPLATEFLOW_SEED=$(cd "$TEMPLATEFLOW_SEED" && pwd)
    volumes+=("\"$TEMPLATEFLOW_SEED:/templateflow-seed:ro\"")
fi
{
    echo "[global]"
    echo "cert = /etc/xdg/pip/ca.crt"
    if [ -n "${WHEELHOUSE:-}" ]; then
        WHEELHOUSE=$(cd "$WHEELHOUSE" && pwd)
        volumes+=("\"$WHEELHOUSE:/wheelhouse:ro\"")
        echo "find-links = /wheelhouse"
    fi
    extra=${PIP_EXTRA_INDEX_URL:-}
    for dir in ${PIP_INDEX_DIRS:-}; do
        dir=$(cd "$dir" && pwd)
        volumes+=("\"$dir:$dir:ro\"")
        extra="$extra file://$dir/simple"
    done
    [ -z "${extra// /}" ] || echo "extra-index-url =$extra"
} > "$WORK/pip/pip.conf"
nofile=$(ulimit -Hn)
[ "$nofile" = unlimited ] && nofile=1048576
cat > "$WORK/containers.conf" <<CONF
# Written by scripts/build_container.sh; used through CONTAINERS_CONF=$WORK/containers.conf
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=32768:32768"]
volumes = [$(IFS=,; echo "${volumes[*]}")]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
export CONTAINERS_CONF=$WORK/containers.conf
log "CONTAINERS_CONF=$CONTAINERS_CONF"

# 3. Debian base ------------------------------------------------------------------------------
debian_mirror() {
    # First Debian (not -security) URI of the configured sources, one-line or deb822 format.
    local files=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources)
    { cat "${files[@]}" 2>/dev/null || true; } | awk '
        /^[[:space:]]*#/ { next }
        $1 == "deb" {
            for (i = 2; i <= NF; i++) {
                if ($i ~ /^\[/) options = 1
                if (!options) { print $i; break }
                if ($i ~ /\]$/) options = 0
            }
        }
        $1 == "URIs:" { for (i = 2; i <= NF; i++) print $i }' \
        | grep -v -e '-security' | head -n 1
}
if [ -n "${REBUILD_BASE:-}" ] || ! podman image exists "$BASE"; then
    MIRROR=${DEBIAN_MIRROR:-$(debian_mirror)}
    [ -n "$MIRROR" ] || { echo "$0: no Debian mirror in /etc/apt/sources.list*; set DEBIAN_MIRROR" >&2; exit 1; }
    log "base $BASE: mmdebstrap --variant=minbase bookworm from $MIRROR"
    start=$(date +%s)
    mmdebstrap --quiet --variant=minbase bookworm - \
        "deb $MIRROR bookworm main" "deb $MIRROR bookworm-updates main" \
        | podman import --quiet --change 'CMD ["/bin/bash"]' - "$BASE" >/dev/null
    log "base built in $(elapsed "$start") s"
fi

# 4. Stand-in python:3.11-slim ----------------------------------------------------------------
if [ -n "${REBUILD_BASE:-}" ] || ! podman image exists "$PYTHON_STANDIN"; then
    log "stand-in $PYTHON_STANDIN from $BASE (Debian's python3 3.11)"
    start=$(date +%s)
    podman build --pull=never -q -t "$PYTHON_STANDIN" -t docker.io/library/python:3.11-slim-bookworm \
        -f - "$WORK" >/dev/null <<CONTAINERFILE
FROM $BASE
ENV LANG=C.UTF-8
RUN apt-get update \\
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\
        python3 python3-venv python3-pip ca-certificates \\
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \\
    && ln -s /usr/bin/python3 /usr/local/bin/python \\
    && ln -s /usr/bin/pip3 /usr/local/bin/pip \\
    && python --version
CMD ["python3"]
CONTAINERFILE
    log "stand-in built in $(elapsed "$start") s"
fi

if [ -n "${BASE_ONLY:-}" ]; then
    log "BASE_ONLY: $BASE and $PYTHON_STANDIN ready"
    exit 0
fi

# 5. The image --------------------------------------------------------------------------------
TEMPLATES=${TEMPLATES:-auto}
if [ "$TEMPLATES" = auto ]; then
    if [ -n "${TEMPLATEFLOW_SEED:-}" ] \
        || { command -v curl >/dev/null && curl -fsS -o /dev/null --max-time 20 \
            https://templateflow.s3.amazonaws.com/tpl-MNI152NLin2009aSym/template_description.json; }; then
        TEMPLATES=fetch
    else
        TEMPLATES=none
        log "WARNING: TemplateFlow's server is not reachable and TEMPLATEFLOW_SEED is unset:"
        log "WARNING: building with TEMPLATES=none (no TemplateFlow files; the app uses nilearn's copy)"
    fi
fi
build=(podman build --pull=never --layers
       --build-arg "VARIANT=$VARIANT"
       --build-arg "TEMPLATES=$TEMPLATES"
       --build-arg "VERSION=$VERSION"
       --build-arg "VCS_REF=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
       --build-arg "BUILD_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
       -t "$IMAGE" -t "stroke-lesion-app:latest$SUFFIX")
[ -z "${NO_CACHE:-}" ] || build+=(--no-cache)
# shellcheck disable=SC2206  # PODMAN_BUILD_ARGS is meant to split into options
build+=(${PODMAN_BUILD_ARGS:-} .)
log "building $IMAGE: ${build[*]}"
start=$(date +%s)
"${build[@]}"
seconds=$(elapsed "$start")

size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
log "built $IMAGE in $seconds s ($((seconds / 60)) min $((seconds % 60)) s)"
log "image size: $size bytes ($(awk -v s="$size" 'BEGIN { printf "%.2f GB", s / 1e9 }'))"
log "largest layers (podman history):"
podman history --format json "$IMAGE" | python3 -c '
import json, sys
for layer in sorted(json.load(sys.stdin), key=lambda layer: -layer["size"])[:6]:
    print("  %8.1f MB  %s" % (layer["size"] / 1e6, " ".join(layer["CreatedBy"].split())[:100]))'
log "run it: CONTAINERS_CONF=$CONTAINERS_CONF podman run --rm --network none $IMAGE --version"
