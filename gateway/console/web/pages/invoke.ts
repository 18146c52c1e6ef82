/**
 * Invoke: method, path, query, headers and body → status, headers, body,
 * duration, start kind, host, and the call's logs (from its call record).
 */
import { ApiError, getJson, send } from '../api.js';
import { clear, field, h, table, toast } from '../dom.js';
import type { CallRecord, FunctionInfo } from '../types.js';

const METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'];

/** "Name: value" lines → headers; a line without a colon is an error. */
export function parseHeaderLines(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.trim();
    if (!line) continue;
    const c = line.indexOf(':');
    if (c <= 0) throw new Error(`header line ${i + 1} is not "Name: value"`);
    out[line.slice(0, c).trim()] = line.slice(c + 1).trim();
  }
  return out;
}

export function invokePage(main: HTMLElement, params: URLSearchParams): () => void {
  const fn = h('select', { name: 'function', required: true });
  const method = h('select', { name: 'method' }, ...METHODS.map((m) => h('option', { value: m }, m)));
  method.value = 'POST';
  const path = h('input', { name: 'path', placeholder: '/', spellcheck: 'false' });
  const query = h('input', { name: 'query', placeholder: 'name=mayfly&x=1', spellcheck: 'false' });
  const headers = h('textarea', { name: 'headers', rows: 3, spellcheck: 'false', placeholder: 'Content-Type: application/json' });
  headers.value = 'Content-Type: application/json';
  const body = h('textarea', { name: 'body', rows: 6, spellcheck: 'false' });
  body.value = '{"hello": "mayfly"}';
  const submit = h('button', { type: 'submit' }, 'Invoke');
  const result = h('section', { class: 'card result', 'aria-label': 'Result', 'aria-live': 'polite', id: 'invoke-result' });

  const form = h(
    'form',
    { class: 'card', 'aria-label': 'Invoke a function' },
    h('div', { class: 'grid' }, field('Function', fn), field('Method', method), field('Path', path), field('Query', query)),
    field('Headers (one "Name: value" per line)', headers),
    field('Body', body),
    submit,
  );

  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    void run();
  });

  async function run(): Promise<void> {
    let hdrs: Record<string, string>;
    try {
      hdrs = parseHeaderLines(headers.value);
    } catch (err) {
      toast((err as Error).message, 'error');
      return;
    }
    const p = path.value.trim().replace(/^\/+/, '');
    const url = `/function/${encodeURIComponent(fn.value)}${p ? `/${p}` : ''}${query.value.trim() ? `?${query.value.trim().replace(/^\?/, '')}` : ''}`;
    submit.disabled = true;
    clear(result);
    result.append(h('p', {}, 'Running…'));
    const t0 = performance.now();
    try {
      const res = await send(url, { method: method.value, headers: hdrs, ...(['GET', 'HEAD'].includes(method.value) ? {} : { body: body.value }) });
      const text = await res.text();
      const wall = performance.now() - t0;
      const callId = res.headers.get('x-call-id');
      clear(result);
      result.append(
        h('h2', {}, 'Answer'),
        h(
          'dl',
          { class: 'facts' },
          h('dt', {}, 'Status'),
          h('dd', { id: 'invoke-status', class: res.ok ? 'ok' : 'bad' }, `${res.status} ${res.statusText}`),
          h('dt', {}, 'Duration'),
          h('dd', {}, `${res.headers.get('x-duration-seconds') ?? '?'} s at the gateway, ${Math.round(wall)} ms in the browser`),
          h('dt', {}, 'Start'),
          h('dd', { id: 'invoke-start' }, res.headers.get('x-mayfly-start') ?? '–'),
          h('dt', {}, 'Host'),
          h('dd', { id: 'invoke-host' }, res.headers.get('x-mayfly-host') ?? '–'),
          h('dt', {}, 'Call'),
          h('dd', {}, callId ? h('a', { href: `#/calls?call=${encodeURIComponent(callId)}` }, callId) : '–'),
        ),
        h('h3', {}, 'Body'),
        h('pre', { id: 'invoke-body', tabindex: 0 }, text),
        h('h3', {}, 'Headers'),
        table('Response headers', ['Name', 'Value'], [...res.headers.entries()].map(([k, v]) => [k, v])),
      );
      const logs = h('pre', { id: 'invoke-logs', tabindex: 0 }, 'Loading the call’s logs…');
      result.append(h('h3', {}, 'Logs'), logs);
      if (callId) {
        try {
          const rec = await getJson<CallRecord>(`/system/invocations/${encodeURIComponent(callId)}`);
          logs.textContent = rec.logs.length ? rec.logs.map((l) => `${l.stream === 'stderr' ? '! ' : ''}${l.line}`).join('\n') : '(no log lines)';
        } catch (err) {
          logs.textContent = `no call record: ${(err as Error).message}`;
        }
      } else logs.textContent = '(no call id: the request did not reach a function)';
    } catch (err) {
      clear(result);
      result.append(h('p', { class: 'error' }, `request failed: ${(err as Error).message}`));
    } finally {
      submit.disabled = false;
    }
  }

  main.append(form, result);
  void getJson<FunctionInfo[]>('/system/functions')
    .then((fns) => {
      clear(fn);
      for (const f of fns.sort((a, b) => a.name.localeCompare(b.name))) fn.append(h('option', { value: f.name }, f.name));
      if (!fns.length) fn.append(h('option', { value: '' }, '(no functions: deploy one first)'));
      const wanted = params.get('fn');
      if (wanted && fns.some((f) => f.name === wanted)) fn.value = wanted;
    })
    .catch((err: ApiError) => toast(`${err.code}: ${err.message}`, 'error'));
  return () => {};
}
