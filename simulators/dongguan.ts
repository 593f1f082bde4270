/**
 * Places of simulated Dongguan (东莞): towns, rivers, roads, bus routes, patrol corridors and
 * equipment sites. ALL COORDINATES ARE APPROXIMATE (hand-placed to within a few hundred metres
 * to a kilometre or so); they are for plausible demos, not for navigation or engineering.
 */
import { inBBox, type BBox, type LatLng } from './geometry.ts';

/** Dongguan's extent, roughly: 113.52–114.26 E, 22.66–23.16 N. */
export const DONGGUAN_BBOX: BBox = { minLat: 22.66, maxLat: 23.16, minLng: 113.52, maxLng: 114.26 };

/** Where "seen from Dongguan" is measured: the city centre (南城/莞城). */
export const DONGGUAN_CENTRE: LatLng = { lat: 23.02, lng: 113.75 };

export const inDongguan = (p: LatLng): boolean => inBBox(p, DONGGUAN_BBOX);

export interface Place extends LatLng {
  zh: string;
  en: string;
}

const place = (zh: string, en: string, lat: number, lng: number): Place => ({ zh, en, lat, lng });

/** Town centres (approximate). */
export const TOWNS = {
  guancheng: place('莞城', 'Guancheng', 23.045, 113.751),
  nancheng: place('南城', 'Nancheng', 23.016, 113.745),
  dongcheng: place('东城', 'Dongcheng', 23.03, 113.785),
  wanjiang: place('万江', 'Wanjiang', 23.052, 113.722),
  shilong: place('石龙', 'Shilong', 23.112, 113.853),
  shijie: place('石碣', 'Shijie', 23.097, 113.805),
  gaobu: place('高埗', 'Gaobu', 23.082, 113.735),
  zhongtang: place('中堂', 'Zhongtang', 23.093, 113.655),
  machong: place('麻涌', 'Machong', 23.048, 113.58),
  wangniudun: place('望牛墩', 'Wangniudun', 23.055, 113.657),
  hongmei: place('洪梅', 'Hongmei', 23.002, 113.61),
  daojiao: place('道滘', 'Daojiao', 23.0, 113.673),
  houjie: place('厚街', 'Houjie', 22.94, 113.672),
  shatian: place('沙田', 'Shatian', 22.915, 113.62),
  humen: place('虎门', 'Humen', 22.816, 113.672),
  changan: place('长安', "Chang'an", 22.816, 113.803),
  dalingshan: place('大岭山', 'Dalingshan', 22.898, 113.842),
  songshanhu: place('松山湖', 'Songshan Lake', 22.915, 113.89),
  liaobu: place('寮步', 'Liaobu', 22.993, 113.873),
  dalang: place('大朗', 'Dalang', 22.94, 113.93),
  huangjiang: place('黄江', 'Huangjiang', 22.88, 114.0),
  chashan: place('茶山', 'Chashan', 23.065, 113.865),
  shipai: place('石排', 'Shipai', 23.087, 113.925),
  qishi: place('企石', 'Qishi', 23.067, 114.0),
  hengli: place('横沥', 'Hengli', 23.025, 113.96),
  dongkeng: place('东坑', 'Dongkeng', 22.992, 113.94),
  changping: place('常平', 'Changping', 22.975, 114.01),
  qiaotou: place('桥头', 'Qiaotou', 23.022, 114.09),
  xiegang: place('谢岗', 'Xiegang', 22.96, 114.14),
  zhangmutou: place('樟木头', 'Zhangmutou', 22.915, 114.075),
  qingxi: place('清溪', 'Qingxi', 22.84, 114.16),
  tangxia: place('塘厦', 'Tangxia', 22.805, 114.075),
  fenggang: place('凤岗', 'Fenggang', 22.745, 114.14),
} as const satisfies Record<string, Place>;

// ---------------------------------------------------------------------------------------------
// Rivers

/** Hydraulic character at one end of a reach; values in between are interpolated by distance. */
export interface ReachEnd {
  /** Typical water level above the Pearl River datum, m. */
  level: number;
  /** Half the typical tidal range, m (the lower Dongjiang is tidal). */
  tide: number;
  /** Mean discharge, m³/s. */
  flow: number;
  /** Tide delay relative to the river mouth, hours. */
  tideLagH: number;
}

export interface RiverPoint extends LatLng {
  /** Named gauging site at this vertex (a 段 of the river), if any. */
  site?: string;
}

export interface RiverReach {
  id: string;
  zh: string;
  en: string;
  /** Upstream to downstream. */
  points: RiverPoint[];
  upstream: ReachEnd;
  downstream: ReachEnd;
}

const rp = (lat: number, lng: number, site?: string): RiverPoint => (site === undefined ? { lat, lng } : { lat, lng, site });

/**
 * The Dongjiang (东江) enters Dongguan at Qiaotou and splits at Shilong into the North Main
 * Channel (北干流, along the northern border to Machong) and the South Branch (南支流, past
 * Shijie, Gaobu, Wanjiang and Houjie to Shatian); plus two tributaries. Courses approximate.
 */
export const RIVERS: RiverReach[] = [
  {
    id: 'dongjiang',
    zh: '东江干流',
    en: 'Dongjiang main stem',
    points: [
      rp(23.058, 114.135, '桥头'),
      rp(23.05, 114.08),
      rp(23.066, 114.02, '企石'),
      rp(23.078, 113.985),
      rp(23.097, 113.945, '石排'),
      rp(23.105, 113.9),
      rp(23.112, 113.862, '石龙'),
    ],
    upstream: { level: 4.3, tide: 0.1, flow: 720, tideLagH: 6 },
    downstream: { level: 2.6, tide: 0.3, flow: 720, tideLagH: 4 },
  },
  {
    id: 'north-main',
    zh: '东江北干流',
    en: 'Dongjiang North Main Channel',
    points: [
      rp(23.114, 113.858),
      rp(23.128, 113.82),
      rp(23.135, 113.76),
      rp(23.132, 113.7),
      rp(23.12, 113.655, '中堂'),
      rp(23.1, 113.612),
      rp(23.083, 113.582, '麻涌'),
      rp(23.07, 113.545),
    ],
    upstream: { level: 2.5, tide: 0.35, flow: 430, tideLagH: 3.5 },
    downstream: { level: 0.7, tide: 0.85, flow: 430, tideLagH: 0.3 },
  },
  {
    id: 'south-branch',
    zh: '东江南支流',
    en: 'Dongjiang South Branch',
    points: [
      rp(23.11, 113.856),
      rp(23.1, 113.82),
      rp(23.093, 113.795, '石碣'),
      rp(23.085, 113.75, '高埗'),
      rp(23.062, 113.732, '万江'),
      rp(23.03, 113.705),
      rp(22.99, 113.68, '道滘'),
      rp(22.955, 113.655, '厚街'),
      rp(22.925, 113.625, '沙田'),
      rp(22.905, 113.6),
    ],
    upstream: { level: 2.5, tide: 0.35, flow: 290, tideLagH: 3.5 },
    downstream: { level: 0.6, tide: 0.8, flow: 290, tideLagH: 0.2 },
  },
  {
    id: 'hanxi',
    zh: '寒溪河',
    en: 'Hanxi River',
    points: [rp(22.95, 113.93), rp(22.995, 113.88, '寮步'), rp(23.04, 113.85), rp(23.085, 113.838, '峡口')],
    upstream: { level: 6.5, tide: 0, flow: 18, tideLagH: 0 },
    downstream: { level: 2.6, tide: 0.25, flow: 25, tideLagH: 4 },
  },
  {
    id: 'shima',
    zh: '石马河',
    en: 'Shima River',
    points: [rp(22.742, 114.11, '凤岗'), rp(22.81, 114.09, '塘厦'), rp(22.9, 114.085, '樟木头'), rp(22.98, 114.07), rp(23.045, 114.085, '桥头')],
    upstream: { level: 18, tide: 0, flow: 12, tideLagH: 0 },
    downstream: { level: 4.5, tide: 0.05, flow: 22, tideLagH: 6 },
  },
];

// ---------------------------------------------------------------------------------------------
// Lakes, canals and other water bodies (water quality)

export type WaterBody = 'river' | 'tidal-river' | 'urban-canal' | 'lake' | 'reservoir';

export interface WaterSite extends Place {
  body: WaterBody;
}

const ws = (zh: string, en: string, lat: number, lng: number, body: WaterBody): WaterSite => ({ zh, en, lat, lng, body });

export const WATER_QUALITY_SITES: WaterSite[] = [
  ws('东江石龙取水口', 'Dongjiang intake, Shilong', 23.109, 113.87, 'river'),
  ws('松山湖', 'Songshan Lake', 22.933, 113.897, 'lake'),
  ws('东莞运河莞城段', 'Dongguan Canal, Guancheng', 23.04, 113.747, 'urban-canal'),
  ws('华阳湖湿地', 'Huayang Lake wetland', 23.06, 113.59, 'lake'),
  ws('同沙水库', 'Tongsha Reservoir', 22.963, 113.817, 'reservoir'),
  ws('寒溪河峡口', 'Hanxi River mouth', 23.083, 113.838, 'river'),
  ws('东江南支流万江段', 'South Branch, Wanjiang', 23.062, 113.732, 'tidal-river'),
  ws('茅洲河长安段', 'Maozhou River, Chang’an', 22.775, 113.83, 'urban-canal'),
  ws('石马河樟木头段', 'Shima River, Zhangmutou', 22.9, 114.085, 'river'),
  ws('水濂山水库', 'Shuilianshan Reservoir', 22.965, 113.737, 'reservoir'),
  ws('东江北干流麻涌段', 'North Main Channel, Machong', 23.083, 113.582, 'tidal-river'),
  ws('黄牛埔水库', 'Huangniupu Reservoir', 22.985, 113.825, 'reservoir'),
];

// ---------------------------------------------------------------------------------------------
// Fixed monitoring sites

export type Zone = 'roadside' | 'residential' | 'industrial' | 'commercial' | 'park';

export interface Site extends Place {
  zone: Zone;
}

const site = (zh: string, en: string, lat: number, lng: number, zone: Zone): Site => ({ zh, en, lat, lng, zone });

/** Air-quality stations in towns (names in the style of Dongguan's monitoring sites). */
export const AIR_QUALITY_SITES: Site[] = [
  site('南城西平', 'Nancheng Xiping', 23.0, 113.738, 'residential'),
  site('东城主山', 'Dongcheng Zhushan', 23.03, 113.79, 'residential'),
  site('莞城梨川', 'Guancheng Lichuan', 23.047, 113.755, 'commercial'),
  site('松山湖', 'Songshan Lake', 22.918, 113.888, 'park'),
  site('虎门镇区', 'Humen town', 22.82, 113.675, 'commercial'),
  site('长安镇区', "Chang'an town", 22.815, 113.805, 'industrial'),
  site('塘厦镇区', 'Tangxia town', 22.806, 114.073, 'industrial'),
  site('常平镇区', 'Changping town', 22.977, 114.01, 'commercial'),
  site('樟木头镇区', 'Zhangmutou town', 22.916, 114.077, 'residential'),
  site('万江金鳌洲', 'Wanjiang Jin’aozhou', 23.055, 113.728, 'residential'),
  site('厚街镇区', 'Houjie town', 22.942, 113.67, 'industrial'),
  site('大朗镇区', 'Dalang town', 22.94, 113.932, 'industrial'),
  site('凤岗镇区', 'Fenggang town', 22.747, 114.138, 'industrial'),
  site('石龙镇区', 'Shilong town', 23.11, 113.85, 'commercial'),
];

export const NOISE_SITES: Site[] = [
  site('东莞大道·市民中心', 'Dongguan Ave, Civic Centre', 23.02, 113.752, 'roadside'),
  site('东城万达广场', 'Dongcheng Wanda Plaza', 23.028, 113.78, 'commercial'),
  site('松山湖大学城', 'Songshan Lake university town', 22.905, 113.876, 'park'),
  site('虎门高铁站', 'Humen HSR station', 22.865, 113.655, 'roadside'),
  site('长安工业区', "Chang'an industrial park", 22.825, 113.82, 'industrial'),
  site('莞城西正路', 'Guancheng Xizheng Rd', 23.043, 113.748, 'commercial'),
  site('南城绿色世界', 'Nancheng residential area', 23.005, 113.73, 'residential'),
  site('厚街会展中心', 'Houjie Exhibition Centre', 22.935, 113.663, 'roadside'),
  site('常平火车站', 'Changping railway station', 22.979, 114.005, 'roadside'),
  site('塘厦工业区', 'Tangxia industrial park', 22.81, 114.06, 'industrial'),
];

export interface PipeSite extends Place {
  /** Nominal diameter, mm. */
  dn: number;
}

const pipe = (zh: string, en: string, lat: number, lng: number, dn: number): PipeSite => ({ zh, en, lat, lng, dn });

/** Pressure points of the drinking-water network (mains under main roads). */
export const PIPE_SITES: PipeSite[] = [
  pipe('南城鸿福路', 'Nancheng Hongfu Rd', 23.019, 113.748, 800),
  pipe('东城东纵路', 'Dongcheng Dongzong Rd', 23.035, 113.775, 600),
  pipe('莞城市桥', 'Guancheng Shiqiao', 23.046, 113.753, 400),
  pipe('松山湖科技园', 'Songshan Lake science park', 22.91, 113.885, 600),
  pipe('虎门太沙路', 'Humen Taisha Rd', 22.82, 113.68, 600),
  pipe('长安长青路', "Chang'an Changqing Rd", 22.818, 113.8, 500),
  pipe('常平环常路', 'Changping Huanchang Rd', 22.97, 114.015, 500),
  pipe('塘厦林村', 'Tangxia Lincun', 22.8, 114.085, 400),
  pipe('寮步莞樟路', 'Liaobu Guanzhang Rd', 22.99, 113.87, 600),
  pipe('厚街莞太路', 'Houjie Guantai Rd', 22.945, 113.675, 800),
  pipe('石龙黄洲', 'Shilong Huangzhou', 23.108, 113.86, 400),
  pipe('大朗美景路', 'Dalang Meijing Rd', 22.945, 113.925, 400),
];

export type RoadClass = 'expressway' | 'urban-expressway' | 'arterial';

export interface RoadSite extends Place {
  road: RoadClass;
  /** Lanes counted by the detector (both directions). */
  lanes: number;
}

const road = (zh: string, en: string, lat: number, lng: number, cls: RoadClass, lanes: number): RoadSite => ({ zh, en, lat, lng, road: cls, lanes });

export const TRAFFIC_SITES: RoadSite[] = [
  road('莞深高速东城段', 'Guanshen Expwy, Dongcheng', 23.0, 113.808, 'expressway', 6),
  road('东莞大道南城段', 'Dongguan Ave, Nancheng', 23.005, 113.748, 'arterial', 8),
  road('广深高速厚街段', 'Guangshen Expwy, Houjie', 22.93, 113.695, 'expressway', 8),
  road('莞太路厚街段', 'Guantai Rd, Houjie', 22.955, 113.68, 'arterial', 6),
  road('107国道长安段', 'G107, Chang’an', 22.83, 113.81, 'arterial', 6),
  road('松山湖大道', 'Songshan Lake Ave', 22.95, 113.87, 'arterial', 6),
  road('莞樟路寮步段', 'Guanzhang Rd, Liaobu', 22.995, 113.885, 'arterial', 6),
  road('环城路东城段', 'Ring Rd, Dongcheng', 23.045, 113.795, 'urban-expressway', 6),
  road('东部快速路常平段', 'Eastern Expwy, Changping', 22.985, 114.0, 'urban-expressway', 6),
  road('鸿福路南城段', 'Hongfu Rd, Nancheng', 23.019, 113.74, 'arterial', 6),
  road('莞龙路石龙段', 'Guanlong Rd, Shilong', 23.095, 113.84, 'arterial', 4),
  road('虎门大桥连接线', 'Humen Bridge approach', 22.8, 113.64, 'expressway', 6),
];

export interface GroundStationSite extends Place {
  /** Antenna dish diameter, m. */
  dish: number;
}

export const GROUND_STATION_SITES: GroundStationSite[] = [
  { ...place('松山湖卫星地面站', 'Songshan Lake ground station', 22.925, 113.905), dish: 7.3 },
  { ...place('银瓶山测控站', 'Yinping Shan TT&C site', 22.775, 114.225), dish: 12 },
  { ...place('大岭山遥感接收站', 'Dalingshan receiving station', 22.885, 113.82), dish: 9 },
  { ...place('黄旗山通信站', 'Huangqi Shan comms site', 23.005, 113.775), dish: 4.5 },
  { ...place('东莞理工学院地面站', 'DGUT campus ground station', 22.903, 113.877), dish: 3.7 },
  { ...place('水濂山中继站', 'Shuilian Shan relay', 22.96, 113.74), dish: 4.5 },
];

// ---------------------------------------------------------------------------------------------
// Bus routes

export interface RoutePoint extends LatLng {
  /** A bus stop at this vertex. The first and last vertex are always stops (termini). */
  stop?: string;
}

export interface BusRoute {
  id: string;
  zh: string;
  en: string;
  points: RoutePoint[];
  /** Cruising speed between stops, km/h (before congestion). */
  cruiseKmh: number;
  /** Typical load (passengers) at the busiest part of the route. */
  load: number;
}

const s = (lat: number, lng: number, stop?: string): RoutePoint => (stop === undefined ? { lat, lng } : { lat, lng, stop });

/** Made-up routes along real corridors between towns (geometry approximate). */
export const BUS_ROUTES: BusRoute[] = [
  {
    id: 'L1',
    zh: '莞城—虎门（莞太路）',
    en: 'Guancheng – Humen (Guantai Rd)',
    cruiseKmh: 38,
    load: 70,
    points: [
      s(23.04, 113.748, '莞城汽车站'),
      s(23.03, 113.747),
      s(23.02, 113.745, '鸿福路口'),
      s(23.0, 113.735, '西平'),
      s(22.985, 113.72),
      s(22.965, 113.7, '篁村'),
      s(22.95, 113.683),
      s(22.94, 113.673, '厚街'),
      s(22.915, 113.672),
      s(22.89, 113.668, '赤岭'),
      s(22.86, 113.666),
      s(22.835, 113.668, '虎门太平'),
      s(22.815, 113.672, '虎门汽车站'),
    ],
  },
  {
    id: 'L2',
    zh: '市民中心—松山湖',
    en: 'Civic Centre – Songshan Lake',
    cruiseKmh: 42,
    load: 60,
    points: [
      s(23.021, 113.751, '市民服务中心'),
      s(23.018, 113.77),
      s(23.015, 113.79, '东城中心'),
      s(23.0, 113.81),
      s(22.978, 113.83, '同沙'),
      s(22.96, 113.85),
      s(22.945, 113.87, '松山湖北'),
      s(22.93, 113.882),
      s(22.915, 113.89, '松山湖科技园'),
      s(22.905, 113.877, '东莞理工学院'),
    ],
  },
  {
    id: 'L3',
    zh: '石龙—东城',
    en: 'Shilong – Dongcheng',
    cruiseKmh: 35,
    load: 55,
    points: [
      s(23.112, 113.852, '石龙火车站'),
      s(23.1, 113.856),
      s(23.085, 113.862, '京山'),
      s(23.065, 113.866, '茶山'),
      s(23.05, 113.84),
      s(23.04, 113.815, '温塘'),
      s(23.035, 113.8),
      s(23.025, 113.78, '东城万达'),
    ],
  },
  {
    id: 'L4',
    zh: '长安—虎门',
    en: "Chang'an – Humen",
    cruiseKmh: 36,
    load: 50,
    points: [
      s(22.816, 113.803, '长安汽车站'),
      s(22.822, 113.78),
      s(22.83, 113.76, '乌沙'),
      s(22.828, 113.73),
      s(22.825, 113.705, '虎门白沙'),
      s(22.818, 113.685),
      s(22.815, 113.672, '虎门汽车站'),
    ],
  },
  {
    id: 'L5',
    zh: '常平—樟木头—塘厦—凤岗',
    en: 'Changping – Zhangmutou – Tangxia – Fenggang',
    cruiseKmh: 45,
    load: 55,
    points: [
      s(22.977, 114.005, '常平火车站'),
      s(22.96, 114.03),
      s(22.94, 114.055, '常平土塘'),
      s(22.915, 114.075, '樟木头'),
      s(22.88, 114.08),
      s(22.845, 114.078, '塘厦石潭埔'),
      s(22.805, 114.075, '塘厦'),
      s(22.78, 114.1),
      s(22.745, 114.14, '凤岗'),
    ],
  },
  {
    id: 'L6',
    zh: '万江—望牛墩—麻涌（水乡）',
    en: 'Wanjiang – Wangniudun – Machong',
    cruiseKmh: 40,
    load: 40,
    points: [
      s(23.052, 113.722, '万江'),
      s(23.055, 113.7),
      s(23.057, 113.68, '谷涌'),
      s(23.055, 113.657, '望牛墩'),
      s(23.05, 113.63),
      s(23.047, 113.605, '漳澎'),
      s(23.048, 113.58, '麻涌'),
    ],
  },
  {
    id: 'L7',
    zh: '寮步—大朗—黄江',
    en: 'Liaobu – Dalang – Huangjiang',
    cruiseKmh: 40,
    load: 50,
    points: [
      s(22.993, 113.873, '寮步'),
      s(22.975, 113.895),
      s(22.958, 113.915, '大朗北'),
      s(22.94, 113.93, '大朗'),
      s(22.915, 113.96),
      s(22.895, 113.985, '黄江北'),
      s(22.88, 114.0, '黄江'),
    ],
  },
];

// ---------------------------------------------------------------------------------------------
// Drone patrol corridors

export interface Corridor {
  id: string;
  zh: string;
  en: string;
  /** The dock is at the first point. A closed loop returns to it; an open line is flown out and back. */
  points: LatLng[];
  loop: boolean;
}

const p = (lat: number, lng: number): LatLng => ({ lat, lng });

export const DRONE_CORRIDORS: Corridor[] = [
  {
    id: 'south-branch',
    zh: '东江南支流巡河（石碣—高埗）',
    en: 'South Branch river patrol (Shijie – Gaobu)',
    points: [p(23.093, 113.795), p(23.09, 113.775), p(23.085, 113.75), p(23.075, 113.74)],
    loop: false,
  },
  {
    id: 'songshan-lake',
    zh: '松山湖环湖巡查',
    en: 'Songshan Lake loop',
    points: [p(22.928, 113.88), p(22.945, 113.882), p(22.95, 113.9), p(22.94, 113.915), p(22.925, 113.912), p(22.918, 113.895), p(22.928, 113.88)],
    loop: true,
  },
  {
    id: 'huayang-lake',
    zh: '华阳湖湿地巡查',
    en: 'Huayang Lake wetland loop',
    points: [p(23.055, 113.585), p(23.065, 113.585), p(23.067, 113.597), p(23.058, 113.6), p(23.055, 113.585)],
    loop: true,
  },
  {
    id: 'north-main',
    zh: '东江北干流巡河（中堂—麻涌）',
    en: 'North Main Channel patrol (Zhongtang – Machong)',
    points: [p(23.12, 113.655), p(23.11, 113.632), p(23.1, 113.612), p(23.09, 113.595)],
    loop: false,
  },
  {
    id: 'tongsha',
    zh: '同沙生态公园巡查',
    en: 'Tongsha ecological park loop',
    points: [p(22.958, 113.81), p(22.968, 113.812), p(22.97, 113.825), p(22.96, 113.828), p(22.958, 113.81)],
    loop: true,
  },
  {
    id: 'shima',
    zh: '石马河巡河（塘厦—樟木头）',
    en: 'Shima River patrol (Tangxia – Zhangmutou)',
    points: [p(22.81, 114.09), p(22.84, 114.088), p(22.87, 114.086), p(22.9, 114.085)],
    loop: false,
  },
];

/** Every fixed coordinate above, for sanity tests. */
export function allDefinedPoints(): LatLng[] {
  return [
    ...Object.values(TOWNS),
    ...RIVERS.flatMap((r) => r.points),
    ...WATER_QUALITY_SITES,
    ...AIR_QUALITY_SITES,
    ...NOISE_SITES,
    ...PIPE_SITES,
    ...TRAFFIC_SITES,
    ...GROUND_STATION_SITES,
    ...BUS_ROUTES.flatMap((r) => r.points),
    ...DRONE_CORRIDORS.flatMap((c) => c.points),
  ];
}
