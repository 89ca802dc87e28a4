/**
 * How a clone installs (issue 21): `npm ci` reaches nothing but the npm registry on npm 10, 11
 * and 12 without an npm config key npm does not know. onnxruntime-node's install script (which
 * downloads CUDA libraries from NuGet) is denied by package.json's allowScripts (npm 11.16+, 12);
 * every dependency with install scripts is reviewed there (npm 12 blocks unreviewed ones, npm 11
 * prints a notice); npm 10, which ignores allowScripts, gets ONNXRUNTIME_NODE_INSTALL=skip where
 * this repository runs npm ci (.ci/run, the Dockerfile). Node 22 is the target, Node 20 is still
 * accepted by `engines`.
 */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
  engines: { node: string }; allowScripts?: Record<string, boolean>; scripts: Record<string, string>;
};
const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as {
  packages: Record<string, { hasInstallScript?: boolean; version?: string }>;
};

/** The package name of a lockfile `packages` key (`node_modules/a/node_modules/@s/b` → `@s/b`). */
function lockName(key: string): string {
  return key.slice(key.lastIndexOf('node_modules/') + 'node_modules/'.length);
}

t.test('npm sees no unknown config key in the project (npm 11 warns, npm 12 refuses)', async (t) => {
  const npmrc = join(ROOT, '.npmrc');
  if (existsSync(npmrc)) {
    const keys = readFileSync(npmrc, 'utf8').split(/\r?\n/).filter((l) => /^\s*[^#;\s]/.test(l)).map((l) => l.split('=')[0]!.trim());
    t.notOk(keys.includes('onnxruntime-node-install'), '.npmrc has no onnxruntime-node-install key');
  }
  // The npm on this machine reads the project's config; whatever it warns about shows here.
  const out = execFileSync('npm', ['config', 'list'], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  t.notMatch(out, /Unknown (?:project|env) config/, 'npm config list: no unknown config');
  let stderr = '';
  try {
    execFileSync('npm', ['ls', 'onnxruntime-node'], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    stderr = String((e as { stderr?: string }).stderr ?? '');
  }
  t.notMatch(stderr, /Unknown (?:project|env) config/, 'npm ls: no unknown config');
});

t.test('every dependency with install scripts is reviewed in allowScripts; onnxruntime-node\'s download is denied', async (t) => {
  const policy = pkg.allowScripts ?? {};
  t.equal(policy['onnxruntime-node'], false, 'onnxruntime-node: denied (its script downloads from NuGet)');
  const withScripts = [...new Set(Object.entries(lock.packages).filter(([k, p]) => k !== '' && p.hasInstallScript === true).map(([k]) => lockName(k)))].sort();
  t.ok(withScripts.includes('onnxruntime-node'), `the lockfile lists install scripts (${withScripts.join(', ')})`);
  for (const name of withScripts) t.type(policy[name], 'boolean', `${name}: reviewed in allowScripts`);
  for (const name of Object.keys(policy)) t.ok(withScripts.includes(name), `${name}: in allowScripts because it has install scripts`);
});

t.test('npm 10 skips the download where this repository runs npm ci; the CUDA provider has its own command', async (t) => {
  const ci = readFileSync(join(ROOT, '.ci/run'), 'utf8');
  const skip = ci.search(/^export ONNXRUNTIME_NODE_INSTALL="\$\{ONNXRUNTIME_NODE_INSTALL:-skip\}"$/m);
  const install = ci.search(/^npm ci\b/m);
  t.ok(skip >= 0 && install > skip, '.ci/run exports ONNXRUNTIME_NODE_INSTALL=skip (unless set) before npm ci');
  t.match(pkg.scripts['install:cuda'], /^ONNXRUNTIME_NODE_INSTALL=cuda12 node node_modules\/onnxruntime-node\/script\/install\.js$/, 'npm run install:cuda runs the script for CUDA 12');
  const script = join(ROOT, 'node_modules/onnxruntime-node/script/install.js');
  t.ok(existsSync(script), 'the script it names exists');
  // onnxruntime-node's skip: the script exits 0 at once, without touching the network
  const r = execFileSync(process.execPath, [script], { env: { ...process.env, ONNXRUNTIME_NODE_INSTALL: 'skip' }, encoding: 'utf8' });
  t.equal(r, '', 'ONNXRUNTIME_NODE_INSTALL=skip: the script does nothing');
});

t.test('Node: 22 is the target, engines still accepts the Node 20 that runs this suite', async (t) => {
  t.equal(pkg.engines.node, '>=20', 'engines: >=20');
  const major = Number(/^v(\d+)/.exec(process.version)?.[1]);
  t.ok(major >= 20, `this Node (${process.version}) satisfies engines`);
  t.match(readFileSync(join(ROOT, 'Dockerfile'), 'utf8'), /^ARG NODE_IMAGE=docker\.io\/library\/node:22-/m, 'the image runs Node 22');
});
