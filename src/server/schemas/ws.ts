/**
 * GET /v1/chat/completions/ws: the messages a client sends (validated by WsClientMessage;
 * a request's body by the same compiled ChatCompletionRequest as the HTTP endpoint) and the
 * messages the server sends (documented only: they are written as they are produced).
 */
import { Type, type Static } from 'typebox';
import { ChatCompletionChunk } from './chat.ts';
import { ErrorResponse } from './common.ts';

export const WsClientMessage = Type.Object({
  type: Type.Enum(['request', 'cancel'], { description: 'request: start a chat completion; cancel: stop the running one with this id.' }),
  id: Type.String({ minLength: 1, description: "The client's id, unique among its running requests." }),
  body: Type.Optional(Type.Record(Type.String(), Type.Unknown(), { description: 'With type request: a chat completion request (stream is implied).' })),
}, { additionalProperties: false, description: 'One JSON text message from the client.' });
export type WsClientMessage = Static<typeof WsClientMessage>;

const Id = Type.String();

export const WsServerMessage = Type.Union([
  Type.Object({ type: Type.Literal('chunk'), id: Id, chunk: ChatCompletionChunk }),
  Type.Object({ type: Type.Literal('done'), id: Id }, { description: "After the last chunk (SSE's [DONE])." }),
  Type.Object({ type: Type.Literal('cancelled'), id: Id }, { description: 'After a cancel; no more messages for that id.' }),
  Type.Object({ type: Type.Literal('error'), id: Type.Union([Id, Type.Null()]), status: Type.Integer(), error: ErrorResponse.properties.error },
    { description: 'A refused request (status as over HTTP) or a failure mid-stream; id null for a malformed message.' }),
], { description: 'One JSON text message from the server.' });
