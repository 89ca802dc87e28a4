/**
 * The external data file of an exported graph: checkpoint tensors streamed in, converted
 * to the export dtype, each at a page-aligned offset so ONNX Runtime can map it.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { basename } from 'node:path';
import { f16ToF32, forEachFloat32Chunk, type TensorEntry } from '../../checkpoint/safetensors.ts';
import type { ExternalRef } from './onnx-builder.ts';
import { quantizeRows, type QuantLayout } from './quantize.ts';

const ALIGN = 4096; // page-aligned, so ONNX Runtime can map each tensor
const CHUNK_ELEMENTS = 1 << 20;

export type WeightDtype = 'fp32' | 'fp16';

export class WeightFile {
  private readonly fd: number;
  private offset = 0;

  constructor(readonly path: string) {
    this.fd = openSync(path, 'w');
  }

  /** Streams `entry` into the file (optionally as 1 + w); returns where it landed. */
  append(entry: TensorEntry, dtype: WeightDtype, plusOne: boolean): ExternalRef {
    this.offset = Math.ceil(this.offset / ALIGN) * ALIGN;
    const start = this.offset;
    const half = new Uint16Array(CHUNK_ELEMENTS);
    forEachFloat32Chunk(entry, CHUNK_ELEMENTS, (chunk) => {
      if (plusOne) for (let i = 0; i < chunk.length; i++) chunk[i] = chunk[i]! + 1;
      let bytes: Uint8Array;
      if (dtype === 'fp16') {
        for (let i = 0; i < chunk.length; i++) half[i] = f32ToF16(chunk[i]!);
        bytes = new Uint8Array(half.buffer, 0, chunk.length * 2);
      } else {
        bytes = new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.length * 4);
      }
      for (let done = 0; done < bytes.length; ) done += writeSync(this.fd, bytes, done, bytes.length - done, this.offset + done);
      this.offset += bytes.length;
    });
    return { location: basename(this.path), offset: start, length: this.offset - start };
  }

  /**
   * Streams matrix `entry` ([N, K]) in block-quantized: packed data (N * rowBytes) then the
   * scales (float32, or float16 for an fp16-compute graph), each page-aligned. Rows are
   * quantized a chunk of whole rows at a time.
   */
  appendQuantized(entry: TensorEntry, layout: QuantLayout, scaleDtype: WeightDtype = 'fp32'): { data: ExternalRef; scales: ExternalRef } {
    const { N, K, kBlocks, rowBytes } = layout;
    const scaleBytes = scaleDtype === 'fp16' ? 2 : 4;
    const dataStart = Math.ceil(this.offset / ALIGN) * ALIGN;
    const scalesStart = Math.ceil((dataStart + N * rowBytes) / ALIGN) * ALIGN;
    const rowsPerChunk = Math.max(1, Math.floor(CHUNK_ELEMENTS / K));
    const data = new Uint8Array(rowsPerChunk * rowBytes);
    const scales = new Float32Array(rowsPerChunk * kBlocks);
    const half = new Uint16Array(scaleDtype === 'fp16' ? scales.length : 0);
    forEachFloat32Chunk(entry, rowsPerChunk * K, (chunk, elementOffset) => {
      const rows = chunk.length / K;
      const row0 = elementOffset / K;
      quantizeRows(chunk, rows, layout, data, scales, scaleDtype === 'fp16' ? roundToF16 : Math.fround);
      this.writeAt(data.subarray(0, rows * rowBytes), dataStart + row0 * rowBytes);
      if (scaleDtype === 'fp16') for (let i = 0; i < rows * kBlocks; i++) half[i] = f32ToF16(scales[i]!);
      const stored = scaleDtype === 'fp16' ? new Uint8Array(half.buffer) : new Uint8Array(scales.buffer);
      this.writeAt(stored.subarray(0, rows * kBlocks * scaleBytes), scalesStart + row0 * kBlocks * scaleBytes);
    });
    this.offset = scalesStart + N * kBlocks * scaleBytes;
    const location = basename(this.path);
    return {
      data: { location, offset: dataStart, length: N * rowBytes },
      scales: { location, offset: scalesStart, length: N * kBlocks * scaleBytes },
    };
  }

  private writeAt(bytes: Uint8Array, at: number): void {
    for (let done = 0; done < bytes.length; ) done += writeSync(this.fd, bytes, done, bytes.length - done, at + done);
  }

  get size(): number {
    return this.offset;
  }

  close(): void {
    closeSync(this.fd);
  }
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** The float16 value nearest to `v` (round to nearest even), as a number. */
export function roundToF16(v: number): number {
  return f16ToF32(f32ToF16(v));
}

/** float32 -> IEEE half, round to nearest even (overflow to ±Inf). */
export function f32ToF16(v: number): number {
  f32[0] = v;
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let h = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && (h & 1))) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1))) h++;
  return sign | h;
}
