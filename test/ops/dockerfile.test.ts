/**
 * The Dockerfile, read as docker would (no docker here to build it): parsed into stages and
 * instructions, then checked for the properties issue 6 asks of the image — multi-stage,
 * production dependencies only, non-root, HEALTHCHECK on /health (whose command is run against
 * a local server), model and data volumes, a CPU default and a CUDA build argument — and the
 * .dockerignore checked to keep host node_modules, tests and data out of the context.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { builtinModules } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

export interface Instruction { cmd: string; args: string; line: number }
export interface Stage { base: string; name: string | null; instructions: Instruction[] }
export interface ParsedDockerfile { globalArgs: Map<string, string | undefined>; stages: Stage[] }

/** Docker's instruction grammar: comments, `\` continuations (comment lines inside skipped), one instruction a line. */
export function parseDockerfile(text: string): ParsedDockerfile {
  const lines = text.split(/\r?\n/);
  const instructions: Instruction[] = [];
  let current: { parts: string[]; line: number } | null = null;
  lines.forEach((raw, i) => {
    const trimmed = raw.trim();
    if (current === null && (trimmed === '' || trimmed.startsWith('#'))) return;
    if (current !== null && trimmed.startsWith('#')) return; // comment inside a continuation
    const continues = /\\\s*$/.test(raw);
    const body = continues ? raw.replace(/\\\s*$/, '') : raw;
    if (current === null) current = { parts: [], line: i + 1 };
    current.parts.push(body.trim());
    if (!continues) {
      const full = current.parts.filter((p) => p !== '').join(' ');
      const m = /^(\S+)\s*(.*)$/s.exec(full);
      if (m === null) throw new Error(`line ${current.line}: cannot parse ${JSON.stringify(full)}`);
      instructions.push({ cmd: m[1]!.toUpperCase(), args: m[2]!.trim(), line: current.line });
      current = null;
    }
  });
  if (current !== null) throw new Error('Dockerfile ends inside a line continuation');
  const globalArgs = new Map<string, string | undefined>();
  const stages: Stage[] = [];
  for (const ins of instructions) {
    if (ins.cmd === 'FROM') {
      const m = /^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$/i.exec(ins.args);
      if (m === null) throw new Error(`line ${ins.line}: bad FROM ${ins.args}`);
      stages.push({ base: m[1]!, name: m[2]?.toLowerCase() ?? null, instructions: [] });
    } else if (stages.length === 0) {
      if (ins.cmd !== 'ARG') throw new Error(`line ${ins.line}: only ARG may precede the first FROM, got ${ins.cmd}`);
      const [k, v] = splitArg(ins.args);
      globalArgs.set(k, v);
    } else {
      stages[stages.length - 1]!.instructions.push(ins);
    }
  }
  return { globalArgs, stages };
}

function splitArg(args: string): [string, string | undefined] {
  const eq = args.indexOf('=');
  return eq < 0 ? [args.trim(), undefined] : [args.slice(0, eq).trim(), args.slice(eq + 1).trim()];
}

/** `${X}` / `$X` substituted from the build args (a global ARG's default unless overridden). */
function substitute(text: string, vars: Map<string, string | undefined>): string {
  return text.replace(/\$\{(\w+)\}|\$(\w+)/g, (whole, a: string | undefined, b: string | undefined) => vars.get((a ?? b)!) ?? whole);
}

/** The chain of stages a build with these args goes through to produce `stage` (target first). */
function stageChain(df: ParsedDockerfile, buildArgs: Record<string, string>, stage: Stage): Stage[] {
  const vars = new Map(df.globalArgs);
  for (const [k, v] of Object.entries(buildArgs)) vars.set(k, v);
  const chain = [stage];
  let base = substitute(stage.base, vars).toLowerCase();
  for (;;) {
    const parent = df.stages.find((s) => s.name === base);
    if (parent === undefined) break;
    chain.push(parent);
    base = substitute(parent.base, vars).toLowerCase();
  }
  return chain;
}

function finalBaseImage(df: ParsedDockerfile, buildArgs: Record<string, string>, stage: Stage): string {
  const vars = new Map(df.globalArgs);
  for (const [k, v] of Object.entries(buildArgs)) vars.set(k, v);
  const chain = stageChain(df, buildArgs, stage);
  return substitute(chain[chain.length - 1]!.base, vars);
}

/** Instructions of one command in the stage and the stages it is built on (base first). */
function effective(df: ParsedDockerfile, buildArgs: Record<string, string>, stage: Stage, cmd: string): Instruction[] {
  return stageChain(df, buildArgs, stage).reverse().flatMap((s) => s.instructions.filter((i) => i.cmd === cmd));
}

function stage(df: ParsedDockerfile, name: string): Stage {
  const s = df.stages.find((x) => x.name === name);
  if (s === undefined) throw new Error(`no stage ${name}`);
  return s;
}

/** An exec-form (JSON array) argument, after any `--flag=value` options. */
function execForm(args: string): string[] {
  const json = args.replace(/^(?:--\S+\s+)*/, '');
  const parsed = JSON.parse(json) as unknown;
  if (!Array.isArray(parsed) || !parsed.every((x) => typeof x === 'string')) throw new Error(`not an exec form: ${args}`);
  return parsed as string[];
}

/** docker's .dockerignore semantics (the subset of Go's filepath.Match plus `**` it uses): last match wins. */
export function dockerIgnored(patterns: string[], path: string): boolean {
  let ignored = false;
  for (const raw of patterns) {
    const negate = raw.startsWith('!');
    const pat = (negate ? raw.slice(1) : raw).trim().replace(/^\/+/, '').replace(/\/+$/, '');
    if (pat === '') continue;
    let re = '';
    for (let i = 0; i < pat.length; i++) {
      const c = pat[i]!;
      if (c === '*' && pat[i + 1] === '*') {
        i++;
        if (pat[i + 1] === '/') { i++; re += '(?:.*/)?'; } else re += '.*';
      } else if (c === '*') re += '[^/]*';
      else if (c === '?') re += '[^/]';
      else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
    }
    // a pattern naming a directory also covers everything beneath it
    if (new RegExp(`^${re}(?:/.*)?$`).test(path)) ignored = !negate;
  }
  return ignored;
}

function readIgnore(): string[] {
  return readFileSync(join(ROOT, '.dockerignore'), 'utf8').split(/\r?\n/).map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
}

const df = parseDockerfile(readFileSync(join(ROOT, 'Dockerfile'), 'utf8'));
const runtime = df.stages[df.stages.length - 1]!;
const CPU = {};
const CUDA = { DEVICE: 'cuda' };

t.test('the parser and .dockerignore matcher catch what they must (so the checks below can fail)', async (t) => {
  const bad = parseDockerfile('FROM node:20 AS a\nRUN npm ci \\\n  # note\n  && echo hi\nUSER root\n');
  t.equal(bad.stages.length, 1);
  t.same(bad.stages[0]!.instructions.map((i) => [i.cmd, i.args]), [['RUN', 'npm ci && echo hi'], ['USER', 'root']]);
  t.throws(() => parseDockerfile('RUN echo\nFROM x\n'), /only ARG/);
  t.equal(dockerIgnored(['*', '!src/**'], 'src/a/b.ts'), false);
  t.equal(dockerIgnored(['*', '!src/**'], 'test/a.ts'), true);
  t.equal(dockerIgnored(['node_modules'], 'node_modules/x/y.js'), true);
  t.equal(dockerIgnored(['**/*.log'], 'src/x.log'), true);
});

t.test('multi-stage, CPU by default, CUDA runtime base with DEVICE=cuda', async (t) => {
  t.ok(df.stages.length >= 3, `several stages (${df.stages.length})`);
  t.ok(df.stages.every((s) => s.name !== null), 'every stage is named');
  t.equal(df.globalArgs.get('DEVICE'), 'cpu', 'ARG DEVICE defaults to cpu');
  t.equal(runtime.name, 'runtime', 'the last stage (the image) is "runtime"');
  const cpuBase = finalBaseImage(df, CPU, runtime);
  const cudaBase = finalBaseImage(df, CUDA, runtime);
  t.match(cpuBase, /^node:20[-.]/, `CPU image runs on Node 20 (${cpuBase})`);
  t.match(cudaBase, /^nvidia\/cuda:12\.[\d.]+-cudnn[\d]*-runtime-/, `CUDA image runs on an NVIDIA CUDA 12 cuDNN runtime base (${cudaBase})`);
  t.notOk(cudaBase.includes('devel'), 'a runtime, not a devel, CUDA image');
  // The CUDA base has no Node: it must come from the node stage.
  const copies = effective(df, CUDA, runtime, 'COPY').map((i) => i.args);
  t.ok(copies.some((a) => /--from=node\s+\/usr\/local\/bin\/node\b/.test(a)), 'node is copied into the CUDA base');
});

t.test('production dependencies only; CUDA binaries installed for DEVICE=cuda', async (t) => {
  const runs = df.stages.flatMap((s) => s.instructions.filter((i) => i.cmd === 'RUN').map((i) => ({ stage: s.name, args: i.args })));
  const installs = runs.filter((r) => /\bnpm\s+(ci|install|i)\b/.test(r.args));
  t.ok(installs.length > 0, 'npm installs the dependencies');
  // The build stage compiles with the devDependencies; the image takes only dist/ from it.
  for (const r of installs.filter((x) => x.stage !== 'build')) t.match(r.args, /npm ci --omit=dev\b/, `stage ${r.stage}: npm ci --omit=dev (${r.args})`);
  const fromBuild = runtime.instructions.filter((i) => i.cmd === 'COPY' && /--from=build\b/.test(i.args))
    .map((i) => i.args.split(/\s+/).filter((p) => !p.startsWith('--')));
  t.same(fromBuild, [['/app/dist', './dist']], 'only the compiled dist/ comes from the build stage');
  const deps = stage(df, 'deps');
  const depsRun = deps.instructions.filter((i) => i.cmd === 'RUN').map((i) => i.args).join('\n');
  t.match(depsRun, /"\$DEVICE" = cuda[^;]*;\s*then export ONNXRUNTIME_NODE_INSTALL=cuda12/, 'ONNXRUNTIME_NODE_INSTALL=cuda12 when DEVICE=cuda');
  t.match(depsRun, /libonnxruntime_providers_cuda\.so/, 'the build fails unless the CUDA provider landed');
  // the env var the Dockerfile sets is the one onnxruntime-node's install script reads
  const utils = readFileSync(join(ROOT, 'node_modules/onnxruntime-node/script/install-utils.js'), 'utf8');
  t.match(utils, /process\.env\.ONNXRUNTIME_NODE_INSTALL\b/, 'onnxruntime-node reads ONNXRUNTIME_NODE_INSTALL');
  t.ok(stageChain(df, CPU, deps).some((s) => s.name === 'runtime-cpu') && stageChain(df, CUDA, deps).some((s) => s.name === 'runtime-cuda'),
    'dependencies are installed on the runtime base of the variant');
  const depsCopies = deps.instructions.filter((i) => i.cmd === 'COPY').map((i) => i.args);
  t.ok(depsCopies.some((a) => /\bpackage-lock\.json\b/.test(a)) && depsCopies.some((a) => /\.npmrc\b/.test(a)), 'the lockfile and .npmrc are in the deps stage');
  // The image's node_modules come from the deps stage only, never from the build context.
  for (const c of runtime.instructions.filter((i) => i.cmd === 'COPY' || i.cmd === 'ADD')) {
    const sources = c.args.split(/\s+/).filter((p) => !p.startsWith('--')).slice(0, -1);
    t.notOk(sources.some((p) => p === '.' || p === './'), `no whole-context copy: ${c.args}`);
    t.notOk(sources.some((p) => /^(?:\.\/)?(test|bench|scratch|docs|helm|grafana)\b/.test(p)), `no tests, benchmarks or ops files: ${c.args}`);
    if (/node_modules/.test(c.args)) t.match(c.args, /--from=deps\b/, `node_modules from the deps stage: ${c.args}`);
  }
  // what the image runs must not need a devDependency
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string>; devDependencies: Record<string, string> };
  // worker-boot.mjs (tsx in the worker thread) runs only from source; dist/ has no copy of it.
  const files = [...walk(join(ROOT, 'src')), ...walk(join(ROOT, 'bin'))].filter((f) => /\.(ts|mts|js|mjs)$/.test(f) && !f.endsWith('worker-boot.mjs'));
  const builtins = new Set(builtinModules);
  const bare = new Set<string>();
  for (const f of files) {
    const text = readFileSync(f, 'utf8');
    for (const m of text.matchAll(/(?:^|[\s;])(?:import|export)\s[^'"]*?from\s*['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)|^import\s+['"]([^'"]+)['"]/gm)) {
      if (/\b(?:import|export)\s+type\s/.test(m[0])) continue; // erased at run time
      const spec = (m[1] ?? m[2] ?? m[3])!;
      if (spec.startsWith('.') || spec.startsWith('node:') || builtins.has(spec.split('/')[0]!)) continue;
      bare.add(spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]!);
    }
  }
  t.ok(bare.has('fastify') && bare.has('onnxruntime-node'), 'the scanner sees the imports of src/');
  t.notOk(bare.has('tsx'), 'nothing the image runs imports tsx (compiled: plain node)');
  for (const name of [...bare].sort()) t.ok(name in pkg.dependencies, `${name} (imported by src/ or bin/) is a production dependency`);
});

t.test('non-root, volumes, environment, port, stop signal, entry point', async (t) => {
  const users = runtime.instructions.filter((i) => i.cmd === 'USER');
  t.ok(users.length > 0, 'the image sets USER');
  const user = users[users.length - 1]!.args.split(':')[0]!;
  t.notOk(['root', '0', ''].includes(user), `last USER is not root (${user})`);
  t.match(user, /^\d+$/, 'numeric uid, so Kubernetes runAsNonRoot can verify it');
  t.ok(Number(user) >= 1000, 'an unprivileged uid');
  const volumes = runtime.instructions.filter((i) => i.cmd === 'VOLUME').flatMap((i) => (i.args.startsWith('[') ? JSON.parse(i.args) as string[] : i.args.split(/\s+/)));
  t.ok(volumes.includes('/models'), 'the model directory /models is a volume');
  t.ok(volumes.includes('/data'), 'the export cache /data is a volume');
  const env = new Map<string, string>();
  for (const e of effective(df, CPU, runtime, 'ENV')) {
    for (const m of e.args.matchAll(/(\w+)=("[^"]*"|\S+)/g)) env.set(m[1]!, m[2]!.replace(/^"|"$/g, ''));
  }
  t.equal(env.get('GEMMA_SERVE_HOST'), '0.0.0.0', 'listens on all interfaces');
  t.equal(env.get('GEMMA_SERVE_MODEL'), '/models', 'serves the model volume');
  t.equal(env.get('GEMMA_SERVE_DATA_DIR'), '/data', 'exports into the data volume');
  t.equal(env.get('GEMMA_SERVE_PORT'), '8000');
  t.same(runtime.instructions.filter((i) => i.cmd === 'EXPOSE').map((i) => i.args), ['8000'], 'EXPOSE 8000');
  t.same(runtime.instructions.filter((i) => i.cmd === 'STOPSIGNAL').map((i) => i.args), ['SIGTERM'], 'STOPSIGNAL SIGTERM');
  const entry = runtime.instructions.filter((i) => i.cmd === 'ENTRYPOINT').map((i) => execForm(i.args));
  t.same(entry, [['node', 'bin/gemma-serve.js']], 'exec-form entry point (node is PID 1 and gets SIGTERM)');
  t.same(runtime.instructions.filter((i) => i.cmd === 'CMD').map((i) => execForm(i.args)), [['serve']]);
  // every path copied from the build context exists and survives .dockerignore
  const ignore = readIgnore();
  for (const s of df.stages) {
    for (const c of s.instructions.filter((i) => i.cmd === 'COPY' && !/--from=/.test(i.args))) {
      const parts = c.args.split(/\s+/).filter((p) => !p.startsWith('--'));
      for (const src of parts.slice(0, -1)) {
        t.ok(existsSync(join(ROOT, src)), `COPY source ${src} exists`);
        t.notOk(dockerIgnored(ignore, src.replace(/^\.\//, '').replace(/\/$/, '')), `COPY source ${src} is not excluded by .dockerignore`);
      }
    }
  }
});

t.test('.dockerignore keeps the context small and free of host builds, tests and data', async (t) => {
  const ignore = readIgnore();
  for (const p of ['node_modules/tsx/package.json', '.git/HEAD', 'test/ops/dockerfile.test.ts', 'test/fixtures/tiny-gemma2/config.json', '.data/default-model/config.json', 'bench/concurrency.ts', 'helm/gemma-serve/values.yaml', 'grafana/gemma-serve-dashboard.json', '.tap/x', 'Dockerfile', 'scratch/a']) {
    t.ok(dockerIgnored(ignore, p), `${p} stays out`);
  }
  for (const f of [...walk(join(ROOT, 'src')), ...walk(join(ROOT, 'bin'))].map((x) => relative(ROOT, x)).filter((x) => !x.endsWith('.log'))) {
    if (dockerIgnored(ignore, f)) t.fail(`${f} is needed at run time but excluded`);
  }
  for (const p of ['package.json', 'package-lock.json', '.npmrc', 'tsconfig.json']) t.notOk(dockerIgnored(ignore, p), `${p} is in the context`);
});

t.test('HEALTHCHECK runs node against /health and reports its status', async (t) => {
  const hcs = runtime.instructions.filter((i) => i.cmd === 'HEALTHCHECK');
  t.equal(hcs.length, 1, 'one HEALTHCHECK');
  const hc = hcs[0]!.args;
  t.match(hc, /--start-period=\d+s/, 'a start period');
  const m = /^((?:--\S+\s+)*)CMD\s+(.*)$/s.exec(hc);
  t.ok(m, 'HEALTHCHECK [options] CMD ...');
  const argv = execForm(m![2]!);
  t.equal(argv[0], 'node', 'uses node (the image has no curl)');
  t.match(argv.join(' '), /\/health/, 'probes /health');
  let status = 200;
  const seen: string[] = [];
  const server = createServer((req, res) => { seen.push(req.url ?? ''); res.statusCode = status; res.end(); });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const port = String((server.address() as AddressInfo).port);
  const runCheck = (): Promise<number | null> => new Promise((res) => {
    const child = spawn(process.execPath, argv.slice(1), { env: { ...process.env, GEMMA_SERVE_PORT: port }, stdio: 'ignore' });
    child.on('exit', (code) => res(code));
  });
  t.equal(await runCheck(), 0, 'healthy when /health answers 200');
  status = 503;
  t.equal(await runCheck(), 1, 'unhealthy when /health answers 503');
  t.same(seen, ['/health', '/health']);
  server.close();
  await new Promise((r) => setTimeout(r, 50));
  t.equal(await runCheck(), 1, 'unhealthy when nothing listens');
});

function* walk(dir: string): Generator<string> {
  for (const e of readdirSync(dir)) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) yield* walk(p);
    else yield p;
  }
}
