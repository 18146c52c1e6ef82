/**
 * The hypervisor driver interface: the only thing the worker knows about how a
 * VM is made. LightVM's split toolstack shows in `create`, which does the slow
 * part (process start, device setup, control and guest channels connected) and
 * leaves the VM paused before its first instruction; `start` only lets it run.
 * Implementations: ./qemu.ts (QEMU microvm, KVM or TCG); Xen (`xl`) later.
 */
import type { Duplex } from 'node:stream';

export interface VmSpec {
  /** Unique per worker; used for file names and the hypervisor's VM name. */
  id: string;
  kernelPath: string;
  initrdPath: string;
  /** Guest RAM in MiB. */
  memoryMiB: number;
  vcpus?: number;
  /** Extra kernel command line arguments appended to the driver's own. */
  kernelArgs?: string[];
  /**
   * Extra machine options the guest kernel needs, from its image (QEMU: appended
   * to `-M microvm`, e.g. `acpi=off` for a tinyx kernel built without ACPI).
   */
  machineOptions?: string[];
  /**
   * Guest RAM in a file (on tmpfs). `shared: true` for a template (the file IS
   * its RAM); `shared: false` for a clone: a private copy-on-write mapping of
   * the template's file, so clones share every page they do not write.
   */
  memoryFile?: { path: string; shared: boolean };
  /** Wait for a saved state (`restore`) instead of booting the kernel. */
  incoming?: boolean;
}

export type VmState = 'prepared' | 'running' | 'paused' | 'exited';

export interface VmExit {
  /** Why the VM is gone: destroyed on request, or the hypervisor process ended by itself. */
  reason: 'destroyed' | 'crashed';
  detail: string;
  /** Known cause of a crash: the kernel killed the hypervisor process for its cgroup memory limit (the guest's doing). */
  cause?: 'memory-limit';
}

export interface Vm {
  readonly id: string;
  readonly spec: VmSpec;
  /** Byte channel to the guest agent (host side of the virtio-console). */
  readonly channel: Duplex;
  /** Current state as the worker last set or observed it. */
  readonly state: VmState;
  /** Settles once the VM is gone, whoever ended it. Never rejects. */
  readonly exited: Promise<VmExit>;
}

export interface HypervisorDriver {
  readonly name: string;
  /** Prepares a paused VM with its channel connected. Nothing of the guest has run yet. */
  create(spec: VmSpec): Promise<Vm>;
  /** First start (boot) of a prepared VM, or resume of a paused one. */
  start(vm: Vm): Promise<void>;
  pause(vm: Vm): Promise<void>;
  /** Stops the VM and frees everything it held (process, sockets, files). Idempotent. */
  destroy(vm: Vm, why?: string): Promise<void>;
  /**
   * Saves a template: stops the VM and writes its device state to `statePath`.
   * RAM is not copied: it stays in the VM's memory file (spec.memoryFile.shared).
   */
  snapshot?(vm: Vm, statePath: string): Promise<void>;
  /** Loads a template's state into a VM created with `incoming`; it is paused afterwards. */
  restore?(vm: Vm, statePath: string): Promise<void>;
  /**
   * Gives a paused VM's private memory back to the host (to swap); resolves to
   * the bytes advised. Optional: QEMU only (Xen guests' memory is the guest's own).
   */
  reclaim?(vm: Vm): Promise<number>;
  /** Asks the hypervisor, not a cache. */
  queryState(vm: Vm): Promise<VmState>;
  /** Destroys every VM this driver still owns. */
  close(): Promise<void>;
}

/** Errors from drivers carry a code a caller can branch on. */
export class DriverError extends Error {
  constructor(
    readonly code: 'VM_START_FAILED' | 'VM_CONTROL_FAILED' | 'VM_GONE' | 'DRIVER_UNAVAILABLE',
    message: string,
  ) {
    super(message);
    this.name = 'DriverError';
  }
}
