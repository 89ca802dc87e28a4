// The paged graph's view of the cache (model-runner.ts cacheView): only blocks that hold
// positions before the step are passed, so a prompt's prefill does not score its own (still
// empty) blocks; the slots passed keep their positions, and a full ring is passed whole.
import t from 'tap';
import { cacheView } from '../../src/engine/model-runner.ts';
import type { CacheLayout, PlanRow } from '../../src/scheduler/runner-contract.ts';

const layout: CacheLayout = { blockSize: 4, numBlocks: { global: 32, sliding: 32 }, ringSlots: 8 };
const row = (start: number, n: number, global: number[], sliding: number[], slidingView?: number[]): PlanRow => ({
  seqId: 1, start, tokenIds: new Int32Array(n), blocks: { global, sliding }, logits: 'last', sample: true,
  ...(slidingView !== undefined ? { slidingView } : {}),
});

t.test('a whole prompt (nothing cached) reads one null block of empty slots', async (t) => {
  const v = cacheView(layout, 'global', [row(0, 10, [5, 6, 7], [8, 9])]);
  t.equal(v.width, 1);
  t.same([...v.table], [0n]);
  t.same([...v.slots], [-1n, -1n, -1n, -1n]);
});

t.test('a chunk after 6 cached positions reads the two blocks that hold them, not the chunk\'s own', async (t) => {
  const v = cacheView(layout, 'global', [row(6, 8, [5, 6, 7, 11], [8, 9])]);
  t.equal(v.width, 2);
  t.same([...v.table], [5n, 6n]);
  t.same([...v.slots], [0n, 1n, 2n, 3n, 4n, 5n, -1n, -1n]);
  const s = cacheView(layout, 'sliding', [row(6, 8, [5, 6, 7, 11], [8, 9])]);
  t.same([...s.table], [8n, 9n]);
  t.same([...s.slots], [0n, 1n, 2n, 3n, 4n, 5n, -1n, -1n]);
});

t.test('a decode row past the ring reads the whole ring, slots at their ring positions', async (t) => {
  const s = cacheView(layout, 'sliding', [row(10, 1, [1, 2, 3], [8, 9])]);
  t.same([...s.table], [8n, 9n]);
  t.same([...s.slots], [8n, 9n, 2n, 3n, 4n, 5n, 6n, 7n]);
});

t.test('the ring before the step replaced a block (slidingView) is what is read', async (t) => {
  const s = cacheView(layout, 'sliding', [row(10, 1, [1, 2, 3], [12, 9], [8, 9])]);
  t.same([...s.table], [8n, 9n]);
});

t.test('rows of one pass: each cut to its own cached blocks, padded with the null block', async (t) => {
  const v = cacheView(layout, 'global', [row(0, 5, [5, 6], []), row(9, 1, [1, 2, 3], [])]);
  t.equal(v.width, 3);
  t.same([...v.table], [0n, 0n, 0n, 1n, 2n, 3n]);
  t.same([...v.slots].slice(0, 12), Array(12).fill(-1n));
  t.same([...v.slots].slice(12), [0n, 1n, 2n, 3n, 4n, 5n, 6n, 7n, 8n, -1n, -1n, -1n]);
});
