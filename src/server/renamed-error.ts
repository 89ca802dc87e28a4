/**
 * An error from the chat path as another API names its parameters: the Responses API and
 * Anthropic's Messages API are read into chat completion bodies (responses.ts, anthropic.ts),
 * and a 400 from the chat path must name what the client sent (`input[2].content`,
 * `tools[0].input_schema`), not chat's field.
 */
import { GemmaServeError } from '../errors.ts';

/** `e` with its param (and the message's leading `param:`) renamed by `rename`; anything else unchanged. */
export function renamedError(e: unknown, rename: (param: string) => string): unknown {
  if (!(e instanceof GemmaServeError) || e.param === null) return e;
  const param = rename(e.param);
  if (param === e.param) return e;
  const message = e.message.startsWith(`${e.param}:`) ? `${param}${e.message.slice(e.param.length)}` : e.message;
  return new GemmaServeError(message, e.code, e.status, e.type, param, { cause: e });
}
