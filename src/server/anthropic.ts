/**
 * Anthropic's Messages API (POST /v1/messages) over the chat path, as responses.ts does for
 * OpenAI's Responses API: a request is read into a chat completion body (content blocks →
 * messages: tool_use blocks → an assistant turn's tool calls, tool_result blocks → tool
 * messages; `system` → a system message first; tools, tool_choice, stop_sequences → chat's) and
 * started by startChat. What comes back is turned into a `message` (text and tool_use blocks,
 * stop_reason, usage with the prefix cache's reads) or the Messages stream's events. A 400 from
 * the chat path names the Messages parameter; anthropic/errors.ts gives every error under
 * /v1/messages Anthropic's shape.
 */
import type { Engine } from '../engine/engine.ts';
import { InvalidRequestError } from '../errors.ts';
import type { ChoiceObserver } from './choices.ts';
import { isObject, newId, requiredString } from './body-fields.ts';
import { renamedError } from './renamed-error.ts';
import { checkModel, rejectUnsupported, type UnsupportedFields } from './request-fields.ts';
import { parseChatRequest } from './chat-request.ts';
import { chatChunks, collectChat, encodeChatPrompt, startChat, type StartedChat } from './routes/chat-completions.ts';
import type { ChatCompletionBody, ChatCompletionChunk } from './schemas/chat.ts';
import type { ContentBlock, CountTokensBody, MessageObject, MessagesBody, MessagesStreamEvent, MessagesUsage, StopReason } from './schemas/anthropic.ts';

/** A Messages request whose generation has started. */
export interface StartedMessage {
  readonly req: { readonly stream: boolean; readonly model: string };
  readonly chat: StartedChat;
  readonly id: string;
}

const UNSUPPORTED: UnsupportedFields = new Map(Object.entries({
  thinking: (v) => isObject(v) && v['type'] === 'disabled',
  container: () => false,
  mcp_servers: (v) => Array.isArray(v) && v.length === 0,
  speed: (v) => v === 'standard',
  diagnostics: () => false,
}));


type ChatMessageBody = ChatCompletionBody['messages'][number];
type Conversation = Pick<MessagesBody, 'model' | 'messages' | 'system' | 'tools' | 'tool_choice' | 'output_config'>;

/** The conversation as a chat body (no sampling fields), and where each chat message came from (`messages[i]`, `system`). */
function chatConversation(body: Conversation): { chat: ChatCompletionBody; sources: string[] } {
  const messages: ChatMessageBody[] = [];
  const sources: string[] = [];
  const push = (m: ChatMessageBody, source: string): void => { messages.push(m); sources.push(source); };
  if (body.system != null) push({ role: 'system', content: blocksText(body.system, 'system') }, 'system');
  body.messages.forEach((m, i) => {
    const p = `messages[${i}]`;
    if (!isObject(m)) throw new InvalidRequestError(`${p}: must be an object with role and content`, p);
    const role = m['role'];
    if (role !== 'user' && role !== 'assistant') throw new InvalidRequestError(`${p}.role: must be user or assistant`, `${p}.role`);
    for (const key of Object.keys(m)) if (key !== 'role' && key !== 'content') throw new InvalidRequestError(`${p}.${key}: unknown field`, `${p}.${key}`, 'unknown_parameter');
    const content = m['content'];
    if (typeof content === 'string') { push({ role, content }, p); return; }
    if (!Array.isArray(content)) throw new InvalidRequestError(`${p}.content: must be a string or an array of content blocks`, `${p}.content`);
    const text: string[] = [];
    const calls: NonNullable<ChatMessageBody['tool_calls']> = [];
    content.forEach((block: unknown, k) => {
      const b = `${p}.content[${k}]`;
      const type = isObject(block) ? block['type'] : undefined;
      if (!isObject(block)) throw new InvalidRequestError(`${b}: must be a content block object`, b);
      if (type === 'text') {
        onlyFields(block, ['type', 'text', 'cache_control'], b);
        text.push(requiredString(block, 'text', b));
      } else if (type === 'tool_use' && role === 'assistant') {
        onlyFields(block, ['type', 'id', 'name', 'input', 'cache_control'], b);
        const input = block['input'] ?? {};
        if (!isObject(input)) throw new InvalidRequestError(`${b}.input: must be an object`, `${b}.input`);
        calls.push({ id: requiredString(block, 'id', b), type: 'function', function: { name: requiredString(block, 'name', b), arguments: JSON.stringify(input) } });
      } else if (type === 'tool_result' && role === 'user') {
        onlyFields(block, ['type', 'tool_use_id', 'content', 'is_error', 'cache_control'], b);
        const result = block['content'] === undefined ? '' : blocksText(block['content'], `${b}.content`);
        push({ role: 'tool', tool_call_id: requiredString(block, 'tool_use_id', b), content: block['is_error'] === true ? `Error: ${result}` : result }, b);
      } else {
        const where = type === 'tool_use' || type === 'tool_result' ? ` in ${role === 'assistant' ? 'an' : 'a'} ${role} turn` : '';
        throw new InvalidRequestError(`${b}.type: ${JSON.stringify(type)} blocks are not supported${where} (text; tool_use from the assistant; tool_result from the user)`, `${b}.type`, 'unsupported_parameter');
      }
    });
    if (role === 'assistant') push({ role, content: text.length > 0 ? text.join('') : null, ...(calls.length > 0 ? { tool_calls: calls } : {}) }, p);
    else if (text.length > 0 || !content.some((b) => isObject(b) && b['type'] === 'tool_result')) push({ role, content: text.join('\n') }, p);
  });
  const chat: ChatCompletionBody = {
    model: body.model, messages,
    ...(body.tools != null ? { tools: body.tools.map(chatTool) } : {}),
    ...chatToolChoice(body.tool_choice),
    ...outputFormat(body.output_config),
  };
  return { chat, sources };
}

function onlyFields(block: Record<string, unknown>, known: readonly string[], b: string): void {
  for (const key of Object.keys(block)) if (!known.includes(key)) throw new InvalidRequestError(`${b}.${key}: not supported in a ${String(block['type'])} block`, `${b}.${key}`, 'unsupported_parameter');
}

/** Text, or text blocks joined by a newline (a system prompt, a tool result). */
function blocksText(v: unknown, p: string): string {
  if (typeof v === 'string') return v;
  if (!Array.isArray(v)) throw new InvalidRequestError(`${p}: must be a string or an array of text blocks`, p);
  return v.map((block: unknown, k) => {
    if (!isObject(block) || block['type'] !== 'text') throw new InvalidRequestError(`${p}[${k}].type: only text blocks are supported here`, `${p}[${k}].type`, 'unsupported_parameter');
    onlyFields(block, ['type', 'text', 'cache_control'], `${p}[${k}]`);
    return requiredString(block, 'text', `${p}[${k}]`);
  }).join('\n');
}

/** A client tool ({name, description, input_schema}) in chat's shape; server tools are refused. */
function chatTool(tool: unknown, i: number): unknown {
  const p = `tools[${i}]`;
  if (!isObject(tool)) throw new InvalidRequestError(`${p}: must be a tool object`, p);
  if (tool['type'] !== undefined && tool['type'] !== null && tool['type'] !== 'custom') {
    throw new InvalidRequestError(`${p}.type: ${JSON.stringify(tool['type'])} tools are not supported (client tools with name and input_schema are)`, `${p}.type`, 'unsupported_parameter');
  }
  onlyFields(tool, ['type', 'name', 'description', 'input_schema', 'cache_control', 'strict'], p);
  const fn: Record<string, unknown> = { name: tool['name'], parameters: tool['input_schema'] ?? { type: 'object' } };
  if (tool['description'] != null) fn['description'] = tool['description'];
  if (tool['strict'] != null) fn['strict'] = tool['strict'];
  return { type: 'function', function: fn };
}

function chatToolChoice(choice: unknown): Pick<ChatCompletionBody, 'tool_choice' | 'parallel_tool_calls'> {
  if (choice === undefined || choice === null) return {};
  if (!isObject(choice)) throw new InvalidRequestError('tool_choice: must be an object with a type', 'tool_choice');
  const parallel = choice['disable_parallel_tool_use'] === true ? { parallel_tool_calls: false } : {};
  switch (choice['type']) {
    case 'auto': return { tool_choice: 'auto', ...parallel };
    case 'any': return { tool_choice: 'required', ...parallel };
    case 'none': return { tool_choice: 'none' };
    case 'tool': return { tool_choice: { type: 'function', function: { name: choice['name'] } }, ...parallel };
    default: throw new InvalidRequestError('tool_choice.type: must be auto, any, tool or none', 'tool_choice.type');
  }
}

/** output_config.format ({type: json_schema, schema}) as chat's response_format; effort is refused. */
function outputFormat(config: MessagesBody['output_config']): Pick<ChatCompletionBody, 'response_format'> {
  if (config == null) return {};
  if (config.effort != null) throw new InvalidRequestError('output_config.effort: not supported by gemma-serve yet', 'output_config.effort', 'unsupported_parameter');
  const format = config.format;
  if (format == null) return {};
  if (!isObject(format) || format['type'] !== 'json_schema') throw new InvalidRequestError('output_config.format.type: must be json_schema', 'output_config.format.type');
  for (const key of Object.keys(format)) if (key !== 'type' && key !== 'schema') throw new InvalidRequestError(`output_config.format.${key}: unknown field`, `output_config.format.${key}`, 'unknown_parameter');
  return { response_format: { type: 'json_schema', json_schema: { name: 'output', schema: format['schema'] ?? { type: 'object' } } } };
}

/** A chat parameter's name as this request named it. */
function messagesParam(param: string, sources: readonly string[]): string {
  const message = /^messages\[(\d+)\](.*)$/.exec(param);
  if (message !== null) {
    const source = sources[Number(message[1])] ?? 'messages';
    return source === 'system' || source.includes('.content[') ? source : `${source}${message[2]}`;
  }
  if (param === 'stop') return 'stop_sequences';
  if (param === 'response_format' || param.startsWith('response_format.json_schema')) return param === 'response_format' ? 'output_config.format' : `output_config.format${param.slice('response_format.json_schema'.length)}`;
  const tool = /^tools\[(\d+)\]\.function(?:\.(name|description|parameters|strict))?(.*)$/.exec(param);
  if (tool !== null) return `tools[${tool[1]}]${tool[2] === undefined ? '' : `.${tool[2] === 'parameters' ? 'input_schema' : tool[2]}`}${tool[3]}`;
  if (param === 'tool_choice.function.name') return 'tool_choice.name';
  if (param === 'parallel_tool_calls') return 'tool_choice.disable_parallel_tool_use';
  return param;
}

/** Checks what the schema cannot, translates, starts; every 4xx is thrown here, before any byte is sent. */
export async function startMessage(engine: Engine, body: MessagesBody, signal: AbortSignal, observer?: ChoiceObserver): Promise<StartedMessage> {
  rejectUnsupported(body as unknown as Readonly<Record<string, unknown>>, UNSUPPORTED);
  const { chat: conversation, sources } = chatConversation(body);
  const chatBody: ChatCompletionBody = {
    ...conversation,
    max_tokens: body.max_tokens,
    stream: body.stream ?? false,
    ...(body.stream === true ? { stream_options: { include_usage: true } } : {}),
    temperature: body.temperature, top_p: body.top_p, top_k: body.top_k, stop: body.stop_sequences,
  };
  try {
    const chat = await startChat(engine, chatBody, signal, observer);
    return { req: { stream: chat.req.stream, model: chat.req.model }, chat, id: newId('msg_') };
  } catch (e) {
    throw renamedError(e, (param) => messagesParam(param, sources));
  }
}

/** POST /v1/messages/count_tokens: the prompt the same request would compute, in tokens. */
export async function countMessageTokens(engine: Engine, body: CountTokensBody): Promise<{ input_tokens: number }> {
  rejectUnsupported(body as unknown as Readonly<Record<string, unknown>>, UNSUPPORTED);
  const { chat, sources } = chatConversation(body);
  try {
    const req = parseChatRequest(chat);
    checkModel(engine.modelNames, req.model);
    return { input_tokens: (await encodeChatPrompt(engine, req)).length };
  } catch (e) {
    throw renamedError(e, (param) => messagesParam(param, sources));
  }
}

type Finish = ChatCompletionChunk['choices'][number]['finish_reason'];

function stopReason(finish: Finish, stop: string | null | undefined): StopReason {
  if (finish === 'tool_calls') return 'tool_use';
  if (finish === 'length') return 'max_tokens';
  return stop != null ? 'stop_sequence' : 'end_turn';
}

function messagesUsage(usage: { prompt_tokens: number; completion_tokens: number; prompt_tokens_details?: { cached_tokens: number } }): MessagesUsage {
  const cached = usage.prompt_tokens_details?.cached_tokens ?? 0;
  return { input_tokens: usage.prompt_tokens - cached, output_tokens: usage.completion_tokens, cache_creation_input_tokens: 0, cache_read_input_tokens: cached };
}

/** A call's arguments as tool_use input: the object, or {} when max_tokens cut them (stop_reason says so). */
function callInput(args: string): unknown {
  try {
    const v = JSON.parse(args) as unknown;
    return isObject(v) ? v : {};
  } catch { return {}; }
}

/** The whole message (stream false). */
export async function collectMessage(engine: Engine, started: StartedMessage): Promise<MessageObject> {
  const completion = await collectChat(engine, started.chat);
  const choice = completion.choices[0]!;
  const content: ContentBlock[] = [];
  if (choice.message.content !== null && choice.message.content !== '') content.push({ type: 'text', text: choice.message.content });
  for (const c of choice.message.tool_calls ?? []) content.push({ type: 'tool_use', id: c.id, name: c.function.name, input: callInput(c.function.arguments) });
  return {
    id: started.id, type: 'message', role: 'assistant', model: started.req.model, content,
    stop_reason: stopReason(choice.finish_reason, choice.stop_reason), stop_sequence: choice.stop_reason, usage: messagesUsage(completion.usage),
  };
}

/**
 * The stream's events, in Anthropic's order: message_start (input_tokens: the whole prompt, the
 * cache not known yet), ping, per content block content_block_start, its deltas (text_delta, or
 * a tool_use's input_json_delta) and content_block_stop, then message_delta (stop_reason,
 * stop_sequence, the final usage) and message_stop.
 */
export async function* messageEvents(engine: Engine, started: StartedMessage): AsyncGenerator<MessagesStreamEvent> {
  yield {
    type: 'message_start',
    message: {
      id: started.id, type: 'message', role: 'assistant', model: started.req.model, content: [], stop_reason: null, stop_sequence: null,
      usage: { input_tokens: started.chat.promptTokens, output_tokens: 0, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 },
    },
  };
  yield { type: 'ping' };
  let index = -1;
  let open: 'text' | 'tool_use' | null = null;
  let finish: Finish = 'stop';
  let stop: string | null = null;
  let usage: MessagesUsage | null = null;
  const close = (): MessagesStreamEvent[] => {
    if (open === null) return [];
    open = null;
    return [{ type: 'content_block_stop', index }];
  };
  for await (const chunk of chatChunks(engine, started.chat)) {
    if (chunk.usage != null) usage = messagesUsage(chunk.usage);
    const choice = chunk.choices[0];
    if (choice === undefined) continue;
    const { content, tool_calls: calls } = choice.delta;
    if (content !== undefined && content !== '') {
      if (open !== 'text') {
        yield* close();
        open = 'text';
        yield { type: 'content_block_start', index: ++index, content_block: { type: 'text', text: '' } };
      }
      yield { type: 'content_block_delta', index, delta: { type: 'text_delta', text: content } };
    }
    for (const call of calls ?? []) {
      if (call.id !== undefined) {
        yield* close();
        open = 'tool_use';
        yield { type: 'content_block_start', index: ++index, content_block: { type: 'tool_use', id: call.id, name: call.function.name ?? '', input: {} } };
      }
      if (call.function.arguments !== undefined && call.function.arguments !== '') {
        yield { type: 'content_block_delta', index, delta: { type: 'input_json_delta', partial_json: call.function.arguments } };
      }
    }
    if (choice.finish_reason !== null) { finish = choice.finish_reason; stop = choice.stop_reason ?? null; }
  }
  yield* close();
  yield { type: 'message_delta', delta: { stop_reason: stopReason(finish, stop), stop_sequence: stop }, usage: usage ?? { input_tokens: 0, output_tokens: 0, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 } };
  yield { type: 'message_stop' };
}
