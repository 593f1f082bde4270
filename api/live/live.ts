import type { Server as HttpServer } from 'node:http';
import { Server } from 'socket.io';
import { safeEqual } from '../../core/credentials.ts';
import { DOMAINS, type Domain } from '../../core/domains.ts';
import type { Logger } from '../../core/log.ts';
import type { DeviceRegistry } from '../../core/registry.ts';
import type { AlarmChange } from '../../core/alarms.ts';
import type { AttributeChange } from '../../core/attributes.ts';
import type { ConnectivityChange } from '../../core/connectivity.ts';
import { eventJson, type GeofenceEvent } from '../../core/geofences.ts';
import type { LatestTracker } from '../../ingest/latest.ts';
import type { Reading } from '../../ingest/readings.ts';

/** What a live client receives for each committed reading (event `readings`, an array). */
export interface LiveReading {
  deviceId: number;
  domain: Domain;
  type: string;
  ts: number;
  values: Record<string, number>;
  lat?: number;
  lng?: number;
  alt?: number;
}

export interface Live {
  /** Called with each committed batch. */
  publish(rows: readonly Reading[]): void;
  /** A committed attribute change: an `attributes` event `{deviceId, scope, values, deleted, ts}` to the device's room. */
  attributes(change: AttributeChange): void;
  /** A device connected or disconnected: a `connectivity` event (ConnectivityChange) to its room and its domain's room. */
  connectivity(change: ConnectivityChange): void;
  /** A geofence event: a `geofence` event (core/geofences.ts eventJson) to the device's room and the fence's domain's room. */
  geofence(event: GeofenceEvent): void;
  /** An alarm raised, acknowledged or cleared: an `alarm` event `{kind, alarm}` to the device's room and its domain's room. */
  alarm(change: AlarmChange): void;
  close(): Promise<void>;
}

const deviceRoom = (id: number) => `device:${id}`;
const domainRoom = (domain: string) => `domain:${domain}`;

/**
 * socket.io streams for the live map and other watchers. Clients authenticate with the admin key
 * (`auth: {token}`), then `subscribe` to `{device: id}` or `{domain: name}`; each committed reading
 * reaches every room it belongs to, batched per flush interval into one `readings` event per room.
 * `snapshot` answers with every device's latest position and values (the map's first picture);
 * a `device` event announces each newly registered device to its domain's room.
 */
export function attachLive(
  http: HttpServer,
  deps: {
    adminKey: string;
    registry: DeviceRegistry;
    latest: LatestTracker;
    log: Logger;
    flushMs?: number;
    /** Devices online now (the snapshot's `online`). */
    onlineDevices?: () => Promise<Set<number>>;
  },
): Live {
  const io = new Server(http, { serveClient: true, destroyUpgrade: false, cors: { origin: false } });
  const { registry, latest, log } = deps;
  const typeOfDevice = new Map<number, string>();

  // New devices appear on the map before their first reading.
  registry.onChange((event) => {
    if (event.kind !== 'created') return;
    const d = event.device;
    typeOfDevice.set(d.id, d.type);
    io.to(domainRoom(d.domain)).emit('device', { id: d.id, name: d.name, type: d.type, domain: d.domain, location: d.location });
  });

  io.use((socket, next) => {
    const token = (socket.handshake.auth as { token?: unknown }).token;
    if (typeof token === 'string' && safeEqual(token, deps.adminKey)) return next();
    next(new Error('unauthorized: pass the admin key as auth.token'));
  });

  io.on('connection', (socket) => {
    socket.on('subscribe', (target: unknown, ack?: unknown) => {
      const room = roomOf(target);
      if (room) void socket.join(room);
      if (typeof ack === 'function') ack(room ? { ok: true, room } : { ok: false, error: 'expected {device: <id>} or {domain: <name>}' });
    });
    socket.on('unsubscribe', (target: unknown) => {
      const room = roomOf(target);
      if (room) void socket.leave(room);
    });
    socket.on('snapshot', async (_arg: unknown, ack?: unknown) => {
      if (typeof ack !== 'function') return;
      try {
        const [devices, states, online] = await Promise.all([registry.list({ limit: 100_000 }), latest.all(), deps.onlineDevices?.()]);
        const stateById = new Map(states.map((s) => [s.deviceId, s]));
        ack({
          devices: devices.map((d) => {
            const s = stateById.get(d.id);
            const position = s?.position ?? (d.location ? { ...d.location, ts: null } : null);
            return {
              id: d.id,
              name: d.name,
              type: d.type,
              domain: d.domain,
              position: position && { lat: position.lat, lng: position.lng, alt: position.alt ?? null, ts: position.ts },
              lastTs: s?.lastTs ?? null,
              online: online?.has(d.id) ?? null,
              values: s ? Object.fromEntries(Object.entries(s.values).map(([k, [ts, value]]) => [k, { ts, value }])) : {},
            };
          }),
        });
      } catch (err) {
        log.error({ err }, 'live snapshot failed');
        ack({ error: 'snapshot unavailable' });
      }
    });
  });

  // Coalesce: one event per room per flush, carrying every reading committed meanwhile.
  let pending = new Map<string, LiveReading[]>();
  const timer = setInterval(() => {
    if (pending.size === 0) return;
    const out = pending;
    pending = new Map();
    for (const [room, readings] of out) io.to(room).emit('readings', readings);
  }, deps.flushMs ?? 100);
  timer.unref();

  function roomOf(target: unknown): string | undefined {
    if (typeof target !== 'object' || target === null) return undefined;
    const t = target as { device?: unknown; domain?: unknown };
    if (typeof t.device === 'number' && Number.isInteger(t.device) && t.device > 0) return deviceRoom(t.device);
    if (typeof t.domain === 'string' && (DOMAINS as readonly string[]).includes(t.domain)) return domainRoom(t.domain);
    return undefined;
  }

  const rooms = io.of('/').adapter.rooms;
  const awaitingType = new Map<number, Reading[]>();

  function route(row: Reading, typeName: string): void {
    const domain = registry.deviceType(typeName)?.domain ?? 'generic';
    const dRoom = deviceRoom(row.deviceId);
    const mRoom = domainRoom(domain);
    const watchDevice = rooms.has(dRoom);
    const watchDomain = rooms.has(mRoom);
    if (!watchDevice && !watchDomain) return;
    const live: LiveReading = { deviceId: row.deviceId, domain, type: typeName, ts: row.ts, values: row.values };
    if (row.lat !== undefined && row.lng !== undefined) {
      live.lat = row.lat;
      live.lng = row.lng;
      if (row.alt !== undefined) live.alt = row.alt;
    }
    if (watchDevice) add(dRoom, live);
    if (watchDomain) add(mRoom, live);
  }
  const add = (room: string, r: LiveReading) => {
    const list = pending.get(room);
    if (list) list.push(r);
    else pending.set(room, [r]);
  };

  return {
    publish(rows) {
      if (rooms.size === 0) return;
      for (const row of rows) {
        const typeName = typeOfDevice.get(row.deviceId);
        if (typeName !== undefined) {
          route(row, typeName);
          continue;
        }
        // First reading of a device since start: look its type up once, then route what waited.
        const waiting = awaitingType.get(row.deviceId);
        if (waiting) {
          waiting.push(row);
          continue;
        }
        awaitingType.set(row.deviceId, [row]);
        void registry
          .get(row.deviceId)
          .then((d) => {
            if (d) typeOfDevice.set(row.deviceId, d.type);
            for (const r of awaitingType.get(row.deviceId) ?? []) if (d) route(r, d.type);
          })
          .catch((err: Error) => log.warn({ err: err.message }, 'live: device lookup failed'))
          .finally(() => awaitingType.delete(row.deviceId));
      }
    },
    attributes(change) {
      const room = deviceRoom(change.deviceId);
      if (!rooms.has(room)) return;
      io.to(room).emit('attributes', { deviceId: change.deviceId, scope: change.scope, values: change.updated, deleted: change.deleted, ts: change.ts });
    },
    connectivity(change) {
      io.to(deviceRoom(change.deviceId)).to(domainRoom(change.domain)).emit('connectivity', change);
    },
    geofence(event) {
      io.to(deviceRoom(event.deviceId)).to(domainRoom(event.domain)).emit('geofence', eventJson(event));
    },
    alarm(change) {
      io.to(deviceRoom(change.alarm.device.id)).to(domainRoom(change.alarm.device.domain)).emit('alarm', change);
    },
    async close() {
      clearInterval(timer);
      await new Promise<void>((resolve) => {
        io.close(() => resolve());
      });
    },
  };
}
