/**
 * The import-cycle check (`npm run check:cycles`, run by `npm test`); exit 1 on any of:
 * - a file cycle in src/: a → b → … → a, through static, dynamic or type-only imports (a
 *   type-only cycle is harmless at run time, but its modules still cannot be read apart);
 * - a room cycle: src/'s top-level folders (server, engine, scheduler, checkpoint, cli) and
 *   root modules (errors.ts, f16.ts, cli.ts) as nodes, an edge wherever a file of one imports
 *   a file of the other. Dependencies point one way (server → engine → scheduler); a room cycle
 *   is a layer importing upward, even where no single file cycle exists.
 * Each cycle is printed as the imports that run inside it.
 */
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cycles, roomOf, srcImports } from './import-graph.ts';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const edges = await srcImports(root);
const fileCycles = cycles(edges.map((e) => [e.from, e.to] as const));
const roomCycles = cycles(edges.filter((e) => roomOf(e.from) !== roomOf(e.to)).map((e) => [roomOf(e.from), roomOf(e.to)] as const));
const files = new Set(edges.flatMap((e) => [e.from, e.to])).size;

/** Each cycle: its members on one line, then the imports that run inside it. */
const report = (title: string, found: string[][], detail: (edge: string) => string[]): void => {
  if (found.length === 0) return;
  process.stdout.write(`${title}:\n`);
  found.forEach((c, i) => {
    const members = [...new Set(c.flatMap((e) => e.split(' -> ')))].sort();
    process.stdout.write(`  ${i + 1}) ${members.join(', ')}\n`);
    for (const d of c.flatMap(detail)) process.stdout.write(`       ${d}\n`);
  });
};
report('file cycles', fileCycles, (edge) => [edge]);
// A room edge names the file imports behind it, so the fix is findable.
report('room cycles (src/ folders importing each other)', roomCycles, (roomEdge) => {
  const [a, b] = roomEdge.split(' -> ');
  return edges.filter((e) => roomOf(e.from) === a && roomOf(e.to) === b).map((e) => `${e.from} -> ${e.to}${e.dynamic ? ' (dynamic)' : ''}`);
});
if (fileCycles.length + roomCycles.length > 0) {
  process.stdout.write(`check:cycles: ${fileCycles.length} file cycle(s), ${roomCycles.length} room cycle(s) in src/ (${files} files)\n`);
  process.exit(1);
}
process.stdout.write(`check:cycles: no import cycles in src/ (${files} files)\n`);
