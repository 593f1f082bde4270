import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchChromium, type Chromium } from '../support/chromium.ts';
import { startOidcProvider, type TestOidcProvider } from '../support/oidc-provider.ts';
import { eventually, startTestPlatform, type CreatedDevice, type TestPlatform } from '../support/platform.ts';

// Staff sign-in on the live map, in a real browser: a key typed into the sign-in panel, an old
// `#key=` link, scoped keys, missing permissions, revocation, and OpenID Connect (authorization
// code + PKCE in the page, against a real OpenID provider).

const AUDIENCE = 'urn:guanlink:live-map';
const TELEMETRY = 'v1/devices/me/telemetry';

interface Principal {
  kind: string;
  name: string;
  roles: string[];
  permissions: string[];
  scope: Record<string, unknown>;
}

/** What the map exposes for tests (map.js exposeForTests), as far as these tests use it. */
interface MapWindow {
  guanlinkMap: {
    ready(): boolean;
    rendered(id: number): { lng: number; lat: number; domain: string } | null;
    principal(): Principal | null;
    state: { devices: Map<number, { domain: string; values: Record<string, { value: number }> }> };
  };
}

describe('live map sign-in and access', () => {
  let idp: TestOidcProvider;
  let t: TestPlatform;
  let browser: Chromium;
  let river: CreatedDevice;
  let detector: CreatedDevice;
  let bus: CreatedDevice;
  const pageErrors: string[] = [];

  const createKey = async (body: Record<string, unknown>) => {
    const res = await t.api<{ id: number; key: string }>('POST', '/api/v1/keys', { owner: 'Dongguan test bureau', ...body });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    return res.body;
  };
  const publish = async (device: CreatedDevice, values: Record<string, number>) => {
    const client = await t.connect(device.accessToken);
    await client.publishAsync(TELEMETRY, JSON.stringify(values), { qos: 1 });
    await client.endAsync();
  };
  const newPage = async () => {
    const page = await browser.context.newPage();
    page.on('pageerror', (err) => pageErrors.push(err.message));
    return page;
  };
  const ready = (page: Page) => page.waitForFunction(() => (window as unknown as MapWindow).guanlinkMap?.ready(), null, { timeout: 30_000 });
  const signInPanel = (page: Page) => page.waitForSelector('#login:not([hidden])', { timeout: 15_000 });
  const renderedIds = (page: Page) => page.evaluate(() => [...(window as unknown as MapWindow).guanlinkMap.state.devices.keys()]);
  const waitRendered = (page: Page, id: number) => page.waitForFunction((id) => (window as unknown as MapWindow).guanlinkMap.rendered(id) !== null, id, { timeout: 15_000, polling: 50 });

  beforeAll(async () => {
    idp = await startOidcProvider({ audience: AUDIENCE, claims: (accountId) => ({ roles: ['operator'], name: `Staff ${accountId}`, org: 'City operations centre' }) });
    t = await startTestPlatform({ oidcIssuer: idp.issuer, oidcAudience: AUDIENCE, oidcClientId: idp.clientId });
    idp.addRedirectUri(`${t.httpUrl}/`);
    river = await t.createDevice({ name: 'lm-river', type: 'river-level-station', location: { lat: 23.02, lng: 113.75 } });
    detector = await t.createDevice({ name: 'lm-detector', type: 'traffic-detector', location: { lat: 23.03, lng: 113.72 } });
    bus = await t.createDevice({ name: 'lm-bus', type: 'bus' });
    await publish(bus, { speed: 30, latitude: 23.0, longitude: 113.77 });
    // An open alarm on the river station: its acknowledge button is what the permissions show or hide.
    const rule = await t.api('POST', '/api/v1/alarm-rules', {
      name: 'lm-level-high',
      deviceType: 'river-level-station',
      key: 'water_level',
      operator: '>',
      raiseThreshold: 5,
      clearThreshold: 4.5,
      minDurationSeconds: 0,
      clearDurationSeconds: 0,
      severity: 'critical',
    });
    expect(rule.status, JSON.stringify(rule.body)).toBe(201);
    await publish(river, { water_level: 5.5 });
    await eventually(async () => ((await t.api<{ items: unknown[] }>('GET', '/api/v1/alarms?status=open')).body.items.length === 1 ? true : undefined));
    browser = await launchChromium();
  });

  afterAll(async () => {
    await browser?.close();
    await t?.stop();
    await idp?.stop();
  });

  it('opens on the sign-in panel and signs in with a key typed into it', async () => {
    const { key } = await createKey({ name: 'duty desk', roles: ['operator'] });
    const page = await newPage();
    await page.goto(`${t.httpUrl}/`);
    await signInPanel(page);
    expect(await page.textContent('#login h2')).toBe('Sign in');
    expect(await page.textContent('#status-text')).toBe('Not signed in');
    // The provider's sign-in is offered (GET /auth/config.json names it).
    expect(await page.textContent('#oidc-button')).toBe(`Sign in with ${new URL(idp.issuer).host}`);

    await page.fill('#login-key', key);
    await page.click('#login button[type="submit"]');
    await ready(page);
    expect(await page.isVisible('#login')).toBe(false);
    expect(await page.textContent('#principal-name')).toBe('duty desk');
    expect(await page.textContent('#principal-roles')).toBe('operator');
    expect(await page.textContent('#principal-scope')).toBe('everything');
    for (const d of [river, detector, bus]) await waitRendered(page, d.id);
    // An operator may acknowledge: the button is there.
    const alarm = page.locator('#alarms li.alarm');
    await expect.poll(() => alarm.count()).toBe(1);
    expect(await alarm.locator('button.ack').count()).toBe(1);
    expect(await page.isVisible('#operator-field')).toBe(true);
    // The key is in this tab's sessionStorage only: not in the URL, not in localStorage.
    expect(page.url()).not.toContain(key);
    expect(await page.evaluate(() => sessionStorage.getItem('guanlink.credential'))).toBe(key);
    expect(await page.evaluate(() => JSON.stringify(localStorage))).not.toContain(key);

    // In Chinese too.
    await page.click('#lang');
    await expect.poll(() => page.textContent('#principal-scope')).toBe('全部');
    expect(await page.textContent('#principal')).toContain('当前用户');
    await page.click('#lang');
    await page.close();
  });

  it('takes the key of an old #key= link and removes it from the address bar; a water-only agency key sees no traffic and cannot acknowledge', async () => {
    const { key } = await createKey({ name: 'water bureau screen', roles: ['agency'], scope: { domains: ['water'] } });
    const page = await newPage();
    await page.goto(`${t.httpUrl}/#key=${encodeURIComponent(key)}`);
    await ready(page);
    expect(page.url()).toBe(`${t.httpUrl}/`);
    expect(await page.evaluate(() => location.href + history.length)).not.toContain(key);
    expect(await page.textContent('#principal-name')).toBe('water bureau screen');
    expect(await page.textContent('#principal-scope')).toBe('Water');

    await waitRendered(page, river.id);
    // A traffic reading now, then a water one: once the water one is drawn, the traffic one would have been too.
    await publish(bus, { speed: 31, latitude: 23.01, longitude: 113.78 });
    await publish(detector, { vehicle_count: 12 });
    await publish(river, { water_level: 5.6 });
    await page.waitForFunction((id) => (window as unknown as MapWindow).guanlinkMap.state.devices.get(id)?.values.water_level?.value === 5.6, river.id, {
      timeout: 15_000,
      polling: 50,
    });
    expect(await renderedIds(page)).toEqual([river.id]);
    expect(await page.evaluate((ids) => ids.map((id) => (window as unknown as MapWindow).guanlinkMap.rendered(id)), [detector.id, bus.id])).toEqual([null, null]);
    // The legend lists the water domain only.
    expect(await page.$$eval('#domains li', (items) => items.map((li) => (li as HTMLElement).dataset.domain))).toEqual(['water']);

    // The agency role has no alarms:ack: the alarm is listed without its acknowledge button.
    const alarm = page.locator('#alarms li.alarm');
    await expect.poll(() => alarm.count()).toBe(1);
    expect(await alarm.locator('button.ack').count()).toBe(0);
    expect(await page.isVisible('#operator-field')).toBe(false);
    await page.close();
  });

  it('moves a key that an earlier version kept in localStorage into the session, and off the disk', async () => {
    const page = await newPage();
    await page.goto(`${t.httpUrl}/`);
    await signInPanel(page);
    await page.evaluate((key) => localStorage.setItem('guanlink.adminKey', key), t.adminKey);
    await page.reload();
    await ready(page);
    expect(await page.evaluate(() => localStorage.getItem('guanlink.adminKey'))).toBeNull();
    expect(await page.evaluate(() => sessionStorage.getItem('guanlink.credential'))).toBe(t.adminKey);
    expect(await page.textContent('#principal-name')).toBe('bootstrap admin key');
    await page.close();
  });

  it('returns to the sign-in panel with the reason when the key is revoked, and clears the map', async () => {
    const { id, key } = await createKey({ name: 'night shift', roles: ['operator'] });
    const page = await newPage();
    await page.goto(`${t.httpUrl}/`);
    await signInPanel(page);
    await page.fill('#login-key', key);
    await page.press('#login-key', 'Enter');
    await ready(page);
    await waitRendered(page, river.id);

    expect((await t.api('POST', `/api/v1/keys/${id}/revoke`)).status).toBe(200);
    await signInPanel(page);
    expect(await page.textContent('#login-error')).toBe('Your access ended: API key "night shift" was revoked');
    expect(await renderedIds(page)).toEqual([]);
    expect(await page.isVisible('#principal')).toBe(false);
    expect(await page.evaluate(() => sessionStorage.getItem('guanlink.credential'))).toBeNull();

    // Typed again, it is refused with the server's reason.
    await page.fill('#login-key', key);
    await page.press('#login-key', 'Enter');
    await expect.poll(() => page.textContent('#login-error'), { timeout: 15_000 }).toMatch(/^The credential was refused: API key "night shift" was revoked at /);
    expect(await page.isVisible('#login')).toBe(true);
    await page.close();
  });

  it('signs in through the OpenID provider (authorization code + PKCE in the page), and signs out', async () => {
    const page = await newPage();
    await page.goto(`${t.httpUrl}/`);
    await signInPanel(page);
    await page.click('#oidc-button');
    // The provider's own login and consent pages (development interactions: any login).
    await page.waitForSelector('input[name="login"]', { timeout: 15_000 });
    expect(page.url().startsWith(idp.issuer)).toBe(true);
    const authorize = new URL(page.url());
    await page.fill('input[name="login"]', 'chen.jie');
    await page.fill('input[name="password"]', 'any password');
    await page.click('button[type="submit"]');
    await page.waitForSelector('button[type="submit"]:has-text("Continue")', { timeout: 15_000 });
    await page.click('button[type="submit"]');
    await ready(page);
    expect(authorize.origin).toBe(new URL(idp.issuer).origin);

    // Back on the map, signed in as the provider's account; the code and state are gone from the address bar.
    expect(page.url()).toBe(`${t.httpUrl}/`);
    const principal = (await page.evaluate(() => (window as unknown as MapWindow).guanlinkMap.principal()))!;
    expect(principal).toMatchObject({ kind: 'oidc', name: 'Staff chen.jie', roles: ['operator'] });
    expect(await page.textContent('#principal-name')).toBe('Staff chen.jie');
    const token = (await page.evaluate(() => sessionStorage.getItem('guanlink.credential')))!;
    expect(token.split('.')).toHaveLength(3); // the provider's JWT access token
    expect((await t.api('GET', '/api/v1/me', undefined, { auth: token })).body).toMatchObject({ kind: 'oidc', name: 'Staff chen.jie' });
    await waitRendered(page, detector.id);
    expect(await page.locator('#alarms li.alarm button.ack').count()).toBe(1);

    await page.click('#sign-out');
    await signInPanel(page);
    expect(await page.textContent('#login-error')).toBe('You signed out.');
    expect(await page.evaluate(() => sessionStorage.getItem('guanlink.credential'))).toBeNull();
    expect(await renderedIds(page)).toEqual([]);
    await page.close();
  });

  it('threw no page errors', () => {
    expect(pageErrors).toEqual([]);
  });
});
