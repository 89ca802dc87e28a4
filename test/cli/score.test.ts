// `gemma-serve score` on a checkpoint (exported on the fly and cached): its JSON matches the
// documented format and the golden log-probabilities.
import t from 'tap';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const root = join(import.meta.dirname, '..', '..');
const fixture = join(root, 'test', 'fixtures', 'tiny-gemma2');
const dataDir = mkdtempSync(join(tmpdir(), 'gs-score-'));
t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
const env = { ...process.env, GEMMA_SERVE_DATA_DIR: dataDir };

interface ScoreOutput { input_ids: number[]; positions: { top: { id: number; logprob: number }[] }[] }

t.test('--top 0 gives the whole vocabulary, sorted, within 5e-3 of golden', async (t) => {
  const golden = JSON.parse(readFileSync(join(fixture, 'golden.json'), 'utf8')) as { sequences: { input_ids: number[]; logprobs: number[][] }[] };
  const ids = golden.sequences[0]!.input_ids;
  const out = JSON.parse(execFileSync('node', [join(root, 'bin', 'gemma-serve.js'), 'score', '--model', fixture, '--ids', ids.join(','), '--top', '0'], { env, encoding: 'utf8' })) as ScoreOutput;
  t.same(out.input_ids, ids);
  t.equal(out.positions.length, ids.length);
  let maxDiff = 0;
  out.positions.forEach((p, i) => {
    t.equal(p.top.length, 512);
    for (let j = 1; j < p.top.length; j++) if (p.top[j]!.logprob > p.top[j - 1]!.logprob) t.fail('not sorted');
    for (const { id, logprob } of p.top) maxDiff = Math.max(maxDiff, Math.abs(logprob - golden.sequences[0]!.logprobs[i]![id]!));
  });
  t.ok(maxDiff < 5e-3, `max |Δ| ${maxDiff}`);
});

t.test('--top K keeps K entries; an id outside the vocabulary is a clear error', async (t) => {
  const out = JSON.parse(execFileSync('node', [join(root, 'bin', 'gemma-serve.js'), 'score', '--model', fixture, '--ids', '2,5', '--top', '3'], { env, encoding: 'utf8' })) as ScoreOutput;
  t.equal(out.positions[0]!.top.length, 3);
  const bad = spawnSync('node', [join(root, 'bin', 'gemma-serve.js'), 'score', '--model', fixture, '--ids', '2,512'], { env, encoding: 'utf8' });
  t.equal(bad.status, 1);
  t.match(bad.stderr, /token id 512 is outside the vocabulary/);
});
