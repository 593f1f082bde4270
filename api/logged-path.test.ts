import Fastify from 'fastify';
import { describe, expect, it } from 'vitest';
import { loggedPath } from './logged-path.ts';

describe('loggedPath', () => {
  it('writes the route pattern instead of a path that carries a device token, and never the query string', async () => {
    const app = Fastify();
    const seen: string[] = [];
    app.addHook('onResponse', async (request) => void seen.push(loggedPath(request)));
    app.get('/api/v1/:token/firmware', async () => 'ok');
    app.get('/api/v1/devices/:id', async () => 'ok');
    await app.inject({ method: 'GET', url: '/api/v1/s3cret-T0ken/firmware?title=a&version=1' });
    await app.inject({ method: 'GET', url: '/api/v1/devices/12?key=k' });
    await app.inject({ method: 'GET', url: '/nowhere?x=1' });
    await app.close();
    expect(seen).toEqual(['/api/v1/:token/firmware', '/api/v1/devices/12', '/nowhere']);
    expect(seen.join(' ')).not.toContain('s3cret');
  });
});
