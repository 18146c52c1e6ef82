/**
 * Kernel arguments every Mayfly guest gets, whatever the hypervisor: boot fast
 * (no self-tests, no timer check, no KASLR) and skip in-guest hardening that the
 * VM boundary makes redundant. Each driver adds its own (console, devices).
 */
export const GUEST_KERNEL_ARGS: readonly string[] = [
  'panic=-1', // a guest panic ends the VM at once (QEMU -no-reboot; Xen on_reboot = "destroy"): the worker sees it
  'cryptomgr.notests',
  'no_timer_check',
  'nokaslr',
  // Safe only because isolation is enforced at the VM boundary by the host, not inside the guest.
  'mitigations=off',
  'init_on_alloc=0',
  'rodata=off',
  'audit=0',
  'apparmor=0',
  'security=none',
  'random.trust_cpu=on',
];
