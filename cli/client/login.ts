/** `mayfly login`: check credentials against the gateway and save them (0600). */
import { EXIT, usageError } from './errors.js';
import { localAdminPassword, resolveGateway, saveCredentials } from './credentials.js';
import { GatewayClient } from './http.js';
import { printJson } from './output.js';
import { parse, readStdin } from './args.js';

// ---- login -------------------------------------------------------------------------------

export async function login(argv: string[]): Promise<number> {
  const { values } = parse(argv, { username: { type: 'string', short: 'u' }, password: { type: 'string', short: 'p' }, 'password-stdin': { type: 'boolean' } }, 0);
  const gateway = resolveGateway(values.gateway, undefined);
  const user = values.username ?? 'admin';
  let password = values.password;
  let source = '--password';
  let creds: { user: string; password: string } | { token: string };
  if (values['password-stdin']) {
    password = (await readStdin()).toString('utf8').trim();
    source = 'stdin';
  }
  if (values.token) {
    creds = { token: values.token };
    source = '--token';
  } else {
    if (password === undefined) {
      const local = localAdminPassword();
      if (!local) {
        throw usageError(`no password: pass --password-stdin (echo "$PASSWORD" | mayfly login --password-stdin) or run on the machine of \`npm start\` (it keeps the password in its data dir)`);
      }
      password = local.password;
      source = local.source;
    }
    creds = { user, password };
  }
  const c = new GatewayClient(gateway, 'token' in creds ? { kind: 'token', token: creds.token, source } : { kind: 'basic', user, password: creds.password, source });
  await c.system('GET', '/system/functions'); // checks the credentials (401 → exit 3 with what to do)
  const file = saveCredentials(gateway, creds);
  if (values.json) printJson({ gateway, file, from: source });
  else process.stdout.write(`logged in to ${gateway} (credentials from ${source}, saved in ${file}, mode 0600)\n`);
  return EXIT.ok;
}

