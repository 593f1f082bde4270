import type { Server as HttpServer } from 'node:http';
import { Server, type Socket } from 'socket.io';
import { AccessError, type Access } from '../../core/access/access.ts';
import { describePrincipal, type Principal } from '../../core/access/principal.ts';
import { subjectVisible, type Subject } from '../../core/access/visibility.ts';
import { DOMAINS, type Domain } from '../../core/domains.ts';
import type { Logger } from '../../core/log.ts';
import type { DeviceRegistry } from '../../core/registry.ts';
import type { AlarmChange } from '../../core/alarms.ts';
import type { AttributeChange } from '../../core/attributes.ts';
import type { ConnectivityChange } from '../../core/connectivity.ts';
import { eventJson, type GeofenceEvent } from '../../core/geofences.ts';
import type { LatestTracker } from '../../ingest/latest.ts';
import type { Reading, TelemetryValue } from '../../ingest/readings.ts';

/** What a live client receives for each committed reading (event `readings`, an array). */
export interface LiveReading {
  deviceId: number;
  domain: Domain;
  type: string;
  ts: number;
  /** Every value of the reading, each with its JSON type (number, string, boolean, object or array). */
  values: Record<string, TelemetryValue>;
  lat?: number;
  lng?: number;
  alt?: number;
}

/**
 * For the audit log (core/audit.ts): each subscription and snapshot — who asked what, and whether
 * it was allowed (200) or refused (400, 403, 404) — and each refused connection (401, 403; no principal).
 */
export interface LiveAuditEntry {
  kind: 'stream';
  principal: Principal | null;
  route: 'connect' | 'subscribe' | 'snapshot';
  essentials: Record<string, unknown>;
  status: number;
  deviceId?: number | null;
  reason?: string | null;
  sourceIp?: string | null;
  userAgent?: string | null;
}

/** Why a socket's access ended while it was open (event `access-ended`, just before the server disconnects it). */
export type AccessEnd = 'revoked' | 'rotated' | 'updated' | 'expired';

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
  /**
   * An API key was revoked, rotated or changed: every socket opened with it gets `access-ended`
   * `{code, reason}` and is disconnected at once. Returns how many were.
   */
  closeKey(keyId: number, code: Exclude<AccessEnd, 'expired'>, reason: string): number;
  /** Where socket.io answers, protocol upgrades included (`/socket.io/`): other upgrades are not its (api/http-connections.ts). */
  readonly path: string;
  close(): Promise<void>;
}

/**
 * Sockets of one scope and owner (equal `principal.scope.key` and `principal.owner`: the owner's
 * claimed devices are visible whatever the scope, core/claims.ts): they share rooms, so a reading
 * or event is tested once per distinct scope, not once per socket. Room names carry the group's short id:
 * `device:<id>|<group>`, `domain:<name>|<group>`.
 */
interface ScopeGroup {
  id: string;
  key: string;
  /** The first socket's principal: only its scope and owner are used (the same for every socket of the group). */
  principal: Principal;
  sockets: number;
  domainRooms: Map<string, string>;
}

interface SocketData {
  principal: Principal;
  /** The key-change counter when authentication began (a change during it refuses the socket). */
  authSeq: number;
}

const MAX_TIMER_MS = 2_147_483_647;

/**
 * socket.io streams for the live map and other watchers. A client authenticates with `auth.token`:
 * an API key, an OpenID Connect access token or the bootstrap admin key, which needs the `live`
 * permission (refusals are `connect_error`s: `unauthorized: <reason>` or `forbidden: <reason>`,
 * with `data: {statusCode, reason}`). On connection it receives `hello` `{principal}` (who it is:
 * roles, permissions, scope). It then `subscribe`s to `{device: id}` (a device outside its scope is
 * refused as one that does not exist) or `{domain: name}` (a domain of its scope); each committed
 * reading reaches every room it belongs to, batched per flush interval into one `readings` event
 * per room, and only within the socket's scope: with an area, a reading only when positioned
 * inside (a reading without a position: when the device is). `snapshot` answers with the latest
 * position and values of every device in scope (the map's first picture); a `device` event
 * announces each newly registered device in scope to its domain's room.
 *
 * Access ends while the socket is open when its key is revoked, rotated or changed (closeKey) or
 * its credential expires: the socket gets `access-ended` `{code, reason}`, then is disconnected.
 */
export function attachLive(
  http: HttpServer,
  deps: {
    access: Access;
    registry: DeviceRegistry;
    latest: LatestTracker;
    log: Logger;
    flushMs?: number;
    /** Devices online now (the snapshot's `online`). */
    onlineDevices?: () => Promise<Set<number>>;
    /** Told of each subscription and snapshot (core/audit.ts). */
    audit?: (entry: LiveAuditEntry) => void;
  },
): Live {
  // destroyUpgrade off: engine.io would end other upgrades (MQTT over WebSocket at /mqtt) after a
  // second; api/http-connections.ts answers and closes the upgrades nobody takes.
  const io = new Server(http, { serveClient: true, destroyUpgrade: false, cors: { origin: false } });
  const { access, registry, latest, log } = deps;
  const typeOfDevice = new Map<number, string>();
  const groups = new Map<string, ScopeGroup>();
  let groupSeq = 0;
  const byKey = new Map<number, Set<Socket>>();
  const expiryTimers = new WeakMap<Socket, NodeJS.Timeout>();
  // Key changes, numbered: a socket whose key changed while it was being authenticated is refused.
  let keySeq = 0;
  const keyChangedAt = new Map<number, number>();
  const rooms = io.of('/').adapter.rooms;

  const audit = (socket: Socket, p: Principal | null, route: LiveAuditEntry['route'], essentials: Record<string, unknown>, status: number, extra: { deviceId?: number; reason?: string } = {}) => {
    if (!deps.audit) return;
    const userAgent = socket.handshake.headers['user-agent'];
    try {
      deps.audit({ kind: 'stream', principal: p, route, essentials, status, sourceIp: socket.handshake.address, userAgent: typeof userAgent === 'string' ? userAgent : null, ...extra });
    } catch (err) {
      log.warn({ err }, 'live: audit record failed');
    }
  };

  // Deliveries that may wait on the database (which devices an area scope sees) run one after the
  // other, so that events reach clients in the order they happened.
  let chain: Promise<void> = Promise.resolve();
  const inOrder = (step: () => Promise<void> | void) => {
    chain = chain.then(step).catch((err: Error) => log.warn({ err: err.message }, 'live: delivery failed'));
  };

  /** The visible-device sets of the groups with an area (the others need none), for one delivery. */
  async function areaSets(): Promise<Map<ScopeGroup, ReadonlySet<number> | null>> {
    const out = new Map<ScopeGroup, ReadonlySet<number> | null>();
    const area = [...groups.values()].filter((g) => g.principal.scope.area);
    if (area.length === 0) return out;
    const sets = await Promise.all(
      area.map((g) =>
        access.visibleDevices(g.principal).catch((err: Error) => {
          log.warn({ err: err.message }, 'live: visible devices unavailable; area-scoped streams skip what needs them');
          return new Set<number>();
        }),
      ),
    );
    area.forEach((g, i) => out.set(g, sets[i]!));
    return out;
  }
  /** Whether a group sees a subject (sync: the sets are in hand; a group born since sees nothing of this delivery). */
  const sees = (g: ScopeGroup, sets: Map<ScopeGroup, ReadonlySet<number> | null>, s: Subject): boolean =>
    subjectVisible(access, g.principal, s, sets.has(g) ? sets.get(g) : new Set()) as boolean;

  const deviceRoom = (g: ScopeGroup, id: number) => `device:${id}|${g.id}`;
  const domainRoom = (g: ScopeGroup, domain: string) => g.domainRooms.get(domain)!;

  /** Emits `event` to the device's room and (optionally) a domain's room of every group that sees the subject. */
  function emitScoped(event: string, payload: unknown, s: Subject, roomDomain: Domain | null) {
    if (rooms.size === 0) return;
    inOrder(async () => {
      const watching: [ScopeGroup, string[]][] = [];
      for (const g of groups.values()) {
        const names = [deviceRoom(g, s.deviceId)];
        if (roomDomain) names.push(domainRoom(g, roomDomain));
        const watched = names.filter((r) => rooms.has(r));
        if (watched.length > 0) watching.push([g, watched]);
      }
      if (watching.length === 0) return;
      const sets = watching.some(([g]) => g.principal.scope.area && !s.position) ? await areaSets() : new Map();
      const targets = watching.filter(([g]) => sees(g, sets, s)).flatMap(([, names]) => names);
      if (targets.length > 0) io.to(targets).emit(event, payload);
    });
  }

  // New devices appear on the map before their first reading.
  registry.onChange((event) => {
    const d = event.device;
    if (event.kind === 'deleted') {
      typeOfDevice.delete(d.id);
      return;
    }
    if (event.kind === 'updated') typeOfDevice.set(d.id, d.type);
    if (event.kind !== 'created') return;
    typeOfDevice.set(d.id, d.type);
    const subject: Subject = { deviceId: d.id, domain: d.domain, position: d.location };
    const targets: string[] = [];
    for (const g of groups.values()) {
      const room = domainRoom(g, d.domain);
      // A new device without a location is outside every area (as for REST).
      if (rooms.has(room) && (subjectVisible(access, g.principal, subject, new Set()) as boolean)) targets.push(room);
    }
    if (targets.length > 0) io.to(targets).emit('device', { id: d.id, name: d.name, type: d.type, domain: d.domain, location: d.location });
  });

  io.use((socket, next) => {
    const authSeq = keySeq;
    const token = (socket.handshake.auth as { token?: unknown }).token;
    const refuse = (err: AccessError) => {
      const word = err.statusCode === 403 ? 'forbidden' : 'unauthorized';
      log.info({ address: socket.handshake.address, status: err.statusCode, reason: err.message }, 'live connection refused');
      audit(socket, null, 'connect', {}, err.statusCode, { reason: err.message });
      next(Object.assign(new Error(`${word}: ${err.message}`), { data: { statusCode: err.statusCode, reason: err.message, ...(err.permission ? { permission: err.permission } : {}) } }));
    };
    if (typeof token !== 'string' || token.trim() === '') {
      return refuse(new AccessError(401, 'no credential: pass an API key, an OpenID Connect access token or the admin key as auth.token'));
    }
    access.authenticate(token, { source: socket.handshake.address, via: 'rest' }).then(
      (principal) => {
        try {
          access.require(principal, 'live');
        } catch (err) {
          return refuse(err as AccessError);
        }
        const data: SocketData = { principal, authSeq };
        Object.assign(socket.data as object, data);
        next();
      },
      (err: unknown) => {
        if (err instanceof AccessError) return refuse(err);
        log.error({ err }, 'live: authentication failed');
        next(Object.assign(new Error('unavailable: the credential could not be checked now; try again'), { data: { statusCode: 503 } }));
      },
    );
  });

  function endAccess(socket: Socket, code: AccessEnd, reason: string): void {
    const p = (socket.data as SocketData).principal;
    log.info({ principal: p.id, code, reason }, 'live connection closed: access ended');
    socket.emit('access-ended', { code, reason });
    socket.disconnect(true);
  }

  function armExpiry(socket: Socket, expiresAt: number): void {
    const wait = expiresAt - Date.now();
    const timer = setTimeout(() => {
      if (!socket.connected) return;
      if (Date.now() < expiresAt) return armExpiry(socket, expiresAt);
      endAccess(socket, 'expired', `the credential expired at ${new Date(expiresAt).toISOString()}`);
    }, Math.min(Math.max(wait, 0), MAX_TIMER_MS));
    timer.unref();
    expiryTimers.set(socket, timer);
  }

  io.on('connection', (socket) => {
    const { principal: p, authSeq } = socket.data as SocketData;
    const groupKey = `${p.scope.key}\u0000${p.owner}`;
    let group = groups.get(groupKey);
    if (!group) {
      const id = `s${++groupSeq}`;
      group = { id, key: groupKey, principal: p, sockets: 0, domainRooms: new Map(DOMAINS.map((d) => [d, `domain:${d}|${id}`])) };
      groups.set(groupKey, group);
    }
    const g = group;
    g.sockets++;
    if (p.keyId !== undefined) {
      let set = byKey.get(p.keyId);
      if (!set) byKey.set(p.keyId, (set = new Set()));
      set.add(socket);
    }
    socket.on('disconnect', () => {
      clearTimeout(expiryTimers.get(socket));
      if (p.keyId !== undefined) {
        const set = byKey.get(p.keyId);
        set?.delete(socket);
        if (set?.size === 0) byKey.delete(p.keyId);
      }
      if (--g.sockets === 0 && groups.get(g.key) === g) groups.delete(g.key);
    });

    socket.emit('hello', { principal: describePrincipal(p) });
    if (p.keyId !== undefined && (keyChangedAt.get(p.keyId) ?? 0) > authSeq) {
      return endAccess(socket, 'updated', 'the API key changed while the connection was being opened: connect again');
    }
    if (p.expiresAt !== null) armExpiry(socket, p.expiresAt);

    socket.on('subscribe', (target: unknown, ack?: unknown) => {
      void subscribe(socket, g, p, target).then(
        (reply) => typeof ack === 'function' && ack(reply),
        (err: Error) => {
          log.warn({ err: err.message }, 'live: subscription failed');
          if (typeof ack === 'function') ack({ ok: false, error: 'subscription unavailable: try again' });
        },
      );
    });
    socket.on('unsubscribe', (target: unknown) => {
      const t = parseTarget(target);
      if (t?.device !== undefined) void socket.leave(deviceRoom(g, t.device));
      else if (t?.domain !== undefined) void socket.leave(domainRoom(g, t.domain));
    });
    socket.on('snapshot', async (_arg: unknown, ack?: unknown) => {
      if (typeof ack !== 'function') return;
      try {
        const [devices, states, online, visible] = await Promise.all([registry.list({ limit: 100_000 }), latest.all(), deps.onlineDevices?.(), access.visibleDevices(p)]);
        const stateById = new Map(states.map((s) => [s.deviceId, s]));
        const inside = (at: { lng: number; lat: number }) => !p.scope.area || access.positionVisible(p, at.lng, at.lat);
        // A moving device is in an area while its latest position is: the one in memory is fresher than the database's.
        const inScope = (d: (typeof devices)[number]) => {
          const at = p.scope.area && registry.deviceType(d.type)?.moving ? stateById.get(d.id)?.position : undefined;
          return at ? access.domainVisible(p, d.domain) && inside(at) : visible!.has(d.id);
        };
        const shown = visible === null ? devices : devices.filter(inScope);
        audit(socket, p, 'snapshot', { devices: shown.length }, 200);
        ack({
          devices: shown.map((d) => {
            const s = stateById.get(d.id);
            // With an area, only positions inside it: the latest, else the registered location.
            const position = s?.position && inside(s.position) ? s.position : d.location && inside(d.location) ? { ...d.location, ts: null } : null;
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

  async function subscribe(socket: Socket, g: ScopeGroup, p: Principal, target: unknown): Promise<{ ok: true; room: string } | { ok: false; error: string }> {
    const t = parseTarget(target);
    if (!t) {
      audit(socket, p, 'subscribe', { target: summarize(target) }, 400, { reason: 'expected {device: <id>} or {domain: <name>}' });
      return { ok: false, error: 'expected {device: <id>} or {domain: <name>}' };
    }
    if (t.device !== undefined) {
      const id = t.device;
      // Outside the scope answers as a device that does not exist: its existence is not leaked.
      const visible = await access.visibleDevices(p);
      const exists = visible === null ? (await registry.get(id)) !== undefined : visible.has(id);
      audit(socket, p, 'subscribe', { device: id }, exists ? 200 : 404, { deviceId: id, ...(exists ? {} : { reason: `no device ${id} in scope` }) });
      if (!exists) return { ok: false, error: `no device ${id}` };
      if (socket.connected) await socket.join(deviceRoom(g, id));
      return { ok: true, room: `device:${id}` };
    }
    const domain = t.domain!;
    if (!access.domainVisible(p, domain)) {
      const error = `domain ${domain} is outside the scope of this credential`;
      audit(socket, p, 'subscribe', { domain }, 403, { reason: error });
      return { ok: false, error };
    }
    audit(socket, p, 'subscribe', { domain }, 200);
    if (socket.connected) await socket.join(domainRoom(g, domain));
    return { ok: true, room: `domain:${domain}` };
  }

  // Coalesce: one event per room per flush, carrying every reading committed meanwhile.
  let pending = new Map<string, LiveReading[]>();
  const timer = setInterval(() => {
    if (pending.size === 0) return;
    const out = pending;
    pending = new Map();
    for (const [room, readings] of out) io.to(room).emit('readings', readings);
  }, deps.flushMs ?? 100);
  timer.unref();

  const awaitingType = new Map<number, Reading[]>();

  /** Routes readings whose device types are known, each to the rooms of the groups that see it. */
  function route(rows: readonly [Reading, string][]): void {
    if (rows.length === 0 || rooms.size === 0) return;
    inOrder(async () => {
      const gs = [...groups.values()];
      // Area groups need their visible devices only for readings without a position.
      const sets = gs.some((g) => g.principal.scope.area) && rows.some(([r]) => r.lat === undefined || r.lng === undefined) ? await areaSets() : new Map();
      for (const [row, typeName] of rows) {
        const domain = registry.deviceType(typeName)?.domain ?? 'generic';
        const positioned = row.lat !== undefined && row.lng !== undefined;
        const subject: Subject = { deviceId: row.deviceId, domain, position: positioned ? { lng: row.lng!, lat: row.lat! } : null };
        let live: LiveReading | undefined;
        for (const g of gs) {
          const dRoom = deviceRoom(g, row.deviceId);
          const mRoom = domainRoom(g, domain);
          const watchDevice = rooms.has(dRoom);
          const watchDomain = rooms.has(mRoom);
          if (!watchDevice && !watchDomain) continue;
          if (!sees(g, sets, subject)) continue;
          if (!live) {
            live = { deviceId: row.deviceId, domain, type: typeName, ts: row.ts, values: row.jsonValues ? { ...row.values, ...row.jsonValues } : row.values };
            if (positioned) {
              live.lat = row.lat;
              live.lng = row.lng;
              if (row.alt !== undefined) live.alt = row.alt;
            }
          }
          if (watchDevice) add(dRoom, live);
          if (watchDomain) add(mRoom, live);
        }
      }
    });
  }
  const add = (room: string, r: LiveReading) => {
    const list = pending.get(room);
    if (list) list.push(r);
    else pending.set(room, [r]);
  };

  /** The domain of a device for events that do not carry it (attribute changes). */
  async function domainOf(deviceId: number): Promise<Domain | undefined> {
    const typeName = typeOfDevice.get(deviceId);
    if (typeName !== undefined) return registry.deviceType(typeName)?.domain ?? 'generic';
    const d = await registry.get(deviceId);
    if (d) typeOfDevice.set(deviceId, d.type);
    return d?.domain;
  }

  return {
    publish(rows) {
      if (rooms.size === 0) return;
      const known: [Reading, string][] = [];
      for (const row of rows) {
        const typeName = typeOfDevice.get(row.deviceId);
        if (typeName !== undefined) {
          known.push([row, typeName]);
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
            if (d) route((awaitingType.get(row.deviceId) ?? []).map((r): [Reading, string] => [r, d.type]));
          })
          .catch((err: Error) => log.warn({ err: err.message }, 'live: device lookup failed'))
          .finally(() => awaitingType.delete(row.deviceId));
      }
      route(known);
    },
    attributes(change) {
      if (rooms.size === 0) return;
      const payload = { deviceId: change.deviceId, scope: change.scope, values: change.updated, deleted: change.deleted, ts: change.ts };
      if (![...groups.values()].some((g) => rooms.has(deviceRoom(g, change.deviceId)))) return;
      void domainOf(change.deviceId).then(
        (domain) => domain && emitScoped('attributes', payload, { deviceId: change.deviceId, domain }, null),
        (err: Error) => log.warn({ err: err.message }, 'live: device lookup failed'),
      );
    },
    connectivity(change) {
      emitScoped('connectivity', change, { deviceId: change.deviceId, domain: change.domain }, change.domain);
    },
    geofence(event) {
      // The device's domain decides who may see it; the fence's domain room is where it is sent.
      const domain = registry.deviceType(event.deviceType)?.domain ?? event.domain;
      emitScoped('geofence', eventJson(event), { deviceId: event.deviceId, domain, position: { lng: event.lng, lat: event.lat } }, event.domain);
    },
    alarm(change) {
      const a = change.alarm;
      // The alarm's position (where it was raised) decides for an area, for every change of it alike.
      emitScoped('alarm', change, { deviceId: a.device.id, domain: a.device.domain, position: a.position }, a.device.domain);
    },
    path: `${io.path()}/`,
    closeKey(keyId, code, reason) {
      keyChangedAt.set(keyId, ++keySeq);
      const sockets = [...(byKey.get(keyId) ?? [])];
      for (const socket of sockets) endAccess(socket, code, reason);
      return sockets.length;
    },
    async close() {
      clearInterval(timer);
      await new Promise<void>((resolve) => {
        io.close(() => resolve());
      });
    },
  };
}

function parseTarget(target: unknown): { device?: number; domain?: Domain } | undefined {
  if (typeof target !== 'object' || target === null) return undefined;
  const t = target as { device?: unknown; domain?: unknown };
  if (typeof t.device === 'number' && Number.isSafeInteger(t.device) && t.device > 0) return { device: t.device };
  if (typeof t.domain === 'string' && (DOMAINS as readonly string[]).includes(t.domain)) return { domain: t.domain as Domain };
  return undefined;
}

/** A bounded description of an unusable subscription target, for the audit log. */
function summarize(target: unknown): string {
  let text: string;
  try {
    text = JSON.stringify(target) ?? String(target);
  } catch {
    text = String(target);
  }
  return text.length > 200 ? `${text.slice(0, 200)}…` : text;
}
