// A client that stops reading cannot hold the shutdown open: drain() closes what is left once
// the grace period and CLOSE_MARGIN_MS are over.
import t from 'tap';
import { connect } from 'node:net';
import type { AddressInfo } from 'node:net';
import Fastify from 'fastify';
import { CLOSE_MARGIN_MS, drain } from '../../src/server/drain.ts';
import { EngineState } from '../../src/server/engine-state.ts';
import type { Engine } from '../../src/engine/engine.ts';

t.test('drain ends within timeout + margin while a client never reads its stream', async (t) => {
  const app = Fastify();
  let written = 0;
  let blocked = false;
  app.get('/stream', (_req, reply) => {
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    const chunk = `data: ${'x'.repeat(16_384)}\n\n`;
    // Writes until the socket pushes back, then waits for a 'drain' that never comes.
    const pump = (): void => { while (res.write(chunk)) written += chunk.length; written += chunk.length; blocked = true; res.once('drain', pump); };
    pump();
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const socket = connect((app.server.address() as AddressInfo).port, '127.0.0.1');
  socket.on('error', () => undefined);
  socket.write('GET /stream HTTP/1.1\r\nHost: x\r\n\r\n');
  socket.pause(); // never reads
  while (!blocked) await new Promise((r) => setTimeout(r, 20));
  t.ok(written > 0, `the server wrote ${written} bytes before the socket pushed back`);
  const state = new EngineState(new Promise<Engine>(() => undefined));
  const timeoutMs = 200;
  const t0 = performance.now();
  await drain(app, state, timeoutMs);
  const ms = performance.now() - t0;
  t.ok(ms < timeoutMs + CLOSE_MARGIN_MS + 1000, `drain returned after ${ms.toFixed(0)} ms`);
  t.ok(ms >= CLOSE_MARGIN_MS - 50, 'the last responses had their margin');
  socket.destroy();
});
