#!/usr/bin/env bash
# A stand-in for `apptainer` that runs the podman image instead of a SIF, under the conditions
# Apptainer gives (for machines without Apptainer, where the SIF cannot be built or run):
#
#   APPTAINER_STUB_IMAGE=stroke-lesion-app:latest \
#       bash scripts/apptainer_podman_stub.sh run --cleanenv -B /data/bids:/bids:ro IMAGE.sif ARGS
#   APPTAINER=scripts/apptainer_podman_stub.sh sbatch ... scripts/slurm/participant_array.sbatch
#
# Handles `run`, `exec` and `test` with --cleanenv/-e, -B/--bind SRC[:DST[:ro|rw]] (comma
# lists too), --nv (ignored: no GPU here; noted on stderr), --env NAME=VALUE. The SIF argument
# names nothing real: the image is $APPTAINER_STUB_IMAGE. What it maps:
# * the container's environment is emptied (`env -i`: neither the host's nor the Docker image's
#   ENV), then Singularity.def's %environment is sourced from /.singularity.d/env/90-environment.sh
#   (where Apptainer keeps it), then `--env` values; HOME, USER, LANG, TERM as Apptainer sets them.
#   This is stricter than Apptainer, which also keeps the image's Docker ENV: %environment
#   alone must suffice; APPTAINER_CONTAINER and APPTAINER_NAME name the SIF, as Apptainer sets them;
# * `run` executes %runscript, `test` %test (both taken from Singularity.def), `exec` the command;
# * read-only root file system (a SIF is read-only), writable tmpfs at /tmp, /var/tmp and the
#   home folder (Apptainer binds the user's home and /tmp); the host user's uid, which the image
#   does not know ($APPTAINER_STUB_UID, default 4321, so nothing may rely on uid 1000);
# * no network (`--network none`), as on compute nodes without internet access.
# CONTAINERS_CONF (default /var/tmp/stroke-lesion-app-container/containers.conf, written by
# scripts/build_container.sh) is used as the build used it. Exit status: the command's.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEF=${APPTAINER_STUB_DEF:-$ROOT/Singularity.def}
IMAGE=${APPTAINER_STUB_IMAGE:-stroke-lesion-app:latest}
export CONTAINERS_CONF=${CONTAINERS_CONF:-/var/tmp/stroke-lesion-app-container/containers.conf}
STUB_UID=${APPTAINER_STUB_UID:-4321}
STUB_HOME=/home/apptainer-user

usage() {
    echo "usage: $0 run|exec|test [--cleanenv] [-B SRC:DST[:ro]]... [--nv] SIF [ARGS...]" >&2
    exit 2
}

# Body of one section of Singularity.def (lines up to the next %section), indentation removed.
section() {
    awk -v name="%$1" '
        /^%[a-z]+/ { inside = ($1 == name); next }
        inside { sub(/^    /, ""); print }' "$DEF"
}

[ $# -ge 1 ] || usage
ACTION=$1
shift
case $ACTION in
run | exec | test) ;;
--version) echo "apptainer-podman-stub (podman $(podman --version | awk '{print $NF}'))"; exit 0 ;;
*) usage ;;
esac

binds=()
envs=()
while [ $# -gt 0 ]; do
    case $1 in
    --cleanenv | -e | --containall | -C | --no-home) shift ;;
    --nv) echo "$0: --nv ignored (no GPU on this machine)" >&2; shift ;;
    -B | --bind) IFS=, read -r -a specs <<< "$2"; binds+=("${specs[@]}"); shift 2 ;;
    --bind=*) IFS=, read -r -a specs <<< "${1#--bind=}"; binds+=("${specs[@]}"); shift ;;
    --env) envs+=("$2"); shift 2 ;;
    --env=*) envs+=("${1#--env=}"); shift ;;
    -*) echo "$0: option $1 not handled by the stub" >&2; exit 2 ;;
    *) break ;;
    esac
done
[ $# -ge 1 ] || usage
SIF=$1  # names nothing real: the image is $IMAGE
shift

STATE=$(mktemp -d)
trap 'rm -rf "$STATE"' EXIT
section environment > "$STATE/90-environment.sh"
{
    echo "#!/bin/sh"
    echo ". /.singularity.d/env/90-environment.sh"
    for assignment in ${envs[@]+"${envs[@]}"}; do
        printf 'export %q\n' "$assignment"
    done
    case $ACTION in
    run) section runscript ;;
    test) section test ;;
    exec) echo 'exec "$@"' ;;
    esac
} > "$STATE/action.sh"
chmod a+rx "$STATE" "$STATE"/*.sh

podman_args=(run --rm --network none --read-only --user "$STUB_UID:$STUB_UID"
             --tmpfs "/tmp:rw,mode=1777" --tmpfs "/var/tmp:rw,mode=1777"
             --tmpfs "$STUB_HOME:rw,mode=1777"
             -v "$STATE/90-environment.sh:/.singularity.d/env/90-environment.sh:ro"
             -v "$STATE/action.sh:/.singularity.d/stub-action.sh:ro"
             --workdir "$STUB_HOME" --entrypoint /usr/bin/env)
for spec in ${binds[@]+"${binds[@]}"}; do
    IFS=: read -r source target mode <<< "$spec"
    podman_args+=(-v "$source:${target:-$source}${mode:+:$mode}")
done
podman "${podman_args[@]}" "$IMAGE" -i HOME="$STUB_HOME" USER=apptainer-user LANG=C.UTF-8 \
    TERM="${TERM:-dumb}" APPTAINER_CONTAINER="$SIF" APPTAINER_NAME="$(basename "$SIF")" \
    /bin/sh /.singularity.d/stub-action.sh "$@"
