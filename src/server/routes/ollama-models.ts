/**
 * Ollama's model routes: GET /api/tags (the served model once under each of its names),
 * POST /api/show (its details, parameters and chat template), GET /api/ps (it is always
 * loaded), GET /api/version, and GET / ("Ollama is running": clients probe it before anything
 * else; HEAD too). What they report is read from the export's manifest once, on first use.
 */
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { Static } from 'typebox';
import type { Engine } from '../../engine/engine.ts';
import { MANIFEST_FILE, readManifest } from '../../engine/manifest.ts';
import { InvalidRequestError } from '../../errors.ts';
import type { EngineState } from '../engine-state.ts';
import { matchModelName } from '../model-names.ts';
import { OllamaError } from '../ollama/errors.ts';
import { OLLAMA_DEFAULTS } from '../ollama/options.ts';
import { OllamaModel, OllamaModelDetails, OllamaPs, OllamaShowRequest, OllamaShowResponse, OllamaTags, OllamaVersion } from '../schemas/ollama.ts';
import { checkOllamaModel } from './ollama.ts';

/** The Ollama API version this server follows (clients check it for features, e.g. structured output needs 0.5). */
export const OLLAMA_API_VERSION = '0.12.0';

/** Far in the future: the model stays loaded for the life of the server (keep_alive is ignored). */
const NEVER = '2318-01-01T00:00:00Z';

interface Described {
  readonly details: Static<typeof OllamaModelDetails>;
  readonly size: number;
  readonly digest: string;
  readonly modifiedAt: string;
  readonly template: string;
  readonly modelInfo: Record<string, unknown>;
}

/** 2.6B, 9.2B, 12.0M: Ollama's parameter_size. */
function parameterSize(n: number): string {
  return n >= 1e9 ? `${(n / 1e9).toFixed(1)}B` : `${(n / 1e6).toFixed(1)}M`;
}

function describe(engine: Engine): Described {
  const { manifest, config } = readManifest(engine.exportDir);
  const quantization = manifest.quantization !== undefined ? `INT${manifest.quantization.bits}` : manifest.weightDtype.toUpperCase();
  let size = 0;
  for (const f of readdirSync(engine.exportDir)) {
    const s = statSync(join(engine.exportDir, f));
    if (s.isFile()) size += s.size;
  }
  let template = '';
  try {
    const tc = JSON.parse(readFileSync(join(engine.exportDir, 'tokenizer_config.json'), 'utf8')) as { chat_template?: unknown };
    if (typeof tc.chat_template === 'string') template = tc.chat_template;
  } catch { /* no tokenizer_config.json: no template to show */ }
  return {
    details: { parent_model: '', format: 'onnx', family: 'gemma2', families: ['gemma2'], parameter_size: parameterSize(manifest.numParameters), quantization_level: quantization },
    size,
    digest: createHash('sha256').update(readFileSync(join(engine.exportDir, MANIFEST_FILE))).digest('hex'),
    modifiedAt: manifest.createdAt,
    template,
    modelInfo: {
      'general.architecture': 'gemma2',
      'general.parameter_count': manifest.numParameters,
      'gemma2.context_length': config.maxPositions,
      'gemma2.embedding_length': config.hiddenSize,
      'gemma2.feed_forward_length': config.intermediateSize,
      'gemma2.block_count': config.numLayers,
      'gemma2.attention.head_count': config.numHeads,
      'gemma2.attention.head_count_kv': config.numKvHeads,
      'gemma2.attention.key_length': config.headDim,
      'gemma2.attention.value_length': config.headDim,
      'gemma2.attention.sliding_window': config.slidingWindow,
      'gemma2.attention.layer_norm_rms_epsilon': config.rmsNormEps,
      'gemma2.rope.freq_base': config.ropeTheta,
      'gemma2.attn_logit_softcapping': config.attnLogitSoftcap,
      'gemma2.final_logit_softcapping': config.finalLogitSoftcap,
      'gemma2.vocab_size': config.vocabSize,
      'tokenizer.ggml.bos_token_id': config.bosTokenId,
      'tokenizer.ggml.eos_token_id': config.eosTokenIds[0] ?? null,
    },
  };
}

export function ollamaModelRoutes(app: FastifyInstance, state: EngineState): void {
  // Read once per engine (the export does not change while it is served).
  let cached: { engine: Engine; described: Described } | null = null;
  const described = (engine: Engine): Described => {
    if (cached?.engine !== engine) cached = { engine, described: describe(engine) };
    return cached.described;
  };
  const entry = (engine: Engine, name: string): Static<typeof OllamaModel> => {
    const d = described(engine);
    return { name, model: name, modified_at: d.modifiedAt, size: d.size, digest: d.digest, details: d.details };
  };
  const errors = { '4xx': OllamaError, '5xx': OllamaError };
  const typed = app.withTypeProvider<TypeBoxTypeProvider>();

  typed.get('/', { schema: { summary: 'Ollama\'s liveness probe: "Ollama is running" (no API key)', tags: ['Ollama'], security: [] } },
    async (_request, reply) => reply.type('text/plain; charset=utf-8').send('Ollama is running'));
  typed.get('/api/version', { schema: { summary: 'The Ollama API version followed', tags: ['Ollama'], response: { 200: OllamaVersion, ...errors } } },
    async () => ({ version: OLLAMA_API_VERSION }));
  typed.get('/api/tags', { schema: { summary: 'The served model, once under each of its names', tags: ['Ollama'], response: { 200: OllamaTags, ...errors } } },
    async (): Promise<OllamaTags> => {
      const engine = state.require();
      return { models: engine.modelNames.map((name) => entry(engine, name)) };
    });
  typed.get('/api/ps', { schema: { summary: 'Loaded models: the served one, always loaded', tags: ['Ollama'], response: { 200: OllamaPs, ...errors } } },
    async (): Promise<OllamaPs> => {
      const engine = state.require();
      return { models: [{ ...entry(engine, engine.modelId), expires_at: NEVER, size_vram: 0, context_length: engine.contextLength }] };
    });
  typed.post('/api/show', { schema: { summary: 'The model\'s details, parameters and chat template', tags: ['Ollama'], body: OllamaShowRequest, response: { 200: OllamaShowResponse, ...errors } } },
    async (request): Promise<OllamaShowResponse> => {
      const engine = state.require();
      const name = request.body.model ?? request.body.name;
      if (name == null) throw new InvalidRequestError('model: required', 'model');
      checkOllamaModel(engine, name);
      const d = described(engine);
      const served = matchModelName(engine.modelNames, name)!;
      const parameters = [
        `temperature ${OLLAMA_DEFAULTS.temperature}`, `top_k ${OLLAMA_DEFAULTS.topK}`, `top_p ${OLLAMA_DEFAULTS.topP}`,
        `repeat_penalty ${OLLAMA_DEFAULTS.repeatPenalty}`, `repeat_last_n ${OLLAMA_DEFAULTS.repeatLastN}`, `num_ctx ${engine.contextLength}`,
        ...engine.stopIds.map((id) => `stop ${JSON.stringify(engine.tokenizer.decode([id]))}`),
      ].join('\n');
      return {
        license: '',
        modelfile: `# gemma-serve: ${served} (${engine.exportDir})\nFROM ${served}\n${parameters.split('\n').map((p) => `PARAMETER ${p}`).join('\n')}\n`,
        parameters,
        template: d.template,
        system: '',
        details: d.details,
        model_info: { ...d.modelInfo, 'gemma2.context_length': engine.contextLength },
        capabilities: ['completion', 'tools'],
        modified_at: d.modifiedAt,
      };
    });
}
