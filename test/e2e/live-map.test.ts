import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestPlatform, type TestPlatform } from '../support/platform.ts';

/** Debian's chromium; CI installs it (`apt-get install chromium`). Never downloaded by the test. */
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--enable-unsafe-swiftshader', // WebGL through SwiftShader (software) in headless mode
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

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
      map: { project(lngLat: [number, number]): { x: number; y: number } };
    };
  }
}

describe('live map page', () => {
  let t: TestPlatform;
  let userDataDir: string;
  let context: BrowserContext;
  let page: Page;
  const pageErrors: string[] = [];
  const foreignRequests: string[] = [];

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) {
      throw new Error(`chromium not found at ${CHROMIUM}: install it (apt-get install -y chromium) or set CHROMIUM_PATH`);
    }
    t = await startTestPlatform();
    userDataDir = await mkdtemp(path.join(os.tmpdir(), 'guanlink-chromium-'));
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      locale: 'en-US',
      viewport: { width: 1280, height: 800 },
    });
    page = context.pages()[0] ?? (await context.newPage());
    page.on('pageerror', (err) => pageErrors.push(err.message));
    page.on('request', (req) => {
      const url = req.url();
      if (!url.startsWith(t.httpUrl) && !url.startsWith('data:') && !url.startsWith('blob:')) foreignRequests.push(url);
    });
  });

  afterAll(async () => {
    await context?.close();
    if (userDataDir) await rm(userDataDir, { recursive: true, force: true });
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

  it('loads with the key from the URL hash, then hides the key', async () => {
    await page.goto(`${t.httpUrl}/#key=${t.adminKey}`);
    await page.waitForFunction(() => window.guanlinkMap?.ready(), null, { timeout: 30_000 });
    expect(new URL(page.url()).hash).toBe('');
    expect(await page.evaluate(() => localStorage.getItem('guanlink.adminKey'))).toBe(t.adminKey);
    await expect.poll(() => page.textContent('#status-text')).toBe('Connected');
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

  it('made no request outside the platform and threw no page errors', () => {
    expect(foreignRequests).toEqual([]);
    expect(pageErrors).toEqual([]);
  });
});
