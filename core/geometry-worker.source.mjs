// The geometry worker when the platform runs from its TypeScript sources (vitest, tsx): a worker
// thread does not inherit the main thread's TypeScript loader, so it registers tsx's before
// loading geometry-worker.ts. The bundle uses dist/geometry-worker.mjs instead (core/geometry-pool.ts).
import { register } from 'tsx/esm/api';

register();
export const { parseArea, cover, inside } = await import('./geometry-worker.ts');
