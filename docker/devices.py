"""More cameras for the compose deployment: each `cam-N` with its own shaped link `link-N`.

    python3 docker/devices.py 8 [--rate-mbit 5] [--branch split-w100] [--trace /traces/x.csv]
    docker-compose up -d            # picks up docker-compose.override.yml by itself

docker-compose.yml defines cam-1…cam-3; this writes cam-4…cam-N into docker-compose.override.yml
(the same settings as the base file's `x-link` / `x-device`) and their
Prometheus targets into deploy/prometheus/targets/extra.json. `python3 docker/devices.py 3`
removes both. `network_mode: service:` ties one camera to one link container, which is why
cameras are listed, not `--scale`d. Standard library only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OVERRIDE = ROOT / "docker-compose.override.yml"
TARGETS = ROOT / "deploy" / "prometheus" / "targets" / "extra.json"
BASE = 3  # cameras in docker-compose.yml

LINK = """\
  link-{n}:
    image: splitedge-link:${{SPLITEDGE_TAG:-latest}}
    restart: unless-stopped
    cap_drop: [ALL]
    cap_add: [NET_ADMIN]
    cpus: 0.1
    mem_limit: 64m
    volumes: ["./docker/traces:/traces:ro"]
    environment: {{{link_env}}}
  cam-{n}:
    image: splitedge-device:${{SPLITEDGE_TAG:-latest}}
    restart: unless-stopped
    cap_drop: [ALL]
    read_only: true
    tmpfs: [/tmp]
    cpus: 0.5
    mem_limit: 512m
    network_mode: service:link-{n}
    environment:
      SPLITEDGE_DEVICE_DEVICE_ID: cam-{n}
      SPLITEDGE_DEVICE_PIPELINE__BRANCH: {branch}
      SPLITEDGE_DEVICE_SOURCE__SEED: "{n}"
    volumes:
      - ./docker/device.yaml:/etc/splitedge/device.yaml:ro
      - cam-{n}-state:/var/lib/splitedge
    depends_on:
      edge: {{condition: service_healthy}}
      link-{n}: {{condition: service_healthy}}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cameras", type=int, help=f"cameras in all (>= {BASE})")
    parser.add_argument("--rate-mbit", type=float, default=5.0, help="each new link's rate")
    parser.add_argument("--trace", default="", help="a time_s,mbit CSV under /traces instead")
    parser.add_argument("--branch", default="split-w100", help="the new cameras' branch")
    args = parser.parse_args(argv)
    if args.cameras <= BASE:
        OVERRIDE.unlink(missing_ok=True)
        TARGETS.unlink(missing_ok=True)
        print(f"{BASE} cameras: docker-compose.yml alone")
        return 0
    link_env = (
        f'LINK_TRACE: "{args.trace}"' if args.trace else f'LINK_RATE_MBIT: "{args.rate_mbit:g}"'
    )
    numbers = range(BASE + 1, args.cameras + 1)
    services = "".join(LINK.format(n=n, link_env=link_env, branch=args.branch) for n in numbers)
    volumes = "".join(f"  cam-{n}-state:\n" for n in numbers)
    OVERRIDE.write_text(
        "# Written by docker/devices.py; rerun it rather than editing.\n"
        f"services:\n{services}\nvolumes:\n{volumes}"
    )
    targets = [{"targets": [f"link-{n}"], "labels": {"device": f"cam-{n}"}} for n in numbers]
    TARGETS.write_text(json.dumps(targets, indent=2) + "\n")
    print(f"{args.cameras} cameras: {OVERRIDE.name} (cam-{BASE + 1}…cam-{args.cameras}), {TARGETS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
