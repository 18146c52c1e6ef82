/**
 * The web console in a real headless browser (Debian's chromium driven by
 * playwright-core) against the real platform with authentication on: log in
 * (by keyboard), deploy a function from the page (code loaded from a file), invoke it and see its answer
 * and logs, find the call in Calls, watch the host's VM counts change, manage
 * secrets and tokens, delete the function; and the refusals: no session → 401,
 * a session without or with a wrong CSRF token → 403. No CSP violation may be
 * reported by the browser on any page.
 *
 * Screenshots of every page (1280×800, and the Functions page at phone width)
 * are written to artifacts/console/ (generated, not committed; see README).
 */
import fs from 'node:fs';
import path from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PROJECT_ROOT } from '../../contracts/config.js';
import { TestPlatform } from '../helpers/platform.js';

const CHROMIUM = process.env.MAYFLY_CHROMIUM ?? '/usr/bin/chromium';
const SHOTS = path.join(PROJECT_ROOT, 'artifacts', 'console');
const PASSWORD = 'console-e2e-password';
const FN = 'console-hello';
const CODE = `export async function handler(event) {
  console.log('console says hi to', event.query.name);
  return { hello: event.query.name, method: event.method, cookie: event.headers.cookie ?? null, csrf: event.headers['x-csrf-token'] ?? null };
}
`;

let p: TestPlatform;
let browser: Browser;
let context: BrowserContext;
let page: Page;
const cspViolations: string[] = [];
let callId = '';

/** Polls until the matcher holds (20 s unless said otherwise). */
const poll = <T>(fn: () => Promise<T> | T, timeout = 20_000) => expect.poll(fn, { timeout, interval: 200 });

async function shot(name: string): Promise<void> {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

/** The warm VM count the Hosts page shows for w1 (-1 when not shown yet). */
async function shownWarm(): Promise<number> {
  const t = await page.locator('[data-host="w1"][data-state="warm"]').textContent({ timeout: 15_000 });
  return Number(t ?? -1);
}

beforeAll(async () => {
  fs.rmSync(SHOTS, { recursive: true, force: true });
  fs.mkdirSync(SHOTS, { recursive: true });
  p = await TestPlatform.start({ workers: 1, env: { MAYFLY_AUTH: 'on', MAYFLY_ADMIN_PASSWORD: PASSWORD, MAYFLY_POOL_SIZE: '1' } });
  await p.waitForWorkers(['w1'], 1);
  // Running as root (CI) needs --no-sandbox; the browser only ever talks to the loopback gateway.
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
  context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  page = await context.newPage();
  page.setDefaultTimeout(20_000);
  page.on('console', (m) => {
    if (/Content.Security.Policy/i.test(m.text())) cspViolations.push(m.text());
  });
});

afterAll(async () => {
  await browser?.close();
  await p?.stop();
});

describe('web console in a browser', () => {
  it('serves a login page with a strict CSP and logs in with the keyboard alone', async () => {
    const res = await page.goto(`${p.gatewayUrl}/ui/`);
    expect(res?.status()).toBe(200);
    expect(res?.headers()['content-security-policy']).toContain("script-src 'self'");
    await page.getByRole('form', { name: 'Log in' }).waitFor();
    expect(await page.locator('#nav').isVisible()).toBe(false); // no pages before the login
    await shot('login');

    // wrong password: refused, nothing stored
    await page.getByLabel('Password').fill('wrong-password');
    await page.keyboard.press('Enter');
    await poll(() => page.getByRole('alert').textContent()).toContain('authentication required');
    expect(await context.cookies()).toEqual([]);

    // the password field has the focus after a failure; type and press Enter
    await page.getByLabel('Password').focus();
    await page.keyboard.type(PASSWORD);
    await page.keyboard.press('Enter');
    await page.getByRole('heading', { name: 'Functions', level: 1 }).waitFor();
    expect(await page.locator('#nav').isVisible()).toBe(true);
    const [cookie] = await context.cookies();
    expect(cookie).toMatchObject({ name: 'mayfly_session', httpOnly: true, sameSite: 'Strict', secure: false, path: '/' });
    expect(await page.evaluate(() => document.cookie)).toBe('');
    // Tab from the top of a fresh page reaches the skip link, then the navigation
    await page.reload();
    await page.getByRole('heading', { name: 'Functions', level: 1 }).waitFor();
    await page.keyboard.press('Tab');
    expect(await page.evaluate(() => document.activeElement?.textContent)).toBe('Skip to content');
    await page.keyboard.press('Tab');
    expect(await page.evaluate(() => document.activeElement?.textContent)).toBe('Functions');
  });

  it('deploys a function from the Functions page', async () => {
    await page.getByLabel('Name').fill(FN);
    await page.getByLabel('Isolation').selectOption('per-function');
    // the code comes from a file, loaded into the editor
    await page.getByLabel('…or load it from a file').setInputFiles({ name: 'hello.mjs', mimeType: 'text/javascript', buffer: Buffer.from(CODE) });
    await poll(() => page.getByLabel('Handler code (an ES module)').inputValue()).toBe(CODE);
    await page.getByRole('button', { name: 'Deploy', exact: true }).click();
    const row = page.locator('#functions-table tr', { hasText: FN });
    await row.waitFor();
    expect(await row.textContent()).toContain('per-function');
    // the platform has it
    const listed = (await (await fetch(`${p.gatewayUrl}/system/functions`, { headers: { authorization: `Basic ${Buffer.from(`admin:${PASSWORD}`).toString('base64')}` } })).json()) as Array<{ name: string; version: number }>;
    expect(listed.find((f) => f.name === FN)).toMatchObject({ version: 1 });
    await shot('functions');
  });

  it('shows the host with no warm VM before any call', async () => {
    await page.getByRole('link', { name: 'Hosts and VMs' }).click();
    await poll(shownWarm).toBe(0);
  });

  it('invokes it and shows the answer, start kind, host and logs', async () => {
    await page.goto(`${p.gatewayUrl}/ui/#/invoke?fn=${FN}`);
    await poll(() => page.getByLabel('Function', { exact: true }).inputValue()).toBe(FN);
    await page.getByLabel('Query').fill('name=browser');
    await page.getByRole('button', { name: 'Invoke' }).click();
    await poll(() => page.locator('#invoke-status').textContent(), 120_000).toMatch(/^200/);
    expect(JSON.parse((await page.locator('#invoke-body').textContent())!)).toEqual({ hello: 'browser', method: 'POST', cookie: null, csrf: null });
    // (the browser did send the session cookie and CSRF token with the call: the gateway keeps them from the function)
    expect(await page.locator('#invoke-start').textContent()).toMatch(/^(cold|pool|clone|snapshot|warm)$/);
    expect(await page.locator('#invoke-host').textContent()).toBe('w1');
    await poll(() => page.locator('#invoke-logs').textContent()).toContain('console says hi to browser');
    callId = (await page.locator('#invoke-result a[href^="#/calls?call="]').textContent()) ?? '';
    expect(callId).not.toBe('');
    await shot('invoke');
  });

  it('finds the call in Calls with its timeline and logs, and tails the function logs', async () => {
    await page.getByRole('link', { name: 'Calls' }).click();
    await page.getByLabel('Function', { exact: true }).selectOption(FN);
    await page.getByLabel('Status', { exact: true }).selectOption('succeeded');
    const link = page.locator('#calls-table').getByRole('link', { name: callId });
    await link.waitFor();
    await link.click();
    const detail = page.locator('#call-detail');
    await poll(() => detail.textContent()).toContain(`Call ${callId}`);
    expect(await detail.getByRole('list', { name: 'Timeline' }).textContent()).toMatch(/queued.*started.*ended/);
    expect(await page.locator('#call-logs').textContent()).toContain('console says hi to browser');
    // filtering by another status hides it
    await page.getByLabel('Status', { exact: true }).selectOption('failed');
    await poll(() => page.locator('#calls-list').textContent()).toContain('No calls match');
    await page.getByLabel('Status', { exact: true }).selectOption('');
    await page.getByLabel('Live tail of the function’s logs').check();
    await poll(() => page.locator('#tail-logs').textContent()).toContain('console says hi to browser');
    await shot('calls');
  });

  it('shows the host keeping a warm (paused) VM for the function after the call, on a live chart', async () => {
    await page.getByRole('link', { name: 'Hosts and VMs' }).click();
    await poll(shownWarm, 30_000).toBeGreaterThanOrEqual(1);
    const host = page.locator('section[data-host="w1"]');
    await poll(() => host.textContent()).toContain(`${FN}@1`);
    // the worker's start counters (from its /metrics): the call's VM start is counted
    await poll(() => page.locator('[data-starts="w1"]').textContent()).toMatch(/\b(boot|pool|clone|snapshot) [1-9]/);
    expect(await host.locator('canvas').count()).toBe(3);
    // more calls while the page is open: they unpause the warm VM, and the page counts it live
    for (let i = 0; i < 3; i++) {
      const res = await fetch(`${p.gatewayUrl}/function/${FN}?name=load${i}`);
      expect(res.status).toBe(200);
      await page.waitForTimeout(700);
    }
    await poll(() => page.locator('[data-starts="w1"]').textContent()).toMatch(/\bunpause [1-9]/);
    await page.waitForTimeout(1500); // a few more points on the charts for the screenshot
    await shot('hosts');
  });

  it('creates a secret (name only shown) and an API token (shown once)', async () => {
    await page.getByRole('link', { name: 'Secrets and tokens' }).click();
    await page.getByLabel('Name').first().fill('console-secret');
    await page.getByLabel('Value').fill('do-not-show-me');
    await page.getByRole('button', { name: 'Create secret' }).click();
    await page.getByRole('region', { name: 'Secrets' }).getByText('console-secret').waitFor();
    expect(await page.content()).not.toContain('do-not-show-me');
    await page.getByRole('form', { name: 'Create an API token' }).getByLabel('Name').fill('console-token');
    await page.getByRole('button', { name: 'Create token' }).click();
    await poll(() => page.locator('#new-token pre').textContent()).toMatch(/^mf_/);
    await page.getByRole('region', { name: 'API tokens' }).getByText('console-token').waitFor();
    await shot('secrets');
  });

  it('stays usable at phone width', async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    await page.getByRole('link', { name: 'Functions' }).click();
    await page.locator('#functions-table').waitFor();
    // wide tables scroll inside their own box; the page itself does not scroll sideways
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
    await shot('functions-phone');
    await page.getByRole('link', { name: 'Hosts and VMs' }).click();
    await page.locator('section[data-host="w1"] canvas').first().waitFor();
    expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(390);
    await shot('hosts-phone');
    await page.setViewportSize({ width: 1280, height: 800 });
  });

  it('refuses a request without the session, or with the session but without or with a wrong CSRF token', async () => {
    const tryDelete = (csrf?: string) =>
      page.evaluate(
        async ([name, token]) => {
          const headers: Record<string, string> = { 'content-type': 'application/json' };
          if (token) headers['x-csrf-token'] = token;
          const r = await fetch('/system/functions', { method: 'DELETE', headers, body: JSON.stringify({ functionName: name }) });
          return { status: r.status, body: (await r.json()) as { code?: string } };
        },
        [FN, csrf] as const,
      );
    // with the browser's session cookie, but no CSRF token / a wrong one
    expect(await tryDelete()).toEqual({ status: 403, body: expect.objectContaining({ code: 'CSRF_INVALID' }) });
    expect(await tryDelete('x'.repeat(43))).toEqual({ status: 403, body: expect.objectContaining({ code: 'CSRF_INVALID' }) });
    // without the session: from outside the browser, with the valid CSRF token of the session
    const session = await page.evaluate(async () => (await fetch('/ui/api/session')).json() as Promise<{ csrf: string }>);
    const outside = await fetch(`${p.gatewayUrl}/system/functions`, {
      method: 'DELETE',
      headers: { 'content-type': 'application/json', 'x-csrf-token': session.csrf },
      body: JSON.stringify({ functionName: FN }),
    });
    expect(outside.status).toBe(401);
    // the function is still there
    await page.getByRole('link', { name: 'Functions' }).click();
    await page.locator('#functions-table tr', { hasText: FN }).waitFor();
  });

  it('deletes the function after a confirmation', async () => {
    const row = page.locator('#functions-table tr', { hasText: FN });
    await row.getByRole('button', { name: 'Delete' }).click();
    // the confirmation takes the focus: Enter confirms
    expect(await page.evaluate(() => document.activeElement?.textContent)).toBe(`Delete ${FN}`);
    await page.keyboard.press('Enter');
    await poll(() => page.locator('main').textContent()).toContain('No functions yet');
    const res = await fetch(`${p.gatewayUrl}/system/function/${FN}`, { headers: { authorization: `Basic ${Buffer.from(`admin:${PASSWORD}`).toString('base64')}` } });
    expect(res.status).toBe(404);
  });

  it('logs out: the session cookie no longer opens the API', async () => {
    const [before] = await context.cookies();
    await page.getByRole('button', { name: 'Log out' }).click();
    await page.getByRole('form', { name: 'Log in' }).waitFor();
    expect(await context.cookies()).toEqual([]);
    // the cookie is stateless: the old value still verifies until it expires, like a bearer token; logout removes it from the browser
    expect(before?.value).toBeTruthy();
    // (as the console sends it: with X-Mayfly-Console, a 401 carries no WWW-Authenticate, so no browser password dialog)
    expect(await page.evaluate(async () => (await fetch('/system/functions', { headers: { 'x-mayfly-console': '1' } })).status)).toBe(401);
  });

  it('reported no Content-Security-Policy violation on any page', () => {
    expect(cspViolations).toEqual([]);
  });
});
