#!/usr/bin/env bash
# Compressed swap in RAM (zram) for a density host: idle paused VMs page their
# private memory out to it (MAYFLY_IDLE_RECLAIM_MS; README "Density").
#   scripts/zram-swap.sh on [MiB]   make /dev/zram0 a swap device (lz4; default 8192 MiB of
#                                   uncompressed capacity); does nothing when the host has swap
#   scripts/zram-swap.sh off        swapoff and reset /dev/zram0 (only if it is ours: zram0 swap)
#   scripts/zram-swap.sh status     SwapTotal and zram0's compressed/used bytes
# Needs root; uses the kernel's zram module (loaded with modprobe when absent) and
# util-linux's mkswap/swapon/swapoff. On a real host, make it permanent with
# Debian's zram-tools or systemd-zram-generator instead.
set -euo pipefail
cmd=${1:-status}
dev=/dev/zram0
sys=/sys/block/zram0
swap_total_kib() { awk '/^SwapTotal:/ {print $2}' /proc/meminfo; }

case "$cmd" in
  on)
    mib=${2:-8192}
    if [ "$(swap_total_kib)" -gt 0 ]; then echo "zram-swap: the host has swap already; nothing to do"; exit 0; fi
    [ "$(id -u)" -eq 0 ] || { echo "zram-swap: needs root" >&2; exit 1; }
    [ -e "$sys" ] || modprobe zram num_devices=1 || { echo "zram-swap: no zram device and the zram module cannot be loaded" >&2; exit 1; }
    if [ "$(cat $sys/disksize)" != 0 ]; then echo "zram-swap: $dev is in use for something else; not touching it" >&2; exit 1; fi
    grep -qw lz4 $sys/comp_algorithm && echo lz4 > $sys/comp_algorithm
    echo "$((mib * 1024 * 1024))" > $sys/disksize
    mkswap "$dev" >/dev/null
    swapon -p 100 "$dev"
    echo "zram-swap: $dev on, $mib MiB, $(cat $sys/comp_algorithm | grep -o '\[[a-z0-9-]*\]')"
    ;;
  off)
    [ "$(id -u)" -eq 0 ] || { echo "zram-swap: needs root" >&2; exit 1; }
    if grep -q "^$dev " /proc/swaps; then swapoff "$dev"; echo 1 > $sys/reset; echo "zram-swap: $dev off"; else echo "zram-swap: $dev is not swap; nothing to do"; fi
    ;;
  status)
    echo "SwapTotal: $(swap_total_kib) kB"
    [ -e $sys/mm_stat ] && awk '{printf "zram0: orig %d MiB, compressed %d MiB, used %d MiB\n", $1/1048576, $2/1048576, $3/1048576}' $sys/mm_stat
    ;;
  *) echo "usage: $0 on [MiB] | off | status" >&2; exit 2 ;;
esac
