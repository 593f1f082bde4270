// UI strings of the live map in both languages. Device-type and telemetry-key labels are not
// here: they come from GET /api/v1/device-types.

export const LANGS = ['zh', 'en'];

export const STRINGS = {
  en: {
    title: 'GuanLink · Live operations',
    switchLang: '中文',
    switchLangTitle: 'Switch language',
    connecting: 'Connecting…',
    connected: 'Connected',
    reconnecting: 'Reconnecting…',
    unauthorized: 'Not signed in',
    domains: 'Domains',
    devices: 'Devices',
    onMap: 'on map',
    readingsPerSecond: 'Readings / second',
    lastUpdate: 'Last update',
    never: '—',
    type: 'Type',
    domain: 'Domain',
    position: 'Position',
    altitude: 'alt.',
    unknownPosition: 'unknown',
    noValues: 'No readings yet',
    status: 'Status',
    online: 'Online',
    offline: 'Offline',
    loginTitle: 'Sign in',
    loginHelp: 'Paste your GuanLink API key (glk_…). Administrators: the admin key is in the file admin-key of the data directory.',
    loginSubmit: 'Sign in',
    loginOr: 'or',
    oidcSignIn: (host) => `Sign in with ${host}`,
    signInRefused: 'The credential was refused:',
    accessEnded: 'Your access ended:',
    signedOut: 'You signed out.',
    oidcFailed: 'Signing in through the identity provider failed:',
    oidcNeedsHttps: 'Signing in through the identity provider needs HTTPS (or localhost).',
    signedInAs: 'Signed in as',
    signOut: 'Sign out',
    roles: 'Roles',
    scope: 'Scope',
    scopeEverything: 'everything',
    scopeTowns: (list) => `towns: ${list}`,
    scopeArea: 'an area',
    loadFailed: 'Could not load data from the server',
    justNow: 'just now',
    secondsAgo: (n) => `${n} s ago`,
    minutesAgo: (n) => `${n} min ago`,
    hoursAgo: (n) => `${n} h ago`,
    daysAgo: (n) => `${n} d ago`,
    alarms: 'Open alarms',
    noOpenAlarms: 'No open alarms',
    moreAlarms: (n) => `and ${n} more`,
    severity_critical: 'Critical',
    severity_major: 'Major',
    severity_minor: 'Minor',
    severity_warning: 'Warning',
    raised: 'Raised',
    acknowledged: 'Acknowledged',
    acknowledgedBy: (who) => `Acknowledged by ${who}`,
    acknowledge: 'Acknowledge',
    acknowledgeAs: 'Acknowledge as',
    operatorDefault: 'operator',
    ackFailed: 'Could not acknowledge the alarm',
    showDevice: 'Show the device on the map',
    leftGeofence: (name) => `left geofence ${name}`,
    alarm: 'Alarm',
    geofences: 'Geofences',
    showGeofences: 'Show geofences',
    geofenceEvents: 'Geofence events',
    noGeofenceEvents: 'None since the page opened',
    event_enter: 'entered',
    event_exit: 'left',
    event_dwell: 'dwelling in',
    watchedTypes: 'Watched types',
    allMovingTypes: (domain) => `every moving type of ${domain}`,
    dwellAfter: 'Dwell event after',
    noDwell: 'none',
    dwellSeconds: (n) => (n % 3600 === 0 ? `${n / 3600} h` : n % 60 === 0 ? `${n / 60} min` : `${n} s`),
  },
  zh: {
    title: '莞联 · 实时运行监控',
    switchLang: 'English',
    switchLangTitle: '切换语言',
    connecting: '正在连接…',
    connected: '已连接',
    reconnecting: '正在重连…',
    unauthorized: '未登录',
    domains: '业务领域',
    devices: '设备',
    onMap: '在图',
    readingsPerSecond: '每秒读数',
    lastUpdate: '最近更新',
    never: '—',
    type: '类型',
    domain: '领域',
    position: '位置',
    altitude: '高度',
    unknownPosition: '未知',
    noValues: '暂无读数',
    status: '状态',
    online: '在线',
    offline: '离线',
    loginTitle: '登录',
    loginHelp: '请粘贴您的莞联 API 密钥（glk_…）。管理员：管理员密钥保存在数据目录的 admin-key 文件中。',
    loginSubmit: '登录',
    loginOr: '或',
    oidcSignIn: (host) => `通过 ${host} 登录`,
    signInRefused: '凭据被拒绝：',
    accessEnded: '您的访问权限已终止：',
    signedOut: '您已退出登录。',
    oidcFailed: '通过身份提供方登录失败：',
    oidcNeedsHttps: '通过身份提供方登录需要 HTTPS（或 localhost）。',
    signedInAs: '当前用户',
    signOut: '退出登录',
    roles: '角色',
    scope: '权限范围',
    scopeEverything: '全部',
    scopeTowns: (list) => `镇街：${list}`,
    scopeArea: '指定区域',
    loadFailed: '无法从服务器加载数据',
    justNow: '刚刚',
    secondsAgo: (n) => `${n} 秒前`,
    minutesAgo: (n) => `${n} 分钟前`,
    hoursAgo: (n) => `${n} 小时前`,
    daysAgo: (n) => `${n} 天前`,
    alarms: '未处理告警',
    noOpenAlarms: '暂无未处理告警',
    moreAlarms: (n) => `另有 ${n} 条`,
    severity_critical: '紧急',
    severity_major: '重要',
    severity_minor: '次要',
    severity_warning: '提示',
    raised: '已触发',
    acknowledged: '已确认',
    acknowledgedBy: (who) => `已由 ${who} 确认`,
    acknowledge: '确认',
    acknowledgeAs: '确认人',
    operatorDefault: '值班员',
    ackFailed: '无法确认告警',
    showDevice: '在地图上显示该设备',
    leftGeofence: (name) => `离开电子围栏 ${name}`,
    alarm: '告警',
    geofences: '电子围栏',
    showGeofences: '显示电子围栏',
    geofenceEvents: '围栏事件',
    noGeofenceEvents: '打开页面以来暂无事件',
    event_enter: '进入',
    event_exit: '离开',
    event_dwell: '停留于',
    watchedTypes: '监控设备类型',
    allMovingTypes: (domain) => `${domain}的全部移动设备类型`,
    dwellAfter: '停留事件时长',
    noDwell: '无',
    dwellSeconds: (n) => (n % 3600 === 0 ? `${n / 3600} 小时` : n % 60 === 0 ? `${n / 60} 分钟` : `${n} 秒`),
  },
};

/** Domain names in both languages, filled from /map-config.json at start. */
export const DOMAIN_LABELS = {};

/** The browser's preferred language, reduced to one we have. */
export function defaultLang() {
  const prefs = navigator.languages?.length ? navigator.languages : [navigator.language ?? 'en'];
  for (const p of prefs) {
    const base = String(p).toLowerCase().split('-')[0];
    if (LANGS.includes(base)) return base;
  }
  return 'en';
}

/** The UI string `key` in `lang`; functions are called with `args`. */
export function t(lang, key, ...args) {
  const s = STRINGS[lang]?.[key] ?? STRINGS.en[key] ?? key;
  return typeof s === 'function' ? s(...args) : s;
}

/** A `{en, zh}` label in `lang`, or `fallback`. */
export function pick(label, lang, fallback) {
  return label?.[lang] ?? label?.en ?? fallback;
}

/** BCP 47 tag for number and time formatting. */
export const locale = (lang) => (lang === 'zh' ? 'zh-CN' : 'en-GB');

/** "5 s ago" / "5 秒前" for an age in milliseconds. */
export function formatAge(lang, ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 1) return t(lang, 'justNow');
  if (s < 60) return t(lang, 'secondsAgo', s);
  const m = Math.floor(s / 60);
  if (m < 60) return t(lang, 'minutesAgo', m);
  const h = Math.floor(m / 60);
  if (h < 48) return t(lang, 'hoursAgo', h);
  return t(lang, 'daysAgo', Math.floor(h / 24));
}
