// Exports from before the graph's `hidden` output (graph io 1): a cached export of a checkpoint
// is made again on the next start; an export directory served as it is still serves generation,
// and its embeddings are a 501 that says to export again.
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeRandomCheckpoint } from '../../src/checkpoint/make-random.ts';
import { Engine } from '../../src/engine/engine.ts';
import { GRAPH_IO_VERSION } from '../../src/engine/graph-io.ts';
import { MANIFEST_FILE, readManifest } from '../../src/engine/manifest.ts';
import { resolveModel } from '../../src/engine/resolve-model.ts';
import { GemmaServeError } from '../../src/errors.ts';

const dir = mkdtempSync(join(tmpdir(), 'gs-embed-export-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const ckpt = join(dir, 'ckpt');
makeRandomCheckpoint({ shape: 'tiny', seed: 0, dtype: 'f32', out: ckpt, set: { max_position_embeddings: '64' } });

/** Rewrites an export's manifest as graph io 1 wrote it. */
const makeGraphIo1 = (exportDir: string): void => {
  const path = join(exportDir, MANIFEST_FILE);
  writeFileSync(path, JSON.stringify({ ...JSON.parse(readFileSync(path, 'utf8')) as object, graphIoVersion: 1 }));
};

t.test('a cached export older than the hidden output is exported again', async (t) => {
  const exported = await resolveModel(ckpt, join(dir, 'data'));
  t.equal(readManifest(exported).manifest.graphIoVersion, GRAPH_IO_VERSION);
  makeGraphIo1(exported);
  t.equal(readManifest(exported).manifest.graphIoVersion, 1, 'served as it is, it would be graph io 1');
  t.equal(await resolveModel(ckpt, join(dir, 'data')), exported, 'the same cache entry');
  t.equal(readManifest(exported).manifest.graphIoVersion, GRAPH_IO_VERSION, 'made again');
});

t.test('a graph io 1 export directory: generation yes, embeddings a 501', async (t) => {
  const exported = await resolveModel(ckpt, join(dir, 'data2'));
  makeGraphIo1(exported);
  const engine = await Engine.start({ modelDir: exported, dataDir: join(dir, 'data2'), kvCacheBytes: 2 ** 20 });
  t.teardown(() => engine.close());
  t.equal(engine.embeddingSize, null);
  let n = 0;
  for await (const ev of engine.generate({ promptIds: [2, 3, 4], maxTokens: 3, temperature: 0 })) if (ev.type === 'token') n++;
  t.equal(n, 3, 'generates');
  const err = await engine.embed([2, 3, 4]).catch((e: unknown) => e);
  t.ok(err instanceof GemmaServeError && err.status === 501 && err.code === 'embeddings_unsupported', 'embeddings: 501 embeddings_unsupported');
  t.match((err as Error).message, /export the checkpoint again/);
});
