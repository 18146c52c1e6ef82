/**
 * GET /system/hosts: the worker hosts this gateway hears heartbeats from, with
 * their VMs by state, pools, warm functions, snapshots and memory budget
 * (read-only; the console's Hosts and VMs page polls it).
 */
import type { RouteHandlerMethod } from 'fastify';
import type { GatewayDeps } from '../deps.js';
import { GatewayError } from '../errors.js';

export function listHosts(deps: GatewayDeps): RouteHandlerMethod {
  return async () => {
    if (!deps.hosts) throw new GatewayError(501, 'NOT_CONFIGURED', 'this gateway does not follow worker heartbeats');
    return deps.hosts.list();
  };
}
