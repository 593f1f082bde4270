import net from 'node:net';
import mqttPacket from 'mqtt-packet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BUILTIN_DEVICE_TYPES } from '../core/device-types.ts';
import { createLogger } from '../core/log.ts';
import { createMetrics } from '../core/metrics.ts';
import { createBroker, type Broker } from './broker.ts';

const LIMIT = 4096;

describe('broker: packet size limit', () => {
  const metrics = createMetrics();
  const published: Buffer[] = [];
  let broker: Broker;
  let port: number;

  beforeAll(async () => {
    broker = createBroker({
      log: createLogger('silent'),
      metrics,
      maxPacketBytes: LIMIT,
      maxConnections: 100,
      authenticate: async ({ username }) =>
        username === 'ok'
          ? { kind: 'device', method: 'token', device: { id: 1, name: 'd', type: BUILTIN_DEVICE_TYPES[0]!, lat: null, lng: null, alt: null, cell: null, isGateway: false, gatewayId: null } }
          : { kind: 'refused', returnCode: 5, reason: 'bad token' },
      handlers: () => ({
        telemetry: async (_session, packet) => {
          published.push(packet.payload as Buffer);
        },
      }),
    });
    port = await broker.listen(0, '127.0.0.1');
  });
  afterAll(async () => {
    await broker?.close();
  });

  /** A raw, authenticated connection that writes `packet` in one write; resolves with whether the broker closed it and what it sent. */
  async function send(packet: Buffer): Promise<{ closed: boolean; received: Buffer }> {
    const socket = net.connect(port, '127.0.0.1');
    socket.on('error', () => {});
    const chunks: Buffer[] = [];
    socket.on('data', (d) => chunks.push(d));
    const closed = new Promise<boolean>((resolve) => socket.once('close', () => resolve(true)));
    await new Promise((r) => socket.once('connect', r));
    socket.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: 'c', keepalive: 30, username: 'ok' }));
    while (Buffer.concat(chunks).length < 4) await new Promise((r) => setTimeout(r, 5));
    socket.write(packet);
    const result = await Promise.race([closed, new Promise<boolean>((r) => setTimeout(() => r(false), 300))]);
    socket.destroy();
    return { closed: result, received: Buffer.concat(chunks).subarray(4) };
  }
  const publish = (payloadBytes: number) =>
    mqttPacket.generate({ cmd: 'publish', topic: 'v1/devices/me/telemetry', payload: Buffer.alloc(payloadBytes, 0x31), qos: 1, messageId: 3, retain: false, dup: false });
  const refusals = async () => (await metrics.mqttRefusals.get()).values.find((v) => v.labels.reason === 'packet_too_large')?.value ?? 0;

  it('closes a connection whose packet is over the limit even when the whole packet arrives in one read', async () => {
    const packet = publish(LIMIT + 100); // ~4 kB: always a single read on loopback
    const before = await refusals();
    const { closed, received } = await send(packet);
    expect(closed).toBe(true);
    expect(received.length).toBe(0); // no PUBACK: the packet was never handed to aedes
    expect(published).toHaveLength(0);
    expect(await refusals()).toBe(before + 1);
  });

  it('takes a packet at the limit', async () => {
    const packet = publish(LIMIT - 32);
    const length = packet.length - 3; // fixed header: 1 byte type, 2 bytes remaining length
    expect(length).toBeLessThanOrEqual(LIMIT);
    const { closed, received } = await send(packet);
    expect(closed).toBe(false);
    expect([...received]).toEqual([0x40, 0x02, 0x00, 0x03]); // PUBACK
    expect(published.at(-1)?.length).toBe(LIMIT - 32);
  });
});
