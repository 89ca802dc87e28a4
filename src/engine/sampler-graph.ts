/**
 * The sampler as an ONNX graph (run by device-sampler.ts on the model's execution provider):
 * a step's logits rows in, one sampled id per row out, so only ids and logprobs cross back to
 * JavaScript instead of every row's vocabulary. It computes what sampling.ts computes, in the
 * same order: penalties (repetition, then frequency and presence) → logit bias → the allowed-token
 * mask → greedy argmax, or softmax(x / T) and a draw with one host uniform per row:
 * - unfiltered rows walk the vocabulary in index order (the first id whose cumulative probability
 *   exceeds u · total), found in two levels: block sums, then one block's running sum, both
 *   accumulated in float64, so no pass over the vocabulary is sequential;
 * - rows with top-k / top-p / min-p draw over the K most likely ids (TopK: descending logit, ties
 *   by id), cut by top-k, then top-p (normalized by the top-k mass), then min-p.
 * Which parts a graph holds is fixed when it is built (SamplerFeatures), so a batch pays only for
 * what its rows ask; K, the rows and the list lengths are run-time dimensions.
 */
import { DType, GraphBuilder } from './onnx-builder.ts';

/** TensorProto.DataType DOUBLE: the running sums of the draw (Cast targets only, never an input). */
const F64 = 11;

/** The optional parts of a sampler graph. */
export interface SamplerFeatures {
  /** `logits` holds more rows than are sampled: a `rows` input picks them (a Gather). */
  readonly gather: boolean;
  /** Repetition / frequency / presence penalties from per-row token lists. */
  readonly penalties: boolean;
  /** Sparse logit bias per row. */
  readonly bias: boolean;
  /** An allowed-token bitmask per row (structured output). */
  readonly mask: boolean;
  /** The TopK candidates: filtered draws and top logprobs. */
  readonly candidates: boolean;
  /** The sampled token's logprob (and the candidates' when `candidates`). */
  readonly logprobs: boolean;
  /** Some row is greedy (argmax). */
  readonly greedy: boolean;
  /** Some row draws (temperature > 0). */
  readonly draw: boolean;
  /** Some drawing row's temperature is not 1 (else the logits are the softmax's input as they are). */
  readonly temperature: boolean;
}

/** Names of the graph's inputs and outputs (shapes: R sampled rows, V vocabulary, K candidates). */
export const SamplerIO = {
  /** [N, V] float: the step's logits (N = R without `gather`). */
  logits: 'logits',
  /** [R] int64: which logits rows are sampled (`gather`). */
  rows: 'rows',
  /** [R] float: 1 / temperature (1 for greedy rows). */
  invTemperature: 'inv_temperature',
  /** [R] int32: 1 for greedy (argmax) rows. */
  greedy: 'greedy',
  /** [R] int64: the uniform in [0, 1) times 2^32 (mulberry32's integer, exact in float64). */
  uniform: 'uniform_bits',
  /** [R, P] int64 distinct ids seen (prompt and output), padded by repeating an entry; [R, P] float their output counts. */
  penaltyIds: 'penalty_ids',
  penaltyCounts: 'penalty_counts',
  /** [R, 3] float: repetition, frequency, presence. */
  penaltyParams: 'penalty_params',
  /** [R, Nb] int64 ids and float values (padding: bias 0). */
  biasIds: 'bias_ids',
  biasValues: 'bias_values',
  /** [R, ceil(V/32)] int32: bit i of word i>>5 set = token i allowed. */
  allowed: 'allowed',
  /** [1] int64: candidates per row. */
  k: 'k',
  /** [R] int32: 1 for rows drawn over the candidates (top-k, top-p or min-p). */
  filtered: 'filtered',
  /** [R] int64: the top-k cut (K where the row has no top-k). */
  topK: 'top_k',
  /** [R] int32: 1 where the row has a top-k (its mass then normalizes top-p). */
  topKActive: 'top_k_active',
  /** [R] float: top-p (1 = off), min-p (0 = off). */
  topP: 'top_p',
  minP: 'min_p',
  // Outputs.
  /** [R] int64 the sampled ids. */
  token: 'token',
  /** [R] float the sampled ids' logprobs (log_softmax of the processed logits, T = 1). */
  logprob: 'logprob',
  /** [R] int64: how many candidates a filtered draw kept (K: the cut may lie beyond them). */
  kept: 'kept',
  /** [R, K] int64 / float: the candidates and their logprobs. */
  topIds: 'top_ids',
  topLogprobs: 'top_logprobs',
  /** [R, V] float: the logits rows `rows` picks (the row reader graph, buildRowReaderGraph). */
  rowLogits: 'row_logits',
} as const;

/** Entries per block of the two-level draw: the divisor of V nearest √V (V = 256,000: 500), or 256 with padding. */
export function drawBlock(V: number): { block: number; padded: number } {
  const root = Math.sqrt(V);
  let best = 0;
  for (let d = 1; d * d <= V; d++) {
    if (V % d !== 0) continue;
    for (const c of [d, V / d]) if (Math.abs(c - root) < Math.abs(best - root)) best = c;
  }
  if (best >= root / 4 && best <= root * 4) return { block: best, padded: V };
  return { block: 256, padded: Math.ceil(V / 256) * 256 };
}

/**
 * `logits` [N, V], `rows` [R] → `row_logits` [R, V]: the rows of device-resident logits that the
 * host needs (prompt logprobs, rows the sampler graph hands back), bound to host memory so that
 * ONNX Runtime copies only them.
 */
export function buildRowReaderGraph(V: number): Uint8Array {
  const g = new GraphBuilder();
  const all = g.input(SamplerIO.logits, DType.FLOAT, ['N', V]);
  const rows = g.input(SamplerIO.rows, DType.INT64, ['R']);
  g.output(g.op1('Gather', '/rows', [all, rows], { axis: 0 }), SamplerIO.rowLogits, DType.FLOAT, ['R', V]);
  return g.encode('row_reader');
}

/** The sampler graph for vocabulary `V` with `f`'s parts. */
export function buildSamplerGraph(V: number, f: SamplerFeatures): Uint8Array {
  const g = new GraphBuilder();
  const io = SamplerIO;
  const i64 = (v: number[]): string => g.constant(v, DType.INT64);
  const f32 = (v: number): string => g.constant([v], DType.FLOAT, []);
  const all = g.input(io.logits, DType.FLOAT, [f.gather ? 'N' : 'R', V]);
  let x = f.gather ? g.op1('Gather', '/rows', [all, g.input(io.rows, DType.INT64, ['R'])], { axis: 0 }) : all; // [R, V]
  const col = (v: string): string => g.op1('Unsqueeze', `${v}/col`, [v, i64([1])]); // [R] -> [R, 1]

  if (f.penalties) {
    // sampling.ts processLogits: seen ids' logits divided (positive) or multiplied (negative) by
    // the repetition penalty, then output counts' frequency and presence penalties subtracted.
    // Padding repeats an entry, so a duplicate index writes the same value twice.
    const ids = g.input(io.penaltyIds, DType.INT64, ['R', 'P']);
    const counts = g.input(io.penaltyCounts, DType.FLOAT, ['R', 'P']);
    const params = g.input(io.penaltyParams, DType.FLOAT, ['R', 3]);
    const param = (i: number, name: string): string => g.op1('Slice', `/penalties/${name}`, [params, i64([i]), i64([i + 1]), i64([1])]); // [R, 1]
    const rep = param(0, 'repetition');
    const seen = g.op1('GatherElements', '/penalties/gather', [x, ids], { axis: 1 });
    const repd = g.op1('Where', '/penalties/rep', [
      g.op1('Greater', '/penalties/positive', [seen, f32(0)]),
      g.op1('Div', '/penalties/div', [seen, rep]),
      g.op1('Mul', '/penalties/mul', [seen, rep]),
    ]);
    const freq = g.op1('Mul', '/penalties/freq', [counts, param(1, 'frequency')]);
    const present = g.op1('Cast', '/penalties/present', [g.op1('Greater', '/penalties/any', [counts, f32(0)])], { to: DType.FLOAT });
    const pres = g.op1('Mul', '/penalties/pres', [present, param(2, 'presence')]);
    const penalized = g.op1('Sub', '/penalties/sub2', [g.op1('Sub', '/penalties/sub1', [repd, freq]), pres]);
    x = g.op1('ScatterElements', '/penalties/scatter', [x, ids, penalized], { axis: 1 });
  }
  if (f.bias) {
    const ids = g.input(io.biasIds, DType.INT64, ['R', 'Nb']);
    const values = g.input(io.biasValues, DType.FLOAT, ['R', 'Nb']);
    x = g.op1('ScatterElements', '/bias/scatter', [x, ids, values], { axis: 1, reduction: 'add' });
  }
  if (f.mask) {
    const W = Math.ceil(V / 32);
    const words = g.input(io.allowed, DType.INT32, ['R', W]);
    const bitValues = Array.from({ length: 32 }, (_, b) => (b === 31 ? -0x80000000 : 1 << b));
    const bits = g.op1('Cast', '/mask/bits_i32', [g.constant(bitValues, DType.INT64)], { to: DType.INT32 });
    const set = g.op1('Not', '/mask/clear', [g.op1('Equal', '/mask/zero', [
      g.op1('BitwiseAnd', '/mask/and', [g.op1('Unsqueeze', '/mask/words', [words, i64([2])]), bits]),
      g.op1('Cast', '/mask/zero_i32', [i64([0])], { to: DType.INT32 }),
    ])]); // [R, W, 32]
    let allowed = g.op1('Reshape', '/mask/flat', [set, i64([0, W * 32])]);
    if (W * 32 !== V) allowed = g.op1('Slice', '/mask/cut', [allowed, i64([0]), i64([V]), i64([1])]);
    x = g.op1('Where', '/mask/apply', [allowed, x, f32(-Infinity)]);
  }
  // x: [R, V] the processed logits.

  const { block: B, padded } = drawBlock(V);
  const nb = padded / B;
  const padTo = (v: string, value: number): string => (padded === V ? v : g.op1('Pad', `${v}/pad`, [v, i64([0, 0, 0, padded - V]), f32(value)]));
  const blocksOf = (v: string): string => g.op1('Reshape', `${v}/blocks`, [v, i64([0, nb, B])]); // [R, nb, B]
  const toF64 = (v: string): string => g.op1('Cast', `${v}/f64`, [v], { to: F64 });
  const countWhere = (name: string, cond: string): string => g.op1('ReduceSum', `${name}/count`, [g.op1('Cast', `${name}/i64`, [cond], { to: DType.INT64 }), i64([1])], { keepdims: 1 }); // [R, 1]

  // Greedy: the first id of the largest logit, in two levels (ONNX Runtime's ArgMax over a whole
  // row is a scalar loop): the first block holding the maximum, then the first id in it.
  let argmax = '';
  if (f.greedy) {
    const blocks = blocksOf(padTo(x, -Infinity));
    const blockMax = g.op1('ReduceMax', '/argmax/block_max', [blocks, i64([2])], { keepdims: 0 }); // [R, nb]
    const blk = g.op1('ArgMax', '/argmax/block', [blockMax], { axis: 1, keepdims: 1 }); // [R, 1]
    const inBlock = g.op1('ArgMax', '/argmax/in_block', [g.op1('GatherND', '/argmax/gather', [blocks, blk], { batch_dims: 1 })], { axis: 1, keepdims: 1 });
    argmax = g.op1('Add', '/argmax/id', [g.op1('Mul', '/argmax/base', [blk, i64([B])]), inBlock]); // [R, 1]
  }

  let drawn = '';
  let probs = '';
  let total = '';
  let u = '';
  if (f.draw) {
    const scaled = f.temperature ? g.op1('Mul', '/scaled', [x, col(g.input(io.invTemperature, DType.FLOAT, ['R']))]) : x;
    probs = g.op1('Softmax', '/probs', [scaled], { axis: -1 }); // [R, V]
    u = g.op1('Div', '/u', [
      g.op1('Cast', '/u/f64', [g.input(io.uniform, DType.INT64, ['R'])], { to: F64 }),
      g.op1('Cast', '/u/two32', [f32(4294967296)], { to: F64 }),
    ]); // [R] float64
    // The unfiltered draw: the first id whose inclusive running sum exceeds u · total = the number
    // of ids whose running sum is <= u · total (zero-probability ids never cross it). Block sums by
    // a MatMul with ones (MLAS; ReduceSum over the last axis is several times slower here).
    const blocks = blocksOf(padTo(probs, 0));
    const ones = g.constant(new Array<number>(B).fill(1), DType.FLOAT, [B, 1]);
    const blockSums = toF64(g.op1('Reshape', '/draw/block_sums', [g.op1('MatMul', '/draw/block_mm', [blocks, ones]), i64([0, nb])])); // [R, nb]
    const before = g.op1('CumSum', '/draw/before', [blockSums, i64([1])], { exclusive: 1 }); // [R, nb]
    const through = g.op1('Add', '/draw/through', [before, blockSums]);
    total = g.op1('Slice', '/draw/total', [through, i64([nb - 1]), i64([nb]), i64([1])]); // [R, 1]
    const r = g.op1('Mul', '/draw/r', [col(u), total]); // [R, 1]
    const blk = g.op1('Min', '/draw/blk', [countWhere('/draw/blocks_below', g.op1('LessOrEqual', '/draw/le', [through, r])), i64([nb - 1])]); // [R, 1]
    const inBlock = g.op1('Sub', '/draw/rem', [r, g.op1('GatherElements', '/draw/base', [before, blk], { axis: 1 })]); // [R, 1]
    const blockProbs = toF64(g.op1('GatherND', '/draw/block', [blocks, blk], { batch_dims: 1 })); // [R, B]
    const running = g.op1('CumSum', '/draw/running', [blockProbs, i64([1])]);
    const within = g.op1('Min', '/draw/within', [countWhere('/draw/ids_below', g.op1('LessOrEqual', '/draw/le2', [running, inBlock])), i64([B - 1])]);
    drawn = g.op1('Add', '/draw/id', [g.op1('Mul', '/draw/blk_base', [blk, i64([B])]), within]); // [R, 1]
    if (padded !== V) drawn = g.op1('Min', '/draw/clamp', [drawn, i64([V - 1])]);
  }

  let lse = '';
  if (f.logprobs) lse = g.op1('ReduceLogSumExp', '/lse', [x, i64([1])], { keepdims: 1 }); // [R, 1]
  if (f.candidates) {
    const K = g.input(io.k, DType.INT64, [1]);
    const [vals, ids] = g.op('TopK', '/cand/topk', [x, K], { axis: 1, largest: 1, sorted: 1 }, 2) as [string, string]; // [R, K]
    if (f.draw) drawn = filteredDraw(K, ids, drawn);
    if (f.logprobs) {
      g.output(ids, io.topIds, DType.INT64, ['R', 'K']);
      g.output(g.op1('Sub', '/cand/logprobs', [vals, lse]), io.topLogprobs, DType.FLOAT, ['R', 'K']);
    }
  }
  const token = !f.draw ? argmax : !f.greedy ? drawn
    : g.op1('Where', '/token', [g.op1('Cast', '/greedy', [col(g.input(io.greedy, DType.INT32, ['R']))], { to: DType.BOOL }), argmax, drawn]); // [R, 1]
  g.output(g.op1('Squeeze', '/token/sq', [token, i64([1])]), io.token, DType.INT64, ['R']);
  if (f.logprobs) {
    const lp = g.op1('Sub', '/logprob', [g.op1('GatherElements', '/logprob/x', [x, token], { axis: 1 }), lse]);
    g.output(g.op1('Squeeze', '/logprob/sq', [lp, i64([1])]), io.logprob, DType.FLOAT, ['R']);
  }
  return g.encode('sampler');

  /**
   * The draw over the candidates ([R, K] ids by descending logit): cut at top-k, then top-p (its
   * running mass normalized by the top-k mass, or by the total without top-k), then min-p; the
   * first kept candidate whose running sum exceeds u · kept mass. Rows not `filtered` keep `drawn`.
   */
  function filteredDraw(K: string, ids: string, unfiltered: string): string {
    const p = toF64(g.op1('GatherElements', '/cand/probs', [probs, ids], { axis: 1 })); // [R, K] descending
    const pos = g.op1('Range', '/cand/pos', [g.constant([0], DType.INT64, []), g.op1('Squeeze', '/cand/k_scalar', [K, i64([0])]), g.constant([1], DType.INT64, [])]); // [K]
    const kk = col(g.input(io.topK, DType.INT64, ['R']));
    const inK = g.op1('Less', '/cand/in_k', [pos, kk]); // [R, K]
    const zero = g.op1('Cast', '/cand/zero', [f32(0)], { to: F64 });
    const pk = g.op1('Where', '/cand/pk', [inK, p, zero]);
    const topKActive = g.op1('Cast', '/cand/k_active', [col(g.input(io.topKActive, DType.INT32, ['R']))], { to: DType.BOOL });
    const keptMass = g.op1('Where', '/cand/kept_mass', [topKActive, g.op1('ReduceSum', '/cand/k_mass', [pk, i64([1])], { keepdims: 1 }), total]);
    // top-p: keep through the first candidate whose normalized running mass reaches top_p.
    const acc = g.op1('CumSum', '/cand/acc', [g.op1('Div', '/cand/norm', [pk, keptMass]), i64([1])]);
    const topP = col(g.input(io.topP, DType.FLOAT, ['R']));
    const below = countWhere('/cand/below_p', g.op1('And', '/cand/below_and', [g.op1('Less', '/cand/below', [acc, toF64(topP)]), inK]));
    const one = i64([1]);
    const keepP = g.op1('Where', '/cand/keep_p', [g.op1('Less', '/cand/p_on', [topP, f32(1)]), g.op1('Min', '/cand/keep_p_min', [g.op1('Add', '/cand/keep_p_add', [below, one]), kk]), kk]);
    // min-p: keep while the probability is at least min_p times the most likely one's.
    const minP = col(g.input(io.minP, DType.FLOAT, ['R']));
    const first = g.op1('Slice', '/cand/first', [p, i64([0]), i64([1]), i64([1])]);
    const above = countWhere('/cand/above_min', g.op1('GreaterOrEqual', '/cand/ge_min', [p, g.op1('Mul', '/cand/threshold', [toF64(minP), first])]));
    const keep = g.op1('Where', '/cand/keep', [
      g.op1('Greater', '/cand/min_on', [minP, f32(0)]),
      g.op1('Min', '/cand/keep_min', [keepP, g.op1('Max', '/cand/keep_min1', [above, one])]),
      keepP,
    ]); // [R, 1]
    const kept = g.op1('Where', '/cand/kept_w', [g.op1('Less', '/cand/in_keep', [pos, keep]), p, zero]);
    const keptRunning = g.op1('CumSum', '/cand/running', [kept, i64([1])]);
    const keptTotal = g.op1('ReduceSum', '/cand/kept_total', [kept, i64([1])], { keepdims: 1 });
    const rc = g.op1('Mul', '/cand/r', [col(u), keptTotal]);
    const at = g.op1('Min', '/cand/at', [countWhere('/cand/ids_below', g.op1('LessOrEqual', '/cand/le', [keptRunning, rc])), g.op1('Sub', '/cand/last', [keep, one])]);
    const filteredId = g.op1('GatherElements', '/cand/id', [ids, at], { axis: 1 });
    const filtered = g.op1('Cast', '/cand/filtered', [col(g.input(io.filtered, DType.INT32, ['R']))], { to: DType.BOOL });
    g.output(g.op1('Squeeze', '/cand/kept_sq', [keep, one]), io.kept, DType.INT64, ['R']);
    return g.op1('Where', '/cand/choose', [filtered, filteredId, unfiltered]);
  }
}
