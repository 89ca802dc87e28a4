/**
 * Chat messages -> prompt text, by the checkpoint's own Jinja `chat_template` (rendered with
 * `@huggingface/jinja`), falling back to Gemma's official template. Gemma's template rejects
 * the `system` role; like most servers we then fold system text into the next user turn.
 * Any other exception the template raises (roles not alternating, ...) is the client's
 * request being wrong: a 400 on `messages` carrying the template's own message.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Template } from '@huggingface/jinja';
import { CheckpointError, InvalidRequestError } from '../errors.ts';
import { GEMMA_CHAT_TEMPLATE } from '../checkpoint/tokenizer-json.ts';

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
  /** Tool definitions (OpenAI's `tools`), passed as the template's `tools` variable. */
  readonly tools?: readonly unknown[];
}

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
  } catch (e) {
    throw new CheckpointError(`${origin}: chat_template does not parse (${(e as Error).message})`, { cause: e });
  }
  const render = (messages: readonly ToolTemplateMessage[], options: RenderOptions): string =>
    template.render({
      ...tokens,
      messages: messages.map((m) => ({ ...m })),
      add_generation_prompt: options.addGenerationPrompt,
      ...(options.tools !== undefined ? { tools: options.tools } : {}),
    });
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
 * The checkpoint's template: tokenizer_config.json `chat_template` (a string, or a list of
 * named templates where "default" wins), else a `chat_template.jinja` beside it, else Gemma's.
 */
export function loadChatTemplate(tokenizerConfigPath: string | null): ChatTemplate {
  if (tokenizerConfigPath === null) return createChatTemplate(DEFAULT_GEMMA_CHAT_TEMPLATE);
  let config: Record<string, unknown>;
  try {
    config = JSON.parse(readFileSync(tokenizerConfigPath, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new CheckpointError(`${tokenizerConfigPath}: cannot read JSON (${(e as Error).message})`, { cause: e });
  }
  const tokens: TemplateTokens = {
    bos_token: tokenString(config['bos_token']) ?? GEMMA_TOKENS.bos_token,
    eos_token: tokenString(config['eos_token']) ?? GEMMA_TOKENS.eos_token,
    pad_token: tokenString(config['pad_token']) ?? GEMMA_TOKENS.pad_token,
    unk_token: tokenString(config['unk_token']) ?? GEMMA_TOKENS.unk_token,
  };
  const jinjaFile = join(dirname(tokenizerConfigPath), 'chat_template.jinja');
  const source = templateSource(config['chat_template'], tokenizerConfigPath)
    ?? (existsSync(jinjaFile) ? readFileSync(jinjaFile, 'utf8') : null)
    ?? DEFAULT_GEMMA_CHAT_TEMPLATE;
  return createChatTemplate(source, tokens, tokenizerConfigPath);
}

/**
 * Each system message joins the next user turn ("system\n\nuser"); one with no user turn
 * after it becomes a user turn, which the template then judges like any other.
 */
export function foldSystemIntoUser<M extends ToolTemplateMessage>(messages: readonly M[]): (M | ChatMessage)[] {
  const out: (M | ChatMessage)[] = [];
  let pending: string[] = [];
  for (const m of messages) {
    if (m.role === 'system') {
      pending.push(m.content);
    } else if (m.role === 'user' && pending.length > 0) {
      out.push({ role: 'user', content: [...pending, m.content].join('\n\n') });
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
