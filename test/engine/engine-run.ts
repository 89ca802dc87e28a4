// Test support: one greedy ignore_eos generation through a real Engine, collected.
import type { Engine } from '../../src/engine/engine.ts';

export async function greedyIds(engine: Engine, promptIds: readonly number[], maxTokens: number): Promise<{ ids: number[]; reason: string }> {
  const ids: number[] = [];
  let reason = '';
  for await (const e of engine.generate({ promptIds, maxTokens, temperature: 0, ignoreEos: true })) {
    if (e.type === 'token') ids.push(e.tokenId);
    if (e.type === 'finish') reason = e.reason;
  }
  return { ids, reason };
}
