/** `mayfly logs NAME [--follow]`: the function's log lines; --follow polls for lines of later calls. */
import { EXIT } from './errors.js';
import { client, parse, requireName } from './args.js';

// ---- logs --------------------------------------------------------------------------------

interface LogLine {
  name: string;
  instance?: string;
  timestamp: string;
  text: string;
  callId?: string;
  stream?: string;
}

export async function logs(argv: string[], opts: { pollMs?: number } = {}): Promise<number> {
  const { values, positionals } = parse(argv, { follow: { type: 'boolean' }, since: { type: 'string' }, tail: { type: 'string' } });
  const name = requireName(positionals, 'mayfly logs NAME [--follow] [--since 10m]');
  const c = client(values);
  const seen = new Set<string>();
  const show = (l: LogLine) => {
    if (values.json) process.stdout.write(JSON.stringify(l) + '\n');
    else process.stdout.write(`${l.timestamp} ${l.callId ? `${l.callId.slice(0, 8)} ` : ''}${l.text}\n`);
  };
  const fetchLines = async (since: string | undefined, tail: string | undefined): Promise<LogLine[]> => {
    const q = new URLSearchParams({ name, ...(since ? { since } : {}), ...(tail ? { tail } : {}) });
    const r = await c.raw('GET', `/system/logs?${q}`);
    if (r.status >= 400) throw c.error(r);
    return r.text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as LogLine);
  };
  const key = (l: LogLine) => `${l.callId}|${l.timestamp}|${l.stream}|${l.text}`;
  let last: string | undefined;
  for (const l of await fetchLines(values.since, values.tail)) {
    seen.add(key(l));
    show(l);
    last = l.timestamp;
  }
  if (!values.follow) return EXIT.ok;
  const startedAt = new Date().toISOString();
  let stop = false;
  process.once('SIGINT', () => (stop = true));
  process.once('SIGTERM', () => (stop = true));
  while (!stop) {
    await new Promise((r) => setTimeout(r, opts.pollMs ?? 1000));
    // Lines are stamped with their call's end; ask from the last one seen (or the start), dedupe.
    for (const l of await fetchLines(last ?? startedAt, undefined)) {
      const k = key(l);
      if (seen.has(k)) continue;
      seen.add(k);
      show(l);
      if (!last || l.timestamp > last) last = l.timestamp;
    }
    if (seen.size > 100_000) seen.clear();
  }
  return EXIT.ok;
}

