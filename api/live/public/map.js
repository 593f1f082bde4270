// GuanLink (莞联) live operations map. Plain browser ES module, no build step, no network beyond
// this server. Globals from the classic scripts in index.html: `maplibregl` and `io` (socket.io).
//
// Data flow: GET /api/v1/device-types (labels, units) → socket.io `subscribe` to every domain →
// `snapshot` (latest positions and values) → `readings` batches merged by timestamp into
// `state.devices` → one GeoJSON `setData` per animation frame at most (and never while the
// previous one is still being processed by MapLibre's worker), drawn by one circle layer.
// `connectivity` events (and the snapshot's `online`) dim the devices that are offline.

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
const STORE = { key: 'guanlink.adminKey', lang: 'guanlink.lang', hidden: 'guanlink.hiddenDomains' };

const $ = (id) => document.getElementById(id);

const state = {
  lang: storageGet(STORE.lang) ?? defaultLang(),
  key: null,
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
};

const render = { frame: 0, dirty: false, inFlight: false, panelDirty: true, animating: new Set() };
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

/** The admin key from `#key=…` (then removed from the address bar), else from localStorage. */
function readKey() {
  const match = location.hash.match(/(?:^#|&)key=([^&]+)/);
  if (match) {
    const key = decodeURIComponent(match[1]);
    storageSet(STORE.key, key);
    history.replaceState(null, '', location.pathname + location.search);
    return key;
  }
  return storageGet(STORE.key);
}

function showLogin(refused) {
  $('login').hidden = false;
  $('login-error').hidden = !refused;
  $('login-key').focus();
}

function onLoginSubmit(event) {
  event.preventDefault();
  const key = $('login-key').value.trim();
  if (!key) return;
  storageSet(STORE.key, key);
  location.reload();
}

function onUnauthorized() {
  storageSet(STORE.key, null);
  setConnection('unauthorized');
  socket?.disconnect();
  showLogin(true);
}

async function api(path) {
  const res = await fetch(path, { headers: { authorization: `Bearer ${state.key}` } });
  if (res.status === 401) {
    onUnauthorized();
    throw new Error('unauthorized');
  }
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return res.json();
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
  if (d.feature) d.feature.properties = { id: d.id, domain: d.domain, moving: isMoving(d), online: d.online !== false };
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
  socket = io({ auth: { token: state.key }, transports: ['websocket'] });
  socket.on('connect', () => {
    setConnection('connected');
    for (const domain of DOMAINS) socket.emit('subscribe', { domain }, () => {});
    socket.emit('snapshot', null, applySnapshot);
  });
  socket.on('disconnect', (reason) => {
    if (state.connection === 'unauthorized') return;
    setConnection('reconnecting');
    if (reason === 'io server disconnect') socket.connect();
  });
  socket.on('connect_error', (err) => {
    if (/^unauthorized/i.test(err?.message ?? '')) onUnauthorized();
    else setConnection('reconnecting');
  });
  socket.on('readings', applyReadings);
  socket.on('device', applyNewDevice);
  socket.on('connectivity', applyConnectivity);
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
  if (!map.getSource('devices')) {
    map.addSource('devices', { type: 'geojson', data: featureCollection() });
    map.addLayer({ id: 'devices', type: 'circle', source: 'devices', filter: domainFilter(), paint: devicePaint() });
  }
}

function devicePaint() {
  const colors = DOMAINS.flatMap((d) => [d, DOMAIN_COLORS[d]]);
  return {
    'circle-radius': ['interpolate', ['linear'], ['zoom'], 8, ['case', ['get', 'moving'], 5, 4], 12, ['case', ['get', 'moving'], 9, 8], 16, 12],
    'circle-color': ['match', ['get', 'domain'], ...colors, DOMAIN_COLORS.generic],
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
  updatePopup();
  if (render.animating.size > 0 || render.dirty) schedule();
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

function buildDomainList() {
  const hidden = (storageGet(STORE.hidden) ?? '').split(',').filter(Boolean);
  for (const h of hidden) state.enabled.delete(h);
  $('domains').replaceChildren(...DOMAINS.map(domainItem));
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
  if (map?.getLayer('devices')) map.setFilter('devices', domainFilter());
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

function showError(err) {
  if (err?.message === 'unauthorized') return;
  console.error(err);
  const el = $('error');
  el.textContent = `${t(state.lang, 'loadFailed')}: ${err?.message ?? err}`;
  el.hidden = false;
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
  $('login-key').placeholder = t(lang, 'loginTitle');
  setConnection(state.connection);
  updatePanel();
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
    ready: () => state.mapLoaded && state.snapshotLoaded && state.connection === 'connected' && Boolean(map?.getLayer('devices')),
    /** Where the device is drawn now (null if not on the map). */
    shown: (id) => state.devices.get(id)?.shown ?? null,
    /** The device's rendered feature as MapLibre sees it (null if not rendered). */
    rendered(id) {
      const f = map?.queryRenderedFeatures({ layers: ['devices'] }).find((x) => x.properties.id === id);
      return f ? { lng: f.geometry.coordinates[0], lat: f.geometry.coordinates[1], domain: f.properties.domain, online: f.properties.online } : null;
    },
    openPopup,
    setLang,
  };
}

async function main() {
  exposeForTests();
  $('lang').addEventListener('click', () => setLang(state.lang === 'zh' ? 'en' : 'zh'));
  $('login-form').addEventListener('submit', onLoginSubmit);
  const config = await loadMapConfig();
  DOMAINS = config.domains.map((d) => d.name);
  for (const d of config.domains) DOMAIN_LABELS[d.name] = d.label;
  state.enabled = new Set(DOMAINS);
  buildDomainList();
  applyLang();
  setInterval(tick, 1000);
  createMap(config.styleUrl ?? null);

  state.key = readKey();
  if (!state.key) {
    showLogin(false);
    return;
  }
  loadTypes().catch(showError);
  connectLive();
}

void main();
