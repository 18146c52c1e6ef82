#!/bin/sh
# PID 1 of the nested Xen test host's dom0 (no systemd: daemons up in seconds).
# Started by /sbin/mayfly-stub-init (in the base image) once /opt/mayfly (the
# per-run project disk) is mounted. Brings up xenstored, xen-init-dom0,
# xenconsoled, the loopback-only user network to the outer machine, then runs
# the Xen test controller (dist/test/xen/dom0-controller.js) and powers off.
export PATH=/opt/mayfly/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
say() { echo "[dom0-init] $*"; }
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts 2>/dev/null
mount -t tmpfs -o mode=755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
for m in xenfs xen-evtchn xen-gntdev xen-gntalloc xen-privcmd virtio_net virtio_pci; do modprobe $m 2>/dev/null || say "modprobe $m failed"; done
mkdir -p /proc/xen && mount -t xenfs xenfs /proc/xen
mkdir -p /run/lock /run/xen /run/xenstored /var/log/xen/console /var/lib/xen /var/run
cp /opt/mayfly/infra/xen/xl.conf /etc/xen/xl.conf
XENBIN=/usr/lib/xen-4.17/bin
$XENBIN/oxenstored --pid-file=/run/xenstored.pid
i=0; until xenstore-read -s / >/dev/null 2>&1; do i=$((i+1)); [ $i -gt 300 ] && { say "xenstored did not come up"; busybox poweroff -f; }; sleep 0.1; done
$XENBIN/xen-init-dom0 || say "xen-init-dom0 failed"
$XENBIN/xenconsoled --pid-file=/run/xenconsoled.pid --log=guest --log-dir=/var/log/xen/console
ip link set lo up
# The one NIC (virtio-net, QEMU user networking; its name depends on udev in the initramfs).
IF=$(ls /sys/class/net | grep -v '^lo$' | head -1)
{ ip link set "$IF" up && ip addr add 10.0.2.15/24 dev "$IF" && ip route add default via 10.0.2.2; } || say "no network ($IF)"
say "xen daemons up after $(cut -d' ' -f1 /proc/uptime) s of dom0 uptime"
xl info | grep -E '^(xen_version|virt_caps|free_memory|total_memory)' | sed 's/^/[dom0-init] /'
set -a; . /opt/mayfly/run.env; set +a
cd /opt/mayfly
node dist/test/xen/dom0-controller.js
say "MAYFLY-XEN-CONTROLLER-EXIT rc=$?"
sync
busybox poweroff -f
