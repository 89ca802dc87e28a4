/**
 * The external data file of an exported graph: checkpoint tensors streamed in, converted
 * to the export dtype, each at a page-aligned offset so ONNX Runtime can map it.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { basename } from 'node:path';
import { forEachFloat32Chunk, type TensorEntry } from '../../checkpoint/safetensors.ts';
import { f32ToF16 } from '../../f16.ts';
import type { WeightDtype } from '../manifest.ts';
import type { ExternalRef } from '../onnx-builder.ts';
import { quantizeRows, roundScale, scaleRounding, type QuantLayout } from './quantize.ts';

const ALIGN = 4096; // page-aligned, so ONNX Runtime can map each tensor
const CHUNK_ELEMENTS = 1 << 20;

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
   * scales (float32, or float16 for an fp16-compute graph; rounded as quantize.ts's
   * scaleRounding says), each page-aligned. Rows are quantized a chunk of whole rows at a time.
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
    const round = roundScale(scaleRounding(layout.bits, scaleDtype));
    forEachFloat32Chunk(entry, rowsPerChunk * K, (chunk, elementOffset) => {
      const rows = chunk.length / K;
      const row0 = elementOffset / K;
      quantizeRows(chunk, rows, layout, data, scales, round);
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
