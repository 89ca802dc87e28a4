/**
 * Chat messages -> prompt text, by the checkpoint's own Jinja `chat_template` (or the one
 * `--chat-template` names), rendered with `@huggingface/jinja` the way Hugging Face's
 * `apply_chat_template` renders it (Python's stripping: template-python.ts), falling back to
 * Gemma's official template. Gemma's template rejects the `system` role; like most servers we
 * then fold system text into the next user turn (`foldSystemIntoUser`). Any other exception
 * the template raises (roles not alternating, ...) is the client's request being wrong: a 400
 * on `messages` carrying the template's own message.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Template } from '@huggingface/jinja';
import { CheckpointError, InvalidRequestError } from '../errors.ts';
import { GEMMA_CHAT_TEMPLATE } from '../checkpoint/tokenizer-json.ts';
import { PYTHON_STRIP_FUNCTIONS, pythonStrip, pythonStripCalls } from './template-python.ts';

/** For checkpoints that ship no tokenizer_config.json (or no chat_template in it). */
export const DEFAULT_GEMMA_CHAT_TEMPLATE = GEMMA_CHAT_TEMPLATE;

export interface ChatMessage {
  readonly role: 'system' | 'user' | 'assistant';
  readonly content: string;
}

/**
 * A message for a template that handles tools itself (`handlesTools`): Hugging Face's shape,
 * assistant `tool_calls` ({id, type, function: {name, arguments}}) and tool results with
 * `tool_call_id`, handed to the template as they are.
 */
export type ToolTemplateMessage =
  | ChatMessage
  | { readonly role: 'assistant'; readonly content: string; readonly tool_calls: readonly { readonly id: string; readonly type: 'function'; readonly function: { readonly name: string; readonly arguments: unknown } }[] }
  | { readonly role: 'tool'; readonly content: string; readonly tool_call_id: string };

export interface RenderOptions {
  /** End with the opening of the model's turn (`<start_of_turn>model\n`). */
  readonly addGenerationPrompt: boolean;
  /**
   * Leave the last message open (assistant prefill): the prompt ends where that message's
   * content ends, without its end-of-turn (Hugging Face's `continue_final_message`).
   */
  readonly continueFinalMessage?: boolean;
  /** Further template variables (vLLM's `chat_template_kwargs`); never one of TEMPLATE_VARIABLES. */
  readonly kwargs?: Readonly<Record<string, unknown>>;
  /** Tool definitions (OpenAI's `tools`), passed as the template's `tools` variable. */
  readonly tools?: readonly unknown[];
}

/** The variables the renderer itself sets: `chat_template_kwargs` may not name them. */
export const TEMPLATE_VARIABLES: readonly string[] = ['messages', 'add_generation_prompt', 'tools', 'bos_token', 'eos_token', 'pad_token', 'unk_token', ...Object.keys(PYTHON_STRIP_FUNCTIONS)];

export interface ChatTemplate {
  /** The prompt text; it already contains `<bos>` when the template writes it (Gemma's does). */
  renderChat(messages: readonly ToolTemplateMessage[], options: RenderOptions): string;
  /** The template reads a `tools` variable (its checkpoint knows how to offer tools). */
  readonly handlesTools: boolean;
}

/** The token strings templates may reference (`bos_token`, `eos_token`, ...). */
export interface TemplateTokens {
  readonly bos_token: string;
  readonly eos_token: string;
  readonly pad_token?: string;
  readonly unk_token?: string;
}

const GEMMA_TOKENS: TemplateTokens = { bos_token: '<bos>', eos_token: '<eos>', pad_token: '<pad>', unk_token: '<unk>' };

/** Compiles `source`; a template that does not parse is a broken checkpoint (`origin` names it). */
export function createChatTemplate(source: string, tokens: TemplateTokens = GEMMA_TOKENS, origin = 'chat_template'): ChatTemplate {
  let template: Template;
  try {
    template = new Template(source);
    pythonStripCalls(template.parsed);
  } catch (e) {
    throw new CheckpointError(`${origin}: chat_template does not parse (${(e as Error).message})`, { cause: e });
  }
  const render = (messages: readonly ToolTemplateMessage[], options: RenderOptions): string => {
    const text = template.render({
      ...options.kwargs,
      ...tokens,
      messages: messages.map((m) => ({ ...m })),
      add_generation_prompt: options.addGenerationPrompt,
      ...(options.tools !== undefined ? { tools: options.tools } : {}),
      ...PYTHON_STRIP_FUNCTIONS,
    });
    return options.continueFinalMessage === true ? openFinalMessage(text, messages.at(-1)?.content ?? '') : text;
  };
  return {
    handlesTools: /\btools\b/.test(source),
    renderChat(messages, options) {
      try {
        return render(messages, options);
      } catch (first) {
        if (!messages.some((m) => m.role === 'system')) throw asRequestError(first);
        try {
          return render(foldSystemIntoUser(messages), options);
        } catch (second) {
          throw asRequestError(second);
        }
      }
    },
  };
}

/**
 * The rendered chat cut right after the final message's content, as transformers'
 * `apply_chat_template(continue_final_message=True)` cuts it: at the last occurrence of the
 * stripped content, keeping the content's trailing whitespace where the template kept it.
 */
function openFinalMessage(rendered: string, finalContent: string): string {
  const stripped = pythonStrip(finalContent);
  const at = rendered.lastIndexOf(stripped);
  if (at < 0) throw new InvalidRequestError('continue_final_message: the final message does not appear in the rendered chat, so it cannot be continued', 'continue_final_message');
  const leftStripped = pythonStrip(finalContent, 'left');
  if (rendered.slice(at, at + leftStripped.length) === finalContent) return rendered.slice(0, at + leftStripped.length);
  return rendered.slice(0, at + stripped.length);
}

/**
 * The checkpoint's template: tokenizer_config.json `chat_template` (a string, or a list of
 * named templates where "default" wins), else a `chat_template.jinja` beside it, else Gemma's.
 * `overridePath` (`--chat-template`) replaces it: a JSON object with a `chat_template` (a
 * tokenizer_config.json), else the file's text is the Jinja source. Token strings
 * (`bos_token`, ...) come from the checkpoint's config either way.
 */
export function loadChatTemplate(tokenizerConfigPath: string | null, overridePath: string | null = null): ChatTemplate {
  const config = tokenizerConfigPath === null ? {} : readJsonObject(tokenizerConfigPath);
  const tokens: TemplateTokens = {
    bos_token: tokenString(config['bos_token']) ?? GEMMA_TOKENS.bos_token,
    eos_token: tokenString(config['eos_token']) ?? GEMMA_TOKENS.eos_token,
    pad_token: tokenString(config['pad_token']) ?? GEMMA_TOKENS.pad_token,
    unk_token: tokenString(config['unk_token']) ?? GEMMA_TOKENS.unk_token,
  };
  if (overridePath !== null) return createChatTemplate(overrideSource(overridePath), tokens, overridePath);
  if (tokenizerConfigPath === null) return createChatTemplate(DEFAULT_GEMMA_CHAT_TEMPLATE, tokens);
  const jinjaFile = join(dirname(tokenizerConfigPath), 'chat_template.jinja');
  const source = templateSource(config['chat_template'], tokenizerConfigPath)
    ?? (existsSync(jinjaFile) ? readFileSync(jinjaFile, 'utf8') : null)
    ?? DEFAULT_GEMMA_CHAT_TEMPLATE;
  return createChatTemplate(source, tokens, tokenizerConfigPath);
}

/** The Jinja source `--chat-template` names: a tokenizer_config.json-like JSON's template, or the text itself. */
function overrideSource(path: string): string {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new CheckpointError(`${path}: cannot read the chat template (${(e as Error).message})`, { cause: e });
  }
  let json: unknown;
  try {
    json = JSON.parse(text) as unknown;
  } catch {
    return text; // not JSON: a Jinja file
  }
  // A Jinja file may happen to be JSON too ("text" alone); only an object is a config.
  if (typeof json !== 'object' || json === null || Array.isArray(json)) return text;
  const source = templateSource((json as Record<string, unknown>)['chat_template'], path);
  if (source === null) throw new CheckpointError(`${path}: a JSON chat template file must be an object with a chat_template`);
  return source;
}

function readJsonObject(path: string): Record<string, unknown> {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new CheckpointError(`${path}: cannot read JSON (${(e as Error).message})`, { cause: e });
  }
}

/**
 * Each system message joins the next user turn: the system texts and the user's, each stripped
 * (Python's whitespace set, as the template's `| trim`), joined by a blank line ("system\n\nuser";
 * two system messages: "A\n\nB\n\nuser"); a system text that strips to nothing is dropped. System
 * messages with no user turn after them become one user turn, which the template then judges
 * like any other.
 */
export function foldSystemIntoUser<M extends ToolTemplateMessage>(messages: readonly M[]): (M | ChatMessage)[] {
  const out: (M | ChatMessage)[] = [];
  let pending: string[] = [];
  for (const m of messages) {
    if (m.role === 'system') {
      const text = pythonStrip(m.content);
      if (text !== '') pending.push(text);
    } else if (m.role === 'user' && pending.length > 0) {
      out.push({ role: 'user', content: [...pending, pythonStrip(m.content)].join('\n\n') });
      pending = [];
    } else {
      out.push(m);
    }
  }
  if (pending.length > 0) out.push({ role: 'user', content: pending.join('\n\n') });
  return out;
}

function asRequestError(e: unknown): InvalidRequestError {
  const message = e instanceof Error ? e.message : String(e);
  return new InvalidRequestError(`The chat template rejected the messages: ${message}`, 'messages');
}

function templateSource(v: unknown, file: string): string | null {
  if (v === undefined || v === null) return null;
  if (typeof v === 'string') return v;
  if (Array.isArray(v)) {
    const named = v.filter((t): t is { name: unknown; template: string } =>
      typeof t === 'object' && t !== null && typeof (t as { template?: unknown }).template === 'string');
    return (named.find((t) => t.name === 'default') ?? named[0])?.template ?? null;
  }
  throw new CheckpointError(`${file}: chat_template must be a string or a list of {name, template}`);
}

function tokenString(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (typeof v === 'object' && v !== null && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  return null;
}
