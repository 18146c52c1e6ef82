/**
 * The client commands of `mayfly` (login, deploy, invoke, list, describe, logs,
 * remove, secret, token, calls, new), one module per group. Each parses its own
 * options (node:util parseArgs), talks to the gateway through GatewayClient and
 * prints a table for people or `--json` for scripts. Exit codes: ./errors.ts.
 */
export { login } from './login.js';
export { deploy } from './deploy.js';
export { invoke, invokeExitCode } from './invoke.js';
export { logs } from './logs.js';
export { calls, describeFn, list, newFunction, remove, secret, token } from './manage.js';
