// Bundles the platform (bin/guanlink.ts and everything it imports from this project) into
// dist/guanlink.mjs, and its geometry worker into dist/geometry-worker.mjs; npm packages stay external. Production runs plain JavaScript: running
// through tsx would keep function names (esbuild keepNames), which costs an Object.defineProperty
// and a property array on every closure created — per message, on ingest's hot path.
import { copyFileSync, mkdirSync } from 'node:fs';
import { build } from 'esbuild';

const started = Date.now();
mkdirSync('dist', { recursive: true });
copyFileSync('scripts/quiet-debug.cjs', 'dist/quiet-debug.cjs');
const bundled = { bundle: true, packages: 'external', platform: 'node', format: 'esm', target: 'node20', sourcemap: true, logLevel: 'warning' };
await build({
  ...bundled,
  entryPoints: ['bin/guanlink.ts'],
  outfile: 'dist/guanlink.mjs',
  // First import of the bundle, so it runs before any package that creates debug loggers.
  banner: { js: "import './quiet-debug.cjs';" },
});
// The geometry worker threads' entry (core/geometry-pool.ts loads it from beside the bundle).
await build({ ...bundled, entryPoints: ['core/geometry-worker.ts'], outfile: 'dist/geometry-worker.mjs' });
if (process.env.npm_lifecycle_event === 'build') console.log(`built dist/guanlink.mjs in ${Date.now() - started} ms`);
