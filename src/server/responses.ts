/**
 * OpenAI's Responses API (POST /v1/responses) over the chat path: a request is read into a chat
 * completion body (input items → messages, `instructions` → a system message first, function
 * tools and `text.format` → chat's tools and response_format) and started by startChat, so
 * templating, tool calling, structured output and sampling are the chat endpoint's own. What
 * comes back is turned into a `response` object (output items: a message, function calls) or
 * the Responses stream's typed events. A 400 from the chat path names the Responses parameter
 * (`input[3].content`, `max_output_tokens`, `text.format.schema`, `tools[0].parameters`).
 * Stateless: nothing is stored, so previous_response_id is refused (schemas/responses.ts).
 */
import type { Engine } from '../engine/engine.ts';
import { InvalidRequestError } from '../errors.ts';
import type { ChoiceObserver } from './choices.ts';
import { isObject, newId, requiredString } from './body-fields.ts';
import { renamedError } from './renamed-error.ts';
import { rejectUnsupported, type UnsupportedFields } from './request-fields.ts';
import { chatChunks, collectChat, startChat, type StartedChat } from './routes/chat-completions.ts';
import type { ChatCompletionBody, ChatCompletionChunk, ChatLogprobEntry } from './schemas/chat.ts';
import type { ResponseItem, ResponseObject, ResponsesBody, ResponseStreamEvent } from './schemas/responses.ts';

/** A Responses request whose generation has started. */
export interface StartedResponse {
  readonly req: { readonly stream: boolean; readonly model: string };
  readonly chat: StartedChat;
  /** The response object's fields known before any output (status in_progress, no output). */
  readonly shell: ResponseObject;
}

/** The `include` entry that asks for the output text's logprobs. */
const LOGPROBS = 'message.output_text.logprobs';


const UNSUPPORTED: UnsupportedFields = new Map(Object.entries({
  truncation: (v) => v === 'disabled',
  // Encrypted reasoning (what stateless clients such as Codex ask for) is harmless: no reasoning items are made.
  include: (v) => Array.isArray(v) && v.every((x) => x === 'reasoning.encrypted_content' || x === LOGPROBS),
  previous_response_id: () => false,
  conversation: () => false,
  background: (v) => v === false,
  // OpenAI refuses reasoning settings for models that do not reason; an empty object asks nothing.
  reasoning: (v) => isObject(v) && Object.values(v).every((x) => x === null || x === undefined),
  max_tool_calls: () => false,
  prompt: () => false,
}));


type ChatMessageBody = ChatCompletionBody['messages'][number];
type ToolCallBody = NonNullable<ChatMessageBody['tool_calls']>[number];

/** Checks what the schema cannot, translates, starts; every 4xx is thrown here, before any byte is sent. */
export async function startResponse(engine: Engine, body: ResponsesBody, signal: AbortSignal, observer?: ChoiceObserver): Promise<StartedResponse> {
  rejectUnsupported(body as unknown as Readonly<Record<string, unknown>>, UNSUPPORTED);
  if (body.text?.verbosity != null && body.text.verbosity !== 'medium') throw new InvalidRequestError('text.verbosity: not supported by gemma-serve yet', 'text.verbosity', 'unsupported_parameter');
  const { messages, sources } = inputMessages(body);
  const chatBody: ChatCompletionBody = {
    model: body.model,
    messages,
    stream: body.stream ?? false,
    ...(body.stream === true ? { stream_options: { include_usage: true } } : {}),
    ...logprobsFields(body),
    max_tokens: body.max_output_tokens,
    temperature: body.temperature, top_p: body.top_p, seed: body.seed, top_k: body.top_k, min_p: body.min_p,
    repetition_penalty: body.repetition_penalty, stop: body.stop, ignore_eos: body.ignore_eos, priority: body.priority,
    structured_outputs: body.structured_outputs,
    ...(body.tools != null ? { tools: body.tools.map(chatTool) } : {}),
    ...(body.tool_choice != null ? { tool_choice: chatToolChoice(body.tool_choice) } : {}),
    ...(body.parallel_tool_calls != null ? { parallel_tool_calls: body.parallel_tool_calls } : {}),
    ...responseFormat(body.text?.format),
  };
  let chat: StartedChat;
  try {
    chat = await startChat(engine, chatBody, signal, observer);
  } catch (e) {
    throw renamedError(e, (param) => responsesParam(param, sources));
  }
  const shell: ResponseObject = {
    id: newId('resp_'), object: 'response', created_at: chat.base.created, status: 'in_progress', background: false, error: null,
    incomplete_details: null, instructions: body.instructions ?? null, max_output_tokens: body.max_output_tokens ?? null, model: chat.req.model,
    output: [], parallel_tool_calls: body.parallel_tool_calls ?? true, previous_response_id: null, reasoning: { effort: null, summary: null },
    store: false, temperature: body.temperature ?? 1, text: { format: body.text?.format ?? { type: 'text' } }, tool_choice: body.tool_choice ?? 'auto',
    tools: body.tools ?? [], top_p: body.top_p ?? 1, truncation: 'disabled', usage: null, user: body.user ?? null, metadata: body.metadata ?? {},
  };
  return { req: { stream: chat.req.stream, model: chat.req.model }, chat, shell };
}

/**
 * The input as chat messages, and where each came from (`instructions`, `input`, `input[i]`) to
 * name it in errors. A function_call item joins the assistant message before it (its text, or
 * the calls before it), as chat completions write a turn's calls.
 */
function inputMessages(body: ResponsesBody): { messages: ChatMessageBody[]; sources: string[] } {
  const messages: ChatMessageBody[] = [];
  const sources: string[] = [];
  const push = (m: ChatMessageBody, source: string): void => { messages.push(m); sources.push(source); };
  if (body.instructions != null) push({ role: 'system', content: body.instructions }, 'instructions');
  if (typeof body.input === 'string') {
    push({ role: 'user', content: body.input }, 'input');
    return { messages, sources };
  }
  if (body.input.length === 0) throw new InvalidRequestError('input: must not be empty', 'input');
  body.input.forEach((item, i) => {
    const p = `input[${i}]`;
    if (!isObject(item)) throw new InvalidRequestError(`${p}: must be an item object (a message, function_call or function_call_output)`, p);
    const type = item['type'] ?? 'message';
    if (type === 'message') {
      const role = item['role'];
      if (role !== 'user' && role !== 'assistant' && role !== 'system' && role !== 'developer') {
        throw new InvalidRequestError(`${p}.role: must be user, assistant, system or developer`, `${p}.role`);
      }
      push({ role, content: itemText(item['content'], `${p}.content`) }, p);
    } else if (type === 'function_call') {
      const call: ToolCallBody = { id: requiredString(item, 'call_id', p), type: 'function', function: { name: requiredString(item, 'name', p), arguments: requiredString(item, 'arguments', p) } };
      const last = messages.at(-1);
      if (last?.role === 'assistant') {
        messages[messages.length - 1] = { ...last, tool_calls: [...(last.tool_calls ?? []), call] };
      } else {
        push({ role: 'assistant', content: null, tool_calls: [call] }, p);
      }
    } else if (type === 'function_call_output') {
      push({ role: 'tool', tool_call_id: requiredString(item, 'call_id', p), content: itemText(item['output'], `${p}.output`) }, p);
    } else {
      throw new InvalidRequestError(`${p}.type: ${JSON.stringify(type)} items are not supported (message, function_call and function_call_output are)`, `${p}.type`, 'unsupported_parameter');
    }
  });
  return { messages, sources };
}

/** A message's content or a call's output: text, or text parts (input_text, output_text) joined by a newline. */
function itemText(content: unknown, p: string): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) throw new InvalidRequestError(`${p}: must be a string or an array of input_text / output_text parts`, p);
  return content.map((part: unknown, k) => {
    const type = isObject(part) ? part['type'] : undefined;
    if (type !== 'input_text' && type !== 'output_text') {
      throw new InvalidRequestError(`${p}[${k}].type: ${JSON.stringify(type)} parts are not supported (input_text and output_text are)`, `${p}[${k}].type`, 'unsupported_parameter');
    }
    return requiredString(part as Record<string, unknown>, 'text', `${p}[${k}]`);
  }).join('\n');
}

/** A Responses function tool ({type, name, description, parameters, strict}) in chat's shape. */
function chatTool(tool: unknown, i: number): unknown {
  if (!isObject(tool)) throw new InvalidRequestError(`tools[${i}]: must be a tool object`, `tools[${i}]`);
  if (tool['type'] !== 'function') {
    throw new InvalidRequestError(`tools[${i}].type: ${JSON.stringify(tool['type'])} tools are not supported (function tools are)`, `tools[${i}].type`, 'unsupported_parameter');
  }
  const fn: Record<string, unknown> = {};
  for (const key of ['name', 'description', 'parameters', 'strict']) if (tool[key] !== undefined && tool[key] !== null) fn[key] = tool[key];
  return { type: 'function', function: fn };
}

function chatToolChoice(choice: unknown): unknown {
  if (isObject(choice) && choice['type'] === 'function') return { type: 'function', function: { name: choice['name'] } };
  if (isObject(choice)) throw new InvalidRequestError(`tool_choice: ${JSON.stringify(choice['type'])} choices are not supported (none, auto, required, {type: "function", name})`, 'tool_choice', 'unsupported_parameter');
  return choice;
}

/** `include: ["message.output_text.logprobs"]` (with `top_logprobs` alternatives) as chat's logprobs; top_logprobs alone asks nothing. */
function logprobsFields(body: ResponsesBody): Pick<ChatCompletionBody, 'logprobs' | 'top_logprobs'> {
  const top = body.top_logprobs;
  if (!(Array.isArray(body.include) && (body.include as unknown[]).includes(LOGPROBS))) {
    if (top != null && top !== 0) throw new InvalidRequestError(`top_logprobs: needs include ["${LOGPROBS}"]`, 'top_logprobs');
    return {};
  }
  return { logprobs: true, top_logprobs: top ?? 0 };
}

/** `text.format` as chat's response_format. */
function responseFormat(format: unknown): Pick<ChatCompletionBody, 'response_format'> {
  if (format === undefined || format === null) return {};
  if (!isObject(format)) throw new InvalidRequestError('text.format: must be an object with a type', 'text.format');
  if (format['type'] === 'text') return {};
  if (format['type'] === 'json_object') return { response_format: { type: 'json_object' } };
  if (format['type'] === 'json_schema') {
    const { type: _, ...jsonSchema } = format;
    return { response_format: { type: 'json_schema', json_schema: jsonSchema } };
  }
  throw new InvalidRequestError('text.format.type: must be text, json_object or json_schema', 'text.format.type');
}

/** A chat parameter's name as this request named it (`sources`: where each chat message came from). */
function responsesParam(param: string, sources: readonly string[]): string {
  const message = /^messages\[(\d+)\](.*)$/.exec(param);
  if (message !== null) {
    const source = sources[Number(message[1])] ?? 'input';
    return source === 'input' || source === 'instructions' ? source : `${source}${message[2]}`;
  }
  if (param === 'messages') return 'input';
  if (param === 'max_tokens' || param === 'max_completion_tokens') return 'max_output_tokens';
  if (param === 'response_format') return 'text.format';
  if (param.startsWith('response_format.json_schema')) return `text.format${param.slice('response_format.json_schema'.length)}`;
  const tool = /^tools\[(\d+)\]\.function(.*)$/.exec(param);
  if (tool !== null) return `tools[${tool[1]}]${tool[2]}`;
  if (param === 'tool_choice.function.name') return 'tool_choice.name';
  return param;
}

type Finish = ChatCompletionChunk['choices'][number]['finish_reason'];

function finished(shell: ResponseObject, finish: Finish, output: ResponseItem[], usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number; prompt_tokens_details?: { cached_tokens: number } } | null): ResponseObject {
  return {
    ...shell,
    status: finish === 'length' ? 'incomplete' : finish === 'abort' ? 'cancelled' : 'completed',
    incomplete_details: finish === 'length' ? { reason: 'max_output_tokens' } : null,
    output,
    usage: usage === null ? null : {
      input_tokens: usage.prompt_tokens, input_tokens_details: { cached_tokens: usage.prompt_tokens_details?.cached_tokens ?? 0 },
      output_tokens: usage.completion_tokens, output_tokens_details: { reasoning_tokens: 0 }, total_tokens: usage.total_tokens,
    },
  };
}

const itemStatus = (finish: Finish): 'completed' | 'incomplete' => (finish === 'length' || finish === 'abort' ? 'incomplete' : 'completed');
const outputText = (text: string, logprobs: readonly ChatLogprobEntry[] = []) => ({ type: 'output_text' as const, text, annotations: [], logprobs: [...logprobs] });

/** The whole response object (stream false). */
export async function collectResponse(engine: Engine, started: StartedResponse): Promise<ResponseObject> {
  const completion = await collectChat(engine, started.chat);
  const choice = completion.choices[0]!;
  const { content, tool_calls: calls = [] } = choice.message;
  const output: ResponseItem[] = [];
  if (calls.length === 0 || (content !== null && content !== '')) {
    output.push({ type: 'message', id: newId('msg_'), status: itemStatus(choice.finish_reason), role: 'assistant', content: [outputText(content ?? '', choice.logprobs?.content)] });
  }
  for (const c of calls) output.push({ type: 'function_call', id: newId('fc_'), call_id: c.id, name: c.function.name, arguments: c.function.arguments, status: 'completed' });
  return finished(started.shell, choice.finish_reason, output, completion.usage);
}

/**
 * The stream's events, in OpenAI's order: response.created and .in_progress; per output item
 * .output_item.added, its deltas (text, or a call's arguments), their .done events and
 * .output_item.done; then response.completed (or .incomplete when cut by max_output_tokens),
 * carrying the whole response. A response with no output still gets one (empty) message.
 */
export async function* responseEvents(engine: Engine, started: StartedResponse): AsyncGenerator<ResponseStreamEvent> {
  let seq = 0;
  const event = (type: string, fields: Record<string, unknown>): ResponseStreamEvent => ({ type, sequence_number: seq++, ...fields });
  yield event('response.created', { response: started.shell });
  yield event('response.in_progress', { response: started.shell });
  const output: ResponseItem[] = [];
  /** The item being streamed (the last of output) and its text or arguments so far. */
  const current: { item: ResponseItem | null; text: string; logprobs: ChatLogprobEntry[]; unsent: ChatLogprobEntry[] } = { item: null, text: '', logprobs: [], unsent: [] };
  let finish: Finish = 'stop';
  let usage: Parameters<typeof finished>[3] = null;

  function* openItem(item: ResponseItem): Generator<ResponseStreamEvent> {
    yield* closeItem('completed');
    current.item = item;
    current.text = '';
    current.logprobs = [];
    output.push(item);
    const output_index = output.length - 1;
    yield event('response.output_item.added', { output_index, item: { ...item, ...(item.type === 'message' ? { content: [] } : {}) } });
    if (item.type === 'message') yield event('response.content_part.added', { item_id: item.id, output_index, content_index: 0, part: outputText('') });
  }
  function* closeItem(status: 'completed' | 'incomplete'): Generator<ResponseStreamEvent> {
    const open = current.item;
    if (open === null) return;
    current.item = null;
    if (open.type === 'message') { current.logprobs.push(...current.unsent); current.unsent = []; } // held text the end dropped
    const { text, logprobs } = current;
    const output_index = output.length - 1;
    const item: ResponseItem = open.type === 'message' ? { ...open, status, content: [outputText(text, logprobs)] } : { ...open, status: 'completed', arguments: text };
    output[output_index] = item;
    if (item.type === 'message') {
      yield event('response.output_text.done', { item_id: item.id, output_index, content_index: 0, text, logprobs });
      yield event('response.content_part.done', { item_id: item.id, output_index, content_index: 0, part: outputText(text, logprobs) });
    } else {
      yield event('response.function_call_arguments.done', { item_id: item.id, output_index, name: item.name, arguments: text });
    }
    yield event('response.output_item.done', { output_index, item });
  }
  const newMessage = (): ResponseItem => ({ type: 'message', id: newId('msg_'), status: 'in_progress', role: 'assistant', content: [] });

  for await (const chunk of chatChunks(engine, started.chat)) {
    if (chunk.usage != null) usage = chunk.usage;
    const choice = chunk.choices[0];
    if (choice === undefined) continue;
    const { content, tool_calls: calls } = choice.delta;
    // A token's logprobs ride on its first text delta; one whose text the detokenizer still holds
    // (a byte run) waits for the next delta.
    if (calls === undefined && choice.logprobs != null) current.unsent.push(...choice.logprobs.content);
    if (content !== undefined && content !== '') {
      if (current.item?.type !== 'message') yield* openItem(newMessage());
      current.text += content;
      const logprobs = current.unsent;
      current.unsent = [];
      current.logprobs.push(...logprobs);
      yield event('response.output_text.delta', { item_id: current.item!.id, output_index: output.length - 1, content_index: 0, delta: content, logprobs });
    }
    for (const call of calls ?? []) {
      if (call.id !== undefined) {
        yield* openItem({ type: 'function_call', id: newId('fc_'), call_id: call.id, name: call.function.name ?? '', arguments: '', status: 'in_progress' });
      }
      const args = call.function.arguments ?? '';
      if (args !== '' && current.item !== null) {
        current.text += args;
        yield event('response.function_call_arguments.delta', { item_id: current.item.id, output_index: output.length - 1, delta: args });
      }
    }
    if (choice.finish_reason !== null) finish = choice.finish_reason;
  }
  if (output.length === 0) yield* openItem(newMessage());
  yield* closeItem(itemStatus(finish));
  const response = finished(started.shell, finish, output, usage);
  yield event(response.status === 'incomplete' ? 'response.incomplete' : 'response.completed', { response });
}
