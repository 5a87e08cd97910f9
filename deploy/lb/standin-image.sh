#!/usr/bin/env bash
# The balancer image the compose profile `scale-out` names (haproxy:2.6), made locally from
# Debian's package when it can be neither found nor pulled. A no-op when the image exists.
set -euo pipefail
cd "$(dirname "$0")/../.."
IMAGE=${HAPROXY_IMAGE:-$(awk '/image: haproxy:/ {print $2; exit}' docker-compose.yml)}
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "$IMAGE is present"
elif docker pull "$IMAGE" >/dev/null 2>&1; then
  echo "pulled $IMAGE"
else
  docker/base-image.sh
  echo "building a stand-in for $IMAGE from Debian's haproxy package"
  DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0} docker build -q -f deploy/lb/haproxy-standin.Dockerfile \
    -t "$IMAGE" deploy/lb
fi
