/**
 * Weight-only blockwise quantization in the layout of ONNX Runtime's `com.microsoft.MatMulNBits`
 * and `GatherBlockQuantized` (uint8 data): a matrix W [N, K] (a row per output feature, as
 * Hugging Face stores `Linear` weights) is cut along K into blocks of 32; each block has one
 * float32 scale and no stored zero point, so the runtime's implicit one (2^(bits-1): 8 for int4,
 * 128 for int8) applies: w ≈ (q - 2^(bits-1)) * scale.
 *
 * Scales are stored float32, or float16 in an export that computes in fp16 (MatMulNBits takes its
 * scales in its input's type). int4 scales are fp16 values even where stored float32: gemma-serve's
 * int4 kernel then keeps them fp16 (4.5 bits a weight, as llama.cpp's Q4_0, instead of 5) and
 * computes exactly what MatMulNBits does with them. A scale is rounded before its block is
 * quantized with it, so the stored bytes stand for exactly (q - zero) * scale.
 * Symmetric schemes, as llama.cpp's Q4_0 and Q8_0:
 * - int4: scale = m / -8 where m is the block's value of largest magnitude (sign kept), so m
 *   maps to -8 exactly and the range [-8, 7] is used in full;
 * - int8: scale = max|w| / 127, q in [-127, 127].
 * Data of a row: kBlocks blobs of blockSize*bits/8 bytes; int4 packs two values a byte, the
 * first in the low nibble. A K that is not a multiple of the block is zero-padded (q = zero point).
 */
import { roundToF16 } from '../../f16.ts';
import type { QuantBits, WeightDtype } from '../manifest.ts';

export const QUANT_BLOCK_SIZE = 32;

export interface QuantLayout {
  readonly N: number;
  readonly K: number;
  readonly bits: QuantBits;
  readonly blockSize: number;
  readonly kBlocks: number;
  /** Bytes per block of one row. */
  readonly blobSize: number;
  /** Bytes of packed data per row: kBlocks * blobSize. */
  readonly rowBytes: number;
}

export function quantLayout(N: number, K: number, bits: QuantBits, blockSize = QUANT_BLOCK_SIZE): QuantLayout {
  const kBlocks = Math.ceil(K / blockSize);
  const blobSize = (blockSize * bits) / 8;
  return { N, K, bits, blockSize, kBlocks, blobSize, rowBytes: kBlocks * blobSize };
}

/**
 * How a scale is rounded before its block is quantized: to fp16 for int4 (the manifest's
 * `scaleRounding`) and wherever scales are stored fp16; else to float32 (int8).
 */
export function scaleRounding(bits: QuantBits, stored: WeightDtype): 'fp16' | 'fp32' {
  return bits === 4 || stored === 'fp16' ? 'fp16' : 'fp32';
}

/** The rounding function of `scaleRounding`'s answer. */
export function roundScale(rounding: 'fp16' | 'fp32'): (s: number) => number {
  return rounding === 'fp16' ? roundToF16 : Math.fround;
}

/** Bytes of data + scales (`scaleBytes` each: 4 float32, 2 float16) of a quantized [N, K] matrix. */
export function quantizedBytes(l: QuantLayout, scaleBytes = 4): number {
  return l.N * l.rowBytes + l.N * l.kBlocks * scaleBytes;
}

/**
 * Quantizes `rows` whole rows of `src` (row-major, K per row) into `data` (rowBytes per row)
 * and `scales` (kBlocks per row), starting at row 0 of both outputs. `roundScale` rounds each
 * scale to the type it is stored in (float32 by default).
 */
export function quantizeRows(src: Float32Array, rows: number, l: QuantLayout, data: Uint8Array, scales: Float32Array, roundScale: (s: number) => number = Math.fround): void {
  const { K, bits, blockSize, kBlocks, blobSize, rowBytes } = l;
  const zero = 1 << (bits - 1);
  const qmin = bits === 4 ? 0 : 1;
  const qmax = bits === 4 ? 15 : 255;
  const q = new Uint8Array(blockSize);
  for (let r = 0; r < rows; r++) {
    const row = r * K;
    for (let b = 0; b < kBlocks; b++) {
      const k0 = row + b * blockSize;
      const n = Math.min(K - b * blockSize, blockSize);
      let m = 0;
      let am = 0;
      for (let i = 0; i < n; i++) {
        const v = src[k0 + i]!;
        const a = v < 0 ? -v : v;
        if (a > am) { am = a; m = v; }
      }
      const scale = roundScale(bits === 4 ? m / -8 : am / 127);
      const inv = scale === 0 ? 0 : 1 / scale;
      scales[r * kBlocks + b] = scale;
      for (let i = 0; i < n; i++) {
        const v = Math.round(src[k0 + i]! * inv) + zero;
        q[i] = v < qmin ? qmin : v > qmax ? qmax : v;
      }
      q.fill(zero, n);
      const out = r * rowBytes + b * blobSize;
      if (bits === 8) data.set(q, out);
      else for (let i = 0; i < blobSize; i++) data[out + i] = q[2 * i]! | (q[2 * i + 1]! << 4);
    }
  }
}

/** The float32 values a quantized row block stands for (tests, reference): [rows, K]. */
export function dequantizeRows(data: Uint8Array, scales: Float32Array, rows: number, l: QuantLayout): Float32Array {
  const { K, bits, blockSize, kBlocks, blobSize, rowBytes } = l;
  const zero = 1 << (bits - 1);
  const out = new Float32Array(rows * K);
  for (let r = 0; r < rows; r++) {
    for (let k = 0; k < K; k++) {
      const b = Math.floor(k / blockSize);
      const i = k % blockSize;
      const at = r * rowBytes + b * blobSize;
      const q = bits === 8 ? data[at + i]! : (data[at + (i >> 1)]! >> ((i & 1) * 4)) & 15;
      out[r * K + k] = (q - zero) * scales[r * kBlocks + b]!;
    }
  }
  return out;
}
