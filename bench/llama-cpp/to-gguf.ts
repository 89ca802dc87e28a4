/**
 * A Hugging Face Gemma 2 checkpoint (a random one from `gemma-serve make-random`, or a real one)
 * as a GGUF file for llama.cpp, so its speed can be measured on the same model as ours
 * (bench/llama-cpp/bench.ts):
 *
 *   npx tsx bench/llama-cpp/to-gguf.ts --checkpoint DIR --out FILE.gguf [--type q4_0|q8_0]
 *
 * What llama.cpp's convert_hf_to_gguf.py writes for Gemma 2 (architecture `gemma2`, its tensor
 * names, RMSNorm weights stored as 1 + w, the tokenizer as an SPM vocabulary from tokenizer.json),
 * with every matrix, the tied embedding / LM head included, quantized to --type: llama-quantize's
 * `--pure` (without it, llama-quantize keeps the tied embedding at Q6_K); our int4 export's LM
 * head is int4 too. Q4_0 and Q8_0 are quantized as ggml's reference quantizers do.
 */
import { closeSync, openSync, readFileSync, writeSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { openCheckpoint } from '../../src/checkpoint/checkpoint.ts';
import { forEachFloat32Chunk, type TensorEntry } from '../../src/checkpoint/safetensors.ts';
import { f32ToF16 } from '../../src/f16.ts';

const { values: o } = parseArgs({ options: { checkpoint: { type: 'string' }, out: { type: 'string' }, type: { type: 'string', default: 'q4_0' } } });
if (o.checkpoint === undefined || o.out === undefined || !['q4_0', 'q8_0'].includes(o.type)) {
  throw new Error('usage: bench/llama-cpp/to-gguf.ts --checkpoint DIR --out FILE.gguf [--type q4_0|q8_0]');
}
const ckpt = openCheckpoint(o.checkpoint);
const c = ckpt.config;

/** ggml tensor types used here and their block geometry. */
const GGML = { F32: { id: 0, block: 1, bytes: 4 }, Q4_0: { id: 2, block: 32, bytes: 18 }, Q8_0: { id: 8, block: 32, bytes: 34 } } as const;
type GgmlType = (typeof GGML)[keyof typeof GGML];
const matrixType: GgmlType = o.type === 'q8_0' ? GGML.Q8_0 : GGML.Q4_0;
const ALIGN = 32;

// --- GGUF encoding -------------------------------------------------------------------------
const V = { U32: 4, I32: 5, F32: 6, BOOL: 7, STRING: 8, ARRAY: 9 } as const;
const chunks: Buffer[] = [];
const u32 = (v: number): void => { const b = Buffer.alloc(4); b.writeUInt32LE(v); chunks.push(b); };
const u64 = (v: number): void => { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(v)); chunks.push(b); };
const str = (s: string): void => { const b = Buffer.from(s, 'utf8'); u64(b.length); chunks.push(b); };
type Kv = [string, 'u32' | 'f32' | 'str' | 'bool', number | string] | [string, 'str[]', string[]] | [string, 'f32[]' | 'i32[]', number[]];
function kv([key, type, value]: Kv): void {
  str(key);
  if (type === 'u32') { u32(V.U32); u32(value as number); return; }
  if (type === 'f32') { u32(V.F32); const b = Buffer.alloc(4); b.writeFloatLE(value as number); chunks.push(b); return; }
  if (type === 'str') { u32(V.STRING); str(value as string); return; }
  if (type === 'bool') { u32(V.BOOL); chunks.push(Buffer.from([value ? 1 : 0])); return; }
  u32(V.ARRAY);
  const list = value as (string | number)[];
  if (type === 'str[]') { u32(V.STRING); u64(list.length); for (const s of list) str(s as string); return; }
  u32(type === 'f32[]' ? V.F32 : V.I32);
  u64(list.length);
  const b = Buffer.alloc(4 * list.length);
  list.forEach((x, i) => (type === 'f32[]' ? b.writeFloatLE(x as number, 4 * i) : b.writeInt32LE(x as number, 4 * i)));
  chunks.push(b);
}

// --- the vocabulary --------------------------------------------------------------------------
// tokenizer.json (BPE with byte fallback, as Gemma's) → SPM tokens by id; control tokens typed 3,
// byte tokens <0xNN> typed 6, the rest normal (1), scores by rank.
if (ckpt.tokenizerJson === null) throw new Error(`${o.checkpoint}: no tokenizer.json`);
const tok = JSON.parse(readFileSync(ckpt.tokenizerJson, 'utf8')) as { model: { vocab: Record<string, number> }; added_tokens?: { id: number; content: string; special?: boolean }[] };
const tokens: string[] = new Array<string>(c.vocabSize).fill('');
for (const [t, id] of Object.entries(tok.model.vocab)) if (id < c.vocabSize) tokens[id] = t;
const special = new Set<number>();
for (const a of tok.added_tokens ?? []) {
  if (a.id < c.vocabSize) tokens[a.id] = a.content;
  if (a.special) special.add(a.id);
}
for (let i = 0; i < tokens.length; i++) if (tokens[i] === '') tokens[i] = `<unused${i}>`;
const types = tokens.map((t, i) => (special.has(i) ? 3 : /^<0x[0-9A-F]{2}>$/.test(t) ? 6 : 1));
const scores = tokens.map((_, i) => -i);

// --- tensors ---------------------------------------------------------------------------------
interface Out {
  readonly name: string;
  readonly entry: TensorEntry;
  readonly dims: readonly number[]; // ggml order: ne[0] (the row length) first
  readonly type: GgmlType;
  readonly addOne: boolean;
}
const outs: Out[] = [];
const t = (name: string, hf: string, type: GgmlType, addOne = false): void => {
  const entry = ckpt.tensors.get(hf);
  if (!entry) throw new Error(`${hf}: not in the checkpoint`);
  outs.push({ name, entry, dims: [...entry.shape].reverse(), type, addOne });
};
t('token_embd.weight', 'model.embed_tokens.weight', matrixType);
for (let i = 0; i < c.numLayers; i++) {
  const p = `model.layers.${i}.`;
  t(`blk.${i}.attn_norm.weight`, `${p}input_layernorm.weight`, GGML.F32, true);
  t(`blk.${i}.attn_q.weight`, `${p}self_attn.q_proj.weight`, matrixType);
  t(`blk.${i}.attn_k.weight`, `${p}self_attn.k_proj.weight`, matrixType);
  t(`blk.${i}.attn_v.weight`, `${p}self_attn.v_proj.weight`, matrixType);
  t(`blk.${i}.attn_output.weight`, `${p}self_attn.o_proj.weight`, matrixType);
  t(`blk.${i}.post_attention_norm.weight`, `${p}post_attention_layernorm.weight`, GGML.F32, true);
  t(`blk.${i}.ffn_norm.weight`, `${p}pre_feedforward_layernorm.weight`, GGML.F32, true);
  t(`blk.${i}.ffn_gate.weight`, `${p}mlp.gate_proj.weight`, matrixType);
  t(`blk.${i}.ffn_up.weight`, `${p}mlp.up_proj.weight`, matrixType);
  t(`blk.${i}.ffn_down.weight`, `${p}mlp.down_proj.weight`, matrixType);
  t(`blk.${i}.post_ffw_norm.weight`, `${p}post_feedforward_layernorm.weight`, GGML.F32, true);
}
t('output_norm.weight', 'model.norm.weight', GGML.F32, true);
if (!c.tieWordEmbeddings) t('output.weight', 'lm_head.weight', matrixType);

const elements = (x: Out): number => x.dims.reduce((a, b) => a * b, 1);
const byteSize = (x: Out): number => (elements(x) / x.type.block) * x.type.bytes;
const pad = (n: number): number => Math.ceil(n / ALIGN) * ALIGN;

const meta: Kv[] = [
  ['general.architecture', 'str', 'gemma2'],
  ['general.name', 'str', `gemma-serve ${o.checkpoint}`],
  ['general.alignment', 'u32', ALIGN],
  ['general.file_type', 'u32', matrixType === GGML.Q8_0 ? 7 : 2],
  ['gemma2.context_length', 'u32', c.maxPositions],
  ['gemma2.embedding_length', 'u32', c.hiddenSize],
  ['gemma2.block_count', 'u32', c.numLayers],
  ['gemma2.feed_forward_length', 'u32', c.intermediateSize],
  ['gemma2.attention.head_count', 'u32', c.numHeads],
  ['gemma2.attention.head_count_kv', 'u32', c.numKvHeads],
  ['gemma2.attention.key_length', 'u32', c.headDim],
  ['gemma2.attention.value_length', 'u32', c.headDim],
  ['gemma2.attention.layer_norm_rms_epsilon', 'f32', c.rmsNormEps],
  ['gemma2.attention.sliding_window', 'u32', c.slidingWindow],
  ['gemma2.rope.freq_base', 'f32', c.ropeTheta],
  ...(c.attnLogitSoftcap === null ? [] : [['gemma2.attn_logit_softcapping', 'f32', c.attnLogitSoftcap] as Kv]),
  ...(c.finalLogitSoftcap === null ? [] : [['gemma2.final_logit_softcapping', 'f32', c.finalLogitSoftcap] as Kv]),
  ['tokenizer.ggml.model', 'str', 'llama'],
  ['tokenizer.ggml.tokens', 'str[]', tokens],
  ['tokenizer.ggml.scores', 'f32[]', scores],
  ['tokenizer.ggml.token_type', 'i32[]', types],
  ['tokenizer.ggml.bos_token_id', 'u32', c.bosTokenId],
  ['tokenizer.ggml.eos_token_id', 'u32', c.eosTokenIds[0] ?? 1],
  ['tokenizer.ggml.padding_token_id', 'u32', c.padTokenId],
  ['tokenizer.ggml.add_bos_token', 'bool', 1],
];

chunks.push(Buffer.from('GGUF', 'latin1'));
u32(3);
u64(outs.length);
u64(meta.length);
for (const m of meta) kv(m);
let offset = 0;
for (const x of outs) {
  str(x.name);
  u32(x.dims.length);
  for (const d of x.dims) u64(d);
  u32(x.type.id);
  u64(offset);
  offset += pad(byteSize(x));
}
const header = Buffer.concat(chunks);
const fd = openSync(o.out, 'w');
writeSync(fd, header);
writeSync(fd, Buffer.alloc(pad(header.length) - header.length));

// --- quantization (ggml's reference quantizers) ------------------------------------------------
function quantize(src: Float32Array, type: GgmlType, dst: Buffer): void {
  for (let b = 0; b < src.length / 32; b++) {
    const x = src.subarray(b * 32, b * 32 + 32);
    const o8 = b * type.bytes;
    if (type === GGML.Q4_0) {
      let max = 0;
      for (const v of x) if (Math.abs(v) > Math.abs(max)) max = v;
      const d = Math.fround(max / -8);
      const id = d !== 0 ? Math.fround(1 / d) : 0;
      const h = f32ToF16(d);
      dst.writeUInt16LE(h, o8);
      for (let j = 0; j < 16; j++) {
        const lo = Math.min(15, Math.trunc(x[j]! * id + 8.5));
        const hi = Math.min(15, Math.trunc(x[j + 16]! * id + 8.5));
        dst[o8 + 2 + j] = lo | (hi << 4);
      }
    } else {
      let amax = 0;
      for (const v of x) amax = Math.max(amax, Math.abs(v));
      const d = Math.fround(amax / 127);
      const id = d !== 0 ? Math.fround(1 / d) : 0;
      const h = f32ToF16(d);
      dst.writeUInt16LE(h, o8);
      for (let j = 0; j < 32; j++) dst.writeInt8(Math.max(-127, Math.min(127, Math.round(x[j]! * id))), o8 + 2 + j);
    }
  }
}

const started = performance.now();
const CHUNK = 1 << 21; // a multiple of every row length here
for (const x of outs) {
  const n = elements(x);
  forEachFloat32Chunk(x.entry, Math.max(x.dims[0]!, CHUNK - (CHUNK % x.dims[0]!)), (chunk) => {
    if (x.addOne) for (let i = 0; i < chunk.length; i++) chunk[i]! += 1;
    if (x.type === GGML.F32) {
      writeSync(fd, Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
      return;
    }
    const out = Buffer.alloc((chunk.length / 32) * x.type.bytes);
    quantize(chunk, x.type, out);
    writeSync(fd, out);
  });
  const size = byteSize(x);
  writeSync(fd, Buffer.alloc(pad(size) - size));
  if (n > 1e8) process.stderr.write(`  ${x.name} (${(performance.now() - started) / 1000 | 0} s)\n`);
}
closeSync(fd);
console.log(`${o.out}: ${outs.length} tensors, ${o.type} matrices, ${((pad(header.length) + offset) / 1e9).toFixed(2)} GB (${o.checkpoint})`);
