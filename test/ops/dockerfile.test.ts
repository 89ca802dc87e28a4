/**
 * The Dockerfile, read as docker, buildah and podman would: parsed into stages and
 * instructions (variables expanded with the shell modifiers `${A:-word}` / `${A:+word}` the
 * builders share), then checked offline for the properties issue 6 asks of the image —
 * multi-stage, production dependencies only, non-root, HEALTHCHECK on /health (whose command is
 * run against a local server), model and data volumes, a CPU default and a CUDA variant — and
 * issue 21's lint rules: no `# syntax=` line (a frontend image fetched at build time), bases
 * fully qualified and pinned by digest, stage references literal (buildah and podman resolve a
 * stage name built from an ARG as an image to pull). The .dockerignore is checked to keep host
 * node_modules, tests and data out of the context. A real `buildah bud` / `podman build` of the
 * variants runs only when GEMMA_SERVE_IMAGE_BUILD asks for it (see the last test).
 */
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
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

/**
 * `${X}`, `$X`, `${X:-word}` and `${X:+word}` (word itself expanded: modifiers nest) from `vars`,
 * as the builders' shell lexer does; an empty value counts as unset for the `:` forms.
 */
export function expand(text: string, vars: ReadonlyMap<string, string | undefined>): string {
  let out = '';
  let i = 0;
  while (i < text.length) {
    const c = text[i]!;
    if (c !== '$') { out += c; i++; continue; }
    if (text[i + 1] !== '{') {
      const name = /^\w+/.exec(text.slice(i + 1))?.[0] ?? '';
      out += name === '' ? '$' : vars.get(name) ?? '';
      i += 1 + name.length;
      continue;
    }
    // ${...}: find the matching brace, counting nested ${
    let depth = 0;
    let end = i + 1;
    for (; end < text.length; end++) {
      if (text[end] === '{') depth++;
      else if (text[end] === '}' && --depth === 0) break;
    }
    if (end >= text.length) throw new Error(`missing } in ${text}`);
    const m = /^(\w+)(?::([-+])(.*))?$/s.exec(text.slice(i + 2, end));
    if (m === null) throw new Error(`unsupported substitution ${text.slice(i, end + 1)}`);
    const value = vars.get(m[1]!) ?? '';
    if (m[2] === undefined) out += value;
    else if (m[2] === '-') out += value !== '' ? value : expand(m[3]!, vars);
    else out += value !== '' ? expand(m[3]!, vars) : '';
    i = end + 1;
  }
  return out;
}

/** The global ARGs' values for a build with these --build-arg values (defaults expanded in order). */
function globalVars(df: ParsedDockerfile, buildArgs: Record<string, string>): Map<string, string | undefined> {
  const vars = new Map<string, string | undefined>();
  for (const [k, v] of df.globalArgs) vars.set(k, buildArgs[k] ?? (v === undefined ? undefined : expand(v, vars)));
  return vars;
}

/** The ARGs visible inside `stage` (only those it declares; a bare ARG takes the global value). */
function stageVars(df: ParsedDockerfile, buildArgs: Record<string, string>, stage: Stage): Map<string, string | undefined> {
  const globals = globalVars(df, buildArgs);
  const vars = new Map<string, string | undefined>();
  for (const ins of stage.instructions.filter((i) => i.cmd === 'ARG')) {
    const [k, v] = splitArg(ins.args);
    vars.set(k, buildArgs[k] ?? (v === undefined ? globals.get(k) : expand(v, vars)));
  }
  return vars;
}

/** The chain of stages a build with these args goes through to produce `stage` (target first). */
function stageChain(df: ParsedDockerfile, buildArgs: Record<string, string>, stage: Stage): Stage[] {
  const vars = globalVars(df, buildArgs);
  const chain = [stage];
  let base = expand(stage.base, vars).toLowerCase();
  for (;;) {
    const parent = df.stages.find((s) => s.name === base);
    if (parent === undefined) break;
    chain.push(parent);
    base = expand(parent.base, vars).toLowerCase();
  }
  return chain;
}

function finalBaseImage(df: ParsedDockerfile, buildArgs: Record<string, string>, stage: Stage): string {
  const chain = stageChain(df, buildArgs, stage);
  return expand(chain[chain.length - 1]!.base, globalVars(df, buildArgs));
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

const TEXT = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
const df = parseDockerfile(TEXT);
const runtime = df.stages[df.stages.length - 1]!;
const CPU = {};
const CUDA = { CUDA: '12' };
const VARIANTS: [string, Record<string, string>][] = [['cpu', CPU], ['cuda', CUDA]];
/** An image reference the builders pull without short-name resolution, pinned by digest. */
const PINNED = /^[a-z0-9.-]+\.[a-z]+(?::\d+)?\/[a-z0-9._/-]+(?::[\w.-]+)?@sha256:[0-9a-f]{64}$/;

t.test('the parser, the expansion and the .dockerignore matcher catch what they must (so the checks below can fail)', async (t) => {
  const bad = parseDockerfile('FROM node:20 AS a\nRUN npm ci \\\n  # note\n  && echo hi\nUSER root\n');
  t.equal(bad.stages.length, 1);
  t.same(bad.stages[0]!.instructions.map((i) => [i.cmd, i.args]), [['RUN', 'npm ci && echo hi'], ['USER', 'root']]);
  t.throws(() => parseDockerfile('RUN echo\nFROM x\n'), /only ARG/);
  const vars = new Map([['A', ''], ['B', 'b'], ['C', 'c']]);
  t.equal(expand('${A:-${B}}-${B:-x}-${A:+y}-${B:+${C}}-$C', vars), 'b-b--c-c', 'the modifiers nest, empty counts as unset');
  const twoStage = parseDockerfile('ARG V=\nARG IMG=r.io/x@sha256:' + '0'.repeat(64) + '\nARG PICK=${V:+${IMG}}\nFROM ${IMG} AS base\nFROM ${PICK:-base} AS out\n');
  t.equal(globalVars(twoStage, {}).get('PICK'), '', 'an ARG default expands earlier ARGs');
  t.equal(globalVars(twoStage, { V: '1' }).get('PICK'), `r.io/x@sha256:${'0'.repeat(64)}`);
  t.same(lintFrom(twoStage), ['stage out: base "${PICK:-base}" names stage base through a variable'], 'a stage named through a variable is caught');
  t.same(lintFrom(parseDockerfile('FROM node:22\n')), ['stage 0: base "node:22" is not a fully qualified reference pinned by digest'], 'an unpinned short name is caught');
  t.equal(dockerIgnored(['*', '!src/**'], 'src/a/b.ts'), false);
  t.equal(dockerIgnored(['*', '!src/**'], 'test/a.ts'), true);
  t.equal(dockerIgnored(['node_modules'], 'node_modules/x/y.js'), true);
  t.equal(dockerIgnored(['**/*.log'], 'src/x.log'), true);
});

/**
 * FROM rules for every variant: a base is either a stage named literally (no variable) or an
 * image reference that is fully qualified (registry host first) and pinned by digest. Returns
 * the violations.
 */
function lintFrom(file: ParsedDockerfile): string[] {
  const problems: string[] = [];
  for (const [i, s] of file.stages.entries()) {
    for (const args of [{}, { CUDA: '12' }, { V: '1' }] as Record<string, string>[]) {
      const base = expand(s.base, globalVars(file, args)).toLowerCase();
      const earlier = file.stages.slice(0, i).some((x) => x.name === base);
      const what = `stage ${s.name ?? i}: base "${s.base}"`;
      if (earlier && base !== s.base.toLowerCase()) problems.push(`${what} names stage ${base} through a variable`);
      else if (!earlier && !PINNED.test(base)) problems.push(`${what} is not a fully qualified reference pinned by digest`);
    }
  }
  return [...new Set(problems)];
}

t.test('lint: what docker, buildah and podman all build offline, the same way', async (t) => {
  const directives = TEXT.split(/\r?\n/).filter((l) => /^#\s*\w+\s*=/.test(l));
  t.same(directives.filter((l) => /^#\s*syntax\s*=/i.test(l)), [], 'no `# syntax=` line (BuildKit would fetch a frontend image)');
  t.same(lintFrom(df), [], 'every base: a literal stage name, or a fully qualified image pinned by digest (both variants)');
  const names = df.stages.map((s) => s.name);
  t.equal(new Set(names).size, names.length, 'stage names are unique');
  for (const s of df.stages) {
    for (const i of s.instructions) {
      t.not(i.cmd, 'ADD', `line ${i.line}: COPY, not ADD`);
      t.not(i.cmd, 'MAINTAINER', `line ${i.line}: no MAINTAINER (deprecated)`);
      const from = /--from=(\S+)/.exec(i.args)?.[1];
      if (i.cmd === 'COPY' && from !== undefined) {
        t.notMatch(from, /\$/, `line ${i.line}: COPY --from=${from} is literal`);
        const at = df.stages.indexOf(s);
        t.ok(df.stages.slice(0, at).some((x) => x.name === from), `line ${i.line}: COPY --from=${from} is an earlier stage`);
      }
      if (i.cmd === 'RUN' && /\bapt-get install\b/.test(i.args)) {
        t.match(i.args, /apt-get update[^]*apt-get install -y --no-install-recommends[^]*rm -rf \/var\/lib\/apt\/lists\/\*/, `line ${i.line}: apt-get update, install -y --no-install-recommends, lists removed`);
      }
      t.notMatch(i.args, /(?:^|[\s;&|])(?:curl|wget)\s/, `line ${i.line}: nothing downloaded outside the package managers`);
    }
  }
  // Every ARG a FROM uses is a global ARG (a stage's ARGs are not visible to FROM).
  for (const s of df.stages) {
    for (const m of s.base.matchAll(/\$\{?(\w+)/g)) t.ok(df.globalArgs.has(m[1]!), `FROM ${s.base}: ${m[1]} is a global ARG`);
  }
  // every stage is needed by the image in some variant (no dead stage)
  const used = new Set<string | null>();
  for (const [, args] of VARIANTS) {
    for (const s of stageChain(df, args, runtime)) used.add(s.name);
    for (const s of df.stages.filter((x) => used.has(x.name))) {
      for (const i of s.instructions) {
        const from = /--from=(\S+)/.exec(i.args)?.[1];
        if (from !== undefined) for (const d of stageChain(df, args, stage(df, from))) used.add(d.name);
      }
    }
  }
  t.same(df.stages.filter((s) => !used.has(s.name)).map((s) => s.name), [], 'every stage is used');
});

t.test('multi-stage, CPU by default on Node 22, CUDA 12 runtime base with CUDA=12', async (t) => {
  t.ok(df.stages.length >= 3, `several stages (${df.stages.length})`);
  t.ok(df.stages.every((s) => s.name !== null), 'every stage is named');
  t.equal(df.globalArgs.get('CUDA'), '', 'ARG CUDA is empty by default (the CPU image)');
  t.equal(runtime.name, 'runtime', 'the last stage (the image) is "runtime"');
  const cpuBase = finalBaseImage(df, CPU, runtime);
  const cudaBase = finalBaseImage(df, CUDA, runtime);
  t.match(cpuBase, /^docker\.io\/library\/node:22[-.]/, `CPU image runs on Node 22 LTS (${cpuBase})`);
  t.match(finalBaseImage(df, CPU, stage(df, 'build')), /^docker\.io\/library\/node:22[-.]/, 'the build stage compiles on Node 22');
  t.match(cudaBase, /^docker\.io\/nvidia\/cuda:12\.[\d.]+-cudnn[\d]*-runtime-/, `CUDA image runs on an NVIDIA CUDA 12 cuDNN runtime base (${cudaBase})`);
  t.notOk(cudaBase.includes('devel'), 'a runtime, not a devel, CUDA image');
  t.not(cpuBase, cudaBase);
  // The CUDA base has no Node: node-dist puts it into /out for CUDA only (empty for CPU).
  const nodeDist = stage(df, 'node-dist');
  const copyOut = effective(df, CUDA, runtime, 'COPY').filter((i) => /--from=node-dist\b/.test(i.args)).map((i) => i.args);
  t.same(copyOut, ['--from=node-dist /out/ /'], 'the runtime base takes node-dist\'s /out');
  const distRun = nodeDist.instructions.filter((i) => i.cmd === 'RUN').map((i) => i.args).join('\n');
  t.match(distRun, /if \[ -n "\$CUDA" \]; then[^]*cp -a \/usr\/local\/bin\/node \/out\/usr\/local\/bin\//, 'node is copied out for the CUDA base only');
  t.match(distRun, /cp -a \/usr\/local\/include\/node\b/, 'with its headers (the native runner builds against them)');
  t.match(distRun, /cp -a \/usr\/local\/lib\/node_modules\/npm\b/, 'and npm');
  const env = (args: Record<string, string>): Map<string, string> => {
    const vars = stageVars(df, args, runtime);
    const out = new Map<string, string>();
    for (const e of runtime.instructions.filter((i) => i.cmd === 'ENV')) {
      for (const m of e.args.matchAll(/(\w+)=("[^"]*"|\S+)/g)) out.set(m[1]!, expand(m[2]!.replace(/^"|"$/g, ''), vars));
    }
    return out;
  };
  t.equal(env(CPU).get('GEMMA_SERVE_DEVICE'), 'cpu', 'the CPU image serves on the CPU');
  t.equal(env(CUDA).get('GEMMA_SERVE_DEVICE'), 'cuda', 'the CUDA image serves on the GPU');
  const check = stage(df, 'runtime-base').instructions.filter((i) => i.cmd === 'RUN').map((i) => i.args).join('\n');
  t.match(check, /case "\$CUDA:\$DEVICE" in :\|12:cuda\) ;; \*\) echo [^;]*; exit 1 ;; esac/, 'any other CUDA value, or a DEVICE set by hand, fails the build');
  t.equal(stageVars(df, CPU, stage(df, 'runtime-base')).get('DEVICE'), '', 'DEVICE follows CUDA: empty for CPU');
  t.equal(stageVars(df, CUDA, stage(df, 'runtime-base')).get('DEVICE'), 'cuda', 'cuda for CUDA=12');
});

t.test('production dependencies only; onnxruntime-node\'s download skipped, the CUDA provider installed for CUDA=12', async (t) => {
  const runs = df.stages.flatMap((s) => s.instructions.filter((i) => i.cmd === 'RUN').map((i) => ({ stage: s.name, args: i.args })));
  const installs = runs.filter((r) => /\bnpm\s+(ci|install|i)\b/.test(r.args));
  t.ok(installs.length > 0, 'npm installs the dependencies');
  // The build stage compiles with the devDependencies (no install scripts); the image takes only dist/ from it.
  for (const r of installs.filter((x) => x.stage === 'build')) t.match(r.args, /npm ci --ignore-scripts\b/, `stage build: npm ci --ignore-scripts (${r.args})`);
  for (const r of installs.filter((x) => x.stage !== 'build')) t.match(r.args, /ONNXRUNTIME_NODE_INSTALL=skip npm ci --omit=dev\b/, `stage ${r.stage}: npm ci --omit=dev, onnxruntime-node's download skipped (${r.args})`);
  const fromBuild = runtime.instructions.filter((i) => i.cmd === 'COPY' && /--from=build\b/.test(i.args))
    .map((i) => i.args.split(/\s+/).filter((p) => !p.startsWith('--')));
  t.same(fromBuild, [['/app/dist', './dist']], 'only the compiled dist/ comes from the build stage');
  const deps = stage(df, 'deps');
  const depsRun = deps.instructions.filter((i) => i.cmd === 'RUN').map((i) => i.args).join('\n');
  t.match(depsRun, /if \[ -n "\$CUDA" \]; then\s*ONNXRUNTIME_NODE_INSTALL=cuda12 node node_modules\/onnxruntime-node\/script\/install\.js;/, 'the CUDA provider installed explicitly for CUDA=12');
  t.match(depsRun, /test -f node_modules\/onnxruntime-node\/bin\/napi-v6\/linux\/x64\/libonnxruntime_providers_cuda\.so/, 'the build fails unless the CUDA provider landed');
  t.match(depsRun, /if \[ -n "\$CUDA" \]; then\s*apt-get update/, 'g++ only for the CUDA image (the CPU build needs no apt mirror)');
  // the env var the Dockerfile sets is the one onnxruntime-node's install script reads, with these values
  const utils = readFileSync(join(ROOT, 'node_modules/onnxruntime-node/script/install-utils.js'), 'utf8');
  t.match(utils, /process\.env\.ONNXRUNTIME_NODE_INSTALL\b/, 'onnxruntime-node reads ONNXRUNTIME_NODE_INSTALL');
  t.match(utils, /case 'skip':\s*return false;/, 'and knows "skip"');
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string>; dependencies: Record<string, string>; devDependencies: Record<string, string> };
  t.ok(depsRun.includes(pkg.scripts['install:cuda']!), 'the same command as `npm run install:cuda`');
  t.ok(stageChain(df, CPU, deps).some((s) => s.name === 'runtime-base') && finalBaseImage(df, CPU, deps) === finalBaseImage(df, CPU, runtime)
    && finalBaseImage(df, CUDA, deps) === finalBaseImage(df, CUDA, runtime), 'dependencies are installed on the runtime base of the variant');
  const depsCopies = deps.instructions.filter((i) => i.cmd === 'COPY').map((i) => i.args);
  t.ok(depsCopies.some((a) => /\bpackage-lock\.json\b/.test(a)), 'the lockfile is in the deps stage');
  // The image's node_modules come from the deps stage only, never from the build context.
  for (const c of runtime.instructions.filter((i) => i.cmd === 'COPY' || i.cmd === 'ADD')) {
    const sources = c.args.split(/\s+/).filter((p) => !p.startsWith('--')).slice(0, -1);
    t.notOk(sources.some((p) => p === '.' || p === './'), `no whole-context copy: ${c.args}`);
    t.notOk(sources.some((p) => /^(?:\.\/)?(test|bench|scratch|docs|helm|grafana)\b/.test(p)), `no tests, benchmarks or ops files: ${c.args}`);
    if (/node_modules/.test(c.args)) t.match(c.args, /--from=deps\b/, `node_modules from the deps stage: ${c.args}`);
  }
  // what the image runs must not need a devDependency
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
  for (const p of ['package.json', 'package-lock.json', 'tsconfig.json']) t.notOk(dockerIgnored(ignore, p), `${p} is in the context`);
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

/**
 * GEMMA_SERVE_IMAGE_BUILD=cpu,cuda (or 1: both) builds those variants with buildah (or podman)
 * and checks the images' configuration and that node runs in them. Off by default: a build
 * takes minutes and needs the base images (present, or pulled) and the npm registry; the CUDA
 * one also NuGet and an apt mirror. GEMMA_SERVE_NODE_IMAGE / GEMMA_SERVE_CUDA_IMAGE replace the
 * pinned bases (a local mirror or copy); GEMMA_SERVE_IMAGE_BUILD_ISOLATION is passed to
 * --isolation (chroot where the host's cgroups refuse a container runtime).
 */
const BUILD_ENV = process.env['GEMMA_SERVE_IMAGE_BUILD'] ?? '';
const wanted = BUILD_ENV === '1' ? VARIANTS : VARIANTS.filter(([name]) => BUILD_ENV.split(',').includes(name));
const builder = ['buildah', 'podman'].find((b) => spawnSync(b, ['--version'], { stdio: 'ignore' }).status === 0);
const buildSkip = BUILD_ENV === '' ? 'set GEMMA_SERVE_IMAGE_BUILD=cpu,cuda (or 1) to build the images (minutes, needs the base images and the npm registry)'
  : builder === undefined ? 'neither buildah nor podman is installed'
    : wanted.length === 0 ? `GEMMA_SERVE_IMAGE_BUILD=${BUILD_ENV} names no variant (cpu, cuda)` : false;

function run(cmd: string, args: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((res) => {
    const child = spawn(cmd, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { out += d.toString(); });
    child.on('close', (code) => res({ code, out }));
  });
}

// the file's own time limit (package.json's tap.timeout) is far below a build's
if (buildSkip === false) t.setTimeout(60 * 60_000);
t.test(`${builder ?? 'buildah'} builds the image variants`, { skip: buildSkip, timeout: 60 * 60_000 }, async (t) => {
  const b = builder!;
  const isolation = process.env['GEMMA_SERVE_IMAGE_BUILD_ISOLATION'];
  const bases: string[] = [];
  for (const [arg, env] of [['NODE_IMAGE', 'GEMMA_SERVE_NODE_IMAGE'], ['CUDA_IMAGE', 'GEMMA_SERVE_CUDA_IMAGE']] as const) {
    const v = process.env[env];
    if (v !== undefined && v !== '') bases.push('--build-arg', `${arg}=${v}`);
  }
  for (const [name, args] of wanted) {
    const tag = `localhost/gemma-serve-test:${name}`;
    const argv = [b === 'buildah' ? 'bud' : 'build', '--format', 'docker', '-f', 'Dockerfile', '-t', tag, ...bases,
      ...(isolation ? ['--isolation', isolation] : []), ...Object.entries(args).flatMap(([k, v]) => ['--build-arg', `${k}=${v}`]), '.'];
    const t0 = performance.now();
    const built = await run(b, argv);
    t.equal(built.code, 0, `${b} ${argv.join(' ')}: ${built.code === 0 ? 'built' : built.out.slice(-3000)}`);
    t.comment(`${name}: built in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
    if (built.code !== 0) continue;
    const inspected = await run(b, b === 'buildah' ? ['inspect', '--type', 'image', tag] : ['image', 'inspect', tag]);
    const info = JSON.parse(inspected.out) as { Docker?: { config?: ImageConfig } } | { Config?: ImageConfig }[];
    const config = (Array.isArray(info) ? info[0]?.Config : info.Docker?.config) ?? {};
    t.equal(config.User, '10001:10001', `${name}: runs as uid 10001`);
    t.same(config.Entrypoint, ['node', 'bin/gemma-serve.js'], `${name}: the entry point`);
    t.ok((config.Env ?? []).includes(`GEMMA_SERVE_DEVICE=${name}`), `${name}: GEMMA_SERVE_DEVICE=${name}`);
    t.ok(config.Healthcheck?.Test?.some((x) => x.includes('/health')), `${name}: the HEALTHCHECK is kept (--format docker)`);
    if (b !== 'buildah') continue;
    // node runs in the image, the app's production dependencies load, and the CLI answers
    const ctr = (await run(b, ['from', '--pull=never', tag])).out.trim().split('\n').pop()!;
    const inside = await run(b, ['run', ...(isolation ? ['--isolation', isolation] : []), ctr, '--', 'node', '-e',
      'import("onnxruntime-node").then(() => console.log(process.version, "ort ok"))']);
    await run(b, ['rm', ctr]);
    t.match(inside.out, /^v22\.\d+\.\d+ ort ok$/m, `${name}: Node 22 runs and loads onnxruntime-node (${inside.out.trim().slice(-500)})`);
  }
});

interface ImageConfig { User?: string; Entrypoint?: string[]; Env?: string[]; Healthcheck?: { Test?: string[] } }

function* walk(dir: string): Generator<string> {
  for (const e of readdirSync(dir)) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) yield* walk(p);
    else yield p;
  }
}
