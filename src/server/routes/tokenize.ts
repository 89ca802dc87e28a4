/**
 * vLLM's POST /tokenize and POST /detokenize. /tokenize takes either `prompt` (text; BOS added
 * unless `add_special_tokens` is false, as /v1/completions does) or `messages` (rendered with
 * the chat template, exactly as /v1/chat/completions does; `add_generation_prompt` defaults to
 * true) and returns {count, max_model_len, tokens[, token_strs]}. /detokenize takes `tokens`
 * and returns {prompt}. `model`, when given, must be the served model.
 */
import type { FastifyInstance } from 'fastify';
import { InvalidRequestError } from '../../errors.ts';
import { parseMessages } from '../chat-request.ts';
import type { EngineState } from '../engine-state.ts';
import { checkModel, FieldReader } from '../request-fields.ts';

export function tokenizeRoutes(app: FastifyInstance, state: EngineState): void {
  app.post('/tokenize', async (request) => {
    const engine = state.require();
    const r = new FieldReader(request.body);
    r.checkFields(['model', 'prompt', 'messages', 'add_special_tokens', 'add_generation_prompt', 'return_token_strs']);
    const model = r.str('model');
    if (model !== undefined) checkModel(engine.modelId, model);
    const prompt = r.str('prompt');
    const hasMessages = r.get('messages') !== undefined;
    if ((prompt === undefined) === !hasMessages) throw new InvalidRequestError('give exactly one of prompt and messages', prompt === undefined ? 'prompt' : 'messages');
    let tokens: number[];
    if (prompt !== undefined) {
      if (r.get('add_generation_prompt') !== undefined) throw new InvalidRequestError('add_generation_prompt: only with messages', 'add_generation_prompt');
      const bos = r.bool('add_special_tokens') ?? true;
      tokens = [...(bos ? [engine.tokenizer.bosId] : []), ...engine.tokenizer.encode(prompt)];
    } else {
      if (r.bool('add_special_tokens') === true) throw new InvalidRequestError('add_special_tokens: the chat template writes the special tokens itself', 'add_special_tokens');
      const text = engine.chatTemplate.renderChat(parseMessages(r.get('messages')), { addGenerationPrompt: r.bool('add_generation_prompt') ?? true });
      tokens = [...engine.tokenizer.encode(text)];
    }
    return {
      count: tokens.length, max_model_len: engine.contextLength, tokens,
      ...(r.bool('return_token_strs') === true ? { token_strs: tokens.map((id) => engine.tokenizer.decode([id])) } : {}),
    };
  });

  app.post('/detokenize', async (request) => {
    const engine = state.require();
    const r = new FieldReader(request.body);
    r.checkFields(['model', 'tokens']);
    const model = r.str('model');
    if (model !== undefined) checkModel(engine.modelId, model);
    const tokens = r.get('tokens');
    if (!Array.isArray(tokens)) throw new InvalidRequestError('tokens: must be an array of token ids', 'tokens');
    for (const id of tokens) {
      if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id >= engine.vocabSize) {
        throw new InvalidRequestError(`tokens: ${JSON.stringify(id)} is not a token id (0..${engine.vocabSize - 1})`, 'tokens');
      }
    }
    return { prompt: engine.tokenizer.decode(tokens as number[]) };
  });
}
