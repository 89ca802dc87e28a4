/**
 * safetensors reading: header parsing and dtype conversion to float32, streamed in chunks so
 * a multi-gigabyte tensor never has to sit in memory whole.
 * Format: u64 little-endian header length, JSON header {name: {dtype, shape, data_offsets}},
 * then the data; offsets are relative to the end of the header.
 */
import { closeSync, openSync, readSync, fstatSync } from 'node:fs';
import { basename } from 'node:path';
import { CheckpointError } from '../errors.ts';
import { f16ToF32 } from '../f16.ts';

export type TensorDtype = 'F32' | 'BF16' | 'F16';
export const BYTES_PER_ELEMENT: Readonly<Record<TensorDtype, number>> = { F32: 4, BF16: 2, F16: 2 };

/** Where one tensor's bytes are. */
export interface TensorEntry {
  readonly name: string;
  readonly dtype: TensorDtype;
  readonly shape: readonly number[];
  readonly file: string;
  /** Absolute byte offset of the data in `file`. */
  readonly byteOffset: number;
  readonly byteLength: number;
}

/** Reads a safetensors file's header; throws CheckpointError naming the file and tensor. */
export function readSafetensorsHeader(file: string): TensorEntry[] {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (e) {
    throw new CheckpointError(`${file}: cannot open (${(e as Error).message})`);
  }
  try {
    const size = fstatSync(fd).size;
    const lenBuf = Buffer.alloc(8);
    if (readSync(fd, lenBuf, 0, 8, 0) !== 8) throw new CheckpointError(`${file}: truncated safetensors file`);
    const headerLen = Number(lenBuf.readBigUInt64LE(0));
    if (headerLen <= 0 || headerLen > 100_000_000 || 8 + headerLen > size) {
      throw new CheckpointError(`${file}: not a safetensors file (header length ${headerLen})`);
    }
    const headerBuf = Buffer.alloc(headerLen);
    readSync(fd, headerBuf, 0, headerLen, 8);
    let header: Record<string, unknown>;
    try {
      header = JSON.parse(headerBuf.toString('utf8')) as Record<string, unknown>;
    } catch {
      throw new CheckpointError(`${file}: safetensors header is not valid JSON`);
    }
    const dataStart = 8 + headerLen;
    const entries: TensorEntry[] = [];
    for (const [name, info] of Object.entries(header)) {
      if (name === '__metadata__') continue;
      const { dtype, shape, data_offsets: offs } = info as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
      if (dtype !== 'F32' && dtype !== 'BF16' && dtype !== 'F16') {
        throw new CheckpointError(`${file}: tensor ${name} has dtype ${JSON.stringify(dtype)}; supported: F32, BF16, F16`);
      }
      if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) {
        throw new CheckpointError(`${file}: tensor ${name} has an invalid shape`);
      }
      if (!Array.isArray(offs) || offs.length !== 2) throw new CheckpointError(`${file}: tensor ${name} has invalid data_offsets`);
      const [begin, end] = offs as [number, number];
      const numel = (shape as number[]).reduce((a, b) => a * b, 1);
      if (end - begin !== numel * BYTES_PER_ELEMENT[dtype] || dataStart + end > size) {
        throw new CheckpointError(`${file}: tensor ${name} data (${end - begin} bytes at ${begin}) does not match its shape [${shape.join(', ')}] ${dtype} or the file size`);
      }
      entries.push({ name, dtype, shape: shape as number[], file, byteOffset: dataStart + begin, byteLength: end - begin });
    }
    return entries;
  } finally {
    closeSync(fd);
  }
}

/** Converts raw little-endian bytes of `dtype` into `out` (float32). */
export function toFloat32(bytes: Uint8Array, dtype: TensorDtype, out: Float32Array): void {
  const n = out.length;
  if (dtype === 'F32') {
    new Uint8Array(out.buffer, out.byteOffset, n * 4).set(bytes.subarray(0, n * 4));
    return;
  }
  const src = new Uint16Array(bytes.buffer, bytes.byteOffset, n);
  if (dtype === 'BF16') {
    const dst = new Uint32Array(out.buffer, out.byteOffset, n);
    for (let i = 0; i < n; i++) dst[i] = src[i]! << 16; // BF16 -> F32 is exact
    return;
  }
  for (let i = 0; i < n; i++) out[i] = f16ToF32(src[i]!);
}

/**
 * Streams a tensor as float32 chunks of at most `chunkElements` elements, in order.
 * The chunk array is reused between calls: consume it before returning.
 */
export function forEachFloat32Chunk(entry: TensorEntry, chunkElements: number, fn: (chunk: Float32Array, elementOffset: number) => void): void {
  const bpe = BYTES_PER_ELEMENT[entry.dtype];
  const total = entry.byteLength / bpe;
  const raw = Buffer.allocUnsafeSlow(Math.min(total, chunkElements) * bpe);
  const f32 = new Float32Array(Math.min(total, chunkElements));
  const fd = openSync(entry.file, 'r');
  try {
    for (let done = 0; done < total; ) {
      const n = Math.min(chunkElements, total - done);
      let got = 0;
      while (got < n * bpe) {
        const r = readSync(fd, raw, got, n * bpe - got, entry.byteOffset + done * bpe + got);
        if (r === 0) throw new CheckpointError(`${basename(entry.file)}: tensor ${entry.name} is truncated`);
        got += r;
      }
      const view = f32.subarray(0, n);
      toFloat32(raw.subarray(0, n * bpe), entry.dtype, view);
      fn(view, done);
      done += n;
    }
  } finally {
    closeSync(fd);
  }
}

/** Reads a whole tensor as float32 (small tensors, tests, the reference). */
export function readFloat32(entry: TensorEntry): Float32Array {
  const total = entry.byteLength / BYTES_PER_ELEMENT[entry.dtype];
  const out = new Float32Array(total);
  forEachFloat32Chunk(entry, 1 << 22, (chunk, off) => out.set(chunk, off));
  return out;
}
