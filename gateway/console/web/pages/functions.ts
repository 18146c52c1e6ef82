/**
 * Functions: the list with figures over the last 5 minutes (from call records),
 * a deploy form (new function or new version), and delete with confirmation.
 */
import { ApiError, call, getJson } from '../api.js';
import { clear, field, fmtMs, h, table, toast } from '../dom.js';
import { statsByFunction } from '../stats.js';
import { START_KINDS, type CallRecord, type FunctionInfo } from '../types.js';

const WINDOW_MS = 5 * 60_000;
const EXAMPLE = `export async function handler(event, context) {
  console.log('called with', event.method, event.path);
  return { hello: event.query.name ?? 'world' };
}
`;

export function functionsPage(main: HTMLElement): () => void {
  const list = h('div', { 'aria-live': 'polite' }, 'Loading…');
  const name = h('input', { name: 'name', required: true, pattern: '[a-z0-9\\-]{1,63}', autocomplete: 'off', spellcheck: 'false' });
  const isolation = h('select', { name: 'isolation' }, h('option', { value: 'per-request' }, 'per-request'), h('option', { value: 'per-function' }, 'per-function'));
  const memory = h('input', { name: 'memory', placeholder: '128Mi' });
  const timeout = h('input', { name: 'timeout', placeholder: '30s' });
  const handler = h('input', { name: 'handler', value: 'handler' });
  const snapshot = h('input', { name: 'snapshot', type: 'checkbox' });
  const code = h('textarea', { name: 'code', rows: 10, spellcheck: 'false', required: true });
  code.value = EXAMPLE;
  const file = h('input', { name: 'code-file', type: 'file', accept: '.js,.mjs,.cjs,text/javascript' });
  file.addEventListener('change', () => {
    const f = file.files?.[0];
    if (!f) return;
    void f.text().then((text) => {
      code.value = text;
      toast(`${f.name} loaded into the editor (${text.length} characters)`);
    });
  });
  const error = h('p', { class: 'error', role: 'alert' });
  const submit = h('button', { type: 'submit' }, 'Deploy');
  let known: FunctionInfo[] = [];

  const form = h(
    'form',
    { class: 'card deploy', 'aria-label': 'Deploy a function' },
    h('h2', {}, 'Deploy a function or a new version'),
    h('div', { class: 'grid' }, field('Name', name, 'a-z, 0-9 and -'), field('Isolation', isolation), field('Memory', memory), field('Timeout', timeout), field('Handler export', handler)),
    h('div', { class: 'field inline' }, snapshot, h('label', { for: (snapshot.id = 'f-snapshot') }, 'Start from a function snapshot (com.mayfly.snapshot)')),
    field('Handler code (an ES module)', code, 'The whole module is sent again for every new version: the API does not hand code back.'),
    field('…or load it from a file', file),
    error,
    submit,
  );
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    error.textContent = '';
    const exists = known.some((f) => f.name === name.value);
    const body = {
      service: name.value,
      code: code.value,
      handler: handler.value || 'handler',
      isolation: isolation.value,
      ...(memory.value ? { limits: { memory: memory.value } } : {}),
      ...(timeout.value ? { timeout: timeout.value } : {}),
      ...(snapshot.checked ? { annotations: { 'com.mayfly.snapshot': 'true' } } : {}),
    };
    submit.disabled = true;
    call<FunctionInfo>(exists ? 'PUT' : 'POST', '/system/functions', body)
      .then((fn) => {
        toast(`${fn?.name} deployed, version ${fn?.version}`);
        void refresh();
      })
      .catch((err: ApiError) => (error.textContent = `${err.code}: ${err.message}`))
      .finally(() => (submit.disabled = false));
  });

  function edit(fn: FunctionInfo): void {
    name.value = fn.name;
    isolation.value = fn.isolation;
    memory.value = fn.memory;
    timeout.value = `${fn.timeout}ms`;
    handler.value = fn.handler;
    snapshot.checked = fn.annotations['com.mayfly.snapshot'] === 'true';
    submit.textContent = 'Deploy new version';
    name.focus();
  }
  name.addEventListener('input', () => (submit.textContent = known.some((f) => f.name === name.value) ? 'Deploy new version' : 'Deploy'));

  function confirmDelete(cell: HTMLElement, fn: FunctionInfo): void {
    clear(cell);
    const yes = h('button', { type: 'button', class: 'danger', onclick: () => void remove(fn.name) }, `Delete ${fn.name}`);
    cell.append(h('span', { role: 'group', 'aria-label': `Confirm deleting ${fn.name}` }, 'Sure? ', yes, ' ', h('button', { type: 'button', onclick: () => void refresh() }, 'Cancel')));
    yes.focus();
  }

  async function remove(fnName: string): Promise<void> {
    try {
      await call('DELETE', '/system/functions', { functionName: fnName });
      toast(`${fnName} deleted`);
    } catch (err) {
      toast(`${(err as ApiError).code}: ${(err as Error).message}`, 'error');
    }
    await refresh();
  }

  async function refresh(): Promise<void> {
    try {
      const [fns, calls] = await Promise.all([getJson<FunctionInfo[]>('/system/functions'), getJson<CallRecord[]>('/system/invocations?limit=1000')]);
      known = fns.sort((a, b) => a.name.localeCompare(b.name));
      const stats = statsByFunction(calls, Date.now() - WINDOW_MS);
      clear(list);
      if (!known.length) {
        list.append(h('p', {}, 'No functions yet: deploy one below.'));
        return;
      }
      list.append(
        table(
          'Functions',
          ['Name', 'Runtime', 'Isolation', 'Version', 'Invocations', 'Calls (5 min)', 'Errors', 'p50', 'p99', 'Starts (5 min)', ''],
          known.map((fn) => {
            const s = stats.get(fn.name);
            const starts = s ? START_KINDS.filter((k) => s.starts[k] > 0).map((k) => `${k} ${s.starts[k]}`).join(', ') : '';
            const actions = h(
              'span',
              { class: 'actions' },
              h('a', { href: `#/invoke?fn=${encodeURIComponent(fn.name)}` }, 'Invoke'),
              ' ',
              h('a', { href: `#/calls?fn=${encodeURIComponent(fn.name)}` }, 'Calls'),
              ' ',
              h('button', { type: 'button', onclick: () => edit(fn) }, 'Edit'),
              ' ',
            );
            actions.append(h('button', { type: 'button', class: 'danger', onclick: () => confirmDelete(actions, fn) }, 'Delete'));
            return [h('strong', {}, fn.name), fn.runtime, fn.isolation, fn.version, fn.invocationCount, s?.calls ?? 0, s?.errors ?? 0, fmtMs(s?.p50Ms), fmtMs(s?.p99Ms), starts || '–', actions];
          }),
          { id: 'functions-table' },
        ),
      );
    } catch (err) {
      clear(list);
      list.append(h('p', { class: 'error' }, `${(err as ApiError).code ?? 'ERROR'}: ${(err as Error).message}`));
    }
  }

  main.append(list, form);
  void refresh();
  const timer = setInterval(() => {
    // Not while the user is choosing whether to delete.
    if (!list.querySelector('[role=group]')) void refresh();
  }, 5000);
  return () => clearInterval(timer);
}
