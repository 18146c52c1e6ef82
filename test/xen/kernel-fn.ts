/** The function every Xen check deploys: it reports the guest's kernel, hypervisor and boot id. */
export const KERNEL_FN = `
import fs from 'node:fs';
import os from 'node:os';
export async function handler() {
  let hv = 'none';
  try { hv = fs.readFileSync('/sys/hypervisor/type', 'utf8').trim(); } catch {}
  let bootId = '';
  try { bootId = fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim(); } catch {}
  return { release: os.release(), hypervisor: hv, bootId };
}`;
