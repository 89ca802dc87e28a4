/**
 * Exports a checkpoint in a worker thread (build-time code, loaded only here and by the CLI's
 * export command): the server's event loop keeps answering /health and signals while a
 * checkpoint is exported on first use, and a shutdown can stop the export (Worker.terminate).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { exportCheckpoint, type ExportOptions } from './export/export.ts';

const port = parentPort;
if (port === null) throw new Error('export-worker.ts must run in a worker thread');
try {
  exportCheckpoint(workerData as ExportOptions);
  port.postMessage({ ok: true });
} catch (e) {
  port.postMessage({ ok: false, message: (e as Error).message, name: (e as Error).name });
}
