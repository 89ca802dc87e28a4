/**
 * The shape-only graphs of the published sizes declare exactly the parameters of the real
 * models: every HF tensor once (norm scales appear as `<hf name>.plus_one`), nothing else
 * besides the graph's own constants (`/const/...`).
 */
import t from 'tap';
import onnxProto from 'onnx-proto';
import { parseGemma2Config, parameterCount, SHAPES } from '../../src/checkpoint/config.ts';
import { buildShapeOnlyGraph } from '../../src/engine/export/export.ts';

const EXPECTED: Record<'2b' | '9b' | '27b', number> = {
  '2b': 2_614_341_888,
  '9b': 9_241_705_984,
  '27b': 27_227_128_320,
};

function toNumber(d: unknown): number {
  return typeof d === 'number' ? d : Number(String(d));
}

for (const [shape, expected] of Object.entries(EXPECTED) as ['2b' | '9b' | '27b', number][]) {
  t.test(`shape-only ${shape}`, async (t) => {
    const config = parseGemma2Config(SHAPES[shape], `<shape ${shape}>`);
    const bytes = buildShapeOnlyGraph(config).encode('gemma2');
    const model = onnxProto.onnx.ModelProto.decode(bytes);
    const inits = model.graph?.initializer ?? [];
    const seen = new Map<string, number>();
    const withData: string[] = [];
    for (const init of inits) {
      const name = init.name ?? '';
      if (name.startsWith('/const/')) continue;
      if ((init.rawData?.length ?? 0) > 0 || (init.externalData?.length ?? 0) > 0) withData.push(name);
      const hf = name.endsWith('.plus_one') ? name.slice(0, -'.plus_one'.length) : name;
      const count = (init.dims ?? []).map(toNumber).reduce((a, b) => a * b, 1);
      const prev = seen.get(hf);
      if (prev !== undefined) t.equal(count, prev, `${hf} declared twice with the same shape`);
      seen.set(hf, count);
    }
    t.same(withData, [], 'initializers carry shapes only, no data');
    let total = 0;
    for (const n of seen.values()) total += n;
    t.equal(total, expected, `${shape}: parameters`);
    t.equal(parameterCount(config), expected, `${shape}: parameterCount agrees`);
    t.ok(seen.has('model.embed_tokens.weight'), 'has the embedding');
    t.notOk(seen.has('lm_head.weight'), 'tied head: no separate lm_head');
  });
}
