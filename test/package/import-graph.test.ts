/**
 * The layering rules of src/'s import graph: the cycle finder behind `npm run check:cycles`
 * catches file cycles and folder ("room") cycles, and the serving path (the `serve` command,
 * the engine's worker) reaches no build-time code — the exporter, the checkpoint writer, the
 * load generator — through a static import; those load by dynamic import() where needed.
 */
import t from 'tap';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cycles, roomOf, srcImports, staticClosure } from '../../scripts/import-graph.ts';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

t.test('the cycle finder reports file cycles and nothing for an acyclic graph', async (t) => {
  t.same(cycles([['a', 'b'], ['b', 'c'], ['a', 'c']]), [], 'a diamond is no cycle');
  t.same(cycles([['a', 'b'], ['b', 'c'], ['c', 'a'], ['c', 'd']]), [['a -> b', 'b -> c', 'c -> a']], 'a three-file ring, without the edge leaving it');
  t.same(cycles([['a', 'a']]), [['a -> a']], 'a module importing itself');
  t.equal(cycles([['a', 'b'], ['b', 'a'], ['c', 'd'], ['d', 'c']]).length, 2, 'two separate cycles are two reports');
});

t.test('a folder cycle is found where no file cycle exists (engine/w → scheduler/s → engine/g)', async (t) => {
  const files: [string, string][] = [['src/engine/w.ts', 'src/scheduler/s.ts'], ['src/scheduler/s.ts', 'src/engine/g.ts']];
  t.same(cycles(files), [], 'no file cycle');
  t.equal(roomOf('src/engine/export/x.ts'), 'src/engine', 'a sub-folder belongs to its top-level room');
  t.equal(roomOf('src/errors.ts'), 'src/errors.ts', 'a root module is its own room');
  const rooms = files.map(([a, b]) => [roomOf(a), roomOf(b)] as const);
  t.same(cycles(rooms), [['src/engine -> src/scheduler', 'src/scheduler -> src/engine']]);
});

t.test('the serving path imports no build-time code statically', async (t) => {
  const edges = await srcImports(ROOT);
  t.ok(edges.some((e) => e.from === 'src/cli/serve.ts' && e.to === 'src/checkpoint/make-random.ts' && e.dynamic),
    'the parser sees dynamic imports (serve loads the random-checkpoint writer only to make the default model)');
  t.notOk(edges.some((e) => e.from === 'src/engine/resolve-model.ts' && e.to.startsWith('src/engine/export/')),
    'resolve-model reaches the exporter only through the export worker thread');
  const buildTime = (f: string): boolean => f.startsWith('src/engine/export/') || f.startsWith('src/cli/bench/')
    || f === 'src/checkpoint/make-random.ts' || f === 'src/checkpoint/safetensors-writer.ts';
  // The reach of the walk is checked on a module that does import the exporter, so a walk that
  // found nothing could not pass the assertions below.
  t.ok([...staticClosure(edges, ['src/cli/export.ts'])].some(buildTime), 'the export command reaches the exporter');
  for (const entry of ['src/cli.ts', 'src/cli/serve.ts', 'src/engine/worker.ts']) {
    const reached = staticClosure(edges, [entry]);
    t.ok(reached.size > 1, `${entry} reaches ${reached.size} modules`);
    t.same([...reached].filter(buildTime), [], `${entry} reaches no build-time module`);
  }
  const serve = staticClosure(edges, ['src/cli/serve.ts']);
  for (const f of ['src/engine/engine.ts', 'src/engine/manifest.ts', 'src/server/app.ts']) t.ok(serve.has(f), `serve reaches ${f}`);
});
