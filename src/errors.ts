/**
 * The one error registry. Every error the project raises on purpose is a GemmaServeError
 * with a stable `code`, an HTTP status, and a message that states the violated constraint.
 * The HTTP layer maps these to OpenAI's error JSON; anything else is an internal error
 * whose details never reach a client.
 */
export type ErrorType = 'invalid_request_error' | 'authentication_error' | 'not_found_error' | 'rate_limit_error' | 'server_error';

export class GemmaServeError extends Error {
  constructor(
    message: string,
    readonly code: string,
    readonly status: number,
    readonly type: ErrorType,
    readonly param: string | null = null,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A checkpoint or exported model that cannot be served as it is. */
export class CheckpointError extends GemmaServeError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, 'invalid_checkpoint', 500, 'server_error', null, options);
  }
}

/** Bad client input: a 400 naming the parameter. */
export class InvalidRequestError extends GemmaServeError {
  constructor(message: string, param: string | null = null, code = 'invalid_value') {
    super(message, code, 400, 'invalid_request_error', param);
  }
}

/** The prompt (plus requested tokens) does not fit the model's context. */
export class ContextLengthError extends GemmaServeError {
  /** `atLeast`: numPromptTokens is a lower bound found without tokenizing (the prompt's characters). */
  constructor(readonly numPromptTokens: number, readonly numRequested: number, readonly limit: number, param = 'messages', atLeast = false) {
    super(
      atLeast
        ? `This model's maximum context length is ${limit} tokens. However, your prompt has at least ${numPromptTokens} tokens. Please reduce the prompt length.`
        : numRequested > 0
        ? `This model's maximum context length is ${limit} tokens. However, you requested ${numPromptTokens + numRequested} tokens (${numPromptTokens} in the prompt, ${numRequested} for the completion). Please reduce the prompt or the completion length.`
        : `This model's maximum context length is ${limit} tokens. However, your prompt has ${numPromptTokens} tokens. Please reduce the prompt length.`,
      'context_length_exceeded', 400, 'invalid_request_error', param,
    );
  }
}

/** Configuration given at start that cannot work (flag or environment variable). */
export class ConfigError extends GemmaServeError {
  constructor(message: string, param: string | null = null) {
    super(message, 'invalid_config', 500, 'server_error', param);
  }
}

/** The engine cannot serve (model loading, draining, runtime failure). */
export class EngineError extends GemmaServeError {
  constructor(message: string, code = 'engine_error', status = 500, options?: { cause?: unknown }) {
    super(message, code, status, 'server_error', null, options);
  }
}

/** The waiting queue is full: a 429 that tells the client when to retry. */
export class QueueFullError extends GemmaServeError {
  readonly retryAfterSeconds = 1;
  constructor(capacity: number) {
    super(`The server is at capacity (${capacity} requests running or waiting). Please retry shortly.`, 'queue_full', 429, 'rate_limit_error');
  }
}

/** The server cannot take requests now (model loading, draining), or shut down before finishing one: a 503. */
export class UnavailableError extends GemmaServeError {
  readonly retryAfterSeconds: number;
  constructor(message: string, code: 'model_loading' | 'server_draining' | 'model_failed' | 'server_shutdown', retryAfterSeconds = 5) {
    super(message, code, 503, 'server_error');
    this.retryAfterSeconds = retryAfterSeconds;
  }
}
