#!/usr/bin/env bash
# Installs the Debian packages Mayfly needs when any is missing, then the npm
# dependencies when node_modules is missing. Idempotent and quiet when all is there.
# Used by `npm start`, `npm test` (with --test) and `npm run bench` (see package.json).
set -euo pipefail
cd "$(dirname "$0")/.."

# command -> Debian package that provides it
declare -A need=(
  [qemu-system-x86_64]=qemu-system-x86
  [nats-server]=nats-server
  [prometheus]=prometheus
  [promtool]=prometheus
  [busybox]=busybox-static
  [lz4]=lz4
  [zstd]=zstd
  [cpio]=cpio
  [strip]=binutils
  [dpkg-deb]=dpkg
  [file]=file
  # Tinyx kernels (functions/image/kernel-build.ts) and runtime dependency discovery
  [gcc]=build-essential
  [make]=build-essential
  [bc]=bc
  [bison]=bison
  [flex]=flex
  [strace]=strace
  [ccache]=ccache
)
# file -> Debian package that provides it
declare -A need_file=(
  [/usr/src/linux-source-6.1.tar.xz]=linux-source-6.1
  [/usr/include/libelf.h]=libelf-dev
  [/usr/include/openssl/ssl.h]=libssl-dev
  # the python3 runtime recipe (MAYFLY_IMAGE_RUNTIMES=python3) ships Debian's interpreter
  [/usr/bin/python3]=python3-minimal
)
# The web console's browser tests (test/e2e/console.test.ts) drive Debian's chromium:
# installed only for the tests (`npm test` passes --test).
if [ "${1:-}" = "--test" ]; then
  need_file[/usr/bin/chromium]=chromium
fi
# The local cluster (`npm run cluster`, `npm run test:cluster`): HAProxy in front of the gateways.
if [ "${1:-}" = "--test" ] || [ "${1:-}" = "--cluster" ]; then
  need[haproxy]=haproxy
fi
missing=()
for cmd in "${!need[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${need[$cmd]}")
done
for f in "${!need_file[@]}"; do
  [ -e "$f" ] || missing+=("${need_file[$f]}")
done
# The guest's /init needs a static busybox, not a dynamically linked one.
if command -v busybox >/dev/null 2>&1 && ! file -L "$(command -v busybox)" 2>/dev/null | grep -q 'statically linked'; then
  [ -x /bin/busybox ] && file -L /bin/busybox | grep -q 'statically linked' || missing+=(busybox-static)
fi
if [ ${#missing[@]} -gt 0 ]; then
  pkgs=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
  echo "mayfly: installing Debian packages: $pkgs" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq >/dev/null || true
  # shellcheck disable=SC2086
  $SUDO apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
  # Debian starts services from packages; Mayfly runs its own instances.
  for svc in prometheus nats-server haproxy; do
    $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
  done
fi
if [ ! -d node_modules ] || [ package.json -nt node_modules/.package-lock.json ]; then
  echo "mayfly: installing npm dependencies" >&2
  npm install --no-audit --no-fund --loglevel=error >&2
fi
