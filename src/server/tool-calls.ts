/**
 * OpenAI tool calling for Gemma 2, which has no tool tokens of its own (the approach of vLLM,
 * TGI and llama-server for such models): the tool definitions are written into the prompt,
 * the model answers a call as a tagged JSON block, a grammar forces that block's shape, and
 * the block is parsed back into OpenAI `tool_calls`.
 *
 * The format the model sees and writes (documented in docs/API.md, "Tool calling"):
 *
 *     <tool_call>
 *     {"name": "get_weather", "arguments": {"city": "Paris"}}
 *     </tool_call>
 *
 * This module is pure: messages in, messages out (`renderToolMessages`); tool definitions in,
 * a structural-tag constraint out (`toolCallConstraint`); generated text in, text and call
 * deltas out (`ToolCallParser`, the one parser for streamed and whole responses alike).
 */
import type { ChatMessage } from '../engine/chat-template.ts';
import { InvalidRequestError } from '../errors.ts';

/** A function the model may call (OpenAI's `tools[i].function`). */
export interface ToolFunction {
  readonly name: string;
  readonly description?: string;
  /** A JSON Schema for the arguments object (default: any object). */
  readonly parameters: Readonly<Record<string, unknown>>;
}

/** `tool_choice`, normalised: a named function forces that one. */
export type ToolChoice = 'none' | 'auto' | 'required' | { readonly name: string };

/** A call in an assistant message of the history, or one the model made. */
export interface ToolCall {
  readonly id: string;
  readonly name: string;
  /** The arguments as a JSON text (OpenAI's `function.arguments`). */
  readonly arguments: string;
}

/** A chat message as the request carries it, tool roles included. */
export type ToolAwareMessage =
  | ChatMessage
  | { readonly role: 'assistant'; readonly content: string; readonly toolCalls: readonly ToolCall[] }
  | { readonly role: 'tool'; readonly content: string; readonly toolCallId: string };

export const TOOL_CALL_BEGIN = '<tool_call>';
export const TOOL_CALL_END = '</tool_call>';
const TOOL_NAME = /^[a-zA-Z0-9_-]{1,64}$/;

/** Checks tool names (OpenAI's rule) and that a named `tool_choice` names one of them. */
export function checkTools(tools: readonly ToolFunction[], choice: ToolChoice): void {
  const seen = new Set<string>();
  tools.forEach((t, i) => {
    if (!TOOL_NAME.test(t.name)) {
      throw new InvalidRequestError(`tools[${i}].function.name: must be 1-64 characters of a-z, A-Z, 0-9, _ and -, got ${JSON.stringify(t.name.slice(0, 80))}`, `tools[${i}].function.name`);
    }
    if (seen.has(t.name)) throw new InvalidRequestError(`tools[${i}].function.name: '${t.name}' is defined twice`, `tools[${i}].function.name`);
    seen.add(t.name);
  });
  if (typeof choice === 'object' && !seen.has(choice.name)) {
    throw new InvalidRequestError(`tool_choice: no tool named '${choice.name.slice(0, 80)}' in tools`, 'tool_choice');
  }
  if ((choice === 'required' || typeof choice === 'object') && tools.length === 0) {
    throw new InvalidRequestError('tool_choice: requires a non-empty tools list', 'tool_choice');
  }
}

/** The instructions that precede the conversation when tools are offered. */
export function toolInstructions(tools: readonly ToolFunction[]): string {
  const defs = tools.map((t) => ({ name: t.name, ...(t.description !== undefined ? { description: t.description } : {}), parameters: t.parameters }));
  return [
    'You can call the following tools. To call a tool, write a block of this form (one block per call):',
    `${TOOL_CALL_BEGIN}\n{"name": "<tool name>", "arguments": <the arguments as a JSON object>}\n${TOOL_CALL_END}`,
    'A tool\'s result comes back in a <tool_response> block. When no tool is needed, answer normally.',
    '',
    'Tools:',
    JSON.stringify(defs),
  ].join('\n');
}

/** How an earlier call is written in a model turn: exactly what the model would have written. */
export function formatToolCall(call: Pick<ToolCall, 'name' | 'arguments'>): string {
  return `${TOOL_CALL_BEGIN}\n{"name": ${JSON.stringify(call.name)}, "arguments": ${call.arguments.trim() === '' ? '{}' : call.arguments}}\n${TOOL_CALL_END}`;
}

/**
 * The conversation as plain user/assistant/system turns for a template that knows no tools:
 * the tool instructions become a system message (folded into the first user turn for Gemma),
 * assistant calls are written as the model writes them, and tool results become user turns
 * (`<tool_response>` blocks; consecutive results and a following user message share one turn,
 * since Gemma's template requires alternating roles).
 */
export function renderToolMessages(messages: readonly ToolAwareMessage[], tools: readonly ToolFunction[], offerTools: boolean): ChatMessage[] {
  const out: ChatMessage[] = offerTools && tools.length > 0 ? [{ role: 'system', content: toolInstructions(tools) }] : [];
  const names = new Map<string, string>();
  for (const m of messages) {
    let next: ChatMessage;
    if (m.role === 'tool') {
      const name = names.get(m.toolCallId);
      const header = name !== undefined ? `{"tool_call_id": ${JSON.stringify(m.toolCallId)}, "name": ${JSON.stringify(name)}}` : `{"tool_call_id": ${JSON.stringify(m.toolCallId)}}`;
      next = { role: 'user', content: `<tool_response>\n${header}\n${m.content}\n</tool_response>` };
    } else if ('toolCalls' in m) {
      for (const c of m.toolCalls) names.set(c.id, c.name);
      next = { role: 'assistant', content: [m.content, ...m.toolCalls.map(formatToolCall)].filter((s) => s !== '').join('\n') };
    } else {
      next = m;
    }
    const prev = out[out.length - 1];
    if (prev !== undefined && prev.role === next.role && next.role !== 'system' && (m.role === 'tool' || isToolResponse(prev))) {
      out[out.length - 1] = { role: prev.role, content: `${prev.content}\n${next.content}` };
    } else {
      out.push(next);
    }
  }
  return out;
}

function isToolResponse(m: ChatMessage): boolean {
  return m.role === 'user' && m.content.startsWith('<tool_response>');
}

/** xgrammar's structural tag (its JSON form), the constraint that forces the calls' shape. */
export interface StructuralTagSpec {
  readonly type: 'structural_tag';
  readonly format: Readonly<Record<string, unknown>>;
  readonly [key: string]: unknown;
}

/**
 * The constraint for a tool choice, or null where the model answers freely (`none`):
 * `required` → one call or more (one with `parallel_tool_calls: false`), nothing else;
 * a named function → exactly one call of it; `auto` → free text in which `<tool_call>` starts
 * a call whose JSON is then forced.
 */
export function toolCallConstraint(tools: readonly ToolFunction[], choice: ToolChoice, parallel: boolean): StructuralTagSpec | null {
  if (choice === 'none' || tools.length === 0) return null;
  const chosen = typeof choice === 'object' ? tools.filter((t) => t.name === choice.name) : tools;
  const tags = chosen.map((t) => ({
    type: 'tag',
    begin: `${TOOL_CALL_BEGIN}\n{"name": ${JSON.stringify(t.name)}, "arguments": `,
    content: { type: 'json_schema', json_schema: t.parameters },
    end: `}\n${TOOL_CALL_END}`,
  }));
  const single = typeof choice === 'object' || !parallel;
  if (choice === 'auto') {
    return { type: 'structural_tag', format: { type: 'triggered_tags', triggers: [TOOL_CALL_BEGIN], tags, at_least_one: false, stop_after_first: single } };
  }
  return { type: 'structural_tag', format: { type: 'tags_with_separator', tags, separator: '\n', at_least_one: true, stop_after_first: single } };
}

/** What the parser makes of generated text, in order. */
export type ToolParseEvent =
  | { readonly type: 'text'; readonly text: string }
  /** A call begins: its name is known, its arguments follow. */
  | { readonly type: 'call'; readonly index: number; readonly name: string }
  /** More of call `index`'s arguments text. */
  | { readonly type: 'arguments'; readonly index: number; readonly text: string };

const HEADER = /^\s*\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")\s*,\s*"arguments"\s*:\s*/;

/**
 * Splits generated text into ordinary text and tool calls, incrementally: `push` takes each
 * text delta and returns what can be said so far (text that might be the start of a
 * `<tool_call>` tag is held back until it is known); `end` flushes the rest. Arguments are
 * streamed as they are generated, with a JSON scanner finding where the arguments object ends.
 */
export class ToolCallParser {
  private buf = '';
  private state: 'text' | 'header' | 'arguments' | 'tail' = 'text';
  private calls = 0;
  // The arguments scanner: nesting depth, inside a string, after a backslash.
  private depth = 0;
  private inString = false;
  private escaped = false;
  private started = false;

  /** Calls begun so far. */
  get numCalls(): number {
    return this.calls;
  }

  push(delta: string): ToolParseEvent[] {
    this.buf += delta;
    const out: ToolParseEvent[] = [];
    for (;;) {
      const before = this.buf.length;
      const state = this.state;
      this.advance(out);
      if (this.buf.length === before && this.state === state) return out;
    }
  }

  /** The text held back at the end (an unfinished tag or call is returned as it stands). */
  end(): ToolParseEvent[] {
    const out: ToolParseEvent[] = [];
    if (this.buf !== '') {
      out.push(this.state === 'arguments' ? { type: 'arguments', index: this.calls - 1, text: this.buf } : { type: 'text', text: this.buf });
    }
    this.buf = '';
    return out;
  }

  private advance(out: ToolParseEvent[]): void {
    if (this.state === 'text') {
      const at = this.buf.indexOf(TOOL_CALL_BEGIN);
      if (at >= 0) {
        if (at > 0) out.push({ type: 'text', text: this.buf.slice(0, at) });
        this.buf = this.buf.slice(at + TOOL_CALL_BEGIN.length);
        this.state = 'header';
        return;
      }
      const keep = partialSuffix(this.buf, TOOL_CALL_BEGIN);
      if (this.buf.length > keep) {
        out.push({ type: 'text', text: this.buf.slice(0, this.buf.length - keep) });
        this.buf = this.buf.slice(this.buf.length - keep);
      }
    } else if (this.state === 'header') {
      const m = HEADER.exec(this.buf);
      if (m === null) return;
      out.push({ type: 'call', index: this.calls++, name: JSON.parse(m[1]!) as string });
      this.buf = this.buf.slice(m[0].length);
      this.state = 'arguments';
      this.depth = 0; this.inString = false; this.escaped = false; this.started = false;
    } else if (this.state === 'arguments') {
      if (!this.started) this.buf = this.buf.trimStart(); // the header's whitespace may arrive after it
      const end = this.scanArguments();
      const text = end < 0 ? this.buf : this.buf.slice(0, end);
      if (text !== '') out.push({ type: 'arguments', index: this.calls - 1, text });
      this.buf = end < 0 ? '' : this.buf.slice(end);
      if (end >= 0) this.state = 'tail';
    } else {
      const at = this.buf.indexOf(TOOL_CALL_END);
      if (at < 0) return;
      this.buf = this.buf.slice(at + TOOL_CALL_END.length).replace(/^\n/, '');
      this.state = 'text';
    }
  }

  /** Feeds buf to the scanner; the index just past the arguments value, or -1 if not yet. */
  private scanArguments(): number {
    for (let i = 0; i < this.buf.length; i++) {
      const c = this.buf[i]!;
      this.started = true;
      if (this.inString) {
        if (this.escaped) this.escaped = false;
        else if (c === '\\') this.escaped = true;
        else if (c === '"') this.inString = false;
      } else if (c === '"') this.inString = true;
      else if (c === '{' || c === '[') this.depth++;
      else if (c === '}' || c === ']') {
        this.depth--;
        if (this.depth === 0) return i + 1;
      }
    }
    return -1;
  }
}

/** Length of the longest suffix of `s` that is a proper prefix of `tag`. */
function partialSuffix(s: string, tag: string): number {
  for (let n = Math.min(s.length, tag.length - 1); n > 0; n--) if (tag.startsWith(s.slice(s.length - n))) return n;
  return 0;
}

/** A whole response's text split into content and calls (the non-streamed path). */
export function parseToolCalls(text: string, newId: () => string): { content: string; calls: ToolCall[] } {
  const p = new ToolCallParser();
  const events = [...p.push(text), ...p.end()];
  let content = '';
  const calls: { id: string; name: string; arguments: string }[] = [];
  for (const e of events) {
    if (e.type === 'text') content += e.text;
    else if (e.type === 'call') calls.push({ id: newId(), name: e.name, arguments: '' });
    else calls[e.index]!.arguments += e.text;
  }
  return { content: content.trim(), calls };
}
