#!/usr/bin/env bash
# Builds the project's images: splitedge-device, splitedge-edge, splitedge-link (the shaper).
#
#   docker/build.sh                       # all three
#   docker/build.sh device link           # some
#   docker/build.sh --missing             # only those not built yet (make compose-up/-check)
#   TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu docker/build.sh edge   # CPU-only torch
#
# Makes the base image first when it is missing and cannot be pulled (docker/base-image.sh).
# When the host sets PIP_CERT (a CA bundle for a TLS-intercepting proxy), the bundle is handed to
# the build stage only (docker/build-ca/); the final images never hold it.
set -euo pipefail
cd "$(dirname "$0")/.."

TAG=${TAG:-latest}
missing_only=false
if [ "${1:-}" = --missing ]; then missing_only=true; shift; fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(device link edge)

docker/base-image.sh

args=()
if [ -n "${PIP_CERT:-}" ] && [ -f "$PIP_CERT" ]; then
  cp "$PIP_CERT" docker/build-ca/ca-bundle.crt
  args+=(--build-arg PIP_CERT=/tmp/build-ca/ca-bundle.crt)
fi
[ -z "${TORCH_INDEX_URL:-}" ] || args+=(--build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL")
[ -z "${PIP_INDEX_URL_BUILD:-}" ] || args+=(--build-arg "PIP_INDEX_URL=$PIP_INDEX_URL_BUILD")

for target in "${targets[@]}"; do
  if $missing_only && docker image inspect "splitedge-$target:$TAG" >/dev/null 2>&1; then
    echo "== splitedge-$target:$TAG is present (docker/build.sh $target rebuilds it)"
    continue
  fi
  echo "== splitedge-$target:$TAG"
  start=$(date +%s)
  docker build "${args[@]}" -f "docker/$target.Dockerfile" -t "splitedge-$target:$TAG" .
  echo "== splitedge-$target:$TAG built in $(( $(date +%s) - start )) s:" \
       "$(docker image inspect -f '{{.Size}}' "splitedge-$target:$TAG" | awk '{printf "%.0f MB", $1/1e6}')"
done
