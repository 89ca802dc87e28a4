// Request JSON of OFF_LOOP_BYTES and more is parsed in a thread of its own (json-body.ts): the
// answers must be those of the in-place parse, for HTTP bodies and WebSocket messages alike,
// and a large WebSocket message must not be overtaken by a small one sent after it.
import t from 'tap';
import WebSocket from 'ws';
import { OFF_LOOP_BYTES } from '../../src/server/json-body.ts';
import { startTinyServer } from './tiny-server.ts';

const s = await startTinyServer('json-body');
const pad = ' '.repeat(OFF_LOOP_BYTES + 1024); // valid JSON whitespace: the body is large, the prompt small
const post = async (body: string) => {
  const r = await fetch(`${s.baseURL}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
  return { status: r.status, body: await r.json() as { error?: { message: string; code: string | null; type: string }; choices?: { message: { content: string } }[] } };
};
const request = { model: s.model, messages: [{ role: 'user', content: 'Hello' }], max_tokens: 4, temperature: 0 };

t.test('a large body parses to the same request as a small one', async (t) => {
  const small = await post(JSON.stringify(request));
  const large = await post(pad + JSON.stringify(request) + pad);
  t.equal(small.status, 200);
  t.equal(large.status, 200);
  t.equal(large.body.choices?.[0]?.message.content, small.body.choices?.[0]?.message.content);
});

t.test('invalid and poisoned JSON get the same 400 whatever the size', async (t) => {
  const cases: [string, string][] = [
    ['truncated', JSON.stringify(request).slice(0, -1)],
    ['__proto__', JSON.stringify(request).replace('{', '{"__proto__":{"x":1},')],
    ['constructor.prototype', JSON.stringify(request).replace('{', '{"constructor":{"prototype":{"x":1}},')],
  ];
  for (const [name, body] of cases) {
    const small = await post(body);
    const large = await post(pad + body);
    t.equal(small.status, 400, `${name}, small`);
    t.equal(large.status, 400, `${name}, large`);
    t.same(large.body.error, small.body.error, `${name}: the same error body`);
    t.equal(large.body.error?.type, 'invalid_request_error');
  }
});

t.test('WebSocket: a large request message is not overtaken by the cancel sent right after it', async (t) => {
  const ws = new WebSocket(`${s.baseURL.replace(/^http/, 'ws')}/v1/chat/completions/ws`);
  await new Promise((res, rej) => { ws.once('open', res); ws.once('error', rej); });
  const received: { type: string; id: string | null }[] = [];
  const ended = new Promise<void>((res) => ws.on('message', (d) => {
    const m = JSON.parse(d.toString()) as { type: string; id: string | null };
    received.push(m);
    if (m.type === 'cancelled' || m.type === 'done' || m.type === 'error') res();
  }));
  ws.send(`{"type":"request","id":"big",${pad}"body":${JSON.stringify({ ...request, max_tokens: 64, stream: true })}}`);
  ws.send(JSON.stringify({ type: 'cancel', id: 'big' }));
  await ended;
  ws.close();
  const last = received.at(-1)!;
  t.not(last.type, 'error', `the cancel found its request (${JSON.stringify(last)})`);
  t.equal(last.id, 'big');
});
