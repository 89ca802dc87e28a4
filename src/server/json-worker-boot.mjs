// JSON-parser-thread entry from source: registers tsx in this thread, then runs the TypeScript worker.
import { register } from 'tsx/esm/api';

register();
await import('./json-worker.ts');
