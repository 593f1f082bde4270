import { Type, type Static } from 'typebox';
import { Domain } from './domains.ts';

export const Label = Type.Object({ en: Type.String({ maxLength: 200 }), zh: Type.String({ maxLength: 200 }) }, { additionalProperties: false });

/** ThingsBoard's value types: a number (long or double), a string, a boolean, or a JSON object/array. */
export const VALUE_TYPES = ['number', 'string', 'boolean', 'json'] as const;
export type ValueType = (typeof VALUE_TYPES)[number];

export const TelemetryKey = Type.Object(
  {
    type: Type.Optional(
      Type.Union(
        [Type.Literal('number'), Type.Literal('string'), Type.Literal('boolean'), Type.Literal('json')],
        { description: 'value type (default number); a declared string key keeps numeric-looking strings as strings' },
      ),
    ),
    label: Type.Optional(Label),
    unit: Type.Optional(Type.String({ maxLength: 32 })),
    min: Type.Optional(Type.Number({ description: 'lowest plausible value; lower readings are refused (out_of_range); numbers only' })),
    max: Type.Optional(Type.Number({ description: 'highest plausible value; numbers only' })),
  },
  { additionalProperties: false },
);
export type TelemetryKey = Static<typeof TelemetryKey>;

/** Telemetry keys a custom type may declare (built-in types declare at most a dozen). */
export const MAX_DECLARED_KEYS = 200;

/** What a device type declares besides its name: the body of a custom type's replacement. */
export const DeviceTypeDefinition = Type.Object(
  {
    domain: Domain,
    label: Label,
    moving: Type.Boolean({ default: false, description: 'Position comes from telemetry (latitude/longitude keys) rather than the registry.' }),
    acceptsUndeclaredKeys: Type.Boolean({ default: false, description: 'Keys not declared below are stored too, with whatever value type they arrive as.' }),
    keys: Type.Record(Type.String(), TelemetryKey, {
      maxProperties: MAX_DECLARED_KEYS,
      description: 'Telemetry keys by name, with unit and plausible range (latitude/longitude/altitude are implicit)',
    }),
  },
  { additionalProperties: false },
);
export type DeviceTypeDefinition = Static<typeof DeviceTypeDefinition>;

export const DeviceTypeName = Type.String({ pattern: '^[a-z][a-z0-9-]{1,62}$', description: 'lower-case letters, digits and hyphens; 2–63 characters' });

export const DeviceType = Type.Object({
  name: DeviceTypeName,
  ...DeviceTypeDefinition.properties,
  builtin: Type.Optional(Type.Boolean({ description: 'built-in types are read-only' })),
});
export type DeviceType = Static<typeof DeviceType>;

/** Keys that carry a reading's position; they are stored in columns, not among the values. */
export const POSITION_KEYS = { latitude: 'lat', longitude: 'lng', altitude: 'alt' } as const;

const k = (en: string, zh: string, unit: string | undefined, min: number, max: number): TelemetryKey =>
  unit === undefined ? { label: { en, zh }, min, max } : { label: { en, zh }, unit, min, max };
const battery = k('Battery', '电量', '%', 0, 100);

/** Device types every GuanLink has; ranges are the plausible physical range, not alarm levels. */
export const BUILTIN_DEVICE_TYPES: DeviceType[] = [
  {
    name: 'generic',
    domain: 'generic',
    label: { en: 'Generic device', zh: '通用设备' },
    moving: false,
    acceptsUndeclaredKeys: true,
    keys: {},
  },
  {
    name: 'river-level-station',
    domain: 'water',
    label: { en: 'River level station', zh: '河道水位站' },
    moving: false,
    acceptsUndeclaredKeys: false,
    keys: {
      water_level: k('Water level', '水位', 'm', -10, 60),
      flow_rate: k('Flow rate', '流量', 'm³/s', 0, 30000),
      rainfall_1h: k('Rainfall (1 h)', '小时雨量', 'mm', 0, 400),
      battery,
    },
  },
  {
    name: 'pipe-pressure-sensor',
    domain: 'water',
    label: { en: 'Pipe pressure sensor', zh: '管网压力监测点' },
    moving: false,
    acceptsUndeclaredKeys: false,
    keys: {
      pressure: k('Pressure', '压力', 'MPa', 0, 4),
      flow: k('Flow', '瞬时流量', 'm³/h', 0, 20000),
      water_temp: k('Water temperature', '水温', '°C', -5, 60),
      battery,
    },
  },
  {
    name: 'water-quality-station',
    domain: 'water',
    label: { en: 'Water quality station', zh: '水质监测站' },
    moving: false,
    acceptsUndeclaredKeys: false,
    keys: {
      ph: k('pH', 'pH值', undefined, 0, 14),
      dissolved_oxygen: k('Dissolved oxygen', '溶解氧', 'mg/L', 0, 25),
      turbidity: k('Turbidity', '浊度', 'NTU', 0, 4000),
      ammonia_nitrogen: k('Ammonia nitrogen', '氨氮', 'mg/L', 0, 100),
    },
  },
  {
    name: 'air-quality-station',
    domain: 'environment',
    label: { en: 'Air quality station', zh: '空气质量监测站' },
    moving: false,
    acceptsUndeclaredKeys: false,
    keys: {
      aqi: k('AQI', '空气质量指数', undefined, 0, 500),
      pm25: k('PM2.5', 'PM2.5', 'µg/m³', 0, 1000),
      pm10: k('PM10', 'PM10', 'µg/m³', 0, 2000),
      o3: k('Ozone', '臭氧', 'µg/m³', 0, 1200),
      no2: k('Nitrogen dioxide', '二氧化氮', 'µg/m³', 0, 3840),
      so2: k('Sulphur dioxide', '二氧化硫', 'µg/m³', 0, 2620),
      co: k('Carbon monoxide', '一氧化碳', 'mg/m³', 0, 150),
      temperature: k('Temperature', '温度', '°C', -30, 60),
      humidity: k('Humidity', '湿度', '%', 0, 100),
    },
  },
  {
    name: 'noise-monitor',
    domain: 'environment',
    label: { en: 'Noise monitor', zh: '噪声监测点' },
    moving: false,
    acceptsUndeclaredKeys: false,
    keys: { noise: k('Noise level', '噪声', 'dB(A)', 20, 140) },
  },
  {
    name: 'traffic-detector',
    domain: 'traffic',
    label: { en: 'Traffic detector', zh: '交通流量检测器' },
    moving: false,
    acceptsUndeclaredKeys: false,
    keys: {
      vehicle_count: k('Vehicles per minute', '车流量', 'veh/min', 0, 600),
      avg_speed: k('Average speed', '平均车速', 'km/h', 0, 200),
      occupancy: k('Lane occupancy', '占有率', '%', 0, 100),
    },
  },
  {
    name: 'bus',
    domain: 'traffic',
    label: { en: 'Bus', zh: '公交车' },
    moving: true,
    acceptsUndeclaredKeys: false,
    keys: {
      speed: k('Speed', '车速', 'km/h', 0, 150),
      heading: k('Heading', '航向', '°', 0, 360),
      passengers: k('Passengers', '载客数', undefined, 0, 200),
      battery_soc: k('Battery charge', '电池电量', '%', 0, 100),
    },
  },
  {
    name: 'drone',
    domain: 'air-space-ground',
    label: { en: 'Drone', zh: '无人机' },
    moving: true,
    acceptsUndeclaredKeys: false,
    keys: {
      speed: k('Ground speed', '地速', 'm/s', 0, 60),
      heading: k('Heading', '航向', '°', 0, 360),
      battery,
      signal: k('Link quality', '链路质量', '%', 0, 100),
    },
  },
  {
    name: 'satellite',
    domain: 'air-space-ground',
    label: { en: 'Satellite (ground track)', zh: '卫星（星下点）' },
    moving: true,
    acceptsUndeclaredKeys: false,
    keys: {
      velocity: k('Orbital velocity', '轨道速度', 'km/s', 0, 12),
      elevation: k('Elevation seen from Dongguan', '东莞仰角', '°', -90, 90),
      battery,
      temperature: k('Bus temperature', '平台温度', '°C', -150, 150),
    },
  },
  {
    name: 'ground-station',
    domain: 'air-space-ground',
    label: { en: 'Ground station', zh: '地面站' },
    moving: false,
    acceptsUndeclaredKeys: false,
    keys: {
      signal_strength: k('Signal strength', '信号强度', 'dBm', -150, 0),
      downlink: k('Downlink rate', '下行速率', 'Mbit/s', 0, 10000),
      uplink: k('Uplink rate', '上行速率', 'Mbit/s', 0, 10000),
      temperature: k('Equipment temperature', '设备温度', '°C', -40, 80),
    },
  },
];
