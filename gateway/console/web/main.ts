/**
 * The console app: a login form, then pages chosen by the URL hash
 * (#/functions, #/invoke, #/calls, #/hosts, #/secrets). Each page renders into
 * <main> and returns a cleanup function (stops its timers) for when the user leaves.
 */
import 'uplot/dist/uPlot.min.css';
import './style.css';
import { b64, getJson, send, setCsrf, whenUnauthorized, call } from './api.js';
import { clear, field, h, toast } from './dom.js';
import { callsPage } from './pages/calls.js';
import { functionsPage } from './pages/functions.js';
import { hostsPage } from './pages/hosts.js';
import { invokePage } from './pages/invoke.js';
import { secretsPage } from './pages/secrets.js';
import type { Session } from './types.js';

export type Page = (main: HTMLElement, params: URLSearchParams) => (() => void) | void;

const PAGES: Record<string, { title: string; page: Page }> = {
  functions: { title: 'Functions', page: functionsPage },
  invoke: { title: 'Invoke', page: invokePage },
  calls: { title: 'Calls', page: callsPage },
  hosts: { title: 'Hosts and VMs', page: hostsPage },
  secrets: { title: 'Secrets and tokens', page: secretsPage },
};

let cleanup: (() => void) | void;
let session: Session | null = null;

function $(id: string): HTMLElement {
  return document.getElementById(id)!;
}

function route(): void {
  const main = $('main');
  if (cleanup) cleanup();
  cleanup = undefined;
  clear(main);
  if (!session || (session.authEnabled && !session.principal)) {
    showLogin(main);
    return;
  }
  const [name = 'functions', query = ''] = location.hash.replace(/^#\/?/, '').split('?');
  const entry = PAGES[name] ?? PAGES.functions!;
  document.title = `${entry.title} · Mayfly console`;
  for (const a of $('nav').querySelectorAll('a')) {
    if (a.getAttribute('href') === `#/${name}`) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  main.append(h('h1', {}, entry.title));
  cleanup = entry.page(main, new URLSearchParams(query));
}

function showWho(): void {
  const who = $('who');
  clear(who);
  const p = session?.principal;
  $('nav').hidden = !(session && (!session.authEnabled || p));
  if (!session?.authEnabled) {
    who.append('authentication off');
    return;
  }
  if (!p) return;
  who.append(p.kind === 'admin' ? p.user : `token ${p.name}`, ' ', h('button', { type: 'button', class: 'link', onclick: logout }, 'Log out'));
}

async function logout(): Promise<void> {
  await call('POST', '/ui/api/logout').catch(() => {});
  session = { authEnabled: true, principal: null, csrf: null };
  setCsrf(null);
  showWho();
  route();
}

function showLogin(main: HTMLElement): void {
  document.title = 'Log in · Mayfly console';
  const user = h('input', { name: 'user', autocomplete: 'username', value: 'admin' });
  const password = h('input', { name: 'password', type: 'password', autocomplete: 'current-password' });
  const token = h('input', { name: 'token', type: 'password', autocomplete: 'off', placeholder: 'mf_…' });
  const error = h('p', { class: 'error', role: 'alert' });
  const form = h(
    'form',
    { class: 'login card', 'aria-label': 'Log in' },
    h('h1', {}, 'Log in'),
    h('p', {}, 'With the admin user and password, or with an API token.'),
    field('User', user),
    field('Password', password),
    h('p', { class: 'or' }, 'or'),
    field('API token', token),
    error,
    h('button', { type: 'submit' }, 'Log in'),
  );
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    error.textContent = '';
    const authorization = token.value.trim() ? `Bearer ${token.value.trim()}` : `Basic ${b64(`${user.value}:${password.value}`)}`;
    void send('/ui/api/login', { method: 'POST', headers: { authorization } }).then(async (res) => {
      const body = (await res.json().catch(() => ({}))) as { error?: string; csrf?: string; principal?: Session['principal'] };
      if (!res.ok) {
        error.textContent = body.error ?? `login failed (HTTP ${res.status})`;
        password.value = '';
        return;
      }
      session = { authEnabled: true, principal: body.principal ?? null, csrf: body.csrf ?? null };
      setCsrf(session.csrf);
      showWho();
      if (!location.hash || location.hash === '#/login') location.hash = '#/functions';
      else route();
    });
  });
  main.append(form);
  (token.value ? token : password).focus();
}

async function start(): Promise<void> {
  whenUnauthorized(() => {
    if (session?.principal) toast('Your session ended: log in again', 'error');
    session = { authEnabled: true, principal: null, csrf: null };
    setCsrf(null);
    showWho();
    route();
  });
  try {
    session = await getJson<Session>('/ui/api/session');
  } catch (err) {
    toast(`cannot reach the gateway: ${(err as Error).message}`, 'error');
    session = { authEnabled: true, principal: null, csrf: null };
  }
  setCsrf(session.csrf);
  showWho();
  window.addEventListener('hashchange', route);
  route();
}

void start();
