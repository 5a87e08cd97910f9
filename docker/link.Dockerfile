# syntax=docker/dockerfile:1
# The link shaper: shapes the uplink of the network namespace it runs in (a device's, through
# compose's `network_mode: service:…`) with tc tbf (+ netem delay/loss where the kernel has it),
# at a fixed rate or replaying a `time_s,mbit` trace, and exports what it does on :9109/metrics.
# Root inside the container, but only CAP_NET_ADMIN is needed (compose drops the rest).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends iproute2 \
 && rm -rf /var/lib/apt/lists/*
COPY loadtest/__init__.py loadtest/netshape.py /opt/splitedge-link/loadtest/
COPY docker/traces/ /traces/
ENV PYTHONPATH=/opt/splitedge-link PYTHONUNBUFFERED=1
EXPOSE 9109
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python3", "-m", "loadtest.netshape", "show"]
ENTRYPOINT ["python3", "-m", "loadtest.netshape"]
CMD ["run"]
