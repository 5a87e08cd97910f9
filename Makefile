# The two commands a newcomer needs are the README's first lines; everything else is detail.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-dev

.PHONY: setup demo test lint typecheck unit bench-codecs bench-heads bench-edge bench-device \
        bundle protos clean emulated-pi bench-ans

# One virtual environment with every extra (device, edge, train, dev), pinned by constraints.txt.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# The main job (README): edge server + device daemon on a generated clip, with the demo bundle.
demo: setup
	$(PY) -m splitedge demo

# The test command (README, .ci/run): lint, types, then the tests.
test: setup balancer lint typecheck unit

lint: setup
	$(PY) -m ruff check .

typecheck: setup
	$(PY) -m mypy

unit: setup
	$(PY) -m pytest

# tests/scaleout runs a real HAProxy: installed here when missing and possible (root with apt, as
# in CI); elsewhere those tests skip and say how to install it.
.PHONY: balancer bench-scaleout
balancer:
	@command -v haproxy >/dev/null || test -x /usr/sbin/haproxy || \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null; \
	else echo "haproxy is not installed: tests/scaleout will skip (apt-get install haproxy)"; fi

bench-codecs: setup
	$(PY) -m benchmarks.codecs

bench-heads: setup
	$(PY) -m benchmarks.heads

bench-edge: setup
	$(PY) -m benchmarks.edge

bench-device: setup
	$(PY) -m benchmarks.device

bench-ans: setup
	$(PY) -m benchmarks.ans

# Raspberry Pi OS (bookworm arm64) under qemu: install the device extra, run the daemon against an
# x86 edge, compare bitstreams and results across architectures (root; ~15 min the first time).
emulated-pi: setup
	bash scripts/emulated_pi.sh

bench-scaleout: setup balancer
	$(PY) -m benchmarks.scaleout

# Retrain bundles/demo-shapes from nothing (generated data + the shifted test set, teacher, student,
# report on both sets): about 90 min on 2 CPU cores.
bundle: setup
	bash configs/demo-shapes/reproduce.sh

# Regenerate shared/wire/ after editing proto/ (a test fails while they differ).
protos: setup
	$(PY) scripts/gen_protos.py

# Containers and load (README "Deployment and load tests"): images, the compose deployment, and
# the throttled-network load report. Docker and root for these; none of them is in `make test`.
.PHONY: images images-present compose-up compose-check compose-down loadtest
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)

# (Re)build the three images; images-present builds only the missing ones.
images:
	docker/standin-images.sh
	docker/build.sh

images-present:
	docker/standin-images.sh
	docker/build.sh --missing

compose-up: images-present
	$(COMPOSE) up -d
	@echo "edge: http://127.0.0.1:8080/readyz  prometheus: http://127.0.0.1:9090  grafana: http://127.0.0.1:3000"

# Up, healthy, outcomes flowing, dashboard queries answered, a live link change followed, down.
compose-check: images-present setup
	$(PY) docker/compose_check.py --json out/compose-check.json

compose-down:
	$(COMPOSE) down

# Edge + locust cameras behind tc-shaped veth links at 1/5/20 Mbit/s: out/loadtest/report.md.
loadtest: setup
	$(PY) -m loadtest.run

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
