/**
 * Gemma 2 model configuration: parses and validates a Hugging Face `config.json`
 * (model_type "gemma2") into a typed, frozen record, and knows the published shapes.
 * Every number the graph and the engine use (soft-caps, window, special ids) comes from
 * here, never from constants in the logic.
 */
import { CheckpointError } from '../errors.ts';

/** The subset of config.json that defines what Gemma 2 computes. */
export interface Gemma2Config {
  readonly vocabSize: number;
  readonly hiddenSize: number;
  readonly intermediateSize: number;
  readonly numLayers: number;
  readonly numHeads: number;
  readonly numKvHeads: number;
  readonly headDim: number;
  readonly queryPreAttnScalar: number;
  /** W: a local-layer query at i sees keys j with i - W < j <= i. */
  readonly slidingWindow: number;
  /** Context limit (global layers hold up to this many positions). */
  readonly maxPositions: number;
  readonly ropeTheta: number;
  readonly rmsNormEps: number;
  /** null disables the soft-cap (HF allows it). */
  readonly attnLogitSoftcap: number | null;
  readonly finalLogitSoftcap: number | null;
  readonly hiddenActivation: 'gelu_pytorch_tanh';
  /** One entry per layer: true for a sliding-window (local) layer. */
  readonly slidingLayers: readonly boolean[];
  readonly tieWordEmbeddings: boolean;
  readonly bosTokenId: number;
  readonly eosTokenIds: readonly number[];
  readonly padTokenId: number;
}

/** The raw JSON keys, as Hugging Face writes them. */
export type RawGemma2Config = Record<string, unknown>;

/** Published Gemma 2 sizes plus `tiny` (tests); values are HF config.json keys. */
export const SHAPES: Readonly<Record<'tiny' | '2b' | '9b' | '27b', RawGemma2Config>> = {
  tiny: shape({ hidden_size: 64, intermediate_size: 128, num_hidden_layers: 4, num_attention_heads: 4,
    num_key_value_heads: 2, head_dim: 16, query_pre_attn_scalar: 16, sliding_window: 8, vocab_size: 512 }),
  '2b': shape({ hidden_size: 2304, intermediate_size: 9216, num_hidden_layers: 26, num_attention_heads: 8,
    num_key_value_heads: 4, head_dim: 256, query_pre_attn_scalar: 256 }),
  '9b': shape({ hidden_size: 3584, intermediate_size: 14336, num_hidden_layers: 42, num_attention_heads: 16,
    num_key_value_heads: 8, head_dim: 256, query_pre_attn_scalar: 256 }),
  '27b': shape({ hidden_size: 4608, intermediate_size: 36864, num_hidden_layers: 46, num_attention_heads: 32,
    num_key_value_heads: 16, head_dim: 128, query_pre_attn_scalar: 144 }),
};

function shape(dims: RawGemma2Config): RawGemma2Config {
  return Object.freeze({
    architectures: ['Gemma2ForCausalLM'],
    model_type: 'gemma2',
    vocab_size: 256000,
    max_position_embeddings: 8192,
    sliding_window: 4096,
    attn_logit_softcapping: 50.0,
    final_logit_softcapping: 30.0,
    rope_theta: 10000.0,
    rms_norm_eps: 1e-6,
    hidden_activation: 'gelu_pytorch_tanh',
    hidden_act: 'gelu_pytorch_tanh',
    attention_bias: false,
    attention_dropout: 0.0,
    cache_implementation: 'hybrid',
    initializer_range: 0.02,
    tie_word_embeddings: true,
    bos_token_id: 2,
    eos_token_id: [1, 107],
    pad_token_id: 0,
    torch_dtype: 'float32',
    use_cache: true,
    ...dims,
  });
}

/** Parses config.json contents; `file` names the source in error messages. */
export function parseGemma2Config(raw: unknown, file: string): Gemma2Config {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new CheckpointError(`${file}: not a JSON object`);
  }
  const r = raw as RawGemma2Config;
  if (r['model_type'] !== 'gemma2') {
    throw new CheckpointError(`${file}: model_type is ${JSON.stringify(r['model_type'])}, expected "gemma2" (gemma-serve serves Gemma 2 checkpoints only)`);
  }
  const int = (key: string, fallback?: number): number => {
    const v = r[key] ?? fallback;
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) {
      throw new CheckpointError(`${file}: ${key} must be a positive integer, got ${JSON.stringify(v)}`);
    }
    return v;
  };
  const num = (key: string, fallback: number): number => {
    const v = r[key] ?? fallback;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
      throw new CheckpointError(`${file}: ${key} must be a positive number, got ${JSON.stringify(v)}`);
    }
    return v;
  };
  const cap = (key: string, fallback: number): number | null => {
    const v = r[key] === undefined ? fallback : r[key];
    if (v === null) return null;
    if (typeof v !== 'number' || !(v > 0)) throw new CheckpointError(`${file}: ${key} must be a positive number or null`);
    return v;
  };
  const hiddenSize = int('hidden_size');
  const numHeads = int('num_attention_heads');
  const numKvHeads = int('num_key_value_heads', numHeads);
  const headDim = int('head_dim', Math.floor(hiddenSize / numHeads));
  const numLayers = int('num_hidden_layers');
  if (numHeads % numKvHeads !== 0) {
    throw new CheckpointError(`${file}: num_attention_heads (${numHeads}) must be a multiple of num_key_value_heads (${numKvHeads})`);
  }
  if (headDim % 2 !== 0) throw new CheckpointError(`${file}: head_dim must be even for RoPE, got ${headDim}`);
  const act = r['hidden_activation'] ?? r['hidden_act'] ?? 'gelu_pytorch_tanh';
  if (act !== 'gelu_pytorch_tanh' && act !== 'gelu') {
    throw new CheckpointError(`${file}: hidden_activation ${JSON.stringify(act)} is not supported (expected gelu_pytorch_tanh)`);
  }
  const eos = r['eos_token_id'] ?? 1;
  const eosTokenIds = (Array.isArray(eos) ? eos : [eos]).map((v) => {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw new CheckpointError(`${file}: eos_token_id must be an id or a list of ids`);
    return v;
  });
  const config: Gemma2Config = {
    vocabSize: int('vocab_size'),
    hiddenSize,
    intermediateSize: int('intermediate_size'),
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    queryPreAttnScalar: num('query_pre_attn_scalar', headDim),
    slidingWindow: int('sliding_window', 4096),
    maxPositions: int('max_position_embeddings', 8192),
    ropeTheta: num('rope_theta', 10000),
    rmsNormEps: num('rms_norm_eps', 1e-6),
    attnLogitSoftcap: cap('attn_logit_softcapping', 50),
    finalLogitSoftcap: cap('final_logit_softcapping', 30),
    hiddenActivation: 'gelu_pytorch_tanh',
    slidingLayers: parseLayerTypes(r['layer_types'], numLayers, file),
    tieWordEmbeddings: r['tie_word_embeddings'] !== false,
    bosTokenId: typeof r['bos_token_id'] === 'number' ? r['bos_token_id'] : 2,
    eosTokenIds,
    padTokenId: typeof r['pad_token_id'] === 'number' ? r['pad_token_id'] : 0,
  };
  return Object.freeze(config);
}

/** HF: even layers slide, odd layers are global, unless `layer_types` says otherwise. */
function parseLayerTypes(v: unknown, numLayers: number, file: string): boolean[] {
  if (v === undefined || v === null) return Array.from({ length: numLayers }, (_, i) => i % 2 === 0);
  if (!Array.isArray(v) || v.length !== numLayers) {
    throw new CheckpointError(`${file}: layer_types must list ${numLayers} entries`);
  }
  return v.map((t, i) => {
    if (t === 'sliding_attention') return true;
    if (t === 'full_attention') return false;
    throw new CheckpointError(`${file}: layer_types[${i}] is ${JSON.stringify(t)}, expected "sliding_attention" or "full_attention"`);
  });
}

/** Shape of every tensor a Gemma 2 checkpoint must hold, by HF name. */
export function expectedTensors(c: Gemma2Config): Map<string, readonly number[]> {
  const m = new Map<string, readonly number[]>();
  const H = c.hiddenSize;
  const qDim = c.numHeads * c.headDim;
  const kvDim = c.numKvHeads * c.headDim;
  m.set('model.embed_tokens.weight', [c.vocabSize, H]);
  for (let i = 0; i < c.numLayers; i++) {
    const p = `model.layers.${i}.`;
    m.set(`${p}self_attn.q_proj.weight`, [qDim, H]);
    m.set(`${p}self_attn.k_proj.weight`, [kvDim, H]);
    m.set(`${p}self_attn.v_proj.weight`, [kvDim, H]);
    m.set(`${p}self_attn.o_proj.weight`, [H, qDim]);
    m.set(`${p}mlp.gate_proj.weight`, [c.intermediateSize, H]);
    m.set(`${p}mlp.up_proj.weight`, [c.intermediateSize, H]);
    m.set(`${p}mlp.down_proj.weight`, [H, c.intermediateSize]);
    for (const n of ['input_layernorm', 'post_attention_layernorm', 'pre_feedforward_layernorm', 'post_feedforward_layernorm']) {
      m.set(`${p}${n}.weight`, [H]);
    }
  }
  m.set('model.norm.weight', [H]);
  if (!c.tieWordEmbeddings) m.set('lm_head.weight', [c.vocabSize, H]);
  return m;
}

/** Total parameters (the tied head counted once). */
export function parameterCount(c: Gemma2Config): number {
  let n = 0;
  for (const dims of expectedTensors(c).values()) n += dims.reduce((a, b) => a * b, 1);
  return n;
}
