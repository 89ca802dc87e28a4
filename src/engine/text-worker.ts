/**
 * A text worker: chat templating and tokenization off the HTTP event loop. Each worker loads
 * the checkpoint's tokenizer and chat template once, then answers TextJob messages in order.
 * Message content is protected by SpecialTextGuard unless `specialTokensInContent` is set. The
 * first worker also builds the main thread's TokenTable; each says whether its template renders
 * tools (the main thread never loads the template).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { loadChatTemplate } from './chat-template.ts';
import { SpecialTextGuard } from './special-text.ts';
import { loadTokenizer } from './tokenizer.ts';
import { GemmaServeError } from '../errors.ts';
import type { TextJob, TextReply, TextWorkerData } from './text-pool.ts';
import { tokenTableData } from './token-table.ts';

const port = parentPort;
if (port === null) throw new Error('text-worker.ts must run in a worker thread');
const init = workerData as TextWorkerData;
try {
  const tokenizer = loadTokenizer(init.tokenizerJson, init.tokenizerConfig);
  const template = loadChatTemplate(init.tokenizerConfig, init.chatTemplate ?? null);
  const guard = new SpecialTextGuard(tokenizer, tokenizer.specialTokens());
  port.on('message', (job: TextJob) => {
    let reply: TextReply;
    try {
      let ids: Int32Array;
      if (job.type === 'encode') {
        ids = tokenizer.encode(job.text);
      } else {
        const plain = !init.specialTokensInContent;
        const messages = plain ? job.messages.map((m) => ({ ...m, content: guard.protect(m.content) })) : job.messages;
        const text = template.renderChat(messages, job.options);
        ids = plain ? guard.encode(text) : tokenizer.encode(text);
      }
      reply = { id: job.id, ids };
      port.postMessage(reply, [ids.buffer as ArrayBuffer]);
    } catch (e) {
      reply = e instanceof GemmaServeError
        ? { id: job.id, error: { message: e.message, param: e.param, status: e.status } }
        : { id: job.id, error: { message: e instanceof Error ? e.message : String(e), param: null, status: 500 } };
      port.postMessage(reply);
    }
  });
  // The first worker describes every token's text for the main thread, which then decodes
  // without loading the tokenizer (token-table.ts); the arrays are moved, not copied.
  const table = init.buildTable ? tokenTableData(tokenizer) : null;
  port.postMessage({ id: -1, table, handlesTools: template.handlesTools } satisfies TextReply, table === null ? [] : [table.text.buffer as ArrayBuffer, table.offsets.buffer as ArrayBuffer, table.kinds.buffer as ArrayBuffer]);
} catch (e) {
  port.postMessage({ id: -1, error: { message: (e as Error).message, param: null, status: 500 } } satisfies TextReply);
}
