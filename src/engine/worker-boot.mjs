// Worker-thread entry: registers tsx in this thread (loader hooks do not reach a worker
// started with a plain execArgv), then runs the TypeScript worker.
import { register } from 'tsx/esm/api';

register();
await import('./worker.ts');
