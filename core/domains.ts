import { Type, type Static } from 'typebox';

/** The city departments GuanLink serves; every device type belongs to one (or to `generic`). */
export const DOMAINS = ['water', 'environment', 'traffic', 'air-space-ground', 'generic'] as const;
export const Domain = Type.Enum(DOMAINS);
export type Domain = Static<typeof Domain>;

export const DOMAIN_LABELS: Record<Domain, { en: string; zh: string }> = {
  water: { en: 'Water', zh: '水务' },
  environment: { en: 'Environment', zh: '生态环境' },
  traffic: { en: 'Traffic', zh: '交通' },
  'air-space-ground': { en: 'Air-space-ground', zh: '空天地' },
  generic: { en: 'Generic', zh: '通用' },
};
