#!/usr/bin/env node
/**
 * `mayfly` command line. Subcommands:
 *   run FILE [--event BODY] ...   run a handler once in a fresh VM (like `sam local invoke`)
 *   image build|kernel|minimize-kernel|deps   guest images and tinyx kernels (see IMAGE_USAGE)
 */
import { runCommand } from './run-command.js';
import { imageCommand } from './image-command.js';
import { gatewayCommand, schedulerCommand, workerCommand } from './services.js';
import { upCommand } from './up-command.js';
import { clusterCommand } from './cluster-command.js';
import * as client from './client/commands.js';
import { CliError } from './client/errors.js';

const USAGE = `usage: mayfly <command> [options]

commands:
  run FILE [--event BODY] [--handler NAME] [--method M] [--path P] [--query k=v]...
           [--header k:v]... [--env K=V]... [--timeout MS] [--memory MB]
      Build the guest image if needed, boot a VM, run the handler in FILE once,
      print its result (stdout) and its logs and VM timings (stderr).
      The request body is --event, or stdin when --event is absent and stdin is not a terminal.
  image build [--kernel debian|tinyx] [--compression lz4|gzip|zstd|none]
      Build the guest image for the node runtime (cached by content) and print its sizes.
  image kernel [--config FILE | --base]
      Build (or find in the cache) a tinyx guest kernel from linux-source-6.1.
  image minimize-kernel (--candidates A,B,C | --candidates-file FILE) [--config FILE | --base] ...
      Tinyx option elimination: disable, rebuild, boot + run a function, keep off if it works.
  image deps (node|python3 | --binary PATH)
      Files a runtime needs: ELF closure + what it opens at start-up (strace).
  up
      The whole platform on this machine: nats-server (unless MAYFLY_NATS_URL is set),
      gateway, scheduler and one worker. Ctrl-C stops everything, VMs included.
  cluster [--hosts N] [--nats-nodes N] [--replicas N] [--gateways N] [--schedulers N] [--port P]
      (or up --hosts N; root) A local cluster: 3-node NATS cluster with replicated JetStream,
      2 gateways behind HAProxy on 127.0.0.1:8080, 2 schedulers, 3 worker hosts each in its own
      network namespace on a bridge. Ctrl-C stops all of it and removes the namespaces.
  gateway | scheduler | worker
      One service on its own (to spread Mayfly over hosts), configured by MAYFLY_* variables.

client commands (gateway: --gateway URL, MAYFLY_GATEWAY, the stack file, or http://127.0.0.1:8080;
credentials: --token / MAYFLY_TOKEN, \`mayfly login\`, or on the machine of \`npm start\` its data dir;
--json for scripts):
  login [--username U] [--password-stdin | --token T]
      Check and save credentials for the gateway (~/.config/mayfly/credentials.json, mode 0600).
  deploy FILE|FOLDER [--name N] [--handler file.export] [--env K=V]... [--secret S]... [--memory 128Mi]
         [--timeout 30s] [--isolation per-request|per-function] [--label k=v]... [--annotation k=v]...
  deploy [-f mayfly.yml] [--filter NAME]...
      A .js file is sent as code; a .ts file or a folder (package.json + lockfile) as a package that
      the platform installs (npm ci) and bundles. Creates or updates; says which.
  invoke NAME [--data BODY | stdin] [--async] [--header k:v]... [--query k=v]... [--method M] [--path P]
  list | describe NAME | remove NAME
  logs NAME [--follow] [--since 10m|RFC3339] [--tail N]
  calls [NAME] [--status queued|running|succeeded|failed|dead|cancelled] [--limit N]
  secret create|update NAME [--from-literal V | --from-file F | stdin] | secret list | secret remove NAME
  token create NAME | token list | token revoke ID
  new NAME [--lang js|ts]     a starter function folder with a test and a mayfly.yml

exit codes of client commands: 0 done, 1 the function answered with an error, 2 usage (bad option or
stack file), 3 the gateway refused (4xx), 4 the gateway is unreachable or failed (5xx).
`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'run':
      return runCommand(rest);
    case 'image':
      return imageCommand(rest);
    case 'gateway':
      return gatewayCommand();
    case 'scheduler':
      return schedulerCommand();
    case 'worker':
      return workerCommand();
    case 'up':
      return rest.includes('--hosts') ? clusterCommand(rest) : upCommand();
    case 'cluster':
      return clusterCommand(rest);
    case 'login':
      return client.login(rest);
    case 'deploy':
      return client.deploy(rest);
    case 'invoke':
      return client.invoke(rest);
    case 'list':
    case 'ls':
      return client.list(rest);
    case 'describe':
      return client.describeFn(rest);
    case 'remove':
    case 'rm':
      return client.remove(rest);
    case 'logs':
      return client.logs(rest);
    case 'calls':
      return client.calls(rest);
    case 'secret':
      return client.secret(rest);
    case 'token':
      return client.token(rest);
    case 'new':
      return client.newFunction(rest);
    case undefined:
    case '-h':
    case '--help':
    case 'help':
      process.stdout.write(USAGE);
      return command === undefined ? 2 : 0;
    default:
      process.stderr.write(`mayfly: unknown command "${command}"\n\n${USAGE}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    // Exit now: nothing is left to do, and an idle handle (a pool, a timer) must not keep the CLI alive.
    process.exit(code);
  },
  (err: unknown) => {
    process.stderr.write(`mayfly: ${(err as Error).message ?? String(err)}\n`);
    process.exit(err instanceof CliError ? err.exitCode : 2);
  },
);
