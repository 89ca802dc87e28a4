/**
 * vLLM's POST /tokenize and POST /detokenize. /tokenize takes either `prompt` (text; BOS added
 * unless `add_special_tokens` is false, as /v1/completions does) or `messages` (rendered with
 * the chat template, exactly as /v1/chat/completions does, with its `add_generation_prompt`
 * (default true), `continue_final_message` and `chat_template_kwargs`) and returns {count, max_model_len, tokens[, token_strs]}. /detokenize takes `tokens`
 * and returns {prompt}. `model`, when given, must be the served model. Bodies are validated by
 * their schemas (schemas/tokenize.ts); what they cannot state is checked here.
 */
import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { InvalidRequestError } from '../../errors.ts';
import { parseMessages, parseRenderOptions } from '../chat-request.ts';
import { renderToolMessages } from '../tool-calls.ts';
import type { EngineState } from '../engine-state.ts';
import { checkModel } from '../request-fields.ts';
import { ErrorResponse } from '../schemas/common.ts';
import { DetokenizeRequest, DetokenizeResponse, TokenizeRequest, TokenizeResponse } from '../schemas/tokenize.ts';

const errors = { '4xx': ErrorResponse, '5xx': ErrorResponse };

export function tokenizeRoutes(app: FastifyInstance, state: EngineState): void {
  const typed = app.withTypeProvider<TypeBoxTypeProvider>();
  typed.post('/tokenize', {
    schema: { summary: "Tokenize a prompt or chat messages (vLLM's /tokenize)", tags: ['vLLM'], body: TokenizeRequest, response: { 200: TokenizeResponse, ...errors } },
  }, async (request): Promise<TokenizeResponse> => {
    const engine = state.require();
    const b = request.body;
    if (b.model != null) checkModel(engine.modelNames, b.model);
    const prompt = b.prompt ?? undefined;
    const hasMessages = b.messages != null;
    if ((prompt === undefined) === !hasMessages) throw new InvalidRequestError('give exactly one of prompt and messages', prompt === undefined ? 'prompt' : 'messages');
    let tokens: number[];
    if (prompt !== undefined) {
      for (const field of ['add_generation_prompt', 'continue_final_message', 'chat_template_kwargs'] as const) {
        if (b[field] != null) throw new InvalidRequestError(`${field}: only with messages`, field);
      }
      const bos = b.add_special_tokens ?? true;
      tokens = [...(bos ? [engine.tokenizer.bosId] : []), ...await engine.encodeText(prompt, null)];
    } else {
      if (b.add_special_tokens === true) throw new InvalidRequestError('add_special_tokens: the chat template writes the special tokens itself', 'add_special_tokens');
      tokens = [...await engine.tokenizeChat(renderToolMessages(parseMessages(b.messages!), [], false), parseRenderOptions(b))];
    }
    return {
      count: tokens.length, max_model_len: engine.contextLength, tokens,
      ...(b.return_token_strs === true ? { token_strs: tokens.map((id) => engine.tokenizer.decode([id])) } : {}),
    };
  });

  typed.post('/detokenize', {
    schema: { summary: "Token ids back to text (vLLM's /detokenize)", tags: ['vLLM'], body: DetokenizeRequest, response: { 200: DetokenizeResponse, ...errors } },
  }, async (request): Promise<DetokenizeResponse> => {
    const engine = state.require();
    const { model, tokens } = request.body;
    if (model != null) checkModel(engine.modelNames, model);
    for (const id of tokens) {
      if (id >= engine.vocabSize) throw new InvalidRequestError(`tokens: ${id} is not a token id (0..${engine.vocabSize - 1})`, 'tokens');
    }
    return { prompt: engine.tokenizer.decode(tokens) };
  });
}
