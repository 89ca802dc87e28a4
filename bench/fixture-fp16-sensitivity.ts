/**
 * How sensitive each golden fixture is to its weights' precision: the float64 reference's
 * log-probabilities over the fixture's golden sequences, with the weights as stored vs with
 * every matrix rounded to fp16. `npx tsx bench/fixture-fp16-sensitivity.ts`. (Explains why
 * quantization fidelity is asserted on an HF-initialized model rather than on these fixtures.)
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Gemma2Reference } from '../test/reference/gemma2-reference.ts';

const fixtures = new URL('../test/fixtures/', import.meta.url).pathname;
for (const name of readdirSync(fixtures, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name)) {
  const dir = join(fixtures, name);
  const golden = JSON.parse(readFileSync(join(dir, 'golden.json'), 'utf8')) as { sequences: { input_ids: number[] }[] };
  const exact = Gemma2Reference.fromCheckpoint(dir);
  const rounded = Gemma2Reference.fromCheckpoint(dir);
  rounded.roundMatricesToF16();
  let max = 0;
  for (const { input_ids: ids } of golden.sequences) {
    const a = exact.logprobs(ids);
    const b = rounded.logprobs(ids);
    a.forEach((row, i) => row.forEach((v, j) => { max = Math.max(max, Math.abs(v - b[i]![j]!)); }));
  }
  console.log(`${name}: fp16-rounded matrices move log-probabilities by up to ${max.toFixed(3)}`);
}
