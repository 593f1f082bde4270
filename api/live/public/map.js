// GuanLink (莞联) live operations map. Plain browser ES module, no build step, no network beyond
// this server. Globals from the classic scripts in index.html: `maplibregl` and `io` (socket.io).
//
// Data flow: GET /api/v1/device-types (labels, units) → socket.io `subscribe` to every domain →
// `snapshot` (latest positions and values) → `readings` batches merged by timestamp into
// `state.devices` → one GeoJSON `setData` per animation frame at most (and never while the
// previous one is still being processed by MapLibre's worker), drawn by one circle layer.
// `connectivity` events (and the snapshot's `online`) dim the devices that are offline.
//
// Operations overlays: GET /api/v1/geofences → one GeoJSON source (fill + outline, a DOM name label
// per fence: fences are few); GET /api/v1/alarms?status=open, then `alarm` events → the alarms
// panel and a ring around each device with an open alarm (a property of its feature, drawn by a
// second circle layer on the same source); `geofence` events → a short pulse on the map (a small
// source of at most MAX_PULSES points) and the last few in a log. Both lists are re-read on every
// (re)connection, so nothing missed while disconnected stays shown.
//
// Sign-in: staff paste their API key into the sign-in panel, or — when GET /auth/config.json names
// an OpenID provider — sign in there (authorization code + PKCE, done in the page). The credential
// is kept in sessionStorage only (never in the URL: an old `#key=` link is read once and removed
// from the address bar), and is the socket's `auth.token` and the REST bearer. The server says who
// it is (`hello`); the map shows it, shows only the domains of its scope and hides the actions it
// lacks. A refused, revoked or expired credential clears the map and returns to the sign-in panel
// with the reason.

import { DOMAIN_LABELS, defaultLang, formatAge, locale, pick, t } from './i18n.js';

let DOMAINS = []; // from /map-config.json: the server's list, with labels (DOMAIN_LABELS)
const DOMAIN_COLORS = {
  water: '#3b82f6',
  environment: '#22c55e',
  traffic: '#f97316',
  'air-space-ground': '#a855f7',
  generic: '#9ca3af',
};
const CENTER = [113.75, 23.02];
const ZOOM = 9.5;
const GLIDE_MAX_MS = 1500; // moving devices glide to a new position over the gap between reports, at most this long
const STORE = { lang: 'guanlink.lang', hidden: 'guanlink.hiddenDomains', operator: 'guanlink.operator', geofences: 'guanlink.showGeofences' };
// Credentials live in sessionStorage (this tab, until it closes), never in localStorage or the URL.
const SESSION = { credential: 'guanlink.credential', oidc: 'guanlink.oidcPending' };
const LEGACY_KEY = 'guanlink.adminKey'; // where earlier versions kept the admin key (localStorage): removed
const OIDC_PARAMS = ['code', 'state', 'session_state', 'iss', 'error', 'error_description', 'error_uri'];
const RETRY_MS = 2000; // a connection refused for a reason other than the credential is tried again after this
const SEVERITIES = ['critical', 'major', 'minor', 'warning']; // worst first
const SEVERITY_COLORS = { critical: '#ef4444', major: '#f97316', minor: '#facc15', warning: '#38bdf8' };
const STATUS_RANK = { raised: 0, acknowledged: 1, cleared: 2 }; // an alarm only moves forward
const ALARM_PAGE = 1000; // open alarms per REST page
const ALARM_PAGES_MAX = 20; // at most this many pages at (re)connection
const ALARMS_SHOWN = 100; // list entries at most; the rest are counted
const EVENT_LOG_SIZE = 8; // geofence events listed
const PULSE_MS = 2000; // a geofence event's pulse on the map lasts this long
const MAX_PULSES = 40; // pulses at once; older ones end early under a burst
const GEOFENCE_RELOAD_MS = 10_000; // an event of an unknown fence reloads the fences at most this often
const FLY_ZOOM = 14;
const EVENT_COLORS = { enter: '#22c55e', exit: '#f97316', dwell: '#38bdf8' };

const $ = (id) => document.getElementById(id);

const state = {
  lang: storageGet(STORE.lang) ?? defaultLang(),
  key: null, // the credential: an API key, an OpenID Connect access token or the admin key
  session: 0, // incremented at every sign-in and sign-out: answers to an earlier session are dropped
  principal: null, // who the server says we are (`hello`): name, roles, permissions, scope
  canAck: false, // the principal may acknowledge alarms
  oidc: null, // the OpenID provider from /auth/config.json, or null
  loginMessage: null, // why the sign-in panel is shown: {key: i18n key, detail: text from the server}
  types: new Map(), // type name → device type from the REST API
  devices: new Map(), // id → device record (see newDevice)
  enabled: new Set(),
  connection: 'connecting', // connecting | connected | reconnecting | unauthorized
  readingsTotal: 0,
  readingsSinceTick: 0,
  rate: 0,
  lastUpdate: null, // epoch ms of the newest data: last `readings` batch received, or newest snapshot reading
  mapLoaded: false,
  snapshotLoaded: false,
  fetching: new Set(), // device ids being fetched over REST
  typesLoaded: false,
  typesReloadPending: false,
  alarms: new Map(), // id → open alarm (raised or acknowledged), as the REST API and `alarm` events give it
  alarmsByDevice: new Map(), // device id → Set of open alarm ids
  alarmsLoaded: false,
  alarmSync: null, // while the open alarms are being read: {touched: ids changed by events meanwhile}
  acking: new Set(), // alarm ids whose acknowledgement is on its way
  geofences: { type: 'FeatureCollection', features: [] },
  geofenceIds: new Set(),
  geofencesLoaded: false,
  geofencesReloadAt: 0, // when the fences were last read (epoch ms)
  geofencesReloadTimer: null,
  showGeofences: storageGet(STORE.geofences) !== 'false',
  geofenceEvents: [], // newest first, at most EVENT_LOG_SIZE
};

const render = {
  frame: 0,
  dirty: false,
  inFlight: false,
  panelDirty: true,
  animating: new Set(),
  alarmsDirty: true,
  eventsDirty: true,
  pulses: [], // {at: [lng, lat], kind, start}
  pulsesShown: false, // the pulse source holds points
  pulsesInFlight: false,
};
const alarmElements = new Map(); // alarm id → {li, html}
let geofenceLabels = []; // maplibregl.Marker per fence
let map = null;
let offline = true; // the offline style is shown (not a configured one)
let socket = null;
let popup = null;
let popupDeviceId = null;
let popupHtmlCache = '';

/* ------------------------------------------------------------------ storage and auth */

function storageGet(name) {
  try {
    return localStorage.getItem(name);
  } catch {
    return null;
  }
}

function storageSet(name, value) {
  try {
    if (value === null) localStorage.removeItem(name);
    else localStorage.setItem(name, value);
  } catch {
    /* private mode: keep working without persistence */
  }
}

function sessionGet(name) {
  try {
    return sessionStorage.getItem(name);
  } catch {
    return null;
  }
}

function sessionSet(name, value) {
  try {
    if (value === null) sessionStorage.removeItem(name);
    else sessionStorage.setItem(name, value);
  } catch {
    /* storage disabled: the credential lasts until the page is reloaded */
  }
}

/**
 * The key of an old `#key=…` link, taken at once and removed from the address bar (so that it
 * stays out of history, bookmarks and screenshots); kept in this tab's sessionStorage.
 */
function takeKeyFromLink() {
  // Earlier versions kept the admin key in localStorage: moved to this tab's session, then gone from disk.
  const legacy = storageGet(LEGACY_KEY);
  if (legacy !== null) {
    storageSet(LEGACY_KEY, null);
    if (!sessionGet(SESSION.credential)) sessionSet(SESSION.credential, legacy);
  }
  const match = location.hash.match(/(?:^#|&)key=([^&]+)/);
  if (!match) return null;
  history.replaceState(null, '', location.pathname + location.search);
  let key;
  try {
    key = decodeURIComponent(match[1]).trim();
  } catch {
    return null;
  }
  if (key) sessionSet(SESSION.credential, key);
  return key || null;
}

/** The sign-in panel, with why it is shown (`messageKey` + the server's `detail`), or none. */
function showLogin(messageKey = null, detail = '') {
  state.loginMessage = messageKey ? { key: messageKey, detail } : null;
  renderLoginMessage();
  $('login-key').value = '';
  $('oidc-signin').hidden = !state.oidc;
  $('login').hidden = false;
  $('login-key').focus();
}

function renderLoginMessage() {
  const m = state.loginMessage;
  const el = $('login-error');
  el.hidden = !m;
  el.textContent = m ? `${t(state.lang, m.key)}${m.detail ? ` ${m.detail}` : ''}` : '';
  if (state.oidc) $('oidc-button').textContent = t(state.lang, 'oidcSignIn', issuerHost(state.oidc.issuer));
}

function onLoginSubmit(event) {
  event.preventDefault();
  const key = $('login-key').value.trim();
  if (!key) return;
  $('login-key').value = '';
  signIn(key);
}

/** Starts a session with a credential: the live stream (which says who we are) and the REST reads. */
function signIn(credential) {
  sessionSet(SESSION.credential, credential);
  state.key = credential;
  state.session++;
  $('login').hidden = true;
  state.loginMessage = null;
  setConnection('connecting');
  loadTypes().catch(showError);
  connectLive();
}

/**
 * Ends the session: the credential is forgotten, the stream closed, everything it showed cleared
 * (a next sign-in may see less), and the sign-in panel says why.
 */
function signOut(messageKey, detail = '') {
  sessionSet(SESSION.credential, null);
  state.key = null;
  state.session++;
  const old = socket;
  socket = null;
  old?.disconnect();
  setConnection('unauthorized');
  setPrincipal(null);
  clearData();
  showLogin(messageKey, detail);
}

/** The server refused the credential (401 over REST, a refused or ended stream). */
function onUnauthorized(reason) {
  if (state.connection === 'unauthorized') return;
  signOut('signInRefused', reason ?? '');
}

/** Who we are, from the stream's `hello`: shown in the panel; the domains and actions follow from it. */
function setPrincipal(p) {
  state.principal = p;
  const canAck = Boolean(p?.permissions?.includes('alarms:ack'));
  if (canAck !== state.canAck) {
    state.canAck = canAck;
    alarmElements.clear(); // rebuilt with or without their acknowledge button
    render.alarmsDirty = true;
  }
  $('operator-field').hidden = !canAck;
  $('principal').hidden = !p;
  if (p) {
    $('principal-name').textContent = p.name;
    $('principal-name').title = p.owner ?? '';
    $('principal-roles').textContent = p.roles.join(', ');
    $('principal-scope').textContent = scopeSummary(p.scope ?? {});
  }
  buildDomainList();
  schedule();
}

/** The domains the principal may see (all before it is known). */
const visibleDomains = () => (state.principal?.scope?.domains ? DOMAINS.filter((d) => state.principal.scope.domains.includes(d)) : DOMAINS);

/** "Water, Traffic · towns: 虎门镇" / "everything". */
function scopeSummary(scope) {
  const lang = state.lang;
  const parts = [];
  if (Array.isArray(scope.domains)) parts.push(scope.domains.map((d) => pick(DOMAIN_LABELS[d], lang, d)).join(', '));
  if (Array.isArray(scope.towns)) parts.push(t(lang, 'scopeTowns', scope.towns.join(', ')));
  else if (scope.area) parts.push(t(lang, 'scopeArea'));
  return parts.length ? parts.join(' · ') : t(lang, 'scopeEverything');
}

/** Forgets every device, alarm and event shown (a new session reads them again within its scope). */
function clearData() {
  state.devices.clear();
  state.fetching.clear();
  render.animating.clear();
  state.alarms.clear();
  state.alarmsByDevice.clear();
  state.alarmSync = null;
  state.acking.clear();
  alarmElements.clear();
  state.geofences = { type: 'FeatureCollection', features: [] };
  state.geofenceIds = new Set();
  state.geofenceEvents = [];
  render.pulses = [];
  state.snapshotLoaded = false;
  state.alarmsLoaded = false;
  state.geofencesLoaded = false;
  state.readingsTotal = 0;
  state.lastUpdate = null;
  map?.getSource('geofences')?.setData(state.geofences);
  buildGeofenceLabels();
  $('geofence-count').textContent = '0';
  popup?.remove();
  $('error').hidden = true;
  render.dirty = true;
  render.panelDirty = true;
  render.alarmsDirty = true;
  render.eventsDirty = true;
  schedule();
}

/** A REST call with the credential; a JSON `body` is sent as such. Errors carry the HTTP `status`. */
async function api(path, { method = 'GET', body } = {}) {
  const session = state.session;
  const headers = { authorization: `Bearer ${state.key}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (session !== state.session) throw new Error('stale'); // signed out or in again meanwhile: not ours any more
  if (res.status === 401) {
    const detail = await res.json().then((b) => b?.message, () => undefined);
    onUnauthorized(detail);
    throw new Error('unauthorized');
  }
  if (!res.ok) {
    const detail = await res.json().then((b) => b?.message, () => undefined);
    const err = new Error(`${path}: HTTP ${res.status}${detail ? ` (${detail})` : ''}`);
    err.status = res.status;
    throw err;
  }
  const json = await res.json();
  if (session !== state.session) throw new Error('stale');
  return json;
}

/* ------------------------------------------------------------------ OpenID Connect sign-in */

/** The OpenID provider the server names (GET /auth/config.json), or null (none, or an older server). */
async function loadAuthConfig() {
  try {
    const res = await fetch('/auth/config.json');
    if (!res.ok) return null;
    const body = await res.json();
    const oidc = body?.oidc;
    return oidc && typeof oidc.issuer === 'string' && typeof oidc.clientId === 'string' ? oidc : null;
  } catch {
    return null;
  }
}

function issuerHost(issuer) {
  try {
    return new URL(issuer).host;
  } catch {
    return issuer;
  }
}

const base64url = (bytes) => btoa(String.fromCharCode(...bytes)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
const randomToken = (bytes) => base64url(crypto.getRandomValues(new Uint8Array(bytes)));
/** Where the provider sends the browser back: this page. */
const redirectUri = () => location.origin + location.pathname;

/** The provider's endpoints: as the server gave them, else from its discovery document. */
async function oidcEndpoints(oidc) {
  if (oidc.authorizationEndpoint && oidc.tokenEndpoint) return { authorizationEndpoint: oidc.authorizationEndpoint, tokenEndpoint: oidc.tokenEndpoint };
  const res = await fetch(`${oidc.issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`);
  if (!res.ok) throw new Error(`${issuerHost(oidc.issuer)}: discovery answered HTTP ${res.status}`);
  const doc = await res.json();
  const authorizationEndpoint = oidc.authorizationEndpoint ?? doc.authorization_endpoint;
  const tokenEndpoint = oidc.tokenEndpoint ?? doc.token_endpoint;
  if (!authorizationEndpoint || !tokenEndpoint) throw new Error(`${issuerHost(oidc.issuer)}: its discovery document names no authorization or token endpoint`);
  return { authorizationEndpoint, tokenEndpoint };
}

/** Authorization code + PKCE (S256): off to the provider; it sends the browser back here with a code. */
async function startOidcSignIn() {
  const oidc = state.oidc;
  if (!oidc) return;
  try {
    if (!window.isSecureContext || !crypto.subtle) throw new Error(t(state.lang, 'oidcNeedsHttps'));
    const { authorizationEndpoint, tokenEndpoint } = await oidcEndpoints(oidc);
    const verifier = randomToken(32);
    const challenge = base64url(new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier))));
    const stateParam = randomToken(16);
    sessionSet(SESSION.oidc, JSON.stringify({ state: stateParam, verifier, tokenEndpoint, clientId: oidc.clientId, issuer: oidc.issuer, redirectUri: redirectUri() }));
    const url = new URL(authorizationEndpoint);
    for (const [k, v] of Object.entries({
      response_type: 'code',
      client_id: oidc.clientId,
      redirect_uri: redirectUri(),
      scope: oidc.scopes || 'openid',
      state: stateParam,
      code_challenge: challenge,
      code_challenge_method: 'S256',
    })) {
      url.searchParams.set(k, v);
    }
    location.assign(url.href);
  } catch (err) {
    showLogin('oidcFailed', err?.message ?? String(err));
  }
}

/**
 * Back from the provider (`?code=…&state=…`, or `?error=…`): the code is exchanged for an access
 * token at the provider's token endpoint, from this page. Returns the token; null when this is not
 * a return from a sign-in started here. The address bar loses the code and state at once.
 */
async function finishOidcSignIn() {
  const params = new URLSearchParams(location.search);
  if (!params.has('code') && !params.has('error')) return null;
  const pending = JSON.parse(sessionGet(SESSION.oidc) ?? 'null');
  if (!pending) return null;
  sessionSet(SESSION.oidc, null);
  const rest = new URLSearchParams(location.search);
  for (const name of OIDC_PARAMS) rest.delete(name);
  history.replaceState(null, '', location.pathname + (rest.size ? `?${rest}` : '') + location.hash);
  if (params.get('state') !== pending.state) throw new Error('the answer does not belong to this sign-in (state differs)');
  if (params.has('iss') && params.get('iss') !== pending.issuer) throw new Error(`the answer comes from ${params.get('iss')}, not ${pending.issuer}`);
  if (params.has('error')) throw new Error(params.get('error_description') || params.get('error'));
  const res = await fetch(pending.tokenEndpoint, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'authorization_code', code: params.get('code'), redirect_uri: pending.redirectUri, client_id: pending.clientId, code_verifier: pending.verifier }),
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok || typeof body.access_token !== 'string') throw new Error(body.error_description || body.error || `token endpoint: HTTP ${res.status}`);
  return body.access_token;
}

/* ------------------------------------------------------------------ device types and devices */

async function loadTypes() {
  const types = await api('/api/v1/device-types');
  state.types = new Map(types.map((ty) => [ty.name, ty]));
  state.typesLoaded = true;
  for (const d of state.devices.values()) refreshFeatureProps(d);
  render.dirty = true;
  schedule();
}

/** A type we do not know yet (created after the page loaded): reload the list once. */
function noteType(typeName) {
  if (!state.typesLoaded || state.types.has(typeName) || state.typesReloadPending) return;
  state.typesReloadPending = true;
  loadTypes()
    .catch(showError)
    .finally(() => {
      state.typesReloadPending = false;
    });
}

function newDevice(id, name, type, domain) {
  // online: true / false from the server; null until known (drawn as online).
  const d = { id, name, type, domain, pos: null, lastTs: null, values: {}, shown: null, glide: null, lastMoveAt: 0, feature: null, online: null };
  state.devices.set(id, d);
  render.panelDirty = true;
  noteType(type);
  return d;
}

/** A device seen in `readings` but not in the snapshot: fetch its name and location once. */
async function fetchDevice(id) {
  if (state.fetching.has(id)) return;
  state.fetching.add(id);
  try {
    const info = await api(`/api/v1/devices/${id}`);
    const d = state.devices.get(id);
    if (!d) return;
    Object.assign(d, { name: info.name, type: info.type, domain: info.domain });
    refreshFeatureProps(d);
    if (!d.pos && info.location) setPosition(d, { ...info.location, ts: null }, performance.now());
    noteType(info.type);
    render.dirty = true;
    render.panelDirty = true;
    schedule();
  } catch (err) {
    showError(err);
  } finally {
    state.fetching.delete(id);
  }
}

const isMoving = (d) => state.types.get(d.type)?.moving ?? false;

function refreshFeatureProps(d) {
  if (!d.feature) return;
  const alarm = deviceAlarm(d.id);
  d.feature.properties = {
    id: d.id,
    domain: d.domain,
    moving: isMoving(d),
    online: d.online !== false,
    // The worst open alarm (index in SEVERITIES, -1: none); acked: every open alarm is acknowledged.
    alarm: alarm ? SEVERITIES.indexOf(alarm.severity) : -1,
    acked: alarm ? alarm.status === 'acknowledged' : false,
  };
}

/** Sets a device's latest position; moving devices glide there from where they are drawn. */
function setPosition(d, pos, now) {
  d.pos = { lat: pos.lat, lng: pos.lng, alt: pos.alt ?? null, ts: pos.ts ?? null };
  const target = [pos.lng, pos.lat];
  const since = now - d.lastMoveAt;
  d.lastMoveAt = now;
  if (!d.shown || Math.abs(target[0] - d.shown[0]) > 180 || since < 50) {
    placeDevice(d, target);
    return;
  }
  d.glide = { from: d.shown, to: target, start: now, duration: Math.min(GLIDE_MAX_MS, since) };
  render.animating.add(d);
}

function placeDevice(d, lngLat) {
  d.glide = null;
  render.animating.delete(d);
  if (!d.feature) {
    d.feature = { type: 'Feature', id: d.id, geometry: { type: 'Point', coordinates: lngLat }, properties: {} };
    refreshFeatureProps(d);
    render.panelDirty = true;
  }
  d.shown = lngLat;
  d.feature.geometry = { type: 'Point', coordinates: lngLat };
}

function advanceGlides(now) {
  for (const d of render.animating) {
    const { from, to, start, duration } = d.glide;
    const p = Math.min(1, Math.max(0, (now - start) / duration));
    if (p >= 1) placeDevice(d, to);
    else {
      d.shown = [from[0] + (to[0] - from[0]) * p, from[1] + (to[1] - from[1]) * p];
      d.feature.geometry = { type: 'Point', coordinates: d.shown };
    }
    render.dirty = true;
  }
}

/** Keeps the newer of what we have and what arrived, value by value (snapshot and readings race). */
function mergeValue(d, key, ts, value) {
  const cur = d.values[key];
  if (!cur || cur.ts <= ts) d.values[key] = { ts, value };
  if (d.lastTs === null || ts > d.lastTs) d.lastTs = ts;
}

function applySnapshot(reply) {
  if (!reply || reply.error || !Array.isArray(reply.devices)) {
    showError(new Error(reply?.error ?? 'snapshot failed'));
    return;
  }
  const now = performance.now();
  for (const s of reply.devices) {
    let d = state.devices.get(s.id);
    if (!d) d = newDevice(s.id, s.name, s.type, s.domain);
    else Object.assign(d, { name: s.name, type: s.type, domain: s.domain });
    if (typeof s.online === 'boolean' && !d.onlineFromEvent) d.online = s.online;
    refreshFeatureProps(d);
    for (const [key, v] of Object.entries(s.values ?? {})) mergeValue(d, key, v.ts, v.value);
    if (s.lastTs !== null && (d.lastTs === null || s.lastTs > d.lastTs)) d.lastTs = s.lastTs;
    const newer = s.position && (!d.pos || d.pos.ts === null || (s.position.ts !== null && s.position.ts >= d.pos.ts));
    if (newer) setPosition(d, s.position, now);
  }
  for (const d of state.devices.values()) if (d.lastTs !== null && d.lastTs > (state.lastUpdate ?? 0)) state.lastUpdate = d.lastTs;
  state.snapshotLoaded = true;
  render.dirty = true;
  render.panelDirty = true;
  schedule();
}

function applyReadings(batch) {
  if (!Array.isArray(batch)) return;
  const now = performance.now();
  for (const r of batch) applyReading(r, now);
  state.readingsTotal += batch.length;
  state.readingsSinceTick += batch.length;
  state.lastUpdate = Date.now();
  render.panelDirty = true;
  schedule();
}

function applyReading(r, now) {
  let d = state.devices.get(r.deviceId);
  if (!d) {
    d = newDevice(r.deviceId, `#${r.deviceId}`, r.type, r.domain);
    void fetchDevice(r.deviceId);
  }
  for (const [key, value] of Object.entries(r.values ?? {})) mergeValue(d, key, r.ts, value);
  if (d.lastTs === null || r.ts > d.lastTs) d.lastTs = r.ts;
  const hasPos = typeof r.lat === 'number' && typeof r.lng === 'number';
  if (hasPos && (!d.pos || d.pos.ts === null || r.ts >= d.pos.ts)) {
    setPosition(d, { lat: r.lat, lng: r.lng, alt: r.alt, ts: r.ts }, now);
    render.dirty = true;
  }
}

/* ------------------------------------------------------------------ live connection */

function connectLive() {
  const s = io({ auth: { token: state.key }, transports: ['websocket'] });
  socket = s;
  const mine = () => socket === s;
  s.on('connect', () => {
    if (mine()) setConnection('connected');
  });
  // Who we are, on every (re)connection: then subscribe to the domains of the scope and read what is there.
  s.on('hello', (hello) => {
    if (!mine()) return;
    setPrincipal(hello?.principal ?? null);
    for (const domain of visibleDomains()) s.emit('subscribe', { domain }, () => {});
    s.emit('snapshot', null, (reply) => mine() && applySnapshot(reply));
    // Subscribed first: changes from now on arrive as events and win over the lists being read.
    loadAlarms().catch(showError);
    loadGeofences().catch(showError);
  });
  // The server ends the stream: the key was revoked, rotated or changed, or the credential expired.
  s.on('access-ended', (e) => {
    if (!mine()) return;
    if (e?.code === 'updated') {
      // Still valid, maybe with another scope: start over with what it now allows.
      clearData();
      setConnection('reconnecting');
      return;
    }
    signOut('accessEnded', e?.reason ?? '');
  });
  s.on('disconnect', (reason) => {
    if (!mine() || state.connection === 'unauthorized') return;
    setConnection('reconnecting');
    if (reason === 'io server disconnect') s.connect();
  });
  s.on('connect_error', (err) => {
    if (!mine()) return;
    const refused = /^(unauthorized|forbidden): ([\s\S]*)$/.exec(err?.message ?? '');
    if (refused) return onUnauthorized(err.data?.reason ?? refused[2]);
    setConnection('reconnecting');
    // Refused for another reason (the server could not check the credential now): try again later.
    if (!s.active) setTimeout(() => mine() && !s.connected && s.connect(), RETRY_MS);
  });
  s.on('readings', (batch) => mine() && applyReadings(batch));
  s.on('device', (info) => mine() && applyNewDevice(info));
  s.on('connectivity', (change) => mine() && applyConnectivity(change));
  s.on('alarm', (change) => mine() && applyAlarm(change));
  s.on('geofence', (e) => mine() && applyGeofenceEvent(e));
}

/** A device connected or disconnected: drawn bright when online, dimmed when offline. */
function applyConnectivity(change) {
  if (!change || typeof change.deviceId !== 'number') return;
  let d = state.devices.get(change.deviceId);
  if (!d) {
    d = newDevice(change.deviceId, `#${change.deviceId}`, 'generic', change.domain);
    void fetchDevice(change.deviceId);
  }
  d.online = change.online === true;
  d.onlineFromEvent = true; // newer than any snapshot still on its way
  refreshFeatureProps(d);
  render.dirty = true;
  schedule();
}

/** A device registered while the page is open: show it at its registered location. */
function applyNewDevice(info) {
  const d = state.devices.get(info.id) ?? newDevice(info.id, info.name, info.type, info.domain);
  Object.assign(d, { name: info.name, type: info.type, domain: info.domain });
  refreshFeatureProps(d);
  if (!d.pos && info.location) setPosition(d, { ...info.location, ts: null }, performance.now());
  render.dirty = true;
  render.panelDirty = true;
  schedule();
}

function setConnection(value) {
  state.connection = value;
  const el = $('connection');
  el.dataset.state = value;
  $('status-text').textContent = t(state.lang, value);
}

/* ------------------------------------------------------------------ map */

/** No tiles, no glyphs: a dark background; the Dongguan overlays are added on every style. */
function offlineStyle() {
  return {
    version: 8,
    name: 'GuanLink offline',
    sources: {},
    layers: [{ id: 'background', type: 'background', paint: { 'background-color': '#0b1220' } }],
  };
}

async function loadMapConfig() {
  try {
    const res = await fetch('/map-config.json');
    if (res.ok) return await res.json();
  } catch {
    /* fall through to the offline style */
  }
  return { styleUrl: null, domains: [] };
}

function createMap(styleUrl) {
  offline = !styleUrl;
  map = new maplibregl.Map({
    container: 'map',
    style: styleUrl ?? offlineStyle(),
    center: CENTER,
    zoom: ZOOM,
    dragRotate: false,
    pitchWithRotate: false,
    attributionControl: { compact: true },
  });
  map.addControl(new maplibregl.NavigationControl({ showCompass: false }), 'top-left');
  map.addControl(new maplibregl.ScaleControl({ unit: 'metric' }), 'bottom-left');
  map.on('style.load', () => addOverlays(!offline));
  map.on('load', () => {
    state.mapLoaded = true;
  });
  map.on('click', 'devices', (e) => {
    const f = e.features?.[0];
    if (f) openPopup(f.properties.id);
  });
  map.on('mouseenter', 'devices', () => (map.getCanvas().style.cursor = 'pointer'));
  map.on('mouseleave', 'devices', () => (map.getCanvas().style.cursor = ''));
  map.on('click', 'geofence-fill', (e) => {
    if (map.queryRenderedFeatures(e.point, { layers: ['devices'] }).length > 0) return; // the device's popup wins
    const f = e.features?.[0];
    if (f) openGeofencePopup(f, e.lngLat);
  });
  if (styleUrl) fallBackWhenStyleFails();
}

/** A configured style that cannot load (no internet on the wall screen): use the offline one. */
function fallBackWhenStyleFails() {
  const onError = (e) => {
    if (map.isStyleLoaded()) return;
    console.warn('map style failed, using the offline style', e?.error);
    map.off('error', onError);
    offline = true;
    map.setStyle(offlineStyle(), { diff: false });
  };
  map.on('error', onError);
  map.once('style.load', () => map.off('error', onError));
}

/** Dongguan outline and river (approximate, see dongguan.geojson) and the device layer. */
function addOverlays(onTopOfStyle) {
  if (!map.getSource('dongguan')) {
    map.addSource('dongguan', { type: 'geojson', data: '/dongguan.geojson', attribution: 'Dongguan outline: approximate' });
    map.addLayer({
      id: 'dongguan-fill',
      type: 'fill',
      source: 'dongguan',
      filter: ['==', ['get', 'kind'], 'boundary'],
      paint: { 'fill-color': '#15243b', 'fill-opacity': onTopOfStyle ? 0.08 : 0.9 },
    });
    map.addLayer({
      id: 'dongguan-outline',
      type: 'line',
      source: 'dongguan',
      filter: ['==', ['get', 'kind'], 'boundary'],
      paint: { 'line-color': '#5b7fae', 'line-width': 2, 'line-dasharray': [3, 1.5] },
    });
    map.addLayer({
      id: 'dongjiang',
      type: 'line',
      source: 'dongguan',
      filter: ['==', ['get', 'kind'], 'river'],
      layout: { 'line-cap': 'round', 'line-join': 'round' },
      paint: { 'line-color': '#2f7dd1', 'line-opacity': 0.85, 'line-width': ['interpolate', ['linear'], ['zoom'], 8, 2, 12, 6] },
    });
  }
  if (!map.getSource('geofences')) {
    map.addSource('geofences', { type: 'geojson', data: state.geofences });
    const visibility = state.showGeofences ? 'visible' : 'none';
    const color = domainColorExpression();
    map.addLayer({ id: 'geofence-fill', type: 'fill', source: 'geofences', filter: domainFilter(), layout: { visibility }, paint: { 'fill-color': color, 'fill-opacity': 0.14 } });
    map.addLayer({
      id: 'geofence-outline',
      type: 'line',
      source: 'geofences',
      filter: domainFilter(),
      layout: { visibility, 'line-join': 'round' },
      paint: { 'line-color': color, 'line-opacity': 0.9, 'line-width': ['interpolate', ['linear'], ['zoom'], 8, 1, 14, 2.5] },
    });
  }
  if (!map.getSource('devices')) {
    map.addSource('devices', { type: 'geojson', data: featureCollection() });
    map.addLayer({ id: 'devices', type: 'circle', source: 'devices', filter: domainFilter(), paint: devicePaint() });
    map.addLayer({ id: 'device-alarms', type: 'circle', source: 'devices', filter: alarmFilter(), paint: alarmRingPaint() });
  }
  if (!map.getSource('geofence-pulses')) {
    map.addSource('geofence-pulses', { type: 'geojson', data: { type: 'FeatureCollection', features: [] } });
    map.addLayer({
      id: 'geofence-pulses',
      type: 'circle',
      source: 'geofence-pulses',
      paint: {
        'circle-radius': ['interpolate', ['linear'], ['get', 'p'], 0, 6, 1, 30],
        'circle-color': 'rgba(0, 0, 0, 0)',
        'circle-stroke-color': ['match', ['get', 'kind'], 'enter', EVENT_COLORS.enter, 'exit', EVENT_COLORS.exit, EVENT_COLORS.dwell],
        'circle-stroke-width': 3,
        'circle-stroke-opacity': ['interpolate', ['linear'], ['get', 'p'], 0, 1, 1, 0],
      },
    });
  }
}

const domainColorExpression = () => ['match', ['get', 'domain'], ...DOMAINS.flatMap((d) => [d, DOMAIN_COLORS[d]]), DOMAIN_COLORS.generic];

/** A ring around each device with an open alarm: the worst one's colour, faint once acknowledged. */
function alarmRingPaint() {
  return {
    'circle-radius': ['interpolate', ['linear'], ['zoom'], 8, 9, 12, 14, 16, 19],
    'circle-color': 'rgba(0, 0, 0, 0)',
    'circle-stroke-color': ['match', ['get', 'alarm'], ...SEVERITIES.flatMap((s, i) => [i, SEVERITY_COLORS[s]]), SEVERITY_COLORS.critical],
    'circle-stroke-width': ['case', ['get', 'acked'], 2, 3.5],
    'circle-stroke-opacity': ['case', ['get', 'acked'], 0.55, 1],
  };
}

const alarmFilter = () => ['all', domainFilter(), ['>=', ['get', 'alarm'], 0]];

function devicePaint() {
  return {
    'circle-radius': ['interpolate', ['linear'], ['zoom'], 8, ['case', ['get', 'moving'], 5, 4], 12, ['case', ['get', 'moving'], 9, 8], 16, 12],
    'circle-color': domainColorExpression(),
    'circle-stroke-color': '#ffffff',
    'circle-stroke-width': ['case', ['get', 'moving'], 2, 1],
    'circle-stroke-opacity': ['case', ['get', 'online'], ['case', ['get', 'moving'], 0.95, 0.5], 0.2],
    'circle-opacity': ['case', ['get', 'online'], 0.95, 0.3],
  };
}

const domainFilter = () => ['in', ['get', 'domain'], ['literal', [...state.enabled]]];

function featureCollection() {
  const features = [];
  for (const d of state.devices.values()) if (d.feature) features.push(d.feature);
  return { type: 'FeatureCollection', features };
}

/* ------------------------------------------------------------------ frame loop */

/** Everything visual happens here, at most once per animation frame. */
function schedule() {
  if (!render.frame) render.frame = requestAnimationFrame(onFrame);
}

function onFrame(now) {
  render.frame = 0;
  advanceGlides(now);
  if (render.dirty) pushDevices();
  if (render.panelDirty) updatePanel();
  if (render.alarmsDirty) updateAlarmList();
  if (render.eventsDirty) updateEventLog();
  const pulsing = render.pulses.length > 0 || render.pulsesShown;
  if (pulsing) pushPulses(now);
  updatePopup();
  if (render.animating.size > 0 || render.dirty || pulsing) schedule();
}

function pushDevices() {
  const source = map?.getSource('devices');
  if (!source || render.inFlight) return; // retried next frame
  render.dirty = false;
  render.inFlight = true;
  Promise.resolve(source.setData(featureCollection(), true))
    .catch(() => {})
    .finally(() => {
      render.inFlight = false;
    });
}

/* ------------------------------------------------------------------ panel */

/** The legend: the domains of the principal's scope, each with its toggle. */
function buildDomainList() {
  const hidden = (storageGet(STORE.hidden) ?? '').split(',').filter(Boolean);
  for (const h of hidden) state.enabled.delete(h);
  $('domains').replaceChildren(...visibleDomains().map(domainItem));
  render.panelDirty = true;
}

function domainItem(domain) {
  const li = document.createElement('li');
  li.dataset.domain = domain;
  li.classList.toggle('off', !state.enabled.has(domain));
  li.innerHTML = `<label><input type="checkbox"><span class="swatch"></span><span class="name"></span><span class="count">0</span></label>`;
  li.querySelector('.swatch').style.background = DOMAIN_COLORS[domain];
  const box = li.querySelector('input');
  box.checked = state.enabled.has(domain);
  box.addEventListener('change', () => toggleDomain(domain, box.checked));
  return li;
}

function toggleDomain(domain, on) {
  if (on) state.enabled.add(domain);
  else state.enabled.delete(domain);
  storageSet(STORE.hidden, DOMAINS.filter((d) => !state.enabled.has(d)).join(','));
  document.querySelector(`#domains li[data-domain="${domain}"]`).classList.toggle('off', !on);
  const box = document.querySelector(`#domains li[data-domain="${domain}"] input`);
  if (box) box.checked = on;
  if (map?.getLayer('devices')) map.setFilter('devices', domainFilter());
  if (map?.getLayer('device-alarms')) map.setFilter('device-alarms', alarmFilter());
  for (const id of ['geofence-fill', 'geofence-outline']) if (map?.getLayer(id)) map.setFilter(id, domainFilter());
  updateGeofenceLabels();
  if (!on && popupDeviceId !== null && state.devices.get(popupDeviceId)?.domain === domain) popup?.remove();
}

function updatePanel() {
  render.panelDirty = false;
  const counts = Object.fromEntries(DOMAINS.map((d) => [d, 0]));
  let mapped = 0;
  for (const d of state.devices.values()) {
    counts[d.domain] = (counts[d.domain] ?? 0) + 1;
    if (d.feature) mapped++;
  }
  const fmt = new Intl.NumberFormat(locale(state.lang));
  for (const li of $('domains').children) {
    li.querySelector('.name').textContent = pick(DOMAIN_LABELS[li.dataset.domain], state.lang, li.dataset.domain);
    li.querySelector('.count').textContent = fmt.format(counts[li.dataset.domain] ?? 0);
  }
  $('device-total').textContent = fmt.format(state.devices.size);
  $('device-mapped').textContent = fmt.format(mapped);
  $('rate').textContent = new Intl.NumberFormat(locale(state.lang), { maximumFractionDigits: state.rate < 10 ? 1 : 0 }).format(state.rate);
  $('last-update').textContent = state.lastUpdate ? formatClock(state.lastUpdate) : t(state.lang, 'never');
}

const formatClock = (ms) => new Date(ms).toLocaleTimeString(locale(state.lang), { hour12: false });

/** Once a second: readings per second, ages in the popup. */
let lastTick = performance.now();
function tick() {
  const now = performance.now();
  const elapsed = (now - lastTick) / 1000;
  lastTick = now;
  state.rate = elapsed > 0 ? state.readingsSinceTick / elapsed : 0;
  state.readingsSinceTick = 0;
  render.panelDirty = true;
  schedule();
}

function showError(err, what = 'loadFailed') {
  if (err?.message === 'unauthorized' || err?.message === 'stale') return;
  console.error(err);
  const el = $('error');
  el.textContent = `${t(state.lang, what)}: ${err?.message ?? err}`;
  el.hidden = false;
}

/* ------------------------------------------------------------------ alarms */

/** Reads every open alarm; events received meanwhile are newer and win. */
async function loadAlarms() {
  const sync = { touched: new Set() };
  state.alarmSync = sync;
  const items = [];
  let cursor = null;
  try {
    for (let page = 0; page < ALARM_PAGES_MAX; page++) {
      const body = await api(`/api/v1/alarms?status=open&limit=${ALARM_PAGE}${cursor ? `&cursor=${cursor}` : ''}`);
      items.push(...body.items);
      cursor = body.nextCursor;
      if (cursor === null) break;
    }
  } catch (err) {
    if (state.alarmSync === sync) state.alarmSync = null;
    throw err;
  }
  if (state.alarmSync !== sync) return; // a newer read (reconnection) started: it decides
  state.alarmSync = null;
  const fresh = new Set(items.map((a) => a.id));
  for (const id of [...state.alarms.keys()]) if (!fresh.has(id) && !sync.touched.has(id)) removeAlarm(id);
  for (const a of items) if (!sync.touched.has(a.id)) putAlarm(a);
  state.alarmsLoaded = true;
  alarmsChanged();
}

/** An `alarm` event `{kind, alarm}`: raised ones are added, acknowledged ones marked, cleared ones removed. */
function applyAlarm(change) {
  const a = change?.alarm;
  if (!a || typeof a.id !== 'number' || typeof a.device?.id !== 'number' || !(a.status in STATUS_RANK)) return;
  state.alarmSync?.touched.add(a.id);
  if (a.status === 'cleared') removeAlarm(a.id);
  else putAlarm(a);
  alarmsChanged();
}

function putAlarm(a) {
  const cur = state.alarms.get(a.id);
  if (cur && STATUS_RANK[cur.status] > STATUS_RANK[a.status]) return; // an older picture of it
  state.alarms.set(a.id, a);
  let ids = state.alarmsByDevice.get(a.device.id);
  if (!ids) state.alarmsByDevice.set(a.device.id, (ids = new Set()));
  ids.add(a.id);
  touchDevice(a.device.id);
}

function removeAlarm(id) {
  const a = state.alarms.get(id);
  if (!a) return;
  state.alarms.delete(id);
  alarmElements.delete(id);
  const ids = state.alarmsByDevice.get(a.device.id);
  ids?.delete(id);
  if (ids?.size === 0) state.alarmsByDevice.delete(a.device.id);
  touchDevice(a.device.id);
}

function touchDevice(id) {
  const d = state.devices.get(id);
  if (d) refreshFeatureProps(d);
  render.dirty = true;
}

function alarmsChanged() {
  render.alarmsDirty = true;
  schedule();
}

const compareAlarms = (a, b) =>
  SEVERITIES.indexOf(a.severity) - SEVERITIES.indexOf(b.severity) || STATUS_RANK[a.status] - STATUS_RANK[b.status] || Date.parse(b.raisedAt) - Date.parse(a.raisedAt) || b.id - a.id;

/** The device's open alarms, worst first. */
const deviceAlarms = (id) => [...(state.alarmsByDevice.get(id) ?? [])].map((x) => state.alarms.get(x)).sort(compareAlarms);

/** The alarm its ring shows: the worst, raised before acknowledged. */
const deviceAlarm = (id) => (state.alarmsByDevice.has(id) ? deviceAlarms(id)[0] : undefined);

function updateAlarmList() {
  render.alarmsDirty = false;
  const all = [...state.alarms.values()].sort(compareAlarms);
  const shown = all.slice(0, ALARMS_SHOWN);
  const items = shown.map(alarmElement);
  const list = $('alarms');
  const same = list.children.length === items.length && items.every((li, i) => list.children[i] === li);
  if (!same) list.replaceChildren(...items);
  const fmt = new Intl.NumberFormat(locale(state.lang));
  $('alarm-count').textContent = fmt.format(all.length);
  $('alarm-count').dataset.count = String(all.length);
  $('alarms-empty').hidden = all.length > 0 || !state.alarmsLoaded;
  $('alarms-more').hidden = all.length <= shown.length;
  $('alarms-more').textContent = t(state.lang, 'moreAlarms', fmt.format(all.length - shown.length));
}

/** The list entry of an alarm, rebuilt only when what it shows changed. */
function alarmElement(a) {
  let entry = alarmElements.get(a.id);
  if (!entry) {
    const li = document.createElement('li');
    li.className = 'alarm';
    li.dataset.alarmId = String(a.id);
    entry = { li, html: '' };
    alarmElements.set(a.id, entry);
  }
  const html = alarmHtml(a);
  if (html !== entry.html) {
    entry.html = html;
    entry.li.innerHTML = html;
    entry.li.dataset.status = a.status;
    entry.li.dataset.severity = a.severity;
    entry.li.style.setProperty('--severity', SEVERITY_COLORS[a.severity]);
  }
  return entry.li;
}

function alarmHtml(a) {
  const lang = state.lang;
  const status = a.status === 'acknowledged' ? (a.acknowledgedBy ? t(lang, 'acknowledgedBy', a.acknowledgedBy) : t(lang, 'acknowledged')) : t(lang, 'raised');
  const ack = a.status === 'raised' && state.canAck ? `<button type="button" class="ack"${state.acking.has(a.id) ? ' disabled' : ''}>${esc(t(lang, 'acknowledge'))}</button>` : '';
  return `<button type="button" class="show" title="${esc(t(lang, 'showDevice'))}">
<span class="line"><span class="severity">${esc(t(lang, `severity_${a.severity}`))}</span> <span class="device">${esc(a.device.name)}</span></span>
<span class="rule">${esc(a.ruleName)} · ${esc(alarmCondition(a))}</span>
<span class="when"><time datetime="${esc(a.raisedAt)}">${esc(formatWhen(Date.parse(a.raisedAt)))}</time> · <span class="ack-state">${esc(status)}</span></span>
</button>${ack}`;
}

/** "Water level 4.05 m > 3.8 m" / "Firmware state "FAILED" == "FAILED"" / "left geofence drone-corridors". */
function alarmCondition(a) {
  if (a.kind === 'geofence_exit') return t(state.lang, 'leftGeofence', a.geofence ?? '');
  const spec = state.types.get(a.device.type)?.keys?.[a.key];
  const label = pick(spec?.label, state.lang, a.key ?? '');
  // Match alarms' values may be strings or booleans, shown as JSON.
  const show = (v) => (typeof v === 'number' ? formatValue(v, spec?.unit) : JSON.stringify(v));
  const value = a.value === null ? '' : ` ${show(a.value)}`;
  const against = a.threshold ?? a.matchValue ?? null;
  const threshold = against === null ? '' : ` ${a.operator ?? ''} ${show(against)}`;
  return `${label}${value}${threshold}`;
}

/** Clock time today, else date and time. */
function formatWhen(ms) {
  const d = new Date(ms);
  const today = new Date().toDateString() === d.toDateString();
  return today ? formatClock(ms) : d.toLocaleString(locale(state.lang), { month: 'numeric', day: 'numeric', hour: '2-digit', minute: '2-digit', hour12: false });
}

function onAlarmListClick(event) {
  const li = event.target.closest('li.alarm');
  const button = event.target.closest('button');
  if (!li || !button) return;
  const a = state.alarms.get(Number(li.dataset.alarmId));
  if (!a) return;
  if (button.classList.contains('ack')) void acknowledge(a.id);
  else showDevice(a.device.id, a.position ? [a.position.lng, a.position.lat] : null);
}

/** Flies to the device (turning its domain on if hidden) and opens its popup. */
function showDevice(id, fallback) {
  const d = state.devices.get(id);
  const at = d?.shown ?? fallback;
  if (!at || !map) return;
  if (d && !state.enabled.has(d.domain)) toggleDomain(d.domain, true);
  map.flyTo({ center: at, zoom: Math.max(map.getZoom(), FLY_ZOOM), essential: true });
  if (d?.shown) openPopup(id);
}

async function acknowledge(id) {
  if (state.acking.has(id)) return;
  state.acking.add(id);
  alarmsChanged();
  const by = $('operator').value.trim() || t(state.lang, 'operatorDefault');
  try {
    const alarm = await api(`/api/v1/alarms/${id}/ack`, { method: 'POST', body: { by } });
    applyAlarm({ kind: 'acknowledged', alarm });
  } catch (err) {
    if (err.status === 409) {
      // Acknowledged or cleared meanwhile: show what it is now.
      const alarm = await api(`/api/v1/alarms/${id}`).catch(() => null);
      if (alarm) applyAlarm({ kind: alarm.status, alarm });
    } else if (err.status === 404) {
      removeAlarm(id);
    } else showError(err, 'ackFailed');
  } finally {
    state.acking.delete(id);
    alarmsChanged();
  }
}

/* ------------------------------------------------------------------ geofences */

async function loadGeofences() {
  state.geofencesReloadAt = Date.now();
  const fc = await api('/api/v1/geofences');
  state.geofences = fc;
  state.geofenceIds = new Set(fc.features.map((f) => f.id));
  state.geofencesLoaded = true;
  map?.getSource('geofences')?.setData(fc);
  buildGeofenceLabels();
  $('geofence-count').textContent = new Intl.NumberFormat(locale(state.lang)).format(fc.features.length);
}

/** A fence we do not know (created since the page loaded): read the fences again, at most every GEOFENCE_RELOAD_MS. */
function reloadGeofencesSoon() {
  if (state.geofencesReloadTimer) return;
  const wait = Math.max(0, state.geofencesReloadAt + GEOFENCE_RELOAD_MS - Date.now());
  state.geofencesReloadTimer = setTimeout(() => {
    state.geofencesReloadTimer = null;
    loadGeofences().catch(showError);
  }, wait);
}

function setGeofencesShown(on) {
  state.showGeofences = on;
  storageSet(STORE.geofences, on ? null : 'false');
  for (const id of ['geofence-fill', 'geofence-outline']) if (map?.getLayer(id)) map.setLayoutProperty(id, 'visibility', on ? 'visible' : 'none');
  updateGeofenceLabels();
}

/** One name label per fence (DOM: the offline style has no glyphs for map text; fences are few). */
function buildGeofenceLabels() {
  for (const m of geofenceLabels) m.remove();
  geofenceLabels = [];
  if (!map) return;
  for (const f of state.geofences.features) {
    const at = labelPoint(f.geometry);
    if (!at) continue;
    const el = document.createElement('div');
    el.className = 'geofence-label';
    el.textContent = f.properties.name;
    el.dataset.geofenceId = String(f.id);
    el.dataset.domain = f.properties.domain;
    el.style.setProperty('--domain', DOMAIN_COLORS[f.properties.domain] ?? DOMAIN_COLORS.generic);
    geofenceLabels.push(new maplibregl.Marker({ element: el, anchor: 'center' }).setLngLat(at).addTo(map));
  }
  updateGeofenceLabels();
}

function updateGeofenceLabels() {
  for (const m of geofenceLabels) {
    const el = m.getElement();
    el.hidden = !state.showGeofences || !state.enabled.has(el.dataset.domain);
  }
}

/**
 * A point inside the fence's largest polygon for its label: the centroid of the outer ring when it
 * is inside, else the middle of the widest inside stretch of the horizontal line through it.
 */
function labelPoint(geometry) {
  const polygons = geometry?.type === 'Polygon' ? [geometry.coordinates] : geometry?.type === 'MultiPolygon' ? geometry.coordinates : [];
  let best = null;
  let bestArea = 0;
  for (const p of polygons) {
    const area = Math.abs(ringArea(p[0] ?? []));
    if (area > bestArea) [best, bestArea] = [p, area];
  }
  if (!best) return null;
  const c = ringCentroid(best[0]);
  if (insidePolygon(c, best)) return c;
  const xs = [];
  for (const ring of best) {
    for (let i = 0, j = ring.length - 1; i < ring.length; j = i++) {
      const [x1, y1] = ring[j];
      const [x2, y2] = ring[i];
      if (y1 > c[1] !== y2 > c[1]) xs.push(x1 + ((c[1] - y1) / (y2 - y1)) * (x2 - x1));
    }
  }
  xs.sort((a, b) => a - b);
  let wide = null;
  for (let i = 0; i + 1 < xs.length; i += 2) if (!wide || xs[i + 1] - xs[i] > wide[1] - wide[0]) wide = [xs[i], xs[i + 1]];
  return wide ? [(wide[0] + wide[1]) / 2, c[1]] : best[0][0];
}

function ringArea(ring) {
  let a = 0;
  for (let i = 0, j = ring.length - 1; i < ring.length; j = i++) a += ring[j][0] * ring[i][1] - ring[i][0] * ring[j][1];
  return a / 2;
}

function ringCentroid(ring) {
  const a = ringArea(ring);
  if (a === 0) return ring[0];
  let x = 0;
  let y = 0;
  for (let i = 0, j = ring.length - 1; i < ring.length; j = i++) {
    const f = ring[j][0] * ring[i][1] - ring[i][0] * ring[j][1];
    x += (ring[j][0] + ring[i][0]) * f;
    y += (ring[j][1] + ring[i][1]) * f;
  }
  return [x / (6 * a), y / (6 * a)];
}

/** Even-odd test over every ring (outer and holes). */
function insidePolygon([x, y], rings) {
  let inside = false;
  for (const ring of rings) {
    for (let i = 0, j = ring.length - 1; i < ring.length; j = i++) {
      const [xi, yi] = ring[i];
      const [xj, yj] = ring[j];
      if (yi > y !== yj > y && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) inside = !inside;
    }
  }
  return inside;
}

function openGeofencePopup(rendered, lngLat) {
  const f = state.geofences.features.find((x) => x.id === rendered.id);
  if (!f) return;
  const lang = state.lang;
  const p = f.properties;
  const types = p.deviceTypes ?? [];
  const domain = pick(DOMAIN_LABELS[p.domain], lang, p.domain);
  const watched = types.length ? types.map((ty) => pick(state.types.get(ty)?.label, lang, ty)).join(', ') : t(lang, 'allMovingTypes', domain);
  const dwell = p.dwellSeconds === null || p.dwellSeconds === undefined ? t(lang, 'noDwell') : t(lang, 'dwellSeconds', p.dwellSeconds);
  const row = (label, value) => `<tr><th>${esc(label)}</th><td>${esc(value)}</td></tr>`;
  popup?.remove();
  const thisPopup = new maplibregl.Popup({ closeButton: true, closeOnClick: true, maxWidth: 'none', offset: 4 })
    .setLngLat(lngLat)
    .setHTML(
      `<div class="geofence-popup" data-geofence-id="${esc(f.id)}"><h3>${esc(p.name)}</h3><table>${row(t(lang, 'domain'), domain)}${row(t(lang, 'watchedTypes'), watched)}${row(t(lang, 'dwellAfter'), dwell)}</table></div>`,
    )
    .addTo(map);
  thisPopup.on('close', () => {
    if (popup === thisPopup) popup = null;
  });
  popup = thisPopup;
  popupDeviceId = null;
}

/** A `geofence` event: a pulse where it happened and a line in the log. */
function applyGeofenceEvent(e) {
  if (!e || typeof e.deviceId !== 'number' || !(e.kind in EVENT_COLORS)) return;
  state.geofenceEvents.unshift(e);
  if (state.geofenceEvents.length > EVENT_LOG_SIZE) state.geofenceEvents.length = EVENT_LOG_SIZE;
  render.eventsDirty = true;
  if (!state.geofenceIds.has(e.geofenceId)) reloadGeofencesSoon();
  if (Number.isFinite(e.lng) && Number.isFinite(e.lat) && state.enabled.has(e.domain)) {
    render.pulses.push({ at: [e.lng, e.lat], kind: e.kind, start: performance.now() });
    if (render.pulses.length > MAX_PULSES) render.pulses.splice(0, render.pulses.length - MAX_PULSES);
  }
  schedule();
}

function pushPulses(now) {
  render.pulses = render.pulses.filter((p) => now - p.start < PULSE_MS);
  const source = map?.getSource('geofence-pulses');
  if (!source || render.pulsesInFlight) return;
  const features = render.pulses.map((p) => ({ type: 'Feature', geometry: { type: 'Point', coordinates: p.at }, properties: { kind: p.kind, p: (now - p.start) / PULSE_MS } }));
  render.pulsesShown = features.length > 0;
  render.pulsesInFlight = true;
  Promise.resolve(source.setData({ type: 'FeatureCollection', features }))
    .catch(() => {})
    .finally(() => {
      render.pulsesInFlight = false;
    });
}

function updateEventLog() {
  render.eventsDirty = false;
  const lang = state.lang;
  $('geofence-events').innerHTML = state.geofenceEvents
    .map(
      (e) =>
        `<li data-kind="${esc(e.kind)}"><button type="button" data-event-id="${esc(e.id)}" title="${esc(t(lang, 'showDevice'))}"><time datetime="${esc(e.ts)}">${esc(formatWhen(Date.parse(e.ts)))}</time> <span class="device">${esc(e.deviceName)}</span> <span class="kind">${esc(t(lang, `event_${e.kind}`))}</span> <span class="fence">${esc(e.geofenceName)}</span></button></li>`,
    )
    .join('');
  $('geofence-events-empty').hidden = state.geofenceEvents.length > 0;
}

function onEventLogClick(event) {
  const button = event.target.closest('button[data-event-id]');
  const e = button && state.geofenceEvents.find((x) => String(x.id) === button.dataset.eventId);
  if (e) showDevice(e.deviceId, [e.lng, e.lat]);
}

/* ------------------------------------------------------------------ popup */

function openPopup(id) {
  const d = state.devices.get(id);
  if (!d?.shown) return;
  popup?.remove();
  popupDeviceId = id;
  popupHtmlCache = popupHtml(d);
  const thisPopup = new maplibregl.Popup({ closeButton: true, closeOnClick: true, maxWidth: 'none', offset: 12 })
    .setLngLat(d.shown)
    .setHTML(popupHtmlCache)
    .addTo(map);
  thisPopup.on('close', () => {
    if (popup !== thisPopup) return;
    popup = null;
    popupDeviceId = null;
  });
  popup = thisPopup;
}

function updatePopup() {
  if (!popup || popupDeviceId === null) return;
  const d = state.devices.get(popupDeviceId);
  if (!d?.shown) return;
  popup.setLngLat(d.shown);
  const html = popupHtml(d);
  if (html !== popupHtmlCache) {
    popupHtmlCache = html;
    popup.setHTML(html);
  }
}

function popupHtml(d) {
  const lang = state.lang;
  const type = state.types.get(d.type);
  const row = (label, value, age = '') => `<tr><th>${esc(label)}</th><td>${esc(value)}</td><td class="age">${esc(age)}</td></tr>`;
  const values = orderedKeys(d, type).map((key) => {
    const spec = type?.keys?.[key];
    const v = d.values[key];
    return row(pick(spec?.label, lang, key), formatValue(v.value, spec?.unit), formatAge(lang, Date.now() - v.ts));
  });
  return `<div class="device-popup" data-device-id="${d.id}">
<h3>${esc(d.name)}</h3>
<table>
${row(t(lang, 'type'), pick(type?.label, lang, d.type))}
${d.online === null ? '' : row(t(lang, 'status'), t(lang, d.online ? 'online' : 'offline'))}
<tr><th>${esc(t(lang, 'domain'))}</th><td><span class="swatch" style="background:${DOMAIN_COLORS[d.domain] ?? DOMAIN_COLORS.generic}"></span> ${esc(pick(DOMAIN_LABELS[d.domain], lang, d.domain))}</td><td></td></tr>
${deviceAlarms(d.id).map((a) => `<tr class="alarm-row" data-severity="${a.severity}"><th>${esc(t(lang, 'alarm'))}</th><td>${esc(`${t(lang, `severity_${a.severity}`)} · ${a.ruleName}`)}</td><td class="age">${esc(t(lang, a.status))}</td></tr>`).join('\n')}
${values.join('\n') || `<tr><td colspan="3" class="empty">${esc(t(lang, 'noValues'))}</td></tr>`}
${row(t(lang, 'position'), formatPosition(d.pos), d.pos?.ts ? formatAge(lang, Date.now() - d.pos.ts) : '')}
</table>
</div>`;
}

/** The type's declared keys first (in their order), then any others alphabetically. */
function orderedKeys(d, type) {
  const declared = Object.keys(type?.keys ?? {});
  const present = Object.keys(d.values);
  return [...declared.filter((k) => k in d.values), ...present.filter((k) => !declared.includes(k)).sort()];
}

function formatValue(value, unit) {
  const n = new Intl.NumberFormat(locale(state.lang), { maximumFractionDigits: 2 }).format(value);
  if (!unit) return n;
  return /^[°%]$/.test(unit) ? `${n}${unit}` : `${n} ${unit}`;
}

function formatPosition(pos) {
  if (!pos) return t(state.lang, 'unknownPosition');
  const alt = pos.alt === null || pos.alt === undefined ? '' : ` · ${t(state.lang, 'altitude')} ${formatValue(pos.alt, 'm')}`;
  return `${pos.lat.toFixed(5)}, ${pos.lng.toFixed(5)}${alt}`;
}

const esc = (s) =>
  String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);

/* ------------------------------------------------------------------ language */

function setLang(lang) {
  state.lang = lang;
  storageSet(STORE.lang, lang);
  applyLang();
}

function applyLang() {
  const lang = state.lang;
  document.documentElement.lang = lang === 'zh' ? 'zh-CN' : 'en';
  document.title = t(lang, 'title');
  for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = t(lang, el.dataset.i18n);
  const button = $('lang');
  button.textContent = t(lang, 'switchLang');
  button.title = t(lang, 'switchLangTitle');
  $('login-key').placeholder = 'glk_…';
  renderLoginMessage();
  if (state.principal) $('principal-scope').textContent = scopeSummary(state.principal.scope ?? {});
  $('operator').placeholder = t(lang, 'operatorDefault');
  $('geofence-toggle').title = t(lang, 'showGeofences');
  setConnection(state.connection);
  updatePanel();
  alarmElements.clear(); // their text is in the old language
  render.alarmsDirty = true;
  render.eventsDirty = true;
  popupHtmlCache = '';
  schedule();
}

/* ------------------------------------------------------------------ start */

/** For tests and debugging from the console. */
function exposeForTests() {
  window.guanlinkMap = {
    get map() {
      return map;
    },
    state,
    /** Map drawn, snapshot applied, live stream connected. */
    ready: () =>
      state.mapLoaded && state.snapshotLoaded && state.alarmsLoaded && state.geofencesLoaded && state.connection === 'connected' && Boolean(map?.getLayer('devices')),
    /** Who the server says is signed in (its `hello`), or null. */
    principal: () => state.principal,
    /** Where the device is drawn now (null if not on the map). */
    shown: (id) => state.devices.get(id)?.shown ?? null,
    /** The device's rendered feature as MapLibre sees it (null if not rendered). */
    rendered(id) {
      const f = map?.queryRenderedFeatures({ layers: ['devices'] }).find((x) => x.properties.id === id);
      return f ? { lng: f.geometry.coordinates[0], lat: f.geometry.coordinates[1], domain: f.properties.domain, online: f.properties.online } : null;
    },
    /** The alarm ring drawn around the device (null if none): its severity and whether acknowledged. */
    alarmRing(id) {
      const f = map?.queryRenderedFeatures({ layers: ['device-alarms'] }).find((x) => x.properties.id === id);
      return f ? { severity: SEVERITIES[f.properties.alarm], acked: f.properties.acked } : null;
    },
    /** Names of the geofences drawn in the view (fill layer). */
    renderedGeofences: () => [...new Set(map?.queryRenderedFeatures({ layers: ['geofence-fill'] }).map((f) => f.properties.name) ?? [])],
    /** Pulses of geofence events on the map now. */
    pulses: () => render.pulses.map((p) => ({ kind: p.kind, lng: p.at[0], lat: p.at[1] })),
    openPopup,
    setLang,
  };
}

async function main() {
  takeKeyFromLink();
  exposeForTests();
  $('lang').addEventListener('click', () => setLang(state.lang === 'zh' ? 'en' : 'zh'));
  $('login-form').addEventListener('submit', onLoginSubmit);
  $('alarms').addEventListener('click', onAlarmListClick);
  $('geofence-events').addEventListener('click', onEventLogClick);
  $('operator').value = storageGet(STORE.operator) ?? '';
  $('operator').addEventListener('change', () => storageSet(STORE.operator, $('operator').value.trim() || null));
  $('geofence-toggle').checked = state.showGeofences;
  $('geofence-toggle').addEventListener('change', () => setGeofencesShown($('geofence-toggle').checked));
  const authConfig = loadAuthConfig();
  const config = await loadMapConfig();
  DOMAINS = config.domains.map((d) => d.name);
  for (const d of config.domains) DOMAIN_LABELS[d.name] = d.label;
  state.enabled = new Set(DOMAINS);
  buildDomainList();
  applyLang();
  setInterval(tick, 1000);
  createMap(config.styleUrl ?? null);

  $('sign-out').addEventListener('click', () => signOut('signedOut'));
  $('oidc-button').addEventListener('click', () => void startOidcSignIn());
  setPrincipal(null);
  state.oidc = await authConfig;
  renderLoginMessage();

  let credential;
  try {
    credential = (await finishOidcSignIn()) ?? sessionGet(SESSION.credential);
  } catch (err) {
    setConnection('unauthorized');
    showLogin('oidcFailed', err?.message ?? String(err));
    return;
  }
  if (!credential) {
    setConnection('unauthorized');
    showLogin();
    return;
  }
  signIn(credential);
}

void main();
