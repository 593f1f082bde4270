import { createHash } from 'node:crypto';
import { crc32 } from 'node:zlib';
import type { MqttClient } from 'mqtt';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, testPool } from '../support/database.ts';
import { inbox, nextMessage, sleep, type Received } from '../support/inbox.ts';
import { eventually, startTestPlatform, type CreatedDevice, type TestPlatform } from '../support/platform.ts';

/**
 * Firmware and software updates end to end, through the real platform: packages uploaded over
 * HTTP, assigned, pushed to devices as fw_* shared attributes, downloaded in chunks exactly as
 * the python SDK (tb_device_mqtt.py 1.13) does it over MQTT 5 and 3.1.1, states reported and
 * shown in the rollout view; the errors ThingsBoard sends; HTTP downloads; campaigns; gateways.
 */

interface Pkg {
  id: number;
  type: string;
  title: string;
  version: string;
  checksumAlgorithm: string;
  checksum: string | null;
  size: number | null;
}
interface Rollout {
  targeted: number;
  states: Record<string, number>;
  versions: { title: string | null; version: string | null; devices: number }[];
  failures: { deviceId: number; deviceName: string; error: string | null }[];
  campaigns: { id: number; status: string; assigned: number; devices: number }[];
}
interface Campaign {
  id: number;
  status: string;
  devices: number;
  assigned: number;
}

/** Bytes that differ at every position (so a chunk at the wrong offset shows). */
const image = (length: number, seed = 7) => Buffer.from(Array.from({ length }, (_, i) => (i * 31 + seed + (i >> 8)) % 256));
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

// The python SDK's constants (tb_device_mqtt.py).
const REQUIRED_SHARED_KEYS = 'fw_checksum,fw_checksum_algorithm,fw_size,fw_title,fw_version';

/** sdk_utils.py verify_checksum, for the algorithms used here: hex digests; CRC32 with its bytes reversed. */
function sdkVerifyChecksum(data: Buffer, algorithm: string, checksum: string): boolean {
  switch (algorithm.toLowerCase()) {
    case 'sha256':
      return sha256(data) === checksum;
    case 'md5':
      return createHash('md5').update(data).digest('hex') === checksum;
    case 'crc32': {
      const b = Buffer.alloc(4);
      b.writeUInt32BE(crc32(data) >>> 0);
      return Buffer.from(b).reverse().toString('hex') === checksum;
    }
    default:
      throw new Error(`this test's SDK does not check ${algorithm}`);
  }
}

/**
 * One device running the python SDK's OTA code, over mqtt.js: its firmware info as the SDK keeps
 * it (current_fw_title/version, fw_state, fw_error — sent whole on every change), the attribute
 * request it makes, and the chunk loop of `__get_firmware` / `_on_message`.
 */
class SdkDevice {
  readonly messages: Received[];
  readonly info = { current_fw_title: 'Initial', current_fw_version: 'v0', fw_state: 'IDLE', fw_error: '' };
  private attributeRequestId = 0;
  firmwareRequestId = 0;
  chunkLengths: number[] = [];

  constructor(readonly client: MqttClient) {
    this.messages = inbox(client);
  }

  /** update_firmware_info: the four keys as string telemetry, at QoS 1. */
  async report(state: string, extra: { title?: string; version?: string; error?: string } = {}): Promise<void> {
    if (extra.title !== undefined) this.info.current_fw_title = extra.title;
    if (extra.version !== undefined) this.info.current_fw_version = extra.version;
    this.info.fw_state = state;
    this.info.fw_error = state === 'FAILED' && extra.error !== undefined ? extra.error : '';
    await this.client.publishAsync('v1/devices/me/telemetry', JSON.stringify(this.info), { qos: 1 });
  }

  /** __request_firmware_info: the fw_* shared attributes, asked for by name. */
  async requestFirmwareInfo(): Promise<Record<string, unknown>> {
    const id = ++this.attributeRequestId;
    const before = this.messages.length;
    await this.client.publishAsync(`v1/devices/me/attributes/request/${id}`, JSON.stringify({ sharedKeys: REQUIRED_SHARED_KEYS }), { qos: 1 });
    const answer = await nextMessage(this.messages, `v1/devices/me/attributes/response/${id}`, before);
    return ((answer.body as { shared?: Record<string, unknown> }).shared ?? {}) as Record<string, unknown>;
  }

  /**
   * __get_firmware / _on_message: request chunk n with the chunk size as payload (empty when the
   * SDK's chunk_size is 0 or larger than fw_size), append what arrives on
   * v2/fw/response/{requestId}/chunk/…, stop once the length reaches fw_size. `stopAfter`
   * chunks simulates a cut; `from` resumes at a chunk with what was kept.
   */
  async download(info: Record<string, unknown>, chunkSize: number, options: { from?: number; kept?: Buffer; stopAfter?: number; newRequest?: boolean } = {}): Promise<Buffer> {
    const size = Number(info.fw_size);
    if (options.newRequest !== false) this.firmwareRequestId++;
    let data = options.kept ?? Buffer.alloc(0);
    let chunk = options.from ?? 0;
    let fetched = 0;
    while (data.length !== size) {
      if (options.stopAfter !== undefined && fetched === options.stopAfter) break;
      const payload = !chunkSize || chunkSize > size ? '' : String(chunkSize);
      const before = this.messages.length;
      await this.client.publishAsync(`v2/fw/request/${this.firmwareRequestId}/chunk/${chunk}`, payload, { qos: 1 });
      const m = (await nextMessage(this.messages, new RegExp(`^v2/fw/response/${this.firmwareRequestId}/chunk/`), before)) as Received;
      expect(m.topic).toBe(`v2/fw/response/${this.firmwareRequestId}/chunk/${chunk}`);
      const bytes = Buffer.from(m.raw);
      this.chunkLengths.push(bytes.length);
      data = Buffer.concat([data, bytes]);
      chunk++;
      fetched++;
      if (bytes.length === 0) throw new Error(`empty chunk ${chunk - 1} before the end (${data.length} of ${size} bytes)`);
    }
    return data;
  }

  /** The whole update as the SDK runs it: DOWNLOADING, chunks, DOWNLOADED, checksum, VERIFIED, UPDATING, UPDATED — or FAILED. */
  async update(chunkSize: number): Promise<{ data: Buffer; verified: boolean; info: Record<string, unknown> }> {
    const info = await this.requestFirmwareInfo();
    expect(info.fw_version !== this.info.current_fw_version || info.fw_title !== this.info.current_fw_title).toBe(true);
    await this.report('DOWNLOADING');
    const data = await this.download(info, chunkSize);
    await this.finish(info, data);
    return { data, verified: this.info.fw_state === 'UPDATED', info };
  }

  async finish(info: Record<string, unknown>, data: Buffer): Promise<void> {
    await this.report('DOWNLOADED');
    if (!sdkVerifyChecksum(data, String(info.fw_checksum_algorithm), String(info.fw_checksum))) {
      await this.report('FAILED', { error: 'Checksum verification failed!' });
      return;
    }
    await this.report('VERIFIED');
    await this.report('UPDATING');
    await this.report('UPDATED', { title: String(info.fw_title), version: String(info.fw_version) });
  }
}

describe('OTA firmware and software updates (ThingsBoard-compatible)', () => {
  let t: TestPlatform;
  let db: pg.Pool;
  let n = 0;
  const unique = (prefix: string) => `${prefix}-${++n}`;

  const createPackage = async (body: Record<string, unknown>) => {
    const res = await t.api<Pkg>('POST', '/api/v1/ota/packages', { type: 'FIRMWARE', title: unique('fw'), version: '1.0.0', ...body });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    return res.body;
  };
  const upload = async (id: number, data: Buffer, contentType = 'application/octet-stream') => {
    const res = await fetch(`${t.httpUrl}/api/v1/ota/packages/${id}/data`, { method: 'PUT', headers: { authorization: `Bearer ${t.adminKey}`, 'content-type': contentType }, body: new Uint8Array(data) });
    return { status: res.status, body: (await res.json()) as Pkg & { message?: string } };
  };
  const uploaded = async (data: Buffer, body: Record<string, unknown> = {}) => {
    const pkg = await createPackage(body);
    const res = await upload(pkg.id, data);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    return res.body;
  };
  const blocks = async (id: number) => (await db.query<{ n: number; len: number }>('SELECT n, length(data) AS len FROM ota_package_blocks WHERE package_id = $1 ORDER BY n', [id])).rows;
  const rollout = async (id: number) => (await t.api<Rollout>('GET', `/api/v1/ota/packages/${id}/rollout`)).body;
  /** A device running the SDK: connected (MQTT 5 or 3.1.1), subscribed as the SDK is. */
  const sdkDevice = async (d: CreatedDevice, protocolVersion: 4 | 5) => {
    const client = await t.connect(d.accessToken, { protocolVersion });
    const device = new SdkDevice(client);
    await client.subscribeAsync(['v1/devices/me/attributes', 'v1/devices/me/attributes/response/+'], { qos: 1 });
    return device;
  };

  beforeAll(async () => {
    t = await startTestPlatform();
    db = testPool(t.databaseUrl, 2);
  });
  afterAll(async () => {
    await db?.end();
    await t?.stop();
  });

  describe('packages over REST', () => {
    it('stores an upload with the checksum given, computes one when absent, in 64 KiB blocks beyond the 1 MiB body limit', async () => {
      const data = image(2_500_000);
      const given = await uploaded(data, { checksumAlgorithm: 'SHA256', checksum: sha256(data).toUpperCase() });
      expect(given).toMatchObject({ size: data.length, checksum: sha256(data), checksumAlgorithm: 'SHA256' });
      const rows = await blocks(given.id);
      expect(rows).toHaveLength(Math.ceil(data.length / 65_536));
      expect(rows.slice(0, -1).every((b) => b.len === 65_536)).toBe(true);
      expect(rows.at(-1)!.len).toBe(data.length % 65_536);

      const computed = await uploaded(image(1000), { checksumAlgorithm: 'CRC32' });
      expect(computed.checksum).toMatch(/^[0-9a-f]{8}$/);
      expect(sdkVerifyChecksum(image(1000), 'CRC32', computed.checksum!)).toBe(true);

      const res = await fetch(`${t.httpUrl}/api/v1/ota/packages/${given.id}/data`, { headers: { authorization: `Bearer ${t.adminKey}` } });
      expect(res.status).toBe(200);
      expect(res.headers.get('content-disposition')).toMatch(/attachment/);
      expect(Buffer.from(await res.arrayBuffer()).equals(data)).toBe(true);
    });

    it('refuses a wrong checksum, an empty or oversized body, a second upload and a JSON body — keeping nothing', async () => {
      const data = image(100_000);
      const wrong = await createPackage({ checksumAlgorithm: 'SHA256', checksum: sha256(image(100_000, 8)) });
      const refused = await upload(wrong.id, data);
      expect(refused.status).toBe(400);
      expect(refused.body.message).toMatch(/Wrong otaPackage file!.*nothing was stored/);
      expect((await t.api<Pkg>('GET', `/api/v1/ota/packages/${wrong.id}`)).body).toMatchObject({ size: null });
      expect(await blocks(wrong.id)).toEqual([]);

      expect((await upload(wrong.id, Buffer.alloc(0))).status).toBe(400);
      expect((await upload(wrong.id, Buffer.from('{"a":1}'), 'application/json')).status).toBe(415);
      expect(await blocks(wrong.id)).toEqual([]);

      const ok = await uploaded(data);
      const again = await upload(ok.id, data);
      expect(again.status).toBe(409);
      expect((await upload(999_999, data)).status).toBe(404);
      expect((await t.api('POST', '/api/v1/ota/packages', { type: 'FIRMWARE', title: 'x', version: '1', checksumAlgorithm: 'SHA1' })).status).toBe(400);
      expect((await t.api('POST', '/api/v1/ota/packages', { type: 'FIRMWARE', title: 'x', version: '1', checksumAlgorithm: 'MD5', checksum: 'abcd1234' })).status).toBe(400);
    });

    it('refuses a package larger than OTA_MAX_PACKAGE_BYTES with 413, announced or streamed, keeping nothing', async () => {
      const small = await startTestPlatform({ otaMaxPackageBytes: 200_000 });
      try {
        const res = await small.api<Pkg>('POST', '/api/v1/ota/packages', { type: 'SOFTWARE', title: 'big', version: '1' });
        const url = `${small.httpUrl}/api/v1/ota/packages/${res.body.id}/data`;
        const headers = { authorization: `Bearer ${small.adminKey}`, 'content-type': 'application/octet-stream' };
        expect((await fetch(url, { method: 'PUT', headers, body: image(300_000) })).status).toBe(413);
        // Chunked (no Content-Length): refused once the limit is passed.
        const stream = new ReadableStream({
          start(controller) {
            for (let i = 0; i < 5; i++) controller.enqueue(image(65_536, i));
            controller.close();
          },
        });
        const chunked = await fetch(url, { method: 'PUT', headers, body: stream, duplex: 'half' } as RequestInit);
        expect(chunked.status).toBe(413);
        const smallDb = testPool(small.databaseUrl, 1);
        expect((await smallDb.query('SELECT count(*)::int AS n FROM ota_package_blocks')).rows[0].n).toBe(0);
        await smallDb.end();
        expect((await fetch(url, { method: 'PUT', headers, body: image(150_000) })).status).toBe(200);
      } finally {
        await small.stop();
      }
    });
  });

  describe('assignment and the MQTT download, as the python SDK does it', () => {
    it('pushes fw_* to a device over MQTT 5 and one over 3.1.1; both download in chunks, verify, report; the rollout shows them', async () => {
      const data = image(40_000);
      const pkg = await uploaded(data, { checksumAlgorithm: 'SHA256' });
      const d5 = await t.createDevice({ name: unique('sdk-v5') });
      const d4 = await t.createDevice({ name: unique('sdk-v311') });
      const v5 = await sdkDevice(d5, 5);
      const v4 = await sdkDevice(d4, 4);
      // The SDK subscribes to `v2/fw/response/+`, which ThingsBoard refuses (it only takes
      // v2/fw/response/+/chunk/+); chunks come all the same. The 3.1.1 device uses the documented filter.
      const granted = await v5.client.subscribeAsync('v2/fw/response/+', { qos: 1 }).then(
        (g) => g.map((x) => x.qos),
        (err: { packet?: { granted?: number[] } }) => err.packet?.granted,
      );
      expect(granted).toEqual([0x8f]);
      expect((await v4.client.subscribeAsync(['v2/fw/response/+/chunk/+', 'v2/fw/error'], { qos: 1 })).map((g) => g.qos)).toEqual([1, 1]);
      await v5.report('IDLE');
      await v4.report('IDLE');

      const before = [v5.messages.length, v4.messages.length];
      for (const d of [d5, d4]) expect((await t.api('PUT', `/api/v1/devices/${d.id}/ota`, { packageId: pkg.id })).status).toBe(200);
      const expected = { fw_title: pkg.title, fw_version: '1.0.0', fw_size: 40_000, fw_checksum_algorithm: 'SHA256', fw_checksum: sha256(data) };
      expect((await nextMessage(v5.messages, 'v1/devices/me/attributes', before[0])).body).toEqual(expected);
      expect((await nextMessage(v4.messages, 'v1/devices/me/attributes', before[1])).body).toEqual(expected);
      expect((await rollout(pkg.id)).states).toEqual({ INITIATED: 2 });

      const [r5, r4] = await Promise.all([v5.update(16_384), v4.update(30_000)]);
      for (const [r, sizes] of [
        [r5, [16_384, 16_384, 7_232]],
        [r4, [30_000, 10_000]],
      ] as const) {
        expect(r.data.equals(data)).toBe(true);
        expect(r.verified).toBe(true);
        expect(r.info).toEqual(expected);
        void sizes;
      }
      expect(v5.chunkLengths).toEqual([16_384, 16_384, 7_232]); // the last chunk shorter: the end
      expect(v4.chunkLengths).toEqual([30_000, 10_000]);

      const view = await eventually(async () => {
        const r = await rollout(pkg.id);
        return r.states.UPDATED === 2 ? r : undefined;
      });
      expect(view).toMatchObject({ targeted: 2, states: { UPDATED: 2 }, versions: [{ title: pkg.title, version: '1.0.0', devices: 2 }], failures: [] });
      // The SDK's string telemetry is stored too.
      const latest = await t.api<Record<string, { value: unknown }>>('GET', `/api/v1/devices/${d5.id}/latest`);
      expect(latest.body.fw_state?.value).toBe('UPDATED');
      expect(latest.body.current_fw_version?.value).toBe('1.0.0');
    });

    it('serves the whole package for an empty payload (the SDK without chunk_size), an empty chunk past the end, and keeps the size per request id', async () => {
      const data = image(5_000);
      const pkg = await uploaded(data);
      const d = await t.createDevice({ name: unique('whole') });
      const sdk = await sdkDevice(d, 5);
      await t.api('PUT', `/api/v1/devices/${d.id}/ota`, { packageId: pkg.id });
      const info = await sdk.requestFirmwareInfo();
      expect((await sdk.download(info, 0)).equals(data)).toBe(true);
      expect(sdk.chunkLengths).toEqual([5_000]);

      // Size given once (chunk 0), then empty payloads: the size is kept for the request id.
      const c = sdk.client;
      const at = sdk.messages.length;
      await c.publishAsync('v2/fw/request/77/chunk/0', '2000', { qos: 1 });
      await c.publishAsync('v2/fw/request/77/chunk/2', '', { qos: 1 });
      await c.publishAsync('v2/fw/request/77/chunk/9', '', { qos: 1 });
      const got = async (k: number) => (await nextMessage(sdk.messages, `v2/fw/response/77/chunk/${k}`, at)) as Received;
      expect((await got(0)).raw.equals(data.subarray(0, 2000))).toBe(true);
      expect((await got(2)).raw.equals(data.subarray(4000, 5000))).toBe(true);
      expect((await got(9)).raw.length).toBe(0);
      expect(c.connected).toBe(true);
    });

    it('serves software the same way: sw_* attributes, v2/sw/request → v2/sw/response', async () => {
      const data = image(3_000, 11);
      const pkg = await uploaded(data, { type: 'SOFTWARE', checksumAlgorithm: 'MD5' });
      const d = await t.createDevice({ name: unique('sw') });
      const sdk = await sdkDevice(d, 4);
      const before = sdk.messages.length;
      await t.api('PUT', `/api/v1/devices/${d.id}/ota`, { packageId: pkg.id });
      expect((await nextMessage(sdk.messages, 'v1/devices/me/attributes', before)).body).toEqual({
        sw_title: pkg.title,
        sw_version: '1.0.0',
        sw_size: 3_000,
        sw_checksum_algorithm: 'MD5',
        sw_checksum: createHash('md5').update(data).digest('hex'),
      });
      const at = sdk.messages.length;
      await sdk.client.publishAsync('v2/sw/request/5/chunk/1', '2048', { qos: 1 });
      expect(((await nextMessage(sdk.messages, 'v2/sw/response/5/chunk/1', at)) as Received).raw.equals(data.subarray(2048))).toBe(true);
      // Its firmware is another matter: none assigned.
      expect((await t.api<{ assignments: { type: string; target: number | null }[] }>('GET', `/api/v1/devices/${d.id}/ota`)).body.assignments).toEqual([
        { type: 'FIRMWARE', own: null, deviceType: null, target: null },
        { type: 'SOFTWARE', own: pkg.id, deviceType: null, target: pkg.id },
      ]);
      await sdk.client.publishAsync('v1/devices/me/telemetry', JSON.stringify({ current_sw_title: pkg.title, current_sw_version: '1.0.0', sw_state: 'UPDATED' }), { qos: 1 });
      await eventually(async () => ((await rollout(pkg.id)).states.UPDATED === 1 ? true : undefined));
    });

    it('resumes an interrupted download from the chunk it reached, on a new connection', async () => {
      const data = image(100_000, 3);
      const pkg = await uploaded(data);
      const d = await t.createDevice({ name: unique('resume') });
      await t.api('PUT', `/api/v1/devices/${d.id}/ota`, { packageId: pkg.id });
      const first = await sdkDevice(d, 5);
      const info = await first.requestFirmwareInfo();
      await first.report('DOWNLOADING');
      const kept = await first.download(info, 8_192, { stopAfter: 5 });
      expect(kept.length).toBe(5 * 8_192);
      first.client.stream.destroy(); // the connection drops mid-download
      await eventually(() => (first.client.connected ? undefined : true));

      const second = await sdkDevice(d, 4);
      second.firmwareRequestId = first.firmwareRequestId; // the firmware keeps its counters across a reconnect
      const rest = await second.download(info, 8_192, { from: 5, kept, newRequest: false });
      expect(second.chunkLengths[0]).toBe(8_192);
      expect(rest.equals(data)).toBe(true);
      await second.finish(info, rest);
      expect(second.info.fw_state).toBe('UPDATED');
      await eventually(async () => ((await rollout(pkg.id)).states.UPDATED === 1 ? true : undefined));
    });

    it('shows a corrupted package: the device reports FAILED with its fw_error, and the rollout lists it', async () => {
      const data = image(20_000, 5);
      const pkg = await uploaded(data, { checksumAlgorithm: 'CRC32' });
      // The stored copy is damaged after upload (a bad disk, a restore gone wrong).
      await db.query('UPDATE ota_package_blocks SET data = set_byte(data, 100, (get_byte(data, 100) + 1) % 256) WHERE package_id = $1 AND n = 0', [pkg.id]);
      const d = await t.createDevice({ name: unique('corrupted') });
      const sdk = await sdkDevice(d, 5);
      await t.api('PUT', `/api/v1/devices/${d.id}/ota`, { packageId: pkg.id });
      const result = await sdk.update(4_096);
      expect(result.verified).toBe(false);
      expect(sdk.info).toMatchObject({ fw_state: 'FAILED', fw_error: 'Checksum verification failed!' });
      const view = await eventually(async () => {
        const r = await rollout(pkg.id);
        return r.failures.length === 1 ? r : undefined;
      });
      expect(view.states).toEqual({ FAILED: 1 });
      expect(view.failures[0]).toMatchObject({ deviceId: d.id, deviceName: d.name, error: 'Checksum verification failed!' });
      expect(view.versions).toEqual([{ title: 'Initial', version: 'v0', devices: 1 }]);
    });
  });

  describe('errors as ThingsBoard sends them', () => {
    const expectClosedWith = async (sdk: SdkDevice, topic: string, payload: string, error: string | null, protocolVersion: 4 | 5, v5Reason = 0x83) => {
      const closed = new Promise<number | undefined>((resolve) => {
        sdk.client.once('disconnect', (p) => resolve(p.reasonCode));
        sdk.client.once('close', () => resolve(undefined));
      });
      const before = sdk.messages.length;
      sdk.client.publish(topic, payload, { qos: 1 });
      if (error !== null) expect((await nextMessage(sdk.messages, 'v2/fw/error', before)).text).toBe(error);
      const reason = await closed;
      if (protocolVersion === 5) expect(reason).toBe(v5Reason); // 0x83 implementation specific error, as ThingsBoard after an OTA error
      await eventually(() => (sdk.client.connected ? undefined : true));
      if (error === null) expect(sdk.messages.slice(before).map((m) => m.topic)).toEqual([]);
    };

    it('PAYLOAD_TOO_LARGE on v2/fw/error for a chunk size above the payload limit, then the session is closed (MQTT 5: 0x83)', async () => {
      const pkg = await uploaded(image(70_000));
      const d = await t.createDevice({ name: unique('too-large') });
      await t.api('PUT', `/api/v1/devices/${d.id}/ota`, { packageId: pkg.id });
      await expectClosedWith(await sdkDevice(d, 5), 'v2/fw/request/1/chunk/0', '65537', 'PAYLOAD_TOO_LARGE', 5);
      await expectClosedWith(await sdkDevice(d, 4), 'v2/fw/request/1/chunk/0', '65537', 'PAYLOAD_TOO_LARGE', 4);
      // The whole package in one message (no size) is larger than the limit too.
      await expectClosedWith(await sdkDevice(d, 5), 'v2/fw/request/2/chunk/0', '', 'PAYLOAD_TOO_LARGE', 5);
      // At the limit it is served.
      const ok = await sdkDevice(d, 5);
      const before = ok.messages.length;
      await ok.client.publishAsync('v2/fw/request/3/chunk/1', '65536', { qos: 1 });
      expect(((await nextMessage(ok.messages, 'v2/fw/response/3/chunk/1', before)) as Received).raw.length).toBe(70_000 - 65_536);
    });

    it('NOT_FOUND on v2/fw/error (for software too) when the device has no package of that type; nothing changes', async () => {
      const d = await t.createDevice({ name: unique('nothing') });
      await expectClosedWith(await sdkDevice(d, 5), 'v2/fw/request/1/chunk/0', '1024', 'NOT_FOUND', 5);
      await expectClosedWith(await sdkDevice(d, 4), 'v2/sw/request/1/chunk/0', '1024', 'NOT_FOUND', 4);
      expect((await t.api<{ states: unknown[] }>('GET', `/api/v1/devices/${d.id}/ota`)).body.states).toEqual([]);
    });

    it('closes the session, with no answer (MQTT 5: 0x8B, as ThingsBoard), for a chunk number or size Java cannot parse as an int', async () => {
      const pkg = await uploaded(image(1_000));
      const d = await t.createDevice({ name: unique('bad-numbers') });
      await t.api('PUT', `/api/v1/devices/${d.id}/ota`, { packageId: pkg.id });
      await expectClosedWith(await sdkDevice(d, 5), 'v2/fw/request/1/chunk/2147483648', '100', null, 5, 0x8b);
      await expectClosedWith(await sdkDevice(d, 4), 'v2/fw/request/1/chunk/0', 'ten', null, 4);
      // Still served afterwards.
      const ok = await sdkDevice(d, 4);
      const before = ok.messages.length;
      await ok.client.publishAsync('v2/fw/request/1/chunk/0', '100', { qos: 1 });
      expect(((await nextMessage(ok.messages, 'v2/fw/response/1/chunk/0', before)) as Received).raw.equals(image(1_000).subarray(0, 100))).toBe(true);
    });
  });

  describe("ThingsBoard's HTTP device API", () => {
    it('GET /api/v1/{token}/firmware: whole, in chunks, 400 for another version, 401 for an unknown token, 404 without a package', async () => {
      const data = image(10_000, 9);
      const pkg = await uploaded(data, { fileName: 'meter.bin' });
      const d = await t.createDevice({ name: unique('http') });
      await t.api('PUT', `/api/v1/devices/${d.id}/ota`, { packageId: pkg.id });
      const get = (token: string, q: string, path = 'firmware') => fetch(`${t.httpUrl}/api/v1/${token}/${path}?${q}`);
      const q = `title=${encodeURIComponent(pkg.title)}&version=1.0.0`;
      const whole = await get(d.accessToken, q);
      expect(whole.status).toBe(200);
      expect(whole.headers.get('x-filename')).toBe('meter.bin');
      expect(whole.headers.get('content-disposition')).toBe('attachment;filename=meter.bin');
      expect(Buffer.from(await whole.arrayBuffer()).equals(data)).toBe(true);
      const parts: Buffer[] = [];
      for (let chunk = 0; ; chunk++) {
        const res = await get(d.accessToken, `${q}&size=3000&chunk=${chunk}`);
        expect(res.status).toBe(200);
        const part = Buffer.from(await res.arrayBuffer());
        parts.push(part);
        if (part.length < 3000) break;
      }
      expect(parts.map((p) => p.length)).toEqual([3000, 3000, 3000, 1000]);
      expect(Buffer.concat(parts).equals(data)).toBe(true);
      expect(Buffer.from(await (await get(d.accessToken, `${q}&size=3000&chunk=99`)).arrayBuffer()).length).toBe(0);
      expect((await get(d.accessToken, `title=${encodeURIComponent(pkg.title)}&version=0.9`)).status).toBe(400);
      expect((await get('no-such-token', q)).status).toBe(401);
      expect((await get(d.accessToken, q, 'software')).status).toBe(404);
    });
  });

  describe('device types, unassignment and deletion', () => {
    it('a type assignment reaches the devices without their own; a device assignment overrides it; unassigning deletes the keys', async () => {
      const typeName = unique('ota-meter');
      expect((await t.api('POST', '/api/v1/device-types', { name: typeName, domain: 'generic', label: { en: 'OTA meter', zh: '表' }, keys: {} })).status).toBe(201);
      const forType = await uploaded(image(3_000), { deviceType: typeName, version: '2.0' });
      const other = await uploaded(image(2_000));
      const a = await t.createDevice({ name: unique('typed-a'), type: typeName });
      const b = await t.createDevice({ name: unique('typed-b'), type: typeName });
      const plain = await t.createDevice({ name: unique('plain') });
      const [sa, sb] = [await sdkDevice(a, 5), await sdkDevice(b, 4)];
      expect((await t.api('PUT', `/api/v1/devices/${b.id}/ota`, { packageId: other.id })).status).toBe(200);
      const before = [sa.messages.length, sb.messages.length];
      const res = await t.api<{ devicesTold: number }>('PUT', `/api/v1/ota/assignments/${typeName}`, { packageId: forType.id });
      expect(res.status).toBe(200);
      expect(res.body.devicesTold).toBe(1);
      expect((await nextMessage(sa.messages, 'v1/devices/me/attributes', before[0])).body).toMatchObject({ fw_title: forType.title, fw_version: '2.0' });
      await sleep(300);
      expect(sb.messages.slice(before[1]).filter((m) => m.topic === 'v1/devices/me/attributes')).toEqual([]); // its own assignment wins
      // A package for the type cannot go to another type's device (ThingsBoard: different device profile).
      expect((await t.api('PUT', `/api/v1/devices/${plain.id}/ota`, { packageId: forType.id })).status).toBe(400);
      // A new device of the type is told at once.
      const c = await t.createDevice({ name: unique('typed-c'), type: typeName });
      await eventually(async () => ((await t.api<{ shared?: Record<string, unknown> }>('GET', `/api/v1/devices/${c.id}/attributes?scope=shared`)).body.shared?.fw_version ? true : undefined));
      expect((await rollout(forType.id)).targeted).toBe(2);

      // b drops its own package: it follows its type again.
      const atB = sb.messages.length;
      expect((await t.api('DELETE', `/api/v1/devices/${b.id}/ota/firmware`)).status).toBe(200);
      expect((await nextMessage(sb.messages, 'v1/devices/me/attributes', atB)).body).toMatchObject({ fw_version: '2.0', fw_title: forType.title });
      // Deletion is refused while assigned; unassigning tells the devices (all fw_* keys deleted).
      expect((await t.api('DELETE', `/api/v1/ota/packages/${forType.id}`)).status).toBe(409);
      const atA = sa.messages.length;
      expect((await t.api('DELETE', `/api/v1/ota/assignments/${typeName}/firmware`)).status).toBe(200);
      const deleted = (await nextMessage(sa.messages, 'v1/devices/me/attributes', atA)).body as { deleted: string[] };
      expect(deleted.deleted.sort()).toEqual(['fw_checksum', 'fw_checksum_algorithm', 'fw_size', 'fw_title', 'fw_version']);
      expect((await t.api('DELETE', `/api/v1/ota/packages/${forType.id}`)).status).toBe(200);
      expect(await blocks(forType.id)).toEqual([]);
      // A package without data cannot be assigned.
      const empty = await createPackage({});
      expect((await t.api<{ message: string }>('PUT', `/api/v1/devices/${plain.id}/ota`, { packageId: empty.id })).body.message).toMatch(/empty data/);
      // Unknown packages, types and devices; a package for one type given to another.
      expect((await t.api('PUT', `/api/v1/devices/${plain.id}/ota`, { packageId: 999_999 })).status).toBe(404);
      expect((await t.api('PUT', '/api/v1/ota/assignments/no-such-type', { packageId: other.id })).status).toBe(404);
      expect((await t.api('PUT', '/api/v1/ota/assignments/generic', { packageId: forType.id })).status).toBe(404); // deleted above
      const again = await uploaded(image(100), { deviceType: typeName });
      expect((await t.api<{ message: string }>('PUT', '/api/v1/ota/assignments/generic', { packageId: again.id })).body.message).toMatch(/different device type/);
      expect((await t.api('PUT', '/api/v1/devices/999999/ota', { packageId: other.id })).status).toBe(404);
      expect((await t.api('DELETE', `/api/v1/devices/${plain.id}/ota/software`)).status).toBe(404);
      // Nothing of this was kept.
      expect((await t.api<{ deviceType: string }[]>('GET', '/api/v1/ota/assignments')).body.filter((a) => a.deviceType === typeName || a.deviceType === 'generic')).toEqual([]);
    });
  });

  describe('campaigns', () => {
    it('assigns the devices one by one at the rate given, and the rollout shows its progress', async () => {
      const pkg = await uploaded(image(1_500));
      const devices = await Promise.all([1, 2, 3].map(() => t.createDevice({ name: unique('campaign') })));
      const started = Date.now();
      const res = await t.api<Campaign>('POST', '/api/v1/ota/campaigns', { packageId: pkg.id, deviceIds: devices.map((d) => d.id), devicesPerMinute: 60 });
      expect(res.status).toBe(201);
      expect(res.body).toMatchObject({ status: 'running', devices: 3, assigned: 1 });
      const done = await eventually(
        async () => {
          const c = (await t.api<Campaign>('GET', `/api/v1/ota/campaigns/${res.body.id}`)).body;
          return c.status === 'done' ? c : undefined;
        },
        { timeoutMs: 10_000 },
      );
      expect(done.assigned).toBe(3);
      expect(Date.now() - started).toBeGreaterThanOrEqual(1_900); // one per second: the third after ≥ 2 s
      const times = (await db.query<{ at: Date }>('SELECT assigned_at AS at FROM ota_campaign_devices WHERE campaign_id = $1 ORDER BY seq', [res.body.id])).rows.map((r) => r.at.getTime());
      expect(times[1]! - times[0]!).toBeGreaterThanOrEqual(950);
      expect(times[2]! - times[1]!).toBeGreaterThanOrEqual(950);
      const view = await rollout(pkg.id);
      expect(view).toMatchObject({ targeted: 3, states: { INITIATED: 3 }, campaigns: [{ id: res.body.id, status: 'done', assigned: 3, devices: 3 }] });
      expect((await t.api('DELETE', `/api/v1/ota/packages/${pkg.id}`)).status).toBe(409);
      expect((await t.api('POST', `/api/v1/ota/campaigns/${res.body.id}/cancel`)).status).toBe(409);
      expect((await t.api('POST', '/api/v1/ota/campaigns', { packageId: pkg.id, deviceIds: [999_999], devicesPerMinute: 5 })).status).toBe(400);
    });

    it('rolls out to every device of a type in the caller\'s scope; the rollout view counts only devices in scope', async () => {
      const typeName = unique('ota-water');
      expect((await t.api('POST', '/api/v1/device-types', { name: typeName, domain: 'water', label: { en: 'Water meter', zh: '水表' }, keys: {} })).status).toBe(201);
      const pkg = await uploaded(image(700));
      const water = await Promise.all([1, 2].map(() => t.createDevice({ name: unique('water'), type: typeName })));
      const generic = await t.createDevice({ name: unique('generic') });
      const key = (await t.api<{ key: string }>('POST', '/api/v1/keys', { name: unique('ota-staff'), owner: 'water bureau', roles: ['operator'], scope: { domains: ['water'] } })).body.key;
      // operator may read, not roll out, nor read the image back
      expect((await t.api('POST', '/api/v1/ota/campaigns', { packageId: pkg.id, deviceType: typeName, devicesPerMinute: 120 }, { auth: key })).status).toBe(403);
      expect((await t.api('GET', `/api/v1/ota/packages/${pkg.id}/data`, undefined, { auth: key })).status).toBe(403);
      expect((await t.api('GET', `/api/v1/ota/packages/${pkg.id}`, undefined, { auth: key })).status).toBe(200);
      const res = await t.api<Campaign>('POST', '/api/v1/ota/campaigns', { packageId: pkg.id, deviceType: typeName, devicesPerMinute: 120 });
      expect(res.body).toMatchObject({ devices: 2, assigned: 1 });
      await eventually(async () => ((await t.api<Campaign>('GET', `/api/v1/ota/campaigns/${res.body.id}`)).body.status === 'done' ? true : undefined), { timeoutMs: 5_000 });
      await t.api('PUT', `/api/v1/devices/${generic.id}/ota`, { packageId: pkg.id });
      expect((await rollout(pkg.id)).targeted).toBe(3);
      const scoped = await t.api<Rollout>('GET', `/api/v1/ota/packages/${pkg.id}/rollout`, undefined, { auth: key });
      expect(scoped.status).toBe(200);
      expect(scoped.body.targeted).toBe(2);
      const assigned = (await db.query<{ device_id: number }>('SELECT device_id FROM ota_campaign_devices WHERE campaign_id = $1 ORDER BY seq', [res.body.id])).rows.map((r) => r.device_id);
      expect(assigned).toEqual(water.map((d) => d.id).sort((a, b) => a - b));
    });

    it('carries on after a restart, from the database', async () => {
      const database = await createTestDatabase();
      const first = await startTestPlatform({}, { database });
      let second: TestPlatform | undefined;
      try {
        const pkgRes = await first.api<Pkg>('POST', '/api/v1/ota/packages', { type: 'FIRMWARE', title: 'restart', version: '1' });
        const put = await fetch(`${first.httpUrl}/api/v1/ota/packages/${pkgRes.body.id}/data`, {
          method: 'PUT',
          headers: { authorization: `Bearer ${first.adminKey}`, 'content-type': 'application/octet-stream' },
          body: image(500),
        });
        expect(put.status).toBe(200);
        const ids = [];
        for (let i = 0; i < 3; i++) ids.push((await first.createDevice({ name: `restart-${i}` })).id);
        const c = await first.api<Campaign>('POST', '/api/v1/ota/campaigns', { packageId: pkgRes.body.id, deviceIds: ids, devicesPerMinute: 40 });
        expect(c.body.assigned).toBe(1);
        await first.platform.stop();
        second = await startTestPlatform({}, { database });
        const done = await eventually(
          async () => {
            const r = (await second!.api<Campaign>('GET', `/api/v1/ota/campaigns/${c.body.id}`)).body;
            return r.status === 'done' ? r : undefined;
          },
          { timeoutMs: 15_000 },
        );
        expect(done.assigned).toBe(3);
        const shared = await second.api<{ shared?: Record<string, unknown> }>('GET', `/api/v1/devices/${ids[2]}/attributes?scope=shared`);
        expect(shared.body.shared?.fw_title).toMatchObject({ value: 'restart' });
      } finally {
        await (second ?? first).stop();
      }
    });
  });

  describe('several nodes on one database', () => {
    it('a package uploaded through one node is served by another; both advance a campaign without passing its rate', async () => {
      const database = await createTestDatabase();
      const a = await startTestPlatform({ nodeId: 'ota-node-a' }, { database });
      let b: TestPlatform | undefined;
      try {
        b = await startTestPlatform({ nodeId: 'ota-node-b' }, { database });
        const data = image(150_000, 13);
        const created = await a.api<Pkg>('POST', '/api/v1/ota/packages', { type: 'FIRMWARE', title: 'shared', version: '2' });
        const put = await fetch(`${a.httpUrl}/api/v1/ota/packages/${created.body.id}/data`, {
          method: 'PUT',
          headers: { authorization: `Bearer ${a.adminKey}`, 'content-type': 'application/octet-stream' },
          body: data,
        });
        expect(put.status).toBe(200);
        const devices: CreatedDevice[] = [];
        for (let i = 0; i < 4; i++) devices.push(await a.createDevice({ name: `two-nodes-${i}` }));
        const ids = devices.map((d) => d.id);
        const token = devices[0]!.accessToken;
        // The device connects to node b, which never saw the upload.
        const client = await b.connect(token, { protocolVersion: 5 });
        const messages = inbox(client);
        await a.api('PUT', `/api/v1/devices/${ids[0]}/ota`, { packageId: created.body.id });
        await client.publishAsync('v2/fw/request/1/chunk/2', '65536', { qos: 1 });
        expect(((await nextMessage(messages, 'v2/fw/response/1/chunk/2')) as Received).raw.equals(data.subarray(131_072))).toBe(true);

        const campaign = await b.api<Campaign>('POST', '/api/v1/ota/campaigns', { packageId: created.body.id, deviceIds: ids.slice(1), devicesPerMinute: 60 });
        expect(campaign.status).toBe(201);
        await eventually(async () => ((await a.api<Campaign>('GET', `/api/v1/ota/campaigns/${campaign.body.id}`)).body.status === 'done' ? true : undefined), { timeoutMs: 10_000 });
        const pool = testPool(a.databaseUrl, 1);
        const times = (await pool.query<{ at: Date }>('SELECT assigned_at AS at FROM ota_campaign_devices WHERE campaign_id = $1 ORDER BY assigned_at', [campaign.body.id])).rows.map((r) => r.at.getTime());
        await pool.end();
        expect(times).toHaveLength(3);
        for (let i = 1; i < times.length; i++) expect(times[i]! - times[i - 1]!).toBeGreaterThanOrEqual(950);
      } finally {
        await b?.platform.stop();
        await a.stop();
      }
    });
  });

  describe('gateways', () => {
    it("a sub-device's fw_* reach its gateway on v1/gateway/attributes; its fw_state sent through the gateway is tracked", async () => {
      const gw = (await t.api<CreatedDevice>('POST', '/api/v1/devices', { name: unique('ota-gw'), isGateway: true })).body;
      const client = await t.connect(gw.accessToken, { protocolVersion: 5 });
      const messages = inbox(client);
      await client.subscribeAsync('v1/gateway/attributes', { qos: 1 });
      const sub = unique('ota-sub');
      await client.publishAsync('v1/gateway/connect', JSON.stringify({ device: sub }), { qos: 1 });
      const subId = await eventually(async () => (await t.api<{ items: { id: number; name: string }[] }>('GET', `/api/v1/devices?namePrefix=${sub}`)).body.items.find((d) => d.name === sub)?.id);
      const pkg = await uploaded(image(800));
      const before = messages.length;
      expect((await t.api('PUT', `/api/v1/devices/${subId}/ota`, { packageId: pkg.id })).status).toBe(200);
      expect((await nextMessage(messages, 'v1/gateway/attributes', before)).body).toEqual({
        device: sub,
        data: { fw_title: pkg.title, fw_version: '1.0.0', fw_size: 800, fw_checksum_algorithm: 'SHA256', fw_checksum: sha256(image(800)) },
      });
      await client.publishAsync('v1/gateway/telemetry', JSON.stringify({ [sub]: [{ current_fw_title: pkg.title, current_fw_version: '1.0.0', fw_state: 'UPDATED', fw_error: '' }] }), { qos: 1 });
      const view = await eventually(async () => {
        const r = await rollout(pkg.id);
        return r.states.UPDATED === 1 ? r : undefined;
      });
      expect(view.versions).toEqual([{ title: pkg.title, version: '1.0.0', devices: 1 }]);
    });
  });
});
