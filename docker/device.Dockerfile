# syntax=docker/dockerfile:1
# The device daemon (`splitedge device run`): the `device` extra only, never torch.
#
#   docker build -f docker/device.Dockerfile -t splitedge-device .
#   docker buildx build --platform linux/amd64,linux/arm64 -f docker/device.Dockerfile \
#       -t registry.example/splitedge-device:0.1.0 --push .       # Raspberry Pi OS 64-bit, Jetson
#
# python:3.11-slim-bookworm is multi-arch and every dependency of the `device` extra has wheels
# for linux/amd64 and linux/arm64 (constriction is amd64-only and skipped on arm64, where the
# pure-Python ANS coder takes over), so no compiler is needed on either. Checked here without
# buildx: an arm64 base from `ARCH=arm64 BASE_IMAGE=splitedge-base-arm64:python3.11-bookworm
# docker/base-image.sh`, then `docker build --build-arg PYTHON_IMAGE=<that>` under qemu-user
# binfmt (443 MB); under qemu, mount an empty dir over /sys/devices/system/cpu (onnxruntime's
# cpuinfo trips on the host's x86 topology), not needed on a real Pi or Jetson.
# Behind a TLS-intercepting proxy pass the CA bundle at build time (see
# docker/build-ca/README.md); nothing of it reaches the final stage.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG PIP_CERT=""
ARG PIP_INDEX_URL=https://pypi.org/simple
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_DEFAULT_TIMEOUT=120
COPY docker/build-ca/ /tmp/build-ca/
RUN python3 -m venv /opt/splitedge
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY shared/ shared/
COPY device_client/ device_client/
COPY edge_server/ edge_server/
COPY split_models/ split_models/
COPY splitedge/ splitedge/
# The edge and model sources come along (a few hundred kB, imported lazily by `splitedge`), but
# nothing of torch: the build fails if torch became importable. What a device never runs goes:
# setuptools, onnxruntime's model-optimization tools, zstandard's cffi twin, packages' tests.
RUN [ -n "$PIP_CERT" ] || unset PIP_CERT; \
    /opt/splitedge/bin/pip install -c constraints.txt '.[device]' \
 && /opt/splitedge/bin/pip uninstall -y pip \
 && ! /opt/splitedge/bin/python -c "import torch" 2>/dev/null \
 && cd /opt/splitedge/lib/python3*/site-packages \
 && rm -rf setuptools _distutils_hack distutils-precedence.pth \
           onnxruntime/transformers onnxruntime/quantization onnxruntime/tools \
           zstandard/_cffi.*.so \
 && find . -name '*.pyi' -delete \
 && find . -depth -type d -name tests -path './*/tests' -exec rm -rf {} +

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="splitedge-device" \
      org.opencontainers.image.description="splitedge device daemon: ONNX head + entropy coder, torch-free" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/splitedge --shell /usr/sbin/nologin splitedge \
 && install -d -o splitedge -g splitedge -m 750 /var/lib/splitedge /etc/splitedge
ENV PATH=/opt/splitedge/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOME=/var/lib/splitedge
USER splitedge
WORKDIR /var/lib/splitedge
# The bundle cache (downloaded from the edge, verified by sha256) and any file sinks.
VOLUME ["/var/lib/splitedge"]
EXPOSE 9108
# Ready = the daemon answers on its metrics port (it opens it after the bundle and the head load).
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9108/metrics', timeout=2)"]
ENTRYPOINT ["splitedge", "device"]
CMD ["run", "--config", "/etc/splitedge/device.yaml"]
# The copies last: metadata steps after them would copy the tree again under the vfs driver.
COPY --from=build /opt/splitedge /opt/splitedge
COPY docker/device.yaml /etc/splitedge/device.yaml
