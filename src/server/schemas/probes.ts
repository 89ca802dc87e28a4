/** GET /health and GET /ready: what probes read. */
import { Type, type Static } from 'typebox';

export const Health = Type.Object({ status: Type.Literal('ok') });
export type Health = Static<typeof Health>;

export const Ready = Type.Object({ status: Type.Enum(['loading', 'ready', 'failed', 'draining']) });
export type Ready = Static<typeof Ready>;
