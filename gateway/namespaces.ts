/**
 * OpenFaaS namespaces: Mayfly has one, `openfaas-fn` (OpenFaaS's default), so
 * `stronghash.openfaas-fn`, `?namespace=openfaas-fn` and a body's
 * `"namespace": "openfaas-fn"` all mean the function `stronghash`. Any other
 * namespace does not exist: 404 NAMESPACE_NOT_FOUND (a provider's answer for
 * an unknown namespace), naming the one there is.
 */
import { GatewayError } from './errors.js';

export const DEFAULT_NAMESPACE = 'openfaas-fn';
export const NAMESPACES = [DEFAULT_NAMESPACE] as const;

export function checkNamespace(ns: string | undefined): void {
  if (ns === undefined || ns === '' || ns === DEFAULT_NAMESPACE) return;
  throw new GatewayError(404, 'NAMESPACE_NOT_FOUND', `namespace ${JSON.stringify(ns)} does not exist: Mayfly has one namespace, "${DEFAULT_NAMESPACE}" (the default; leave the namespace out or use it)`);
}

/**
 * A name as OpenFaaS clients write it, `name` or `name.namespace`: the name
 * without the suffix. `.openfaas-fn` alone (no name) is a function that does
 * not exist: 404, as a provider answers.
 */
export function stripNamespace(raw: string, what: 'function' | 'secret' = 'function'): string {
  const dot = raw.lastIndexOf('.');
  if (dot < 0) return raw;
  const ns = raw.slice(dot + 1);
  // Secret names may contain dots of their own: only a namespace-looking suffix is one.
  if (what === 'secret' && ns !== DEFAULT_NAMESPACE) return raw;
  checkNamespace(ns);
  const name = raw.slice(0, dot);
  if (name === '') throw new GatewayError(404, what === 'function' ? 'FUNCTION_NOT_FOUND' : 'SECRET_NOT_FOUND', `${what} ${JSON.stringify(raw)} not found (no name before the namespace)`);
  return name;
}
