/**
 * A deliberately naive float64 reference of Hugging Face `Gemma2ForCausalLM` (eager
 * attention), written line by line from the team's Gemma 2 specification (GEMMA2.md). Tests only: it cross-checks
 * the ONNX export on configurations the golden fixtures do not cover (window boundaries,
 * soft-caps off, GQA / MQA variants). No KV cache: every call recomputes the whole sequence.
 *
 * Everything is float64 (weights are widened from float32 once at load), so differences
 * against a float32 runtime are the runtime's rounding, not the reference's. One deliberate
 * exception: the RoPE `inv_freq` and angle `pos * inv_freq` are rounded to float32 exactly
 * as HF computes them (GEMMA2.md step 5). With a float64 angle the fixtures' golden logprobs
 * drift by up to 1.4e-4 at 40 tokens; with HF's float32 angle they agree to the golden files'
 * 6-decimal rounding (5e-7).
 */
import { openCheckpoint } from '../../src/checkpoint/checkpoint.ts';
import type { Gemma2Config } from '../../src/checkpoint/config.ts';
import { readFloat32 } from '../../src/checkpoint/safetensors.ts';
import { f16ToF32, f32ToF16 } from '../../src/f16.ts';
import type { TensorEntry } from '../../src/checkpoint/safetensors.ts';

interface LayerWeights {
  readonly q: Float64Array; // [nq*D, H]
  readonly k: Float64Array; // [nkv*D, H]
  readonly v: Float64Array; // [nkv*D, H]
  readonly o: Float64Array; // [H, nq*D]
  readonly gate: Float64Array; // [I, H]
  readonly up: Float64Array; // [I, H]
  readonly down: Float64Array; // [H, I]
  readonly inputNorm: Float64Array; // [H]
  readonly postAttnNorm: Float64Array;
  readonly preFfnNorm: Float64Array;
  readonly postFfnNorm: Float64Array;
}

export interface Gemma2Weights {
  readonly embed: Float64Array; // [V, H]
  /** The LM head [V, H]: `lm_head.weight` when the checkpoint has one, else `embed` (tied). */
  readonly head: Float64Array;
  readonly finalNorm: Float64Array; // [H]
  readonly layers: readonly LayerWeights[];
}

/** y[r] = sum_c W[r, c] * x[c] for row-major W [rows, cols] (a bias-free nn.Linear). */
function linear(w: Float64Array, x: Float64Array, rows: number, cols: number): Float64Array {
  const y = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    const base = r * cols;
    for (let c = 0; c < cols; c++) s += w[base + c]! * x[c]!;
    y[r] = s;
  }
  return y;
}

/** Gemma RMSNorm: x * rsqrt(mean(x²) + eps) * (1 + w). */
function rmsNorm(x: Float64Array, w: Float64Array, eps: number): Float64Array {
  let ss = 0;
  for (let i = 0; i < x.length; i++) ss += x[i]! * x[i]!;
  const inv = 1 / Math.sqrt(ss / x.length + eps);
  const y = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) y[i] = x[i]! * inv * (1 + w[i]!);
  return y;
}

/** gelu_pytorch_tanh: 0.5x(1 + tanh(√(2/π)(x + 0.044715x³))). */
function geluTanh(x: number): number {
  return 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x)));
}

function softcap(x: number, cap: number | null): number {
  return cap === null ? x : cap * Math.tanh(x / cap);
}

/**
 * Non-interleaved RoPE in place on `heads` consecutive head vectors of size D:
 * dim j pairs with j + D/2; out = x*cos + rotate_half(x)*sin, rotate_half(x) = cat(-x2, x1).
 * The angle pos * inv_freq is rounded to float32 as in HF; cos / sin are then float64.
 */
function applyRope(vec: Float64Array, heads: number, D: number, pos: number, invFreq: Float64Array): void {
  const half = D / 2;
  for (let h = 0; h < heads; h++) {
    const b = h * D;
    for (let j = 0; j < half; j++) {
      const angle = Math.fround(pos * invFreq[j]!);
      const cos = Math.cos(angle);
      const sin = Math.sin(angle);
      const x1 = vec[b + j]!;
      const x2 = vec[b + j + half]!;
      vec[b + j] = x1 * cos - x2 * sin;
      vec[b + j + half] = x2 * cos + x1 * sin;
    }
  }
}

function logSoftmax(logits: Float64Array): Float64Array {
  let max = -Infinity;
  for (const v of logits) if (v > max) max = v;
  let sum = 0;
  for (const v of logits) sum += Math.exp(v - max);
  const lse = max + Math.log(sum);
  const out = new Float64Array(logits.length);
  for (let i = 0; i < logits.length; i++) out[i] = logits[i]! - lse;
  return out;
}

function argmax(a: Float64Array): number {
  let best = 0;
  for (let i = 1; i < a.length; i++) if (a[i]! > a[best]!) best = i;
  return best;
}

function toF64(entry: TensorEntry | undefined, name: string): Float64Array {
  if (!entry) throw new Error(`reference: tensor ${name} is missing`);
  return Float64Array.from(readFloat32(entry));
}

export class Gemma2Reference {
  readonly config: Gemma2Config;
  readonly weights: Gemma2Weights;
  private readonly invFreq: Float64Array;

  constructor(config: Gemma2Config, weights: Gemma2Weights) {
    this.config = config;
    this.weights = weights;
    const D = config.headDim;
    // inv_freq = 1 / theta^(arange(0, D, 2) / D), float32 like HF's `.float()` buffer.
    this.invFreq = new Float64Array(D / 2);
    for (let j = 0; j < D / 2; j++) this.invFreq[j] = Math.fround(1 / Math.fround(Math.pow(config.ropeTheta, Math.fround((2 * j) / D))));
  }

  /** Rounds every matrix (not the norm scales) to fp16 in place, as an fp16 export stores them. */
  roundMatricesToF16(): void {
    const seen = new Set<Float64Array>(); // the tied head may share the embedding's array
    const round = (a: Float64Array): void => {
      if (seen.has(a)) return;
      seen.add(a);
      for (let i = 0; i < a.length; i++) a[i] = f16ToF32(f32ToF16(a[i]!));
    };
    round(this.weights.embed);
    round(this.weights.head);
    for (const l of this.weights.layers) for (const m of [l.q, l.k, l.v, l.o, l.gate, l.up, l.down]) round(m);
  }

  /** Loads config and every tensor of an HF checkpoint directory (via openCheckpoint). */
  static fromCheckpoint(dir: string): Gemma2Reference {
    const ck = openCheckpoint(dir);
    const t = ck.tensors;
    const get = (name: string): Float64Array => toF64(t.get(name), name);
    const layers: LayerWeights[] = [];
    for (let i = 0; i < ck.config.numLayers; i++) {
      const p = `model.layers.${i}.`;
      layers.push({
        q: get(`${p}self_attn.q_proj.weight`),
        k: get(`${p}self_attn.k_proj.weight`),
        v: get(`${p}self_attn.v_proj.weight`),
        o: get(`${p}self_attn.o_proj.weight`),
        gate: get(`${p}mlp.gate_proj.weight`),
        up: get(`${p}mlp.up_proj.weight`),
        down: get(`${p}mlp.down_proj.weight`),
        inputNorm: get(`${p}input_layernorm.weight`),
        postAttnNorm: get(`${p}post_attention_layernorm.weight`),
        preFfnNorm: get(`${p}pre_feedforward_layernorm.weight`),
        postFfnNorm: get(`${p}post_feedforward_layernorm.weight`),
      });
    }
    const embed = get('model.embed_tokens.weight');
    const head = t.has('lm_head.weight') ? get('lm_head.weight') : embed;
    return new Gemma2Reference(ck.config, { embed, head, finalNorm: get('model.norm.weight'), layers });
  }

  /** The final soft-capped logits [V] at every position of `inputIds` (full recompute). */
  logits(inputIds: readonly number[]): Float64Array[] {
    const c = this.config;
    // Head: (tied) LM head over the final hidden states, final soft-cap.
    return this.hiddenStates(inputIds).map((x) => {
      const logits = linear(this.weights.head, x, c.vocabSize, c.hiddenSize);
      for (let v = 0; v < c.vocabSize; v++) logits[v] = softcap(logits[v]!, c.finalLogitSoftcap);
      return logits;
    });
  }

  /** The final hidden states [H] (after the final norm, before the LM head) at every position of `inputIds`. */
  hiddenStates(inputIds: readonly number[]): Float64Array[] {
    const c = this.config;
    const w = this.weights;
    const H = c.hiddenSize;
    const D = c.headDim;
    const nq = c.numHeads;
    const nkv = c.numKvHeads;
    const I = c.intermediateSize;
    const V = c.vocabSize;
    const T = inputIds.length;
    const group = nq / nkv;
    const scale = Math.pow(c.queryPreAttnScalar, -0.5);

    // 1. x = E[ids] * sqrt(H)
    const normalizer = Math.sqrt(H);
    let xs: Float64Array[] = inputIds.map((id) => {
      if (!Number.isInteger(id) || id < 0 || id >= V) throw new Error(`reference: token id ${id} out of range [0, ${V})`);
      const x = new Float64Array(H);
      for (let d = 0; d < H; d++) x[d] = w.embed[id * H + d]! * normalizer;
      return x;
    });

    for (let l = 0; l < c.numLayers; l++) {
      const L = w.layers[l]!;
      const sliding = c.slidingLayers[l]!;
      const W = c.slidingWindow;

      // Attention block: q, k, v for every position, RoPE on q and k.
      const normed = xs.map((x) => rmsNorm(x, L.inputNorm, c.rmsNormEps));
      const qs = normed.map((x, pos) => {
        const q = linear(L.q, x, nq * D, H);
        applyRope(q, nq, D, pos, this.invFreq);
        return q;
      });
      const ks = normed.map((x, pos) => {
        const k = linear(L.k, x, nkv * D, H);
        applyRope(k, nkv, D, pos, this.invFreq);
        return k;
      });
      const vs = normed.map((x) => linear(L.v, x, nkv * D, H));

      const hs: Float64Array[] = [];
      for (let i = 0; i < T; i++) {
        const attnOut = new Float64Array(nq * D);
        for (let h = 0; h < nq; h++) {
          const kvh = Math.floor(h / group);
          // Scores over every key (soft-cap before the mask), then mask, then softmax.
          const scores = new Float64Array(T);
          for (let j = 0; j < T; j++) {
            let dot = 0;
            for (let d = 0; d < D; d++) dot += qs[i]![h * D + d]! * ks[j]![kvh * D + d]!;
            const s = softcap(dot * scale, c.attnLogitSoftcap);
            const visible = j <= i && (!sliding || j > i - W);
            scores[j] = visible ? s : -Infinity;
          }
          let max = -Infinity;
          for (const s of scores) if (s > max) max = s;
          let sum = 0;
          const probs = new Float64Array(T);
          for (let j = 0; j < T; j++) {
            probs[j] = Math.exp(scores[j]! - max); // exp(-Inf) = 0 for masked keys
            sum += probs[j]!;
          }
          for (let j = 0; j < T; j++) {
            const p = probs[j]! / sum;
            if (p === 0) continue;
            for (let d = 0; d < D; d++) attnOut[h * D + d]! += p * vs[j]![kvh * D + d]!;
          }
        }
        const attn = linear(L.o, attnOut, H, nq * D);
        const post = rmsNorm(attn, L.postAttnNorm, c.rmsNormEps);
        const h = new Float64Array(H);
        for (let d = 0; d < H; d++) h[d] = xs[i]![d]! + post[d]!;
        hs.push(h);
      }

      // MLP block: down(gelu_tanh(gate(x)) * up(x)), sandwiched.
      xs = hs.map((h) => {
        const x = rmsNorm(h, L.preFfnNorm, c.rmsNormEps);
        const g = linear(L.gate, x, I, H);
        const u = linear(L.up, x, I, H);
        const act = new Float64Array(I);
        for (let k = 0; k < I; k++) act[k] = geluTanh(g[k]!) * u[k]!;
        const m = rmsNorm(linear(L.down, act, H, I), L.postFfnNorm, c.rmsNormEps);
        const out = new Float64Array(H);
        for (let d = 0; d < H; d++) out[d] = h[d]! + m[d]!;
        return out;
      });
    }

    return xs.map((x) => rmsNorm(x, w.finalNorm, c.rmsNormEps));
  }

  /** log_softmax over the vocabulary of the final soft-capped logits, per position. */
  logprobs(inputIds: readonly number[]): Float64Array[] {
    return this.logits(inputIds).map(logSoftmax);
  }

  /**
   * Greedy argmax continuation: `newTokens` ids after the prompt (prompt excluded), with no
   * early stop on EOS. Each step recomputes the whole sequence.
   */
  greedy(promptIds: readonly number[], newTokens: number): number[] {
    if (promptIds.length === 0) throw new Error('reference: greedy needs a non-empty prompt');
    const seq = [...promptIds];
    const out: number[] = [];
    for (let n = 0; n < newTokens; n++) {
      const all = this.logits(seq);
      const next = argmax(all[all.length - 1]!);
      out.push(next);
      seq.push(next);
    }
    return out;
  }
}
