import { Validator } from '@seriousme/openapi-schema-validator';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchChromium, type Chromium } from '../support/chromium.ts';
import { startTestPlatform, type TestPlatform } from '../support/platform.ts';

type Document = {
  openapi: string;
  paths: Record<string, Record<string, { responses?: Record<string, { content?: Record<string, { schema?: { properties?: Record<string, unknown> } }> }> }>>;
};

/**
 * The API description: /api/v1/openapi.json is a valid OpenAPI 3.0.3 document (checked by an
 * independent validator against the specification's own JSON schema), error answers are described
 * as problem details, and /docs shows it to people — without a credential and without anything
 * from outside this server.
 */
describe('API description', () => {
  let t: TestPlatform;
  let doc: Document;

  beforeAll(async () => {
    t = await startTestPlatform();
    const res = await fetch(`${t.httpUrl}/api/v1/openapi.json`);
    expect(res.status).toBe(200);
    doc = (await res.json()) as Document;
  });
  afterAll(() => t?.stop());

  it('is a valid OpenAPI 3.0.3 document', async () => {
    expect(doc.openapi).toBe('3.0.3');
    const validator = new Validator();
    const result = await validator.validate(structuredClone(doc) as unknown as Parameters<Validator["validate"]>[0]);
    expect(result.errors ?? []).toEqual([]);
    expect(result.valid).toBe(true);
    expect(validator.version).toBe('3.0');
  });

  it('states draft-7 exclusive bounds the 3.0 way (trajectory stopMinutes and stopRadius)', () => {
    const params = (doc.paths['/api/v1/devices/{id}/trajectory']!.get as unknown as { parameters: { name: string; schema: Record<string, unknown> }[] }).parameters;
    for (const name of ['stopMinutes', 'stopRadius']) {
      const schema = params.find((p) => p.name === name)?.schema ?? {};
      expect(typeof schema.minimum, name).toBe('number');
      expect(schema.exclusiveMinimum, name).toBe(true);
    }
  });

  it('describes every error answer as problem details', () => {
    let errors = 0;
    for (const [path, item] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(item)) {
        for (const [status, response] of Object.entries(op.responses ?? {})) {
          if (!/^[45]/.test(status) || !response.content) continue;
          const json = response.content['application/json']?.schema?.properties;
          expect(json?.statusCode && json.message ? `${method} ${path} ${status} as application/json` : 'ok').toBe('ok');
          const problem = response.content['application/problem+json']?.schema?.properties;
          if (!problem) continue;
          errors++;
          for (const member of ['statusCode', 'error', 'message']) expect(problem[member], `${method} ${path} ${status} ${member}`).toBeDefined();
        }
      }
    }
    expect(errors).toBeGreaterThan(50);
    const devices400 = doc.paths['/api/v1/devices']!.post!.responses!['400']!.content!['application/problem+json']!.schema!.properties!;
    expect(Object.keys(devices400)).toEqual(expect.arrayContaining(['type', 'title', 'status', 'detail', 'instance', 'statusCode', 'error', 'message']));
  });

  it('serves a docs page at /docs without a credential, its files from this server', async () => {
    const page = await fetch(`${t.httpUrl}/docs`, { redirect: 'manual' });
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    const html = await page.text();
    expect(html).not.toMatch(/(src|href)="(https?:)?\/\//);
    const assets = [...html.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]!);
    expect(assets.length).toBeGreaterThanOrEqual(4);
    for (const asset of assets) {
      const res = await fetch(new URL(asset, `${t.httpUrl}/docs`));
      expect(res.status, asset).toBe(200);
    }
    // The page reads the same document.
    expect(await (await fetch(`${t.httpUrl}/docs/json`)).json()).toEqual(doc);
    // Its routes are not operations of the API.
    expect(Object.keys(doc.paths).filter((p) => p.startsWith('/docs'))).toEqual([]);
  });

  describe('in a browser', () => {
    let browser: Chromium;
    beforeAll(async () => {
      browser = await launchChromium();
    });
    afterAll(() => browser?.close());

    it('renders the operations, asking nothing of another host', async () => {
      const page = browser.context.pages()[0] ?? (await browser.context.newPage());
      const foreign: string[] = [];
      const errors: string[] = [];
      page.on('request', (req) => {
        const url = req.url();
        if (!url.startsWith(t.httpUrl) && !url.startsWith('data:') && !url.startsWith('blob:')) foreign.push(url);
      });
      page.on('pageerror', (err) => errors.push(err.message));
      await page.goto(`${t.httpUrl}/docs`, { waitUntil: 'load' });
      await page.waitForSelector('.opblock-summary-path', { timeout: 20_000 });
      const paths = await page.$$eval('.opblock-summary-path', (els) => els.map((e) => e.getAttribute('data-path')));
      expect(paths).toContain('/api/v1/devices');
      expect(await page.isVisible('button.authorize')).toBe(true);
      expect(foreign).toEqual([]);
      expect(errors).toEqual([]);
    });
  });
});
