/**
 * Every setting of every Mayfly process, parsed once with zod from environment
 * variables (`MAYFLY_*`). Defaults work on a laptop. The README's configuration
 * table lists the same names; keep them in step.
 */
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';

/** The project's root folder (this file is contracts/config.ts, or dist/contracts/config.js). */
export const PROJECT_ROOT = (() => {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const up = path.resolve(here, '..');
  return path.basename(up) === 'dist' ? path.resolve(up, '..') : up;
})();

const bool = z
  .enum(['0', '1', 'true', 'false', 'yes', 'no', 'on', 'off', ''])
  .transform((v) => ['1', 'true', 'yes', 'on'].includes(v));

const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max);

export const configSchema = z.object({
  /** State of the local platform started by `npm start` (nats-server's JetStream store). */
  MAYFLY_DATA_DIR: z.string().default(path.join(PROJECT_ROOT, '.data')),
  /**
   * Downloaded kernels and built images. Outside the checkout by default, so a
   * fresh clone on the same machine (CI) reuses them; rebuilt when missing.
   */
  MAYFLY_CACHE_DIR: z.string().default(path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'mayfly')),
  /** Per-VM sockets of this process (short: unix socket paths are limited to 108 bytes). */
  MAYFLY_RUN_DIR: z.string().default(path.join(os.tmpdir(), `mayfly-${process.pid}`)),
  /** Template snapshots (guest RAM files): default /dev/shm/mayfly-<pid>. Must be tmpfs for sharing to pay off. */
  MAYFLY_TEMPLATE_DIR: z.string().optional(),
  /** Start VMs as copy-on-write clones of a booted template (fast) instead of cold boots. */
  MAYFLY_CLONES: bool.default(true),
  /** QEMU accelerator: `auto` uses KVM when /dev/kvm exists and a probe boot under it succeeds. */
  MAYFLY_ACCEL: z.enum(['auto', 'kvm', 'tcg']).default('auto'),
  /**
   * TCG only: QEMU's translated-code buffer per VM, in MiB (0 = QEMU's default of 1 GiB).
   * What a VM touches of it is most of its private memory; measured in test/bench/RESULTS.md (issue 19).
   */
  MAYFLY_QEMU_TB_SIZE_MB: int(0, 4096).default(0),
  /** Hypervisor driver: `qemu` (default) or `xen` (the worker runs in a Xen dom0 and drives `xl`). */
  MAYFLY_DRIVER: z.enum(['qemu', 'xen']).default('qemu'),
  /** Xen guest type: PVH (default) or PV (fallback for hosts without HVM support). */
  MAYFLY_XEN_GUEST_TYPE: z.enum(['pvh', 'pv']).default('pvh'),
  /** Name prefix of this worker's Xen domains (its own: leftovers with it are destroyed at start). Default `mayfly-<host id or "w">-`. */
  MAYFLY_XEN_NAME_PREFIX: z.string().regex(/^[A-Za-z0-9_.-]{1,39}[-_.]$/).optional(),
  /**
   * Hard CPU affinity of every guest vCPU (xl's `cpus`: "1", "2-3", "^0"); unset: Xen's default.
   * The nested test host sets "1" (test/xen/nested-host.ts: guests off pCPU 0 under TCG).
   */
  MAYFLY_XEN_GUEST_CPUS: z
    .string()
    .regex(/^\^?\d+(-\d+)?(,\^?\d+(-\d+)?)*$/, 'CPU numbers and ranges, e.g. "1", "2-3", "^0"')
    .optional()
    .or(z.literal('').transform(() => undefined)),
  /** Timeout of one `xl` call (create, save and restore get three times this). */
  MAYFLY_XL_TIMEOUT_MS: int(1000, 600_000).default(60_000),
  /** A prebuilt guest image folder (vmlinux, initrd.img, manifest.json) to use instead of building one (a dom0 has no apt). */
  MAYFLY_IMAGE_DIR: z.string().optional(),
  /** Write each guest kernel's console to <run dir>/<vm>/console.log (debugging). */
  MAYFLY_GUEST_CONSOLE_LOG: bool.default(false),
  /** Initramfs compression: lz4 (default: fastest to unpack under TCG), zstd (smallest), gzip, none. */
  MAYFLY_IMAGE_COMPRESSION: z.enum(['lz4', 'gzip', 'zstd', 'none']).default('lz4'),
  /**
   * Extra runtimes in the guest image next to node, comma-separated recipe
   * references (functions/image/runtime-deps.ts): `python3` (Debian's
   * python3-minimal), `binary:/abs/path` (a plain binary, as /usr/bin/<name>).
   */
  MAYFLY_IMAGE_RUNTIMES: z
    .string()
    .default('')
    .transform((v) => v.split(',').map((s) => s.trim()).filter(Boolean))
    .pipe(z.array(z.string().regex(/^(python3|binary:\/[^,\s]+)$/, 'a runtime is python3 or binary:/abs/path')).max(8)),
  /**
   * Guest kernel: `tinyx` (built from linux-source-6.1 with the shipped minimized
   * config infra/kernel/tinyx-microvm.config; the first build takes minutes, then
   * it is cached), `debian` (Debian's cloud kernel + console modules), or `auto`
   * (default): tinyx, falling back to debian when it cannot be built.
   */
  MAYFLY_GUEST_KERNEL: z.enum(['auto', 'debian', 'tinyx']).default('auto'),
  /** With MAYFLY_GUEST_KERNEL=tinyx: a full kernel config to build instead of infra/kernel/tinyx-microvm.config. */
  MAYFLY_TINYX_CONFIG: z.string().optional(),
  /** Memory a function gets when its spec names none, and the most it may ask for (MiB). */
  MAYFLY_DEFAULT_MEMORY_MB: int(64, 65536).default(128),
  MAYFLY_MAX_MEMORY_MB: int(64, 65536).default(2048),
  /** Invocation timeout when the spec names none, and the most it may ask for (ms). */
  MAYFLY_DEFAULT_TIMEOUT_MS: int(100, 3_600_000).default(30_000),
  MAYFLY_MAX_TIMEOUT_MS: int(100, 3_600_000).default(300_000),
  /** Time a VM may take from start to the agent's `ready`. Generous: TCG boots take seconds. */
  MAYFLY_BOOT_TIMEOUT_MS: int(1000, 600_000).default(60_000),
  /** Log volume one invocation may write; beyond it the VM is destroyed. */
  MAYFLY_MAX_LOG_BYTES_PER_CALL: int(1024, 1 << 30).default(1024 * 1024),
  MAYFLY_MAX_LOG_LINES_PER_CALL: int(10, 10_000_000).default(10_000),

  // ---- bus ----
  /** NATS server. `npm start` runs its own nats-server when this is unset. */
  MAYFLY_NATS_URL: z.string().default('nats://127.0.0.1:4222'),

  // ---- security ----
  /** Credentials on the management API (/system/*). Turn off only on purpose: MAYFLY_AUTH=off. */
  MAYFLY_AUTH: bool.default(true),
  MAYFLY_ADMIN_USER: z.string().min(1).default('admin'),
  /** The admin password; or MAYFLY_ADMIN_PASSWORD_FILE; when neither is set one is generated into <data dir>/admin-password (mode 0600). */
  MAYFLY_ADMIN_PASSWORD: z.string().min(8).optional(),
  MAYFLY_ADMIN_PASSWORD_FILE: z.string().optional(),
  /** Require the same credentials on the gateway's /metrics. */
  MAYFLY_METRICS_AUTH: bool.default(false),
  /** Key (32 bytes, base64) that encrypts secrets at rest; or MAYFLY_SECRETS_KEY_FILE; generated into <data dir>/secrets.key when neither is set. */
  MAYFLY_SECRETS_KEY: z.string().optional(),
  MAYFLY_SECRETS_KEY_FILE: z.string().optional(),

  // ---- gateway ----
  MAYFLY_HOST: z.string().default('127.0.0.1'),
  MAYFLY_PORT: int(0, 65535).default(8080),
  /** Largest invocation request body (HTTP 413 above it). */
  MAYFLY_MAX_BODY_BYTES: int(1024, 64 * 1024 * 1024).default(6 * 1024 * 1024),
  /** Largest function source in a deploy. */
  MAYFLY_MAX_CODE_BYTES: int(1024, 32 * 1024 * 1024).default(1024 * 1024),
  /** Time an invocation may wait for placement and VM start on top of its own timeout. */
  MAYFLY_INVOKE_OVERHEAD_MS: int(1000, 600_000).default(90_000),

  // ---- scheduler ----
  /** How long a worker may take to accept or refuse an offer. */
  MAYFLY_OFFER_TIMEOUT_MS: int(100, 60_000).default(3000),
  /** A host whose last heartbeat is older than this is considered gone. */
  MAYFLY_HOST_TTL_MS: int(500, 600_000).default(5000),
  /** How long the scheduler keeps trying hosts for one call before answering NO_CAPACITY. */
  MAYFLY_PLACEMENT_TIMEOUT_MS: int(100, 600_000).default(30_000),

  // ---- async calls and call records ----
  /** How long call records (sync and async) are kept. */
  MAYFLY_RECORD_TTL_MS: int(60_000, 30 * 86_400_000).default(86_400_000),
  /** Async calls one scheduler replica runs at once. */
  MAYFLY_ASYNC_CONCURRENCY: int(1, 10_000).default(16),
  /** A scheduler that holds an async call silently for this long loses it to another replica. */
  MAYFLY_ASYNC_ACK_WAIT_MS: int(1000, 3_600_000).default(30_000),
  /** Attempts of an async call whose failure the function did not cause (VM died, worker lost). */
  MAYFLY_ASYNC_MAX_ATTEMPTS: int(1, 100).default(5),
  MAYFLY_ASYNC_RETRY_MIN_MS: int(10, 3_600_000).default(500),
  MAYFLY_ASYNC_RETRY_MAX_MS: int(10, 3_600_000).default(30_000),
  MAYFLY_CALLBACK_TIMEOUT_MS: int(100, 600_000).default(10_000),

  // ---- worker ----
  /** This host's id on the bus; default: the machine's hostname and the process id. */
  MAYFLY_HOST_ID: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/).optional(),
  /** Guest RAM this worker may hand out, in MiB. Beyond it, it refuses work. */
  MAYFLY_MEMORY_BUDGET_MB: int(256, 16 * 1024 * 1024).default(4096),
  /** Pre-booted, paused VMs kept ready per runtime. */
  MAYFLY_POOL_SIZE: int(0, 1000).default(1),
  /** Largest pool the worker grows to under load (sized by arrival rate × refill time). */
  MAYFLY_POOL_MAX: int(0, 1000).default(8),
  /** Function snapshots (annotation com.mayfly.snapshot) kept per worker, least recently used dropped first; 0 turns them off. */
  MAYFLY_FUNCTION_SNAPSHOTS_MAX: int(0, 256).default(8),
  /** Idle time after which a per-function warm VM is destroyed. */
  MAYFLY_WARM_TTL_MS: int(1000, 86_400_000).default(60_000),
  /** A per-function VM keeps running this long after a call before it is paused (back-to-back calls skip pause/unpause); 0 pauses at once. */
  MAYFLY_WARM_LINGER_MS: int(0, 60_000).default(50),
  MAYFLY_HEARTBEAT_MS: int(100, 60_000).default(1000),
  /**
   * Admission by measured memory: the worker keeps the host's MemAvailable above this
   * many MiB (evicting idle warm VMs first, then refusing work), whatever its budget says.
   */
  MAYFLY_HOST_MEMORY_RESERVE_MB: int(0, 1024 * 1024).default(1024),
  /**
   * A paused warm VM idle this long pages its private memory out to the host's swap
   * (zram on a density host: README "Density"); 0 turns it off. Without swap it is off.
   */
  MAYFLY_IDLE_RECLAIM_MS: int(0, 86_400_000).default(10_000),
  /** Worker's /metrics listener (0 = any free port). */
  MAYFLY_WORKER_METRICS_PORT: int(0, 65535).default(0),

  // ---- observability ----
  /** Scheduler's /metrics listener (0 = any free port). */
  MAYFLY_SCHEDULER_METRICS_PORT: int(0, 65535).default(0),
  /** Address the worker's and scheduler's /metrics listeners bind to (0.0.0.0: all; the host name is announced). */
  MAYFLY_METRICS_HOST: z.string().default('127.0.0.1'),
  /**
   * Prometheus file_sd targets file the scheduler writes (gateway, schedulers,
   * workers). Default <MAYFLY_DATA_DIR>/prometheus/targets.json; `off` disables it.
   */
  MAYFLY_PROMETHEUS_SD_FILE: z.string().optional(),
  /** `mayfly up` also runs Debian's prometheus with infra/prometheus/prometheus.yml. */
  MAYFLY_PROMETHEUS: bool.default(false),
  /** Where that prometheus listens (127.0.0.1). */
  MAYFLY_PROMETHEUS_PORT: int(1, 65535).default(9090),

  // ---- web console (/ui/) ----
  /** How long a console login lasts (the session cookie's lifetime); log in again afterwards. */
  MAYFLY_CONSOLE_SESSION_TTL_MS: int(60_000, 7 * 86_400_000).default(8 * 3_600_000),

  // ---- function packages (functions/package/: archive → npm ci → esbuild bundle) ----
  /** Largest package archive (.tar.gz/.zip) in a deploy, like Lambda's 50 MiB zipped. */
  MAYFLY_PACKAGE_MAX_BYTES: int(1024, 1 << 30).default(50 * 1024 * 1024),
  /** Largest unpacked package, installed dependencies included, like Lambda's 250 MiB. */
  MAYFLY_PACKAGE_MAX_UNPACKED_BYTES: int(1024, 16 * 1024 * 1024 * 1024).default(250 * 1024 * 1024),
  /** Most entries (files, folders, symlinks) in a package archive. */
  MAYFLY_PACKAGE_MAX_FILES: int(1, 1_000_000).default(10_000),
  /** Largest bundled function (what the guest loads; under the 9 MiB guest frame). */
  MAYFLY_MAX_BUNDLE_BYTES: int(1024, 8 * 1024 * 1024).default(8 * 1024 * 1024),
  /** Time `npm ci` may take for one package. */
  MAYFLY_NPM_TIMEOUT_MS: int(1000, 3_600_000).default(120_000),
  /** npm registry for package dependencies; unset: npm's own configuration (registry.npmjs.org). */
  MAYFLY_NPM_REGISTRY: z.string().url().optional(),
  /** Package builds one gateway runs at once (a few more wait; beyond that 429). */
  MAYFLY_PACKAGE_BUILDS: int(1, 64).default(2),

  // ---- triggers (NATS subjects and schedules, scheduler/triggers/) ----
  /**
   * Largest message body a subject trigger passes to a function; a larger one is recorded `failed` (413).
   * Keep it below 3/4 of nats-server's max_payload (1 MiB by default): the body travels base64-encoded in the async queue.
   */
  MAYFLY_TRIGGER_MAX_BODY_BYTES: int(0, 64 * 1024 * 1024).default(640 * 1024),
  /** Captured messages one scheduler replica maps to async calls at once. */
  MAYFLY_TRIGGER_CONCURRENCY: int(1, 1000).default(4),
  /** How often a scheduler replica looks for deployed, updated or removed triggers (one KV status request). */
  MAYFLY_TRIGGER_REFRESH_MS: int(100, 600_000).default(1000),

  // ---- OpenFaaS images (functions/oci/): container images as VM root filesystems
  /** Prepended to image references without a registry host (`functions/alpine` → `<prefix>/functions/alpine`); empty: Docker Hub. */
  MAYFLY_REGISTRY_PREFIX: z.string().default(''),
  /** Registries (host:port, comma-separated) reached over plain HTTP; loopback registries always are. */
  MAYFLY_INSECURE_REGISTRIES: z.string().default(''),
  /** Credentials for registries that refuse anonymous pulls: `host=user:password`, comma-separated. */
  MAYFLY_REGISTRY_AUTH: z.string().default(''),
  /** Compressed layers of one image, at most (bytes). */
  MAYFLY_IMAGE_MAX_BYTES: int(1024, 16 * 1024 * 1024 * 1024).default(256 * 1024 * 1024),
  /** The unpacked root filesystem of one image, at most (bytes): it lives in guest RAM. */
  MAYFLY_IMAGE_MAX_UNPACKED_BYTES: int(1024, 16 * 1024 * 1024 * 1024).default(512 * 1024 * 1024),
  /** Files (entries) of one unpacked image, at most. */
  MAYFLY_IMAGE_MAX_FILES: int(1, 10_000_000).default(100_000),
  /** One registry request (manifest, token, blob download), at most (ms). */
  MAYFLY_REGISTRY_TIMEOUT_MS: int(100, 3_600_000).default(120_000),

  // ---- jailer: every VM's QEMU in its own cage (worker/driver/jailer/) ----
  /**
   * `auto` (default): on when the worker runs as root, else skipped (logged once). `on`: required
   * (an error when not root). `off`: QEMU runs as the worker's user, without per-VM cgroups.
   */
  MAYFLY_JAILER: z.enum(['auto', 'on', 'off']).default('auto'),
  /** VM uids are BASE+1 … BASE+COUNT (one per running VM); BASE itself is the VMs' group. Reserve the range for Mayfly. */
  MAYFLY_JAILER_UID_BASE: int(1000, 4_000_000_000).default(900_000_000),
  MAYFLY_JAILER_UID_COUNT: int(1, 1_000_000).default(65_536),
  /** Per-VM cgroup memory limit = guest RAM (twice for a clone, see worker/driver/jailer) + this: QEMU's own memory (measured: 80-95 MiB for a TCG clone that ran a function). */
  MAYFLY_VM_MEMORY_OVERHEAD_MB: int(0, 65_536).default(128),
  /** Per-VM cgroup pids limit (QEMU's threads and its migration helper count; measured: 4 threads, +2 while a snapshot migrates). */
  MAYFLY_VM_PIDS_MAX: int(8, 1_000_000).default(64),
  /**
   * Per-VM cpu cgroup (the weight and quota below). Off by default: with QEMU in its own cpu cgroup the
   * containment test's console flood loses bytes, because QEMU 7.2's virtconsole drops guest output when
   * the worker's socket is full (EAGAIN) instead of throttling the guest, and the changed scheduling fills
   * it; on once the guest channel is a flow-controlled virtserialport.
   */
  MAYFLY_VM_CPU_LIMITS: bool.default(false),
  /** Per-VM CPU weight per vCPU (cgroup v1 cpu.shares; mapped to cpu.weight on cgroup v2). */
  MAYFLY_VM_CPU_SHARES: int(2, 262_144).default(1024),
  /**
   * Per-VM CFS quota per vCPU, in % of one host core per period; 0: no quota (weights only). Default 100: a VM
   * never gets more than one core per vCPU (QEMU's own threads included), and is never throttled below that.
   * Lower values cap a spinning VM harder but throttle every VM's bursts too (measured: 50 made a CPU-bound
   * warm call 14% slower; `npm run test:fairness` shows the effect on an otherwise idle host).
   */
  MAYFLY_VM_CPU_QUOTA_PCT: int(0, 10_000).default(100),
  /** CFS period of that quota (µs). */
  MAYFLY_VM_CPU_PERIOD_US: int(1000, 1_000_000).default(100_000),

  // ---- cluster (several hosts, a NATS cluster; README "Running a cluster") ----
  /**
   * Replicas of every JetStream stream, KV bucket and object store Mayfly creates (1 for one
   * nats-server, 3 for a 3-node cluster). Applies when they are created; existing ones keep theirs.
   */
  MAYFLY_JS_REPLICAS: int(1, 5).default(1),
  /**
   * A service whose NATS connection has not answered a ping for this long counts as cut off the bus:
   * the gateway's /healthz answers 503 (the load balancer takes it out) and a worker refuses work and
   * ends the calls it runs (their results could not be reported; schedulers give them up after MAYFLY_HOST_TTL_MS).
   */
  MAYFLY_BUS_LOST_MS: int(1000, 600_000).default(5000),
});

export type MayflyConfig = z.infer<typeof configSchema>;

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

/** Parses the environment; a bad value is an error naming the variable. Unset and empty mean default. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): MayflyConfig {
  const picked: Record<string, string> = {};
  for (const key of Object.keys(configSchema.shape)) {
    const v = env[key];
    if (v !== undefined && v !== '') picked[key] = v;
  }
  const parsed = configSchema.safeParse(picked);
  if (!parsed.success) {
    const msgs = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`);
    throw new ConfigError(`invalid configuration: ${msgs.join('; ')}`);
  }
  return parsed.data;
}
