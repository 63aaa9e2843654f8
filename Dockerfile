# stroke-lesion-app container (minimal; the GPU image with baked-in templates and the demo
# bundle is completed by the containers issue #9).
FROM python:3.11-slim AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    OMP_NUM_THREADS=1 \
    NIPYPE_NO_ET=1 \
    nnUNet_compile=f \
    STROKE_LESION_APP_CONTAINER=docker

COPY . /src/stroke-lesion-app
RUN pip install /src/stroke-lesion-app \
    && useradd --create-home --uid 1000 stroke \
    && chmod -R go=u /home/stroke

USER stroke
WORKDIR /home/stroke
ENTRYPOINT ["stroke-lesion-app"]

LABEL org.opencontainers.image.title="stroke-lesion-app" \
      org.opencontainers.image.description="BIDS App: stroke lesion segmentation and lesion load on T1w MRI" \
      org.opencontainers.image.source="https://github.com/stroke-lesion-app/stroke-lesion-app" \
      org.opencontainers.image.licenses="Apache-2.0"
