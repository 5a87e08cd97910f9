# A stand-in for the official haproxy:2.6 image on a machine without registry access: Debian
# bookworm's haproxy (the same 2.6 LTS) on the local base image, laid out like the official image
# (config in /usr/local/etc/haproxy, user haproxy, foreground master-worker). Built by
# deploy/lb/standin-image.sh only when the real image cannot be pulled.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends haproxy \
 && rm -rf /var/lib/apt/lists/* \
 && install -d /usr/local/etc/haproxy
USER haproxy
WORKDIR /var/lib/haproxy
EXPOSE 50051 8080 8404
STOPSIGNAL SIGUSR1
CMD ["haproxy", "-W", "-db", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]
