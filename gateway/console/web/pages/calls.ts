/**
 * Calls: call records filtered by function and status; one call's timeline
 * (queued → started → ended, attempts), result and logs; a live tail of a
 * function's logs (GET /system/logs, polled).
 */
import { ApiError, getJson, getText } from '../api.js';
import { clear, field, fmtMs, fmtTime, h, table } from '../dom.js';
import { durationMs } from '../stats.js';
import { CALL_STATUSES, type CallRecord, type FunctionInfo } from '../types.js';

export function callsPage(main: HTMLElement, params: URLSearchParams): () => void {
  const fn = h('select', { name: 'function' }, h('option', { value: '' }, 'all functions'));
  const status = h('select', { name: 'status' }, h('option', { value: '' }, 'any status'), ...CALL_STATUSES.map((s) => h('option', { value: s }, s)));
  status.value = params.get('status') ?? '';
  const list = h('div', { id: 'calls-list' }, 'Loading…');
  const detail = h('section', { class: 'card', id: 'call-detail', 'aria-label': 'Call', 'aria-live': 'polite', hidden: true });
  const tailBox = h('input', { type: 'checkbox', id: 'tail' });
  const tail = h('pre', { id: 'tail-logs', tabindex: 0, hidden: true });
  let tailTimer: ReturnType<typeof setInterval> | undefined;
  /** Answers to older requests (filters changed since) are dropped. */
  let seq = 0;

  /** The address of one call's detail, keeping the current filters. */
  const callHref = (callId: string) => {
    const q = new URLSearchParams({ call: callId });
    if (fn.value) q.set('fn', fn.value);
    if (status.value) q.set('status', status.value);
    return `#/calls?${q}`;
  };

  async function refresh(): Promise<void> {
    const mine = ++seq;
    const q = new URLSearchParams({ limit: '200' });
    if (fn.value) q.set('function', fn.value);
    if (status.value) q.set('status', status.value);
    try {
      const calls = await getJson<CallRecord[]>(`/system/invocations?${q}`);
      if (mine !== seq) return;
      clear(list);
      if (!calls.length) {
        list.append(h('p', {}, 'No calls match.'));
        return;
      }
      list.append(
        table(
          'Calls',
          ['Call', 'Function', 'Mode', 'Status', 'Code', 'Start', 'Host', 'Attempts', 'Queued', 'Duration'],
          calls.map((c) => [
            h('a', { href: callHref(c.callId) }, c.callId),
            c.function,
            c.mode,
            h('span', { class: `status ${c.status}` }, c.status),
            c.statusCode ?? '–',
            c.start ?? '–',
            c.hostId ?? '–',
            c.attempts,
            fmtTime(c.queuedAt),
            fmtMs(durationMs(c)),
          ]),
          { id: 'calls-table' },
        ),
      );
    } catch (err) {
      if (mine !== seq) return;
      clear(list);
      list.append(h('p', { class: 'error' }, `${(err as ApiError).code ?? 'ERROR'}: ${(err as Error).message}`));
    }
  }

  async function showCall(callId: string): Promise<void> {
    detail.hidden = false;
    clear(detail);
    try {
      const c = await getJson<CallRecord>(`/system/invocations/${encodeURIComponent(callId)}`);
      const step = (label: string, at: string | undefined) => h('li', { class: at ? 'done' : 'pending' }, h('strong', {}, label), ' ', fmtTime(at));
      detail.append(
        h('h2', {}, `Call ${c.callId}`),
        h('ol', { class: 'timeline', 'aria-label': 'Timeline' }, step('queued', c.queuedAt), step('started', c.startedAt), step('ended', c.endedAt)),
        h(
          'dl',
          { class: 'facts' },
          h('dt', {}, 'Function'),
          h('dd', {}, c.function),
          h('dt', {}, 'Status'),
          h('dd', {}, `${c.status}${c.statusCode ? ` (HTTP ${c.statusCode})` : ''}`),
          h('dt', {}, 'Attempts'),
          h('dd', {}, c.attempts),
          h('dt', {}, 'Start kind'),
          h('dd', {}, c.start ?? '–'),
          h('dt', {}, 'Host'),
          h('dd', {}, c.hostId ?? '–'),
          h('dt', {}, 'Duration'),
          h('dd', {}, fmtMs(durationMs(c))),
          c.error ? h('dt', {}, 'Error') : null,
          c.error ? h('dd', { class: 'bad' }, c.error) : null,
        ),
        h('h3', {}, 'Result'),
        h('pre', { tabindex: 0 }, c.result === undefined ? '–' : JSON.stringify(c.result, null, 2)),
        h('h3', {}, 'Logs'),
        h('pre', { id: 'call-logs', tabindex: 0 }, c.logs.length ? c.logs.map((l) => `${l.stream === 'stderr' ? '! ' : ''}${l.line}`).join('\n') : '(no log lines)'),
      );
      detail.focus();
    } catch (err) {
      detail.append(h('p', { class: 'error' }, `${(err as ApiError).code ?? 'ERROR'}: ${(err as Error).message}`));
    }
  }

  async function tailOnce(): Promise<void> {
    if (!fn.value) {
      tail.textContent = 'Choose a function to follow its logs.';
      return;
    }
    try {
      const text = await getText(`/system/logs?name=${encodeURIComponent(fn.value)}&tail=100`);
      const lines = text
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as { timestamp: string; text: string; callId?: string; stream?: string });
      tail.textContent = lines.length ? lines.map((l) => `${fmtTime(l.timestamp)} ${l.callId ?? ''} ${l.stream === 'stderr' ? '! ' : ''}${l.text}`).join('\n') : '(no log lines yet)';
      tail.scrollTop = tail.scrollHeight;
    } catch (err) {
      tail.textContent = `${(err as ApiError).code ?? 'ERROR'}: ${(err as Error).message}`;
    }
  }

  tailBox.addEventListener('change', () => {
    clearInterval(tailTimer);
    tail.hidden = !tailBox.checked;
    if (tailBox.checked) {
      void tailOnce();
      tailTimer = setInterval(() => void tailOnce(), 2000);
    }
  });
  fn.addEventListener('change', () => {
    void refresh();
    if (tailBox.checked) void tailOnce();
  });
  status.addEventListener('change', () => void refresh());

  main.append(
    h(
      'div',
      { class: 'card filters', role: 'search', 'aria-label': 'Filter calls' },
      field('Function', fn),
      field('Status', status),
      h('div', { class: 'field inline' }, tailBox, h('label', { for: 'tail' }, 'Live tail of the function’s logs')),
      h('button', { type: 'button', onclick: () => void refresh() }, 'Refresh'),
    ),
    tail,
    detail,
    list,
  );
  // The function filter of the address (a call's link keeps it) holds at once, not only once the
  // function list has loaded: the list, the live tail and the next link must not lose it meanwhile.
  const wanted = params.get('fn');
  if (wanted) {
    fn.append(h('option', { value: wanted }, wanted));
    fn.value = wanted;
  }
  void getJson<FunctionInfo[]>('/system/functions').then((fns) => {
    for (const f of fns.sort((a, b) => a.name.localeCompare(b.name))) if (f.name !== wanted) fn.append(h('option', { value: f.name }, f.name));
    void refresh();
  }, () => void refresh());
  const callId = params.get('call');
  if (callId) void showCall(callId);
  detail.tabIndex = -1;
  const timer = setInterval(() => void refresh(), 3000);
  return () => {
    clearInterval(timer);
    clearInterval(tailTimer);
  };
}
