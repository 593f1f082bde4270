import { readFile } from 'node:fs/promises';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchChromium, type Chromium } from '../support/chromium.ts';
import { startTestPlatform, type TestPlatform } from '../support/platform.ts';

interface Rendered {
  lng: number;
  lat: number;
  domain: string;
  online: boolean;
}

declare global {
  interface Window {
    guanlinkMap: {
      ready(): boolean;
      shown(id: number): [number, number] | null;
      rendered(id: number): Rendered | null;
      openPopup(id: number): void;
      alarmRing(id: number): { severity: string; acked: boolean } | null;
      renderedGeofences(): string[];
      pulses(): { kind: string; lng: number; lat: number }[];
      map: { project(lngLat: [number, number]): { x: number; y: number }; getCenter(): { lng: number; lat: number }; getZoom(): number };
    };
  }
}

describe('live map page', () => {
  let t: TestPlatform;
  let browser: Chromium;
  let page: Page;
  const pageErrors: string[] = [];
  const foreignRequests: string[] = [];

  beforeAll(async () => {
    t = await startTestPlatform();
    browser = await launchChromium();
    page = browser.context.pages()[0] ?? (await browser.context.newPage());
    page.on('pageerror', (err) => pageErrors.push(err.message));
    page.on('request', (req) => {
      const url = req.url();
      if (!url.startsWith(t.httpUrl) && !url.startsWith('data:') && !url.startsWith('blob:')) foreignRequests.push(url);
    });
  });

  afterAll(async () => {
    await browser?.close();
    await t?.stop();
  });

  /** Polls the device's rendered circle (MapLibre queryRenderedFeatures) until it is near lat/lng. */
  async function waitRenderedAt(id: number, lat: number, lng: number): Promise<Rendered> {
    const handle = await page.waitForFunction(
      ([id, lat, lng]) => {
        const r = window.guanlinkMap.rendered(id);
        return r && Math.abs(r.lat - lat) < 1e-3 && Math.abs(r.lng - lng) < 1e-3 ? r : null;
      },
      [id, lat, lng] as const,
      { timeout: 15_000, polling: 50 },
    );
    return (await handle.jsonValue()) as Rendered;
  }

  it('loads with the key of an old #key= link, then hides the key', async () => {
    await page.goto(`${t.httpUrl}/#key=${t.adminKey}`);
    await page.waitForFunction(() => window.guanlinkMap?.ready(), null, { timeout: 30_000 });
    expect(new URL(page.url()).hash).toBe('');
    // Kept for this tab only, never in localStorage.
    expect(await page.evaluate(() => sessionStorage.getItem('guanlink.credential'))).toBe(t.adminKey);
    expect(await page.evaluate(() => JSON.stringify(localStorage))).not.toContain(t.adminKey);
    await expect.poll(() => page.textContent('#status-text')).toBe('Connected');
    expect(await page.textContent('#principal-name')).toBe('bootstrap admin key');
  });

  it('draws a moving device where its telemetry puts it, and moves it', async () => {
    const bus = await t.createDevice({ name: 'e2e-bus', type: 'bus' });
    const client = await t.connect(bus.accessToken);
    const publish = (body: object) => client.publishAsync('v1/devices/me/telemetry', JSON.stringify(body), { qos: 1 });

    await publish({ speed: 31, latitude: 23.01, longitude: 113.74 });
    const first = await waitRenderedAt(bus.id, 23.01, 113.74);
    expect(first.domain).toBe('traffic');
    await expect.poll(() => page.textContent('#domains li[data-domain="traffic"] .count')).toBe('1');

    await publish({ speed: 42, latitude: 22.98, longitude: 113.80 });
    await waitRenderedAt(bus.id, 22.98, 113.8);
    expect(await page.evaluate((id) => window.guanlinkMap.rendered(id), bus.id)).not.toBeNull();
    expect(Number(await page.textContent('#device-total'))).toBeGreaterThanOrEqual(1);
    expect(await page.textContent('#last-update')).toMatch(/\d{2}:\d{2}:\d{2}/);

    // Clicking the device opens its popup with labelled values and units.
    const at = await page.evaluate((id) => window.guanlinkMap.map.project(window.guanlinkMap.shown(id)!), bus.id);
    await page.mouse.click(at.x, at.y);
    const popup = page.locator(`.device-popup[data-device-id="${bus.id}"]`);
    await expect.poll(() => popup.textContent(), { timeout: 5_000 }).toContain('e2e-bus');
    const text = (await popup.textContent()) ?? '';
    expect(text).toContain('Bus');
    expect(text).toContain('Traffic');
    expect(text).toMatch(/Speed\s*42 km\/h/);
    expect(text).toMatch(/ago/);
    expect(text).toContain('22.98000, 113.80000');
  });

  it('switches between English and Chinese', async () => {
    const trafficLabel = '#domains li[data-domain="traffic"] .name';
    expect(await page.textContent(trafficLabel)).toBe('Traffic');
    expect(await page.textContent('#panel h1')).toContain('Live operations');

    await page.click('#lang');
    await expect.poll(() => page.textContent(trafficLabel)).toBe('交通');
    expect(await page.textContent('#status-text')).toBe('已连接');
    expect(await page.getAttribute('html', 'lang')).toBe('zh-CN');
    await expect.poll(() => page.locator('.device-popup').textContent()).toContain('车速');
    expect(await page.locator('.device-popup').textContent()).toContain('公交车');

    await page.click('#lang');
    await expect.poll(() => page.textContent(trafficLabel)).toBe('Traffic');
    expect(await page.textContent('#panel h1')).toContain('Live operations');
  });

  it('dims a device while it is offline and brightens it when it connects', async () => {
    const gauge = await t.createDevice({ name: 'e2e-gauge', type: 'river-level-station', location: { lat: 23.04, lng: 113.7 } });
    const renderedOnline = async (want: boolean) =>
      page.waitForFunction(([id, want]) => window.guanlinkMap.rendered(id)?.online === want, [gauge.id, want] as const, { timeout: 15_000, polling: 50 });
    await waitRenderedAt(gauge.id, 23.04, 113.7);
    const client = await t.connect(gauge.accessToken);
    await renderedOnline(true);
    await client.endAsync();
    await renderedOnline(false);
    // A page opened now learns it from the snapshot.
    await page.reload();
    await page.waitForFunction(() => window.guanlinkMap?.ready(), null, { timeout: 30_000 });
    await renderedOnline(false);
    const again = await t.connect(gauge.accessToken);
    await renderedOnline(true);
    await page.evaluate((id) => window.guanlinkMap.openPopup(id), gauge.id);
    await expect.poll(() => page.locator(`.device-popup[data-device-id="${gauge.id}"]`).textContent()).toMatch(/Status\s*Online/);
    await again.endAsync();
  });

  it('draws geofences, logs their events, lists open alarms live and rings their devices', async () => {
    // A fence south-east of the centre, then a fresh page: the fence is drawn with its name.
    const ring = [[113.8, 22.95], [113.82, 22.95], [113.82, 22.97], [113.8, 22.97], [113.8, 22.95]];
    const fence = await t.api<{ id: number }>('POST', '/api/v1/geofences', {
      type: 'Feature',
      geometry: { type: 'Polygon', coordinates: [ring] },
      properties: { name: 'e2e-depot', domain: 'traffic', deviceTypes: ['bus'] },
    });
    expect(fence.status, JSON.stringify(fence.body)).toBe(201);
    await page.reload();
    await page.waitForFunction(() => window.guanlinkMap?.ready(), null, { timeout: 30_000 });
    await page.waitForFunction(() => window.guanlinkMap.renderedGeofences().includes('e2e-depot'), null, { timeout: 15_000, polling: 100 });
    const label = page.locator(`.geofence-label[data-geofence-id="${fence.body.id}"]`);
    expect(await label.textContent()).toBe('e2e-depot');
    expect(await label.isVisible()).toBe(true);
    expect(await page.textContent('#geofence-events-empty')).toBe('None since the page opened');

    // Hiding geofences hides the layer and the label.
    await page.click('#geofence-toggle');
    await page.waitForFunction(() => window.guanlinkMap.renderedGeofences().length === 0, null, { timeout: 5_000, polling: 50 });
    expect(await label.isVisible()).toBe(false);
    await page.click('#geofence-toggle');
    await page.waitForFunction(() => window.guanlinkMap.renderedGeofences().includes('e2e-depot'), null, { timeout: 5_000, polling: 50 });

    // A bus driving into it: a pulse where it entered and a line in the event log.
    const bus = await t.createDevice({ name: 'e2e-depot-bus', type: 'bus' });
    const busClient = await t.connect(bus.accessToken);
    await busClient.publishAsync('v1/devices/me/telemetry', JSON.stringify({ ts: Date.now() - 1000, values: { speed: 20, latitude: 22.94, longitude: 113.81 } }), { qos: 1 });
    await busClient.publishAsync('v1/devices/me/telemetry', JSON.stringify({ ts: Date.now(), values: { speed: 10, latitude: 22.96, longitude: 113.81 } }), { qos: 1 });
    await page.waitForFunction(() => window.guanlinkMap.pulses().some((p) => p.kind === 'enter' && Math.abs(p.lat - 22.96) < 1e-6), null, { timeout: 15_000, polling: 50 });
    const entry = page.locator('#geofence-events li[data-kind="enter"]').first();
    await expect.poll(() => entry.textContent()).toMatch(/\d{2}:\d{2}:\d{2} e2e-depot-bus entered e2e-depot/);
    expect(await page.isVisible('#geofence-events-empty')).toBe(false);
    // The pulse is short-lived.
    await page.waitForFunction(() => window.guanlinkMap.pulses().length === 0, null, { timeout: 5_000, polling: 100 });

    // A threshold rule that raises at once; a river station going over it.
    const rule = await t.api('POST', '/api/v1/alarm-rules', {
      name: 'e2e-level-high',
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
    expect(await page.textContent('#alarm-count')).toBe('0');
    expect(await page.isVisible('#alarms-empty')).toBe(true);
    const river = await t.createDevice({ name: 'e2e-river', type: 'river-level-station', location: { lat: 22.99, lng: 113.66 } });
    await waitRenderedAt(river.id, 22.99, 113.66);
    const riverClient = await t.connect(river.accessToken);
    await riverClient.publishAsync('v1/devices/me/telemetry', JSON.stringify({ water_level: 5.62 }), { qos: 1 });

    const item = page.locator('#alarms li.alarm');
    await expect.poll(() => item.count(), { timeout: 15_000 }).toBe(1);
    expect(await item.getAttribute('data-status')).toBe('raised');
    const text = (await item.textContent()) ?? '';
    expect(text).toContain('Critical');
    expect(text).toContain('e2e-river');
    expect(text).toContain('e2e-level-high');
    expect(text).toMatch(/Water level 5\.62 m > 5 m/);
    expect(text).toMatch(/\d{2}:\d{2}:\d{2}/);
    expect(await page.textContent('#alarm-count')).toBe('1');
    expect(await page.isVisible('#alarms-empty')).toBe(false);
    await page.waitForFunction((id) => window.guanlinkMap.alarmRing(id)?.severity === 'critical' && !window.guanlinkMap.alarmRing(id)?.acked, river.id, { timeout: 10_000, polling: 50 });
    expect(await page.evaluate((id) => window.guanlinkMap.alarmRing(id), bus.id)).toBeNull();

    // Clicking it flies to the device and opens its popup, which names the alarm.
    await item.locator('button.show').click();
    await page.waitForFunction(
      () => {
        const c = window.guanlinkMap.map.getCenter();
        return Math.abs(c.lat - 22.99) < 1e-3 && Math.abs(c.lng - 113.66) < 1e-3 && window.guanlinkMap.map.getZoom() >= 13.9;
      },
      null,
      { timeout: 10_000, polling: 100 },
    );
    await expect.poll(() => page.locator(`.device-popup[data-device-id="${river.id}"] .alarm-row`).textContent()).toMatch(/Alarm\s*Critical · e2e-level-high/);

    // Acknowledged from the panel under the operator's name: marked, not removed.
    await page.fill('#operator', 'duty-officer-wang');
    await item.locator('button.ack').click();
    await expect.poll(() => item.getAttribute('data-status')).toBe('acknowledged');
    expect(await item.textContent()).toContain('Acknowledged by duty-officer-wang');
    expect(await item.locator('button.ack').count()).toBe(0);
    const open = await t.api<{ items: { id: number; status: string; acknowledgedBy: string; device: { id: number } }[] }>('GET', '/api/v1/alarms?status=open');
    expect(open.body.items).toHaveLength(1);
    expect(open.body.items[0]).toMatchObject({ status: 'acknowledged', acknowledgedBy: 'duty-officer-wang', device: { id: river.id } });
    await page.waitForFunction((id) => window.guanlinkMap.alarmRing(id)?.acked === true, river.id, { timeout: 10_000, polling: 50 });

    // The same in Chinese.
    await page.click('#lang');
    await expect.poll(() => page.textContent('#alarm-section h2')).toContain('未处理告警');
    // The headings change at once; the alarm list is redrawn in the next frame.
    await expect.poll(async () => (await item.textContent()) ?? '').toContain('紧急');
    const zh = (await item.textContent()) ?? '';
    expect(zh).toContain('已由 duty-officer-wang 确认');
    expect(zh).toMatch(/水位 5\.62 m > 5 m/);
    expect(await page.textContent('#geofence-section h2')).toBe('电子围栏');
    await expect.poll(async () => (await entry.textContent()) ?? '').toContain('e2e-depot-bus 进入 e2e-depot');
    expect(await page.textContent('#operator-field')).toContain('确认人');
    await page.click('#lang');
    await expect.poll(() => page.textContent('#alarm-section h2')).toContain('Open alarms');

    // A page opened now reads the open alarm over REST.
    await page.reload();
    await page.waitForFunction(() => window.guanlinkMap?.ready(), null, { timeout: 30_000 });
    await expect.poll(() => item.getAttribute('data-status')).toBe('acknowledged');
    expect(await page.inputValue('#operator')).toBe('duty-officer-wang');

    // Back under the clear threshold: the alarm leaves the panel and the ring goes.
    await riverClient.publishAsync('v1/devices/me/telemetry', JSON.stringify({ water_level: 4.1 }), { qos: 1 });
    await expect.poll(() => item.count(), { timeout: 15_000 }).toBe(0);
    expect(await page.textContent('#alarm-count')).toBe('0');
    expect(await page.isVisible('#alarms-empty')).toBe(true);
    await page.waitForFunction((id) => window.guanlinkMap.alarmRing(id) === null && window.guanlinkMap.rendered(id) !== null, river.id, { timeout: 10_000, polling: 50 });
  });

  it('has every UI string in both languages', async () => {
    // A string, not a function: vitest would rewrite a function's import().
    const { en, zh, inPage } = (await page.evaluate(`import('/i18n.js').then((m) => ({
      en: Object.keys(m.STRINGS.en),
      zh: Object.keys(m.STRINGS.zh),
      inPage: Array.from(document.querySelectorAll('[data-i18n]'), (el) => el.dataset.i18n),
    }))`)) as { en: string[]; zh: string[]; inPage: string[] };
    expect([...zh].sort()).toEqual([...en].sort());
    // Keys the page and map.js use, literally or as prefix + value.
    const source = await readFile(new URL('../../api/live/public/map.js', import.meta.url), 'utf8');
    const literal = [...source.matchAll(/\bt\((?:state\.)?lang, '([A-Za-z_]+)'/g)].map((m) => m[1]!);
    const composed = [...['critical', 'major', 'minor', 'warning'].map((s) => `severity_${s}`), ...['enter', 'exit', 'dwell'].map((k) => `event_${k}`), 'raised', 'acknowledged'];
    const used = new Set([...inPage, ...literal, ...composed]);
    expect(literal.length).toBeGreaterThan(20);
    expect([...used].filter((k) => !en.includes(k))).toEqual([]);
  });

  it('made no request outside the platform and threw no page errors', () => {
    expect(foreignRequests).toEqual([]);
    expect(pageErrors).toEqual([]);
  });
});
