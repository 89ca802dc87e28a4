// What never reaches a route still gets OpenAI's error shape: Node's parser errors, headers
// over the limit, a bad chunk, an HTTP/2 preface, a bad URL, an Expect other than
// 100-continue, CONNECT, a missing Host, WebSocket handshakes the ws library would refuse in
// text/html, and a plain GET of the WebSocket endpoint.
import t, { type Test } from 'tap';
import { connect } from 'node:net';
import { startTinyServer } from './tiny-server.ts';
import { LINGER_MS } from '../../src/server/linger.ts';

const s = await startTinyServer('malformed-http');
const port = Number(new URL(s.baseURL).port);

/** Sends raw bytes, reads until the server closes (or 3 s); the status and the JSON body. */
function raw(bytes: string): Promise<{ status: number; body: unknown; text: string }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => { text += d; });
    socket.on('error', reject);
    const done = (): void => {
      socket.destroy();
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0);
      const bodyText = text.slice(text.indexOf('\r\n\r\n') + 4);
      let body: unknown;
      try { body = JSON.parse(bodyText); } catch { body = null; }
      resolve({ status, body, text });
    };
    socket.on('end', done);
    setTimeout(done, 3000);
    socket.write(bytes);
  });
}

const openAiShaped = (t: Test, body: unknown): void => {
  const e = (body as { error?: Record<string, unknown> } | null)?.error;
  t.ok(e !== undefined, 'an error object');
  t.same(Object.keys(e ?? {}).sort(), ['code', 'message', 'param', 'type'], 'OpenAI error shape');
  t.type(e?.['message'], 'string');
};

const cases: [string, string, number][] = [
  ['a bad method', 'FOO /health HTTP/1.1\r\nHost: x\r\n\r\n', 400],
  ['headers over 16 KB', `GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`, 431],
  ['a bad chunk', 'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n', 400],
  ['an HTTP/2 preface', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 400],
  ['a bad URL', 'GET /%zz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', 400],
  ['Expect: foo', 'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\nExpect: foo\r\n\r\n', 417],
  ['CONNECT', 'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n', 405],
  ['a missing Host', 'GET /health HTTP/1.1\r\nConnection: close\r\n\r\n', 400],
  ['a WebSocket upgrade without Sec-WebSocket-Key', 'GET /v1/chat/completions/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n', 400],
  ['a WebSocket upgrade of version 99', 'GET /v1/chat/completions/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 99\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n', 400],
  ['a plain GET of the WebSocket endpoint', 'GET /v1/chat/completions/ws HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', 426],
];

for (const [name, bytes, status] of cases) {
  t.test(`${name}: ${status}, OpenAI-shaped`, async (t) => {
    const r = await raw(bytes);
    t.equal(r.status, status, r.text.slice(0, 200));
    openAiShaped(t, r.body);
  });
}

t.test('n beyond what can ever be admitted is a 400 naming n, not a retryable 429', async (t) => {
  let err: unknown = null;
  try { s.engine.ensureCapacity(s.engine.capacity + 1); } catch (e) { err = e; }
  t.equal((err as { status?: number } | null)?.status, 400);
  t.equal((err as { param?: string } | null)?.param, 'n');
});

/**
 * Sends `head` and `body` in one write and reads the answer; fails on any socket error (a reset
 * or EPIPE means the server closed while the body was still arriving: the 413 can be lost).
 */
function sendAll(head: string, body: Buffer, tail = ''): Promise<{ status: number; body: unknown; closedAfterMs: number }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let text = '';
    const t0 = performance.now();
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => { text += d; });
    socket.on('error', (e) => reject(new Error(`socket error ${(e as NodeJS.ErrnoException).code ?? e.message} after ${text.length} bytes of answer`)));
    socket.on('close', () => {
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0);
      let parsed: unknown = null;
      try { parsed = JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)); } catch { /* not JSON */ }
      resolve({ status, body: parsed, closedAfterMs: performance.now() - t0 });
    });
    socket.write(Buffer.concat([Buffer.from(head), body, Buffer.from(tail)]));
  });
}

t.test('a body of 4 MiB + 1 sent in one write gets its 413 every time (20 tries each way), never a reset', async (t) => {
  const body = Buffer.alloc(4 * 2 ** 20 + 1, 0x61);
  const framings: [string, string, string][] = [
    ['Content-Length', `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`, ''],
    ['chunked', `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n${body.length.toString(16)}\r\n`, '\r\n0\r\n\r\n'],
  ];
  for (const [name, head, tail] of framings) {
    for (let i = 0; i < 20; i++) {
      const r = await sendAll(head, body, tail);
      if (r.status !== 413) { t.fail(`${name} try ${i}: status ${r.status}`); break; }
      if (i === 0) openAiShaped(t, r.body);
    }
    t.pass(`${name}: 20 × 413`);
  }
});

t.test('a refused body that never ends is cut after the linger time', async (t) => {
  // Declares 1 GiB, sends 4 MiB + 1 and then nothing: the 413 arrives at once, the socket closes ~LINGER_MS later.
  const r = await sendAll(`POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${2 ** 30}\r\n\r\n`, Buffer.alloc(4 * 2 ** 20 + 1, 0x61))
    .catch((e: Error) => ({ status: -1, body: e.message, closedAfterMs: 0 }));
  t.equal(r.status, 413);
  t.ok(r.closedAfterMs >= LINGER_MS - 100 && r.closedAfterMs < LINGER_MS + 5000, `closed after ${r.closedAfterMs.toFixed(0)} ms`);
});
