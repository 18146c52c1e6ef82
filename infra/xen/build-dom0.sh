#!/usr/bin/env bash
# Builds the nested Xen test host's dom0 once per machine (~7+ min from nothing):
#   $XEN_CACHE/base/{xen.elf,vmlinuz,initrd.img,dom0.img,stamp}
# dom0.img is Debian 12 (minbase) + linux-image-amd64 + Xen 4.17 + busybox-static.
# The project (node, dist/, node_modules, the guest image) is NOT in it: run-nested.sh
# puts those on a second, small disk at every run, so code changes never rebuild this.
# Needs root (re-runs itself with sudo otherwise); installs debootstrap itself. Idempotent: does nothing when the stamp exists.
set -euo pipefail
XEN_CACHE=${MAYFLY_XEN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mayfly/xen}
BASE=$XEN_CACHE/base
STAMP_VERSION=2
if [[ -f $BASE/stamp && $(cat "$BASE/stamp") == "$STAMP_VERSION" ]]; then
  echo "dom0 base image cached in $BASE"; exit 0
fi
if [[ $(id -u) != 0 ]]; then
  # debootstrap and chroot need root; keep the caller's cache folder.
  command -v sudo >/dev/null || { echo "build-dom0.sh must run as root (debootstrap, chroot)" >&2; exit 1; }
  exec sudo MAYFLY_XEN_CACHE="$XEN_CACHE" MAYFLY_DEBIAN_MIRROR="${MAYFLY_DEBIAN_MIRROR:-}" bash "$0" "$@"
fi
command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap
command -v mkfs.ext4 >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends e2fsprogs
mkdir -p "$XEN_CACHE"
WORK=$XEN_CACHE/.tmp-build-$$
ROOT=$WORK/rootfs
cleanup() {
  for m in dev/pts dev sys proc; do mountpoint -q "$ROOT/$m" 2>/dev/null && umount -l "$ROOT/$m" || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$ROOT"
MIRROR=${MAYFLY_DEBIAN_MIRROR:-http://deb.debian.org/debian}
t0=$(date +%s)
echo "[build-dom0] debootstrap bookworm ($MIRROR)"
nice -n 10 debootstrap --variant=minbase \
  --include=kmod,iproute2,procps,initramfs-tools,zstd,libstdc++6,busybox-static,ca-certificates \
  bookworm "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 || { tail -30 "$WORK/debootstrap.log"; exit 1; }
echo "[build-dom0] debootstrap done in $(( $(date +%s) - t0 )) s"
cat > "$ROOT/etc/apt/sources.list" <<SRC
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
SRC
printf '#!/bin/sh\nexit 101\n' > "$ROOT/usr/sbin/policy-rc.d"; chmod +x "$ROOT/usr/sbin/policy-rc.d"
mount -t proc proc "$ROOT/proc"; mount --bind /sys "$ROOT/sys"; mount --bind /dev "$ROOT/dev"; mount --bind /dev/pts "$ROOT/dev/pts"
nice -n 10 chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive apt-get update >"$WORK/apt.log" 2>&1
nice -n 10 chroot "$ROOT" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
  linux-image-amd64 xen-hypervisor-4.17-amd64 xen-utils-4.17 xen-utils-common >>"$WORK/apt.log" 2>&1 || { tail -30 "$WORK/apt.log"; exit 1; }
echo "[build-dom0] packages installed at $(( $(date +%s) - t0 )) s"
chroot "$ROOT" apt-get clean
for m in dev/pts dev sys proc; do umount -l "$ROOT/$m"; done
rm -f "$ROOT/usr/sbin/policy-rc.d"
# Boot stub: mounts the per-run project disk (/dev/vdb) and hands over to its dom0-init.sh.
cat > "$ROOT/sbin/mayfly-stub-init" <<'STUB'
#!/bin/sh
mount -t proc proc /proc 2>/dev/null; mount -t sysfs sys /sys 2>/dev/null; mount -t devtmpfs dev /dev 2>/dev/null
mount -o remount,rw /
mkdir -p /opt/mayfly
i=0; while [ ! -e /dev/vdb ] && [ $i -lt 100 ]; do i=$((i+1)); sleep 0.1; done
mount -t ext4 /dev/vdb /opt/mayfly || { echo "mayfly-stub-init: no project disk"; /bin/busybox poweroff -f; }
exec /bin/sh /opt/mayfly/infra/xen/dom0-init.sh
STUB
chmod +x "$ROOT/sbin/mayfly-stub-init"
echo 'dom0' > "$ROOT/etc/hostname"
mkdir -p "$BASE.new"
zcat "$ROOT"/boot/xen-4.17-amd64.gz > "$BASE.new/xen.elf"
cp "$ROOT"/boot/vmlinuz-* "$BASE.new/vmlinuz"
cp "$ROOT"/boot/initrd.img-* "$BASE.new/initrd.img"
ls "$ROOT"/boot/ > "$BASE.new/boot-files.txt"
truncate -s 2G "$BASE.new/dom0.img"
mkfs.ext4 -q -F -L mayfly-dom0 -d "$ROOT" "$BASE.new/dom0.img"
echo "$STAMP_VERSION" > "$BASE.new/stamp"
rm -rf "$BASE"; mv "$BASE.new" "$BASE"
echo "[build-dom0] done in $(( $(date +%s) - t0 )) s: $BASE"
