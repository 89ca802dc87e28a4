/**
 * `gemma-serve chat` against a real engine on a tiny random model: in-process through runChat
 * with injected streams (and a recording fetch, to see what each turn sends), and end to end as
 * a child process with stdin piped. Expected replies come from non-streaming requests to the
 * same server with the same history at temperature 0.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { PassThrough, Readable, Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { makeRandomCheckpoint } from '../../src/checkpoint/make-random.ts';
import { runChat, type ChatIo, type ChatOptions } from '../../src/cli/chat.ts';
import type { ChatMessage, Fetch } from '../../src/cli/sse-client.ts';
import { buildApp } from '../../src/server/app.ts';
import { startTinyServer } from '../server/tiny-server.ts';

const BIN = resolve(dirname(fileURLToPath(import.meta.url)), '../../bin/gemma-serve.js');
// Each step lasts at least 5 ms: a reply interrupted at its first piece is still being generated on any machine.
const server = await startTinyServer('chat', { minStepMs: 5 });
const MAX_TOKENS = 5;

/** The reply a non-streaming request with these messages gets from `server` at temperature 0. */
async function reference(messages: ChatMessage[], maxTokens = MAX_TOKENS): Promise<string> {
  const r = await server.client.chat.completions.create({ model: server.model, messages, temperature: 0, max_tokens: maxTokens });
  return r.choices[0]?.message.content ?? '';
}

interface Run {
  code: number;
  out: string;
  err: string;
  /** Bodies of the POSTs sent, in order. */
  posts: { model: string; messages: ChatMessage[]; stream: boolean; temperature?: number; max_tokens?: number }[];
  /** Output writes, one per streamed piece or newline. */
  writes: number;
}

function collector(onWrite?: (text: string) => void): { stream: Writable; text: () => string; count: () => number } {
  let text = '';
  let count = 0;
  const stream = new Writable({
    write(chunk: Buffer | string, _enc, cb) { text += String(chunk); count++; onWrite?.(String(chunk)); cb(); },
  });
  return { stream, text: () => text, count: () => count };
}

function recording(posts: Run['posts'], inner: Fetch = fetch): Fetch {
  return async (url, init) => {
    if (init?.method === 'POST') posts.push(JSON.parse(String(init.body)) as Run['posts'][number]);
    return inner(url, init);
  };
}

/** runChat in-process on piped input. */
async function chatIn(opts: Partial<ChatOptions>, input: string, inner?: Fetch): Promise<Run> {
  const out = collector();
  const err = collector();
  const posts: Run['posts'] = [];
  const io: ChatIo = { input: Readable.from([Buffer.from(input)]), output: out.stream, errors: err.stream, fetch: recording(posts, inner) };
  const code = await runChat({ url: server.baseURL, sampling: { temperature: 0, max_tokens: MAX_TOKENS }, ...opts }, io);
  return { code, out: out.text(), err: err.text(), posts, writes: out.count() };
}

/** The CLI as a child process (asynchronously: the server lives in this process). */
function cli(args: string[], stdin: string, env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((res, rej) => {
    const child = spawn(process.execPath, [BIN, 'chat', ...args], { env: { ...process.env, GEMMA_SERVE_API_KEY: '', ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += String(d); });
    child.stderr.on('data', (d: Buffer) => { stderr += String(d); });
    const timer = setTimeout(() => child.kill(), 120_000);
    child.on('error', rej);
    child.on('close', (code) => { clearTimeout(timer); res({ code, stdout, stderr }); });
    child.stdin.end(stdin);
  });
}

const u1: ChatMessage = { role: 'user', content: 'Hello there' };
const u2: ChatMessage = { role: 'user', content: 'Tell me more' };

t.test('streams each reply and keeps the history across turns', async (t) => {
  const r = await chatIn({}, `${u1.content}\n\n${u2.content}\n`);
  t.equal(r.code, 0);
  t.equal(r.err, '');
  const ref1 = await reference([u1]);
  const ref2 = await reference([u1, { role: 'assistant', content: ref1 }, u2]);
  t.equal(r.out, `${ref1}\n${ref2}\n`, 'printed replies equal the non-streaming replies to the same history');
  t.equal(r.posts.length, 2, 'a blank line is no turn');
  t.same(r.posts[0], { model: server.model, messages: [u1], stream: true, temperature: 0, max_tokens: MAX_TOKENS }, 'default model: the first of /v1/models');
  t.same(r.posts[1]?.messages, [u1, { role: 'assistant', content: ref1 }, u2], 'the second turn sends the first reply');
  t.ok(r.writes > 4, `replies arrive in pieces (${r.writes} writes for two replies and two newlines)`);
});

t.test('/reset forgets the conversation; --system stays', async (t) => {
  const sys: ChatMessage = { role: 'system', content: 'Answer briefly.' };
  const r = await chatIn({ system: sys.content }, `${u1.content}\n/reset\n${u2.content}\n/exit\nnever sent\n`);
  t.equal(r.code, 0);
  t.same(r.posts.map((p) => p.messages), [[sys, u1], [sys, u2]], 'after /reset only the system prompt precedes the turn; /exit ends');
  t.equal(r.out, `${await reference([sys, u1])}\n${await reference([sys, u2])}\n`);
  const help = await chatIn({}, '/help\n/bogus\n');
  t.match(help.out, /\/reset/, '/help lists the commands');
  t.match(help.err, /^error: unknown command \/bogus/);
  t.equal(help.posts.length, 0);
});

t.test('server errors are printed and the turn is dropped', async (t) => {
  const app = buildApp({ engine: server.engine, apiKeys: ['right-key'] });
  await app.listen({ host: '127.0.0.1', port: 0 });
  t.teardown(() => app.close());
  const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;

  const wrong = await chatIn({ url, apiKey: 'wrong-key', model: server.model }, `${u1.content}\n${u2.content}\n`);
  t.equal(wrong.code, 0, 'a failed turn does not end the chat');
  t.equal(wrong.out, '');
  t.match(wrong.err, /^error: .*API key.*\nerror: .*API key/s, 'each failed turn prints the server message');
  t.same(wrong.posts[1]?.messages, [u2], 'the failed turn is not in the history');

  const noModel = await chatIn({ url, apiKey: 'wrong-key' }, `${u1.content}\n`);
  t.equal(noModel.code, 1, 'no model can be listed: cannot chat');
  t.match(noModel.err, /^error: chat: .*API key/);

  const right = await chatIn({ url, apiKey: 'right-key' }, `${u1.content}\n`);
  t.equal(right.code, 0);
  t.equal(right.out, `${await reference([u1])}\n`, 'the key is sent as a bearer token');

  const env = await cli(['--url', url, '--temperature', '0', '--max-tokens', String(MAX_TOKENS)], `${u1.content}\n`, { GEMMA_SERVE_API_KEY: ' right-key , other' });
  t.equal(env.code, 0, env.stderr);
  t.equal(env.stdout, right.out, 'GEMMA_SERVE_API_KEY: the first of the list is used');
});

t.test('an error event inside the stream', async (t) => {
  const sse = (events: unknown[]): Response => new Response(events.map((e) => `data: ${JSON.stringify(e)}\n\n`).join('') + 'data: [DONE]\n\n',
    { headers: { 'content-type': 'text/event-stream' } });
  const fake: Fetch = async (url) => String(url).endsWith('/v1/models')
    ? Response.json({ object: 'list', data: [{ id: 'fake-model' }] })
    : sse([{ choices: [{ index: 0, delta: { role: 'assistant', content: 'part' } }] }, { choices: [{ index: 0, delta: { content: 'ial' } }] },
      { error: { message: 'the worker fell over', type: 'server_error' } }]);
  const r = await chatIn({}, 'one\ntwo\n', fake);
  t.equal(r.code, 0);
  t.equal(r.out, 'partial\npartial\n', 'what arrived is printed and the line ended');
  t.equal(r.err, 'error: the worker fell over\nerror: the worker fell over\n');
  t.same(r.posts.map((p) => [p.model, p.messages]), [['fake-model', [{ role: 'user', content: 'one' }]], ['fake-model', [{ role: 'user', content: 'two' }]]]);
});

t.test('Ctrl-C stops a reply and drops its turn; Ctrl-D leaves', async (t) => {
  const long = 120;
  const full = await reference([u1], long);
  t.ok(full.length > 1, 'the uninterrupted reply is long enough to interrupt');
  const input = new PassThrough();
  const posts: Run['posts'] = [];
  let stopped = null as string | null;
  const out = collector((text) => {
    // Once the first turn is posted, what is written until the stop notice is its reply.
    if (posts.length !== 1 || /stopped/.test(err.text())) return;
    if (stopped === null) input.write('\x03'); // its first piece: press Ctrl-C
    stopped = (stopped ?? '') + text;
  });
  const err = collector((text) => {
    if (/stopped/.test(text)) input.write(`${u2.content}\r\x04`); // then type the next turn and Ctrl-D
  });
  const done = runChat({ url: server.baseURL, sampling: { temperature: 0, max_tokens: long } },
    { input, output: out.stream, errors: err.stream, interactive: true, fetch: recording(posts) });
  input.write(`${u1.content}\r`);
  const guard = setTimeout(() => input.end('\x04'), 20_000); // should Ctrl-C not stop the reply
  t.equal(await done, 0);
  clearTimeout(guard);
  t.match(err.text(), /\(reply stopped\)/);
  t.ok(stopped?.endsWith('\n'), 'the stopped reply ends its line');
  const printed = (stopped ?? '').slice(0, -1);
  t.ok(printed.length > 0 && printed.length < full.length && full.startsWith(printed),
    `the stopped reply is a strict prefix of the whole one (${printed.length} of ${full.length} characters)`);
  t.same(posts.map((p) => p.messages), [[u1], [u2]], 'the stopped turn is not in the history');
  t.ok(out.text().endsWith(`${await reference([u2], long)}\n\n\n`), 'the next turn is answered, then Ctrl-D ends the line');
});

t.test('as a command: piped stdin, --url', async (t) => {
  const r = await cli(['--url', `${server.baseURL}/v1/`, '--temperature', '0', '--max-tokens', String(MAX_TOKENS)], `${u1.content}\n`);
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout, `${await reference([u1])}\n`);
  t.equal(r.stderr, '');
});

t.test('as a command: no server to talk to, bad flags', async (t) => {
  const port = await new Promise<number>((res) => {
    const s = createServer().listen(0, '127.0.0.1', () => { const p = (s.address() as AddressInfo).port; s.close(() => res(p)); });
  });
  const r = await cli(['--url', `http://127.0.0.1:${port}`], 'Hello\n');
  t.equal(r.code, 1);
  t.match(r.stderr, new RegExp(`^error: chat: cannot connect to http://127\\.0\\.0\\.1:${port} \\(ECONNREFUSED\\)`));
  t.equal(r.stdout, '');

  const temp = await cli(['--url', server.baseURL, '--temperature', 'hot'], '');
  t.equal(temp.code, 1);
  t.match(temp.stderr, /--temperature must be a number from 0 to 2, got "hot"/);
  const both = await cli(['--url', server.baseURL, '--model-dir', 'x'], '');
  t.equal(both.code, 2);
  t.match(both.stderr, /not both/);
});

t.test('as a command: --model-dir serves the model in-process', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'gs-chat-local-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // The same recipe as the tiny server's model, so the same weights and the same replies.
  makeRandomCheckpoint({ shape: 'tiny', seed: 0, dtype: 'f32', out: join(dir, 'ckpt'), set: { max_position_embeddings: '256' } });
  const env = { GEMMA_SERVE_DATA_DIR: join(dir, 'data') };
  const r = await cli(['--model-dir', join(dir, 'ckpt'), '--temperature', '0', '--max-tokens', String(MAX_TOKENS)], `${u1.content}\n${u2.content}\n`, env);
  t.equal(r.code, 0, r.stderr);
  const ref1 = await reference([u1]);
  t.equal(r.stdout, `${ref1}\n${await reference([u1, { role: 'assistant', content: ref1 }, u2])}\n`, 'replies on stdout only');
  t.match(r.stderr, /loading .*ckpt/, 'progress goes to stderr');

  const bad = await cli(['--model-dir', join(dir, 'missing')], 'Hello\n', env);
  t.equal(bad.code, 1);
  t.match(bad.stderr, /^error: chat: model directory .*missing does not exist/);
});
