#!/usr/bin/env bash
# Installs what zos needs on a fresh Debian 12 machine (run as root).
#   scripts/deps.sh run    tools to build and run the dev cluster
#   scripts/deps.sh test   everything the test suite drives (real clients, qemu, ...)
# Idempotent: packages already present are skipped without touching apt.
set -euo pipefail
mode=${1:-test}

# nftables and dnsmasq-base: the agent's bridge NAT and DHCP (bridge.create).
run_pkgs=(fuse3 ca-certificates nftables dnsmasq-base)
test_pkgs=(fuse3 libnbd-bin nbdkit qemu-utils fio qemu-system-x86 linux-image-amd64
  busybox-static cpio redis-tools iproute2 iptables e2fsprogs debootstrap util-linux
  kmod zstd attr psmisc procps curl runc
  nftables dnsmasq-base redis-server python3-redis)

case "$mode" in
  run) want=("${run_pkgs[@]}") ;;
  test) want=("${test_pkgs[@]}") ;;
  *) echo "usage: $0 run|test" >&2; exit 2 ;;
esac

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then echo "deps: need root to install: ${missing[*]}" >&2; exit 1; fi
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# staticcheck for `make check`, pinned.
if [ "$mode" = test ] && ! command -v staticcheck >/dev/null 2>&1 && [ ! -x "$(go env GOPATH)/bin/staticcheck" ]; then
  echo "deps: installing staticcheck"
  GOFLAGS=-mod=mod go install honnef.co/go/tools/cmd/staticcheck@v0.7.0
fi
echo "deps: ok ($mode)"
