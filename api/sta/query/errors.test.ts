import Fastify from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { problemDetailsPlugin } from '../../problem.ts';
import { parseStaQuery } from './query.ts';

// A route that only parses: what the client gets when the parser refuses, through GuanLink's one
// error handler (api/problem.ts) — a 501 must keep its reason, not become "internal error".
const app = Fastify();
beforeAll(async () => {
  await app.register(problemDetailsPlugin);
  app.get('/sta/v1.1/Things', async (request) => parseStaQuery(request.query as Record<string, unknown>));
  await app.ready();
});
afterAll(() => app.close());

describe('StaQueryError as problem details', () => {
  it('answers a malformed $filter with 400, the position and the reason', async () => {
    const res = await app.inject({ method: 'GET', url: "/sta/v1.1/Things?$filter=geo.intersects(location,%20geography'POINT(1%202)'%20x" });
    expect(res.statusCode).toBe(400);
    expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(res.json()).toMatchObject({ status: 400, code: 'sta_query_malformed', detail: "$filter: at 47: expected ')' after the arguments of geo.intersects, got 'x'" });
  });

  it("explains a time offset whose '+' the query string turned into a space, and takes %2B", async () => {
    const raw = await app.inject({ method: 'GET', url: '/sta/v1.1/Things?$filter=phenomenonTime%20ge%202022-01-01T00:00:00+08:00' });
    expect(raw.statusCode).toBe(400);
    expect(raw.json().detail).toBe("$filter: at 18: a date-time needs a time-zone offset; a '+' in the URL reads as a space, send it as %2B");
    const encoded = await app.inject({ method: 'GET', url: '/sta/v1.1/Things?$filter=phenomenonTime%20ge%202022-01-01T00:00:00%2B08:00' });
    expect(encoded.statusCode).toBe(200);
    expect(encoded.json().filter.right).toMatchObject({ type: 'datetime', offsetMinutes: 480, epochMs: Date.UTC(2021, 11, 31, 16) });
  });

  it('answers an unsupported option with 501 naming it', async () => {
    const res = await app.inject({ method: 'GET', url: '/sta/v1.1/Things?$apply=groupby((name))' });
    expect(res.statusCode).toBe(501);
    expect(res.json()).toMatchObject({ status: 501, code: 'sta_query_unsupported', detail: expect.stringContaining('$apply: at 0: the query option $apply is not supported') });
  });
});
