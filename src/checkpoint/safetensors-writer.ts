/**
 * safetensors writing, streamed: the caller declares every tensor (name, dtype, shape) up
 * front, so the header and every data offset are known before any data exists; then it
 * hands over each tensor's values as float32 chunks, in declaration order. Only one chunk
 * (plus its BF16 copy) is ever in memory, so a 10 GB checkpoint can be written from a
 * generator that produces a few MB at a time.
 * Format: u64 little-endian header length, JSON header {name: {dtype, shape, data_offsets}}
 * padded with spaces to a multiple of 8 (so the data is 8-byte aligned), then the data.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { CheckpointError } from '../errors.ts';

export type WritableDtype = 'F32' | 'BF16';

/** One tensor to be written. */
export interface TensorSpec {
  readonly name: string;
  readonly dtype: WritableDtype;
  readonly shape: readonly number[];
}

const BYTES: Readonly<Record<WritableDtype, number>> = { F32: 4, BF16: 2 };

export function numElements(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Bytes of data (header excluded) that a tensor occupies. */
export function tensorByteLength(spec: TensorSpec): number {
  return numElements(spec.shape) * BYTES[spec.dtype];
}

/** The serialized header: 8-byte length prefix plus the space-padded JSON. */
export function encodeSafetensorsHeader(tensors: readonly TensorSpec[], metadata: Readonly<Record<string, string>> = { format: 'pt' }): Buffer {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const t of tensors) {
    if (t.name === '__metadata__' || t.name in header) throw new CheckpointError(`safetensors writer: duplicate or reserved tensor name ${t.name}`);
    if (!t.shape.every((d) => Number.isInteger(d) && d >= 0)) throw new CheckpointError(`safetensors writer: tensor ${t.name} has an invalid shape`);
    const end = offset + tensorByteLength(t);
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, end] };
    offset = end;
  }
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const padded = Math.ceil(json.length / 8) * 8;
  const out = Buffer.alloc(8 + padded, 0x20);
  out.writeBigUInt64LE(BigInt(padded), 0);
  json.copy(out, 8);
  return out;
}

/**
 * float32 -> bfloat16 bits with round-to-nearest-even (what torch's `.to(bfloat16)` does).
 * NaN stays a (quiet) NaN instead of rounding into Inf.
 */
export function float32ToBfloat16(src: Float32Array, dst: Uint16Array): void {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < bits.length; i++) {
    const u = bits[i]!;
    if ((u & 0x7fffffff) > 0x7f800000) {
      dst[i] = (u >>> 16) | 0x40;
    } else {
      dst[i] = ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
    }
  }
}

/**
 * An open safetensors file being filled. Typed arrays are written as their in-memory bytes,
 * which is little-endian on every platform Node runs on (x86-64, arm64).
 */
export class SafetensorsWriter {
  private readonly fd: number;
  private index = 0;
  /** Elements of tensors[index] already written. */
  private written = 0;
  private bf16 = new Uint16Array(0);
  private closed = false;

  private constructor(readonly path: string, private readonly tensors: readonly TensorSpec[], fd: number) {
    this.fd = fd;
  }

  /** Creates (truncates) `path` and writes the header for `tensors`. */
  static create(path: string, tensors: readonly TensorSpec[], metadata?: Readonly<Record<string, string>>): SafetensorsWriter {
    const header = encodeSafetensorsHeader(tensors, metadata);
    const fd = openSync(path, 'w');
    try {
      writeAll(fd, header);
    } catch (e) {
      closeSync(fd);
      throw e;
    }
    const w = new SafetensorsWriter(path, tensors, fd);
    w.skipEmpty();
    return w;
  }

  /** Name of the tensor the next chunk belongs to; null once every tensor is complete. */
  get currentTensor(): string | null {
    return this.tensors[this.index]?.name ?? null;
  }

  /**
   * Appends `chunk` to tensor `name`, which must be the current tensor; the chunk must not
   * run past its end (tensors never share a chunk, so a mistake is caught where it happens).
   */
  write(name: string, chunk: Float32Array): void {
    const spec = this.tensors[this.index];
    if (this.closed || spec === undefined) throw new CheckpointError(`${this.path}: write to ${name} after every tensor was written`);
    if (spec.name !== name) throw new CheckpointError(`${this.path}: tensor ${name} written out of order; expected ${spec.name}`);
    const total = numElements(spec.shape);
    if (this.written + chunk.length > total) {
      throw new CheckpointError(`${this.path}: tensor ${name} given ${this.written + chunk.length} elements, its shape holds ${total}`);
    }
    if (spec.dtype === 'F32') {
      writeAll(this.fd, new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength));
    } else {
      if (this.bf16.length < chunk.length) this.bf16 = new Uint16Array(chunk.length);
      const out = this.bf16.subarray(0, chunk.length);
      float32ToBfloat16(chunk, out);
      writeAll(this.fd, new Uint8Array(out.buffer, out.byteOffset, out.byteLength));
    }
    this.written += chunk.length;
    if (this.written === total) {
      this.index++;
      this.written = 0;
      this.skipEmpty();
    }
  }

  /** Closes the file; throws (after closing) if a tensor was left incomplete. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeSync(this.fd);
    const spec = this.tensors[this.index];
    if (spec !== undefined) {
      throw new CheckpointError(`${this.path}: closed with tensor ${spec.name} incomplete (${this.written} of ${numElements(spec.shape)} elements)`);
    }
  }

  /** Zero-element tensors have no data to wait for. */
  private skipEmpty(): void {
    while (this.tensors[this.index] !== undefined && numElements(this.tensors[this.index]!.shape) === 0) this.index++;
  }
}

function writeAll(fd: number, bytes: Uint8Array): void {
  for (let off = 0; off < bytes.length; ) off += writeSync(fd, bytes, off, bytes.length - off);
}
