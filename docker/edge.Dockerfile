# syntax=docker/dockerfile:1
# The edge server (`splitedge serve`): gRPC on 50051, HTTP (health, metrics, bundles) on 8080.
#
#   docker build -f docker/edge.Dockerfile -t splitedge-edge .                  # PyPI torch (CUDA on amd64)
#   docker build -f docker/edge.Dockerfile -t splitedge-edge:cpu \
#       --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .     # CPU-only, ~5x smaller
#
# TORCH_INDEX_URL is where torch and torchvision come from; everything else from PIP_INDEX_URL,
# pinned by constraints.txt (the CPU index's 2.x.y+cpu satisfies the pin 2.x.y). Behind a
# TLS-intercepting proxy pass the CA bundle at build time (docker/build-ca/README.md).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG PIP_CERT=""
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG TORCH_INDEX_URL=https://pypi.org/simple
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_DEFAULT_TIMEOUT=120
COPY docker/build-ca/ /tmp/build-ca/
RUN python3 -m venv /opt/splitedge
WORKDIR /src
COPY constraints.txt ./
# torch first, in its own layer: the slow, large part, cached while the code changes.
RUN [ -n "$PIP_CERT" ] || unset PIP_CERT; \
    /opt/splitedge/bin/pip install --index-url "$TORCH_INDEX_URL" -c constraints.txt torch torchvision
# One COPY of the whole (whitelisted, see .dockerignore) context, one RUN: every layer above the
# torch layer is a full copy of it under some storage drivers (vfs), so keep them few.
COPY . .
RUN [ -n "$PIP_CERT" ] || unset PIP_CERT; \
    /opt/splitedge/bin/pip install -c constraints.txt '.[edge]' \
 && /opt/splitedge/bin/pip uninstall -y pip

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="splitedge-edge" \
      org.opencontainers.image.description="splitedge edge server: decoder, dynamic batcher, split tails" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/splitedge --shell /usr/sbin/nologin splitedge \
 && install -d -o splitedge -g splitedge -m 750 /var/lib/splitedge
# Metadata first, the big copy last: under the vfs storage driver every step after it would
# copy the whole tree again.
ENV PATH=/opt/splitedge/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOME=/var/lib/splitedge \
    SPLITEDGE_HOST=0.0.0.0 \
    SPLITEDGE_GRPC_PORT=50051 \
    SPLITEDGE_HTTP_PORT=8080 \
    SPLITEDGE_BUNDLE='["/bundles/demo-shapes"]'
USER splitedge
WORKDIR /var/lib/splitedge
VOLUME ["/bundles", "/var/lib/splitedge"]
EXPOSE 50051 8080
# Healthy = ready: every bundle loaded and warmed, not draining (GET /readyz is 200).
HEALTHCHECK --interval=5s --timeout=3s --start-period=120s --retries=3 \
  CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=2)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["splitedge", "serve"]
# The shipped demo bundle, so `docker run splitedge-edge` serves something; mount your own over it.
COPY bundles/ /bundles/
COPY --from=build /opt/splitedge /opt/splitedge
