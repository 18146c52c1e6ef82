/** Secrets (names only; create and delete) and API tokens (create shows the token once; revoke). */
import { ApiError, call, getJson } from '../api.js';
import { clear, field, fmtTime, h, table, toast } from '../dom.js';

interface SecretInfo {
  name: string;
  createdAt: string;
  updatedAt: string;
}
interface TokenInfo {
  id: string;
  name: string;
  createdAt: string;
}

export function secretsPage(main: HTMLElement): () => void {
  const secrets = h('div', {}, 'Loading…');
  const tokens = h('div', {}, 'Loading…');
  const shown = h('div', { 'aria-live': 'polite', id: 'new-token' });

  const sName = h('input', { name: 'secret-name', required: true, autocomplete: 'off' });
  const sValue = h('input', { name: 'secret-value', type: 'password', required: true, autocomplete: 'off' });
  const sForm = h('form', { class: 'card', 'aria-label': 'Create a secret' }, h('h3', {}, 'New secret'), h('div', { class: 'grid' }, field('Name', sName), field('Value', sValue)), h('button', { type: 'submit' }, 'Create secret'));
  sForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    call('POST', '/system/secrets', { name: sName.value, value: sValue.value })
      .then(() => {
        toast(`secret ${sName.value} created`);
        sName.value = sValue.value = '';
        void refresh();
      })
      .catch((err: ApiError) => toast(`${err.code}: ${err.message}`, 'error'));
  });

  const tName = h('input', { name: 'token-name', required: true, autocomplete: 'off' });
  const tForm = h('form', { class: 'card', 'aria-label': 'Create an API token' }, h('h3', {}, 'New API token'), field('Name', tName), h('button', { type: 'submit' }, 'Create token'), shown);
  tForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    call<TokenInfo & { token: string }>('POST', '/system/tokens', { name: tName.value })
      .then((t) => {
        clear(shown);
        shown.append(h('p', {}, 'Copy the token now: it is not shown again.'), h('pre', { tabindex: 0 }, t!.token));
        tName.value = '';
        void refresh();
      })
      .catch((err: ApiError) => toast(`${err.code}: ${err.message}`, 'error'));
  });

  const confirmThen = (cell: HTMLElement, label: string, act: () => Promise<unknown>) => {
    clear(cell);
    const yes = h('button', { type: 'button', class: 'danger', onclick: () => void act().then(refresh, (err: ApiError) => toast(`${err.code}: ${err.message}`, 'error')) }, label);
    cell.append('Sure? ', yes, ' ', h('button', { type: 'button', onclick: () => void refresh() }, 'Cancel'));
    yes.focus();
  };

  async function refresh(): Promise<void> {
    const [s, t] = await Promise.allSettled([getJson<SecretInfo[]>('/system/secrets'), getJson<TokenInfo[]>('/system/tokens')]);
    clear(secrets);
    if (s.status === 'rejected') secrets.append(h('p', { class: 'error' }, (s.reason as Error).message));
    else if (!s.value.length) secrets.append(h('p', {}, 'No secrets.'));
    else
      secrets.append(
        table(
          'Secrets',
          ['Name', 'Created', 'Updated', ''],
          s.value.map((x) => {
            const cell = h('span', {});
            cell.append(h('button', { type: 'button', class: 'danger', onclick: () => confirmThen(cell, `Delete ${x.name}`, () => call('DELETE', '/system/secrets', { name: x.name })) }, 'Delete'));
            return [x.name, fmtTime(x.createdAt), fmtTime(x.updatedAt), cell];
          }),
        ),
      );
    clear(tokens);
    if (t.status === 'rejected') tokens.append(h('p', { class: 'error' }, (t.reason as Error).message));
    else if (!t.value.length) tokens.append(h('p', {}, 'No API tokens.'));
    else
      tokens.append(
        table(
          'API tokens',
          ['Id', 'Name', 'Created', ''],
          t.value.map((x) => {
            const cell = h('span', {});
            cell.append(h('button', { type: 'button', class: 'danger', onclick: () => confirmThen(cell, `Revoke ${x.name}`, () => call('DELETE', `/system/tokens/${x.id}`)) }, 'Revoke'));
            return [x.id, x.name, fmtTime(x.createdAt), cell];
          }),
        ),
      );
  }

  main.append(h('h2', {}, 'Secrets'), h('p', {}, 'Values go in and are never shown again; functions read them at /var/openfaas/secrets/<name>.'), secrets, sForm, h('h2', {}, 'API tokens'), tokens, tForm);
  void refresh();
  return () => {};
}
