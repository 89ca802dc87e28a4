// Worker-thread entry when running from source (tests, development; engine.ts picks it when
// it is itself a .ts module): registers tsx in this thread (loader hooks do not reach a worker
// started with a plain execArgv), then runs the TypeScript worker. The compiled package
// (dist/) starts dist/engine/worker.js directly and never loads this file or tsx.
import { register } from 'tsx/esm/api';

register();
await import('./worker.ts');
