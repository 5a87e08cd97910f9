#!/usr/bin/env bash
# An emulated Raspberry Pi: Debian bookworm arm64 (the base of Raspberry Pi OS 64-bit, Python 3.11)
# under qemu-user, with the device extra installed from the package registry, running the device
# daemon against a real x86 edge on loopback.
#
#   sudo bash scripts/emulated_pi.sh            # or: make emulated-pi
#
# Steps (each skipped when already done, so a second run takes minutes, not tens of minutes):
#   1. host tools: Debian's debootstrap, qemu-user-static, binfmt-support; the binfmt handler;
#   2. the arm64 root (debootstrap --variant=minbase, + python3-venv, ca-certificates);
#   3. `pip install '/opt/splitedge[device]'` in a venv inside it (wheels only: no compiler);
#   4. scripts/emulated_pi.py: the cross-architecture bitstream check (latents coded on arm64
#      decode on x86 to the same symbols and vice versa), the coder benchmark under emulation,
#      and the device daemon on arm64 against `splitedge serve` on x86, every frame compared with
#      the same frames run by an x86 device.
# Needs root (debootstrap, chroot, binfmt) and the project's .venv (`make setup`) for the x86 side.
# Env: SPLITEDGE_ARM64_ROOT (default /var/tmp/splitedge-arm64), DEBIAN_MIRROR, FRAMES (default 10).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT_DIR=${SPLITEDGE_ARM64_ROOT:-/var/tmp/splitedge-arm64}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
FRAMES=${FRAMES:-10}
started=$(date +%s)
stamp() { echo "[emulated-pi +$(($(date +%s) - started))s] $*"; }

if [ "$(id -u)" -ne 0 ]; then
  echo "emulated_pi.sh needs root (debootstrap, chroot, binfmt_misc); run it with sudo." >&2
  exit 2
fi
if [ ! -x .venv/bin/python ]; then
  echo "emulated_pi.sh needs the project's .venv for the x86 edge: run 'make setup' first." >&2
  exit 2
fi

# 1. Host tools and the binfmt handler that runs arm64 binaries through qemu.
if ! command -v debootstrap >/dev/null || [ ! -x /usr/bin/qemu-aarch64-static ]; then
  stamp "installing debootstrap, qemu-user-static, binfmt-support"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap qemu-user-static binfmt-support
fi
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  update-binfmts --enable qemu-aarch64
fi

# 2. The arm64 root.
if [ ! -x "$ROOT_DIR/usr/bin/python3" ]; then
  stamp "debootstrap bookworm arm64 into $ROOT_DIR"
  rm -rf "$ROOT_DIR"
  debootstrap --arch=arm64 --variant=minbase \
    --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$ROOT_DIR" "$MIRROR" >/tmp/emulated-pi-debootstrap.log
fi
stamp "arm64 root ready: $(chroot "$ROOT_DIR" uname -m), $(chroot "$ROOT_DIR" python3 --version)"

mounted=()
cleanup() {
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[$i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
# Not /sys: onnxruntime's cpuinfo reads the host's x86 CPU topology there and crashes under qemu.
for fs in proc dev; do
  if ! mountpoint -q "$ROOT_DIR/$fs"; then
    mount --bind "/$fs" "$ROOT_DIR/$fs"
    mounted+=("$ROOT_DIR/$fs")
  fi
done
# A host that reaches the registry through its own CA (this one does) hands the bundle in.
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  cp /etc/ssl/certs/ca-certificates.crt "$ROOT_DIR/etc/ssl/certs/host-ca.crt"
  pip_cert=/etc/ssl/certs/host-ca.crt
else
  pip_cert=/etc/ssl/certs/ca-certificates.crt
fi

# 3. The project as a Pi owner installs it: the device extra from the registry, wheels only.
rm -rf "$ROOT_DIR/opt/splitedge"
mkdir -p "$ROOT_DIR/opt/splitedge"
git ls-files -co --exclude-standard -z | tar --null -T - -c | tar -x -C "$ROOT_DIR/opt/splitedge"
if [ "${REINSTALL:-1}" = 1 ]; then rm -rf "$ROOT_DIR/opt/venv"; fi
stamp "pip install '.[device]' inside the arm64 root"
install_start=$(date +%s)
chroot "$ROOT_DIR" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
  PIP_CERT="$pip_cert" PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 \
  sh -c "python3 -m venv /opt/venv && /opt/venv/bin/pip install -q --only-binary=:all: \
         '/opt/splitedge[device]' 2>&1 | grep -v 'Running pip as the' || true"
chroot "$ROOT_DIR" /opt/venv/bin/python -c "import device_client.daemon, onnxruntime, cv2" \
  || { echo "the device extra did not install in the arm64 root" >&2; exit 1; }
install_s=$(($(date +%s) - install_start))
size_mb=$(du -sm "$ROOT_DIR/opt/venv" | cut -f1)
stamp "installed in ${install_s}s; /opt/venv is ${size_mb} MB; torch present: $(
  chroot "$ROOT_DIR" /opt/venv/bin/python -c 'import importlib.util as u; print(bool(u.find_spec("torch")))')"

# 4. Bitstream across architectures, coder speed, the daemon against an x86 edge.
.venv/bin/python scripts/emulated_pi.py --root "$ROOT_DIR" --frames "$FRAMES" \
  --install-seconds "$install_s" --venv-mb "$size_mb"
stamp "done"
