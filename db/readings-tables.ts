import type { Domain } from '../core/domains.ts';

/** The table holding one domain's readings (migrations/003); the `readings` view unions them all. */
export const readingsTable = (domain: Domain): string => `readings_${domain.replaceAll('-', '_')}`;
