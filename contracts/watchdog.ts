/**
 * How the guest agent runs an image function, the way OpenFaaS's watchdogs do
 * (functions/agent/watchdog.ts). Stored as the function's "code" (JSON,
 * content-addressed like code), built by the gateway from the image's config
 * and the deploy's envProcess. The agent imports only the type.
 */
import { z } from 'zod';

export const WATCHDOG_SPEC_VERSION = 1;

export const watchdogSpecSchema = z.strictObject({
  v: z.literal(WATCHDOG_SPEC_VERSION),
  /** classic: one process per call, body on stdin, response on stdout. http: a server the agent forwards calls to. */
  mode: z.enum(['classic', 'http']),
  /** argv of fprocess (split on spaces, as the classic watchdog does), run chrooted in /rootfs. */
  process: z.array(z.string()).min(1),
  /** The image's own environment (its config's Env). */
  env: z.record(z.string(), z.string()),
  workdir: z.string(),
  /** http mode: where the server listens, on the guest's own loopback. */
  upstreamUrl: z.string().optional(),
  /** The response's Content-Type (the watchdog's `content_type`); else the request's, else text/plain. */
  contentType: z.string().optional(),
});
export type WatchdogSpec = z.infer<typeof watchdogSpecSchema>;

/** Where the image's root filesystem is in the guest (functions/oci/rootfs.ts writes it there). */
export const GUEST_ROOTFS = '/rootfs';
