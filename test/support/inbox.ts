import type { MqttClient } from 'mqtt';
import { eventually } from './platform.ts';

/** One message an MQTT client received: its bytes, its text, and that text parsed as JSON when it is JSON. */
export interface Received {
  topic: string;
  raw: Buffer;
  text: string;
  body: unknown;
  qos: number;
}

/** Every message a client receives, parsed, in order. */
export function inbox(client: MqttClient): Received[] {
  const messages: Received[] = [];
  client.on('message', (topic, payload, packet) => {
    const text = payload.toString();
    let body: unknown = text;
    try {
      body = JSON.parse(text);
    } catch {
      // kept as text
    }
    messages.push({ topic, raw: payload, text, body, qos: packet.qos });
  });
  return messages;
}

/** The first message on `topic` (a name or a pattern) received after the first `after` ones. */
export const nextMessage = (messages: Received[], topic: string | RegExp, after = 0, timeoutMs = 5000) =>
  eventually(() => messages.slice(after).find((m) => (typeof topic === 'string' ? m.topic === topic : topic.test(m.topic))), { timeoutMs });

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
