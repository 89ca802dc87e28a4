// The native addon for a test file that cannot run without it: the file fails at once, saying
// why, rather than skipping (npm ci builds it; a missing build is a defect here).
import t from 'tap';
import { loadNativeOrt, type Addon } from '../../src/engine/native/ort-native.ts';

export function requireNativeAddon(): Addon {
  const native = loadNativeOrt();
  if ('error' in native) {
    t.fail(`the native runner must be built for these tests: ${native.error}`);
    process.exit(1);
  }
  return native.addon;
}
