/**
 * src/'s import graph, as dpdm's parser (TypeScript's) reads it, and the two questions the
 * checks ask of it: which imports form cycles (scripts/check-cycles.ts) and which files a
 * module loads statically (test/package/serving-graph.test.ts). Edges are kept only between
 * files under src/; each carries its kind, so static, dynamic and type-only imports can be
 * told apart (`import type` edges exist only when parsed without `transform`).
 */
import { parseDependencyTree, type DependencyTree } from 'dpdm';

/** One import: `from` imports `to` (both paths relative to the repository root). */
export interface ImportEdge {
  readonly from: string;
  readonly to: string;
  readonly dynamic: boolean;
}

/** Every import between files under src/, type-only ones included. */
export async function srcImports(root: string): Promise<ImportEdge[]> {
  const tree: DependencyTree = await parseDependencyTree('src/**/*.ts', { context: root, cwd: root, transform: false });
  const edges: ImportEdge[] = [];
  for (const [from, deps] of Object.entries(tree)) {
    if (!from.startsWith('src/') || deps === null) continue;
    for (const d of deps) {
      if (d.id !== null && d.id.startsWith('src/')) edges.push({ from, to: d.id, dynamic: d.kind === 'DynamicImport' });
    }
  }
  return edges;
}

/** The top-level part of src/ a file belongs to: its folder (src/engine), or itself (src/errors.ts). */
export function roomOf(file: string): string {
  const parts = file.split('/');
  return parts.length > 2 ? `${parts[0]}/${parts[1]}` : file;
}

/**
 * The cycles of a directed graph: its strongly connected components of more than one node
 * (or a node importing itself), each as the edges that run inside it, sorted.
 */
export function cycles(edges: readonly (readonly [string, string])[]): string[][] {
  const next = new Map<string, Set<string>>();
  for (const [a, b] of edges) {
    if (!next.has(a)) next.set(a, new Set());
    if (!next.has(b)) next.set(b, new Set());
    next.get(a)!.add(b);
  }
  // Tarjan's algorithm, iterative so a deep chain cannot overflow the stack.
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const components: string[][] = [];
  let counter = 0;
  for (const start of next.keys()) {
    if (index.has(start)) continue;
    const work: [string, Iterator<string>][] = [];
    const visit = (v: string): void => {
      index.set(v, counter);
      low.set(v, counter++);
      stack.push(v);
      onStack.add(v);
      work.push([v, next.get(v)!.values()]);
    };
    visit(start);
    while (work.length > 0) {
      const [v, it] = work[work.length - 1]!;
      const step = it.next();
      if (!step.done) {
        const w = step.value;
        if (!index.has(w)) visit(w);
        else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
        continue;
      }
      work.pop();
      const parent = work[work.length - 1];
      if (parent !== undefined) low.set(parent[0], Math.min(low.get(parent[0])!, low.get(v)!));
      if (low.get(v) === index.get(v)) {
        const component: string[] = [];
        let w: string;
        do {
          w = stack.pop()!;
          onStack.delete(w);
          component.push(w);
        } while (w !== v);
        if (component.length > 1 || next.get(v)!.has(v)) components.push(component);
      }
    }
  }
  return components.map((c) => {
    const members = new Set(c);
    return [...new Set(edges.filter(([a, b]) => members.has(a) && members.has(b)).map(([a, b]) => `${a} -> ${b}`))].sort();
  }).sort((x, y) => (x[0]! < y[0]! ? -1 : 1));
}

/**
 * Files `entries` reach through static imports. Type-only imports count (erased at run time, but
 * the rule is that serving code does not depend on build-time code at all); dynamic ones do not.
 */
export function staticClosure(edges: readonly ImportEdge[], entries: readonly string[]): Set<string> {
  const seen = new Set<string>(entries);
  const todo = [...entries];
  for (let f = todo.pop(); f !== undefined; f = todo.pop()) {
    for (const e of edges) {
      if (e.from === f && !e.dynamic && !seen.has(e.to)) {
        seen.add(e.to);
        todo.push(e.to);
      }
    }
  }
  return seen;
}
