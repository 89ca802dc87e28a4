import t from 'tap';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Gemma2Reference } from './gemma2-reference.ts';

interface Golden {
  sequences: { input_ids: number[]; logprobs: number[][] }[];
  greedy: { prompt_ids: number[]; new_tokens: number; output_ids: number[] };
}

const fixtures = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures');
const TOL = 1e-4;

t.setTimeout(120_000);

for (const name of ['tiny-gemma2', 'tiny-gemma2-bf16-mqa']) {
  t.test(`reference matches ${name} golden.json`, async (t) => {
    const dir = join(fixtures, name);
    const golden = JSON.parse(readFileSync(join(dir, 'golden.json'), 'utf8')) as Golden;
    const ref = Gemma2Reference.fromCheckpoint(dir);

    for (const [k, seq] of golden.sequences.entries()) {
      const got = ref.logprobs(seq.input_ids);
      t.equal(got.length, seq.input_ids.length, `sequence ${k}: one row per position`);
      let maxDelta = 0;
      let where = '';
      for (const [i, row] of seq.logprobs.entries()) {
        const g = got[i]!;
        t.equal(g.length, row.length, `sequence ${k} position ${i}: full vocabulary`);
        for (const [v, want] of row.entries()) {
          const d = Math.abs(g[v]! - want);
          if (!(d <= maxDelta)) { maxDelta = d; where = `position ${i} id ${v}`; }
        }
      }
      t.comment(`${name} sequence ${k} (${seq.input_ids.length} tokens): max |Δ logprob| = ${maxDelta.toExponential(3)} at ${where}`);
      t.ok(maxDelta <= TOL, `sequence ${k}: max |Δ| ${maxDelta} <= ${TOL}`);
    }

    const { prompt_ids, new_tokens, output_ids } = golden.greedy;
    // golden output_ids is the continuation only (length new_tokens), prompt excluded.
    t.equal(output_ids.length, new_tokens);
    t.same(ref.greedy(prompt_ids, new_tokens), output_ids, 'greedy continuation');
  });
}
