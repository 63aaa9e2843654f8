# syntax=docker/dockerfile:1
# stroke-lesion-app: BIDS App image (GPU-capable; runs on CPU too). Nothing is downloaded at
# run time: the MNI152NLin2009aSym and MNI152NLin6Asym (FSL MNI152) TemplateFlow files, the
# transform between them (computed once, at build time) and the package's model bundles (with
# the demo bundle, stroke_lesion_app/data/models/demo) are baked in at build time.
#
#   docker build -t stroke-lesion-app:0.1.0 --build-arg VERSION=0.1.0 .
#   docker run --rm --gpus all -v /data:/data:ro -v /out:/out stroke-lesion-app:0.1.0 \
#       /data/bids /out participant
#
# PyTorch: `pip install .` honours the one torch/torchvision pin, in setup.cfg (PyPI's
# CUDA-enabled wheels, about 5.5 GB installed with their nvidia-* libraries; they need only the
# host's NVIDIA driver, no CUDA base image). Two ways to a smaller, CPU-only image:
#   --build-arg VARIANT=cpu    works from PyPI alone: removes triton and the CUDA libraries
#                              torch never loads on a CPU (scripts/trim_torch_cpu.py); the
#                              ~2 GB that PyPI's torch links at import stay. No GPU use.
#   --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu   (PyTorch's own CPU
#                              wheels, same pinned versions read from setup.cfg; not reachable
#                              from this project's machines, so not built or tested here)
# Base image: --build-arg PYTHON_IMAGE=... (default python:3.11-slim-bookworm). Without Docker
# Hub, scripts/build_container.sh builds a Debian base and a local python:3.11-slim stand-in
# with mmdebstrap and podman, then this file with `podman build --pull=never`.
#
# Stages: build (virtual environment) -> templates (TemplateFlow prefetch, template-to-template
# transform) -> runtime.
# Check this file and Singularity.def with: bash scripts/check_containers.sh

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build
# Empty: PyPI's (CUDA-enabled) torch. https://download.pytorch.org/whl/cpu: CPU-only torch.
ARG TORCH_INDEX_URL=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml setup.cfg README.md ./
COPY stroke_lesion_app ./stroke_lesion_app
# The torch/torchvision pin lives only in setup.cfg; the CPU path reads it from there (the
# unquoted $(...) is meant to split into the two requirements).
# hadolint ignore=SC2046
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
        pip install --index-url "$TORCH_INDEX_URL" $(python -c "import configparser; c = configparser.ConfigParser(); c.read('setup.cfg'); print(' '.join(r for r in c['options']['install_requires'].split() if r.startswith(('torch==', 'torchvision=='))))"); \
    fi \
    && pip install . \
    && python -c "import stroke_lesion_app, torch, torchvision, nnunetv2, ants; print(stroke_lesion_app.__version__, torch.__version__, torchvision.__version__)"
# VARIANT=cpu: drop what only a GPU run loads (its own layer; the install above is shared).
ARG VARIANT=cuda
COPY scripts/trim_torch_cpu.py /src/scripts/trim_torch_cpu.py
RUN case "$VARIANT" in \
        cuda) ;; \
        cpu) python /src/scripts/trim_torch_cpu.py ;; \
        *) echo "VARIANT must be cuda or cpu, not $VARIANT" >&2; exit 1 ;; \
    esac

# ---------------------------------------------------------------------------------------------
FROM build AS templates
ENV TEMPLATEFLOW_HOME=/opt/templateflow
# fetch (default): fails the build when a file the app reads cannot be fetched (the image
# must run offline). Files already under /templateflow-seed (a folder a podman build mounts
# there: scripts/build_container.sh TEMPLATEFLOW_SEED=DIR) are copied first and not fetched
# again. none: no TemplateFlow files, for hosts that cannot reach TemplateFlow; the app then
# uses the MNI152NLin2009aSym copy inside nilearn's wheel (README "What happens to each T1w").
ARG TEMPLATES=fetch
COPY scripts/fetch_templates.py /src/scripts/fetch_templates.py
RUN mkdir -p /opt/templateflow \
    && case "$TEMPLATES" in \
        fetch) if [ -d /templateflow-seed ]; then cp -R /templateflow-seed/. /opt/templateflow/; fi \
               && python /src/scripts/fetch_templates.py ;; \
        none) echo "TEMPLATES=none: no TemplateFlow files in the image (nilearn's copy is used)" ;; \
        *) echo "TEMPLATES must be fetch or none, not $TEMPLATES" >&2; exit 1 ;; \
    esac
# The MNI152NLin2009aSym -> MNI152NLin6Asym transform (group outputs in FSL's MNI152), computed
# once here (antspyx, 1-2 minutes) so that no run computes it. It goes to
# $TEMPLATEFLOW_HOME/.stroke-lesion-app/ (a dot folder, which TemplateFlow's index skips), where
# the app finds it by the hashes of both templates (core/template_transforms.py). With
# TEMPLATES=none there is no MNI152NLin6Asym and the app skips that space.
RUN if [ "$TEMPLATES" = fetch ]; then \
        python -m stroke_lesion_app.core.template_transforms --require \
            --out-dir /opt/templateflow/.stroke-lesion-app --num-threads "$(nproc)"; \
    fi

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ARG VARIANT=cuda
ARG TEMPLATES=fetch
ARG VERSION=unknown
ARG VCS_REF=unknown
ARG BUILD_DATE=unknown

# Non-root user; `chmod go=u` lets any uid (docker -u, Apptainer) use its home.
RUN useradd --create-home --uid 1000 --shell /bin/bash stroke \
    && chmod go=u /home/stroke
COPY --from=build /opt/venv /opt/venv
COPY --from=templates /opt/templateflow /opt/templateflow

ENV PATH=/opt/venv/bin:$PATH \
    TEMPLATEFLOW_HOME=/opt/templateflow \
    TEMPLATEFLOW_AUTOUPDATE=0 \
    STROKE_LESION_APP_MODELS=/models \
    STROKE_LESION_APP_CONTAINER=docker \
    STROKE_LESION_APP_IMAGE=stroke-lesion-app:${VERSION} \
    OMP_NUM_THREADS=1 \
    MKL_NUM_THREADS=1 \
    OPENBLAS_NUM_THREADS=1 \
    NIPYPE_NO_ET=1 \
    PYTHONNOUSERSITE=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/home/stroke

# The user `stroke` made above, by number (a numeric USER is what runAsNonRoot-style checks see).
USER 1000:1000
WORKDIR /home/stroke
ENTRYPOINT ["stroke-lesion-app"]
CMD ["--help"]

LABEL org.opencontainers.image.title="stroke-lesion-app" \
      org.opencontainers.image.description="BIDS App: stroke lesion segmentation and lesion load on T1w MRI" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.created="${BUILD_DATE}" \
      org.opencontainers.image.source="https://github.com/stroke-lesion-app/stroke-lesion-app" \
      org.opencontainers.image.url="https://github.com/stroke-lesion-app/stroke-lesion-app" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="stroke-lesion-app developers" \
      io.github.stroke-lesion-app.torch-variant="${VARIANT}" \
      io.github.stroke-lesion-app.templates="${TEMPLATES}"
