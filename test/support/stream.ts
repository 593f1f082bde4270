import mqtt from 'mqtt';

export interface StreamDevice {
  id: number;
  token: string;
}

export interface StreamOptions {
  mqttUrl: string;
  devices: StreamDevice[];
  /** Readings per device; reading i of a device has ts = t0 + i and value n = i. */
  perDevice: number;
  t0: number;
  /** QoS 1 messages in flight per device connection. */
  window?: number;
  /** Gives up (and reports what was acknowledged) after this long. */
  deadlineMs?: number;
  onProgress?: (acked: number) => void;
  /** MQTT keepalive (s) of each connection; default 30. */
  keepalive?: number;
}

export interface StreamResult {
  /** Per device, the reading numbers the broker acknowledged. */
  acked: Map<number, Set<number>>;
  totalAcked: number;
  reconnects: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * A fleet of well-behaved QoS 1 publishers, as firmware should be: each device keeps a window of
 * unacknowledged messages, and when its connection drops it reconnects and sends every
 * unacknowledged message again (same ts), until all are acknowledged. A PUBACK from GuanLink
 * means committed, so the acknowledged set is what must be in the database.
 */
export async function streamReadings(opts: StreamOptions): Promise<StreamResult> {
  const window = opts.window ?? 20;
  const deadline = Date.now() + (opts.deadlineMs ?? 240_000);
  const acked = new Map(opts.devices.map((d) => [d.id, new Set<number>()]));
  let totalAcked = 0;
  let reconnects = 0;

  async function runDevice(device: StreamDevice): Promise<void> {
    const done = acked.get(device.id)!;
    let next = 0;
    const unacked = new Set<number>();
    let first = true;
    while (done.size < opts.perDevice && Date.now() < deadline) {
      let client: mqtt.MqttClient;
      try {
        // allowRetries=false: otherwise a connect that times out (connectTimeout) only emits
        // 'close', and the promise never settles — the device would be stuck for good.
        client = await mqtt.connectAsync(opts.mqttUrl, { username: device.token, reconnectPeriod: 0, connectTimeout: 3000, keepalive: opts.keepalive ?? 30, clean: true }, false);
      } catch {
        await sleep(200);
        continue;
      }
      if (!first) reconnects++;
      first = false;
      client.on('error', () => {});
      let closed = false;
      let wake: () => void = () => {};
      client.once('close', () => {
        closed = true;
        wake();
      });
      const send = (i: number) => {
        client.publish('v1/devices/me/telemetry', JSON.stringify({ ts: opts.t0 + i, values: { n: i } }), { qos: 1 }, (err) => {
          if (err || done.has(i)) return;
          done.add(i);
          unacked.delete(i);
          totalAcked++;
          opts.onProgress?.(totalAcked);
          wake();
        });
      };
      for (const i of unacked) send(i); // resend what the last connection left unacknowledged
      while (!closed && done.size < opts.perDevice && Date.now() < deadline) {
        while (unacked.size < window && next < opts.perDevice) {
          unacked.add(next);
          send(next++);
        }
        await new Promise<void>((resolve) => {
          wake = resolve;
          setTimeout(resolve, 1000);
        });
      }
      client.end(true);
    }
  }

  await Promise.all(opts.devices.map(runDevice));
  return { acked, totalAcked, reconnects };
}
