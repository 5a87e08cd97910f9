#!/usr/bin/env bash
# Third-party images the compose deployment names, made locally when they cannot be pulled
# (no registry access): the python base (docker/base-image.sh) and prom/prometheus (Debian's
# package). Grafana has no Debian package: without registry access it is left out (the compose
# check says so and validates its provisioning files instead). A no-op when the images exist.
set -euo pipefail
cd "$(dirname "$0")/.."
docker/base-image.sh
PROMETHEUS_IMAGE=${PROMETHEUS_IMAGE:-$(awk '/image: prom\/prometheus/ {print $2; exit}' docker-compose.yml)}
if docker image inspect "$PROMETHEUS_IMAGE" >/dev/null 2>&1; then
  echo "$PROMETHEUS_IMAGE is present"
elif docker pull "$PROMETHEUS_IMAGE" >/dev/null 2>&1; then
  echo "pulled $PROMETHEUS_IMAGE"
else
  echo "building a stand-in for $PROMETHEUS_IMAGE from Debian's prometheus package"
  DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0} docker build -q -f docker/standin/prometheus.Dockerfile \
    -t "$PROMETHEUS_IMAGE" docker/standin
fi
