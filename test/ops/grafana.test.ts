/**
 * grafana/gemma-serve-dashboard.json: it parses, has the datasource, metrics_names and
 * model_name template variables, and every panel queries the Prometheus datasource variable
 * with valid PromQL (parsed with Prometheus' own lezer grammar). Under both metric namings
 * (`--metrics-names gemma_serve`, the default, and `vllm`) every selector of every expression,
 * and of the variables' queries, finds a series in what src/server/metrics.ts really exports in
 * that mode: a Metrics registry fed one generation, one step and one HTTP response is rendered
 * and the selectors are matched against its series (names and label matchers), so a metric
 * renamed, dropped or relabelled in metrics.ts fails here. The panels issue 6 asks for are there.
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parser } from '@prometheus-io/lezer-promql';
import type { Engine } from '../../src/engine/engine.ts';
import type { SchedulerStats } from '../../src/scheduler/types.ts';
import { EngineState } from '../../src/server/engine-state.ts';
import { Metrics, METRICS_NAMES, type MetricsNames } from '../../src/server/metrics.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const FILE = join(ROOT, 'grafana/gemma-serve-dashboard.json');
const MODEL = 'gemma-2-2b-it';

interface Series { name: string; labels: Map<string, string> }

/** The text exposition's samples (name and labels; values are not needed here). */
function parseExposition(text: string): Series[] {
  const out: Series[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([^{\s]+)(?:\{(.*)\})?\s+\S+$/.exec(line);
    if (m === null) throw new Error(`bad exposition line: ${line}`);
    const labels = new Map<string, string>();
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels.set(l[1]!, l[2]!);
    out.push({ name: m[1]!, labels });
  }
  return out;
}

/**
 * What a server in `names` mode exports once it has served: Metrics on an engine stand-in with
 * the fields Metrics reads, fed a whole generation, a step and an HTTP response, so that every
 * labelled counter and histogram has its series.
 */
async function exported(names: MetricsNames): Promise<Series[]> {
  const stats: SchedulerStats = {
    running: 1, waiting: 1, preemptedWaiting: 0, preemptionsTotal: 1, lastStep: { batchSize: 1, numTokens: 3 }, prefixCache: { queries: 8, hits: 4 },
    cache: { global: { usedBlocks: 1, totalBlocks: 4, usedTokens: 16, cachedBlocks: 1 }, sliding: { usedBlocks: 2, totalBlocks: 4, usedTokens: 32, cachedBlocks: 1 } },
  };
  const stand: Pick<Engine, 'modelId' | 'contextLength' | 'stats' | 'forwardSecondsTotal' | 'onStep'> = {
    modelId: MODEL, contextLength: 256, stats, forwardSecondsTotal: 0.5,
    onStep: (listener) => { listener(stats); return () => {}; },
  };
  const engine = stand as unknown as Engine; // Metrics reads only the fields above
  const metrics = new Metrics({ state: new EngineState(engine), names });
  const tracker = metrics.generation(engine, performance.now(), 4);
  tracker.event({ type: 'scheduled', at: performance.now(), cachedTokens: 0 });
  tracker.event({ type: 'token', tokenId: 1, text: 'a' });
  tracker.event({ type: 'token', tokenId: 2, text: 'b' });
  tracker.event({ type: 'finish', reason: 'stop', usage: { prompt_tokens: 4, completion_tokens: 2, total_tokens: 6, prompt_tokens_details: { cached_tokens: 0 } }, text: '', stop: null });
  metrics.http('/v1/chat/completions', 'POST', 200, 0.2);
  const series = parseExposition(await metrics.render());
  metrics.detach();
  return series;
}

const EXPORTED = new Map<MetricsNames, Series[]>();
for (const names of METRICS_NAMES) EXPORTED.set(names, await exported(names));

interface Matcher { op: string; value: string }
interface Selector { metric: string; matchers: Map<string, Matcher> }
interface ParsedExpr { errors: number[]; selectors: Selector[] }

/** Grafana's range variables replaced by a duration, then parsed as PromQL (string literals unquoted). */
export function parsePromQL(expr: string): ParsedExpr {
  const src = expr.replace(/\$__rate_interval|\$__interval|\$__range/g, '5m');
  const errors: number[] = [];
  const selectors: Selector[] = [];
  parser.parse(src).iterate({
    enter: (n) => {
      if (n.type.isError) errors.push(n.from);
      if (n.name === 'VectorSelector') {
        const id = n.node.getChild('Identifier');
        const matchers = new Map<string, Matcher>();
        const lm = n.node.getChild('LabelMatchers');
        for (const m of lm?.getChildren('UnquotedLabelMatcher') ?? []) {
          const name = m.getChild('LabelName');
          const value = m.getChild('StringLiteral');
          const op = m.getChild('MatchOp');
          if (name && value && op) matchers.set(src.slice(name.from, name.to), { op: src.slice(op.from, op.to), value: JSON.parse(src.slice(value.from, value.to)) as string });
        }
        selectors.push({ metric: id ? src.slice(id.from, id.to) : '', matchers });
      }
    },
  });
  return { errors, selectors };
}

/** Grafana's interpolation of `$name` / `${name}` (an unknown variable is left as it is). */
function interpolate(text: string, vars: ReadonlyMap<string, string>): string {
  return text.replace(/\$\{(\w+)\}|\$(\w+)/g, (whole, a: string | undefined, b: string | undefined) => vars.get((a ?? b)!) ?? whole);
}

/** Prometheus' label matching: an absent label is "", regular expressions are anchored. */
function matches(m: Matcher, actual: string): boolean {
  switch (m.op) {
    case '=': return actual === m.value;
    case '!=': return actual !== m.value;
    case '=~': return new RegExp(`^(?:${m.value})$`).test(actual);
    case '!~': return !new RegExp(`^(?:${m.value})$`).test(actual);
    default: throw new Error(`unknown match operator ${m.op}`);
  }
}

function selects(sel: Selector, series: readonly Series[]): Series[] {
  return series.filter((s) => s.name === sel.metric && [...sel.matchers].every(([l, m]) => matches(m, s.labels.get(l) ?? '')));
}

/** A "/regex/flags" string (Grafana's variable regex field) as a RegExp. */
function grafanaRegex(text: string): RegExp {
  const m = /^\/(.*)\/([a-z]*)$/s.exec(text);
  if (m === null) throw new Error(`not a /regex/: ${text}`);
  return new RegExp(m[1]!, m[2]);
}

interface Target { expr?: string; refId?: string; datasource?: { type?: string; uid?: string } }
interface Panel { type: string; title?: string; id?: number; datasource?: { type?: string; uid?: string }; targets?: Target[]; gridPos?: { h: number; w: number; x: number; y: number }; panels?: Panel[] }

const dashboard = JSON.parse(readFileSync(FILE, 'utf8')) as {
  title: string; uid: string; schemaVersion: number; panels: Panel[];
  templating: { list: { name: string; type: string; query: unknown; regex?: string; allValue?: string; datasource?: { uid?: string }; multi?: boolean; includeAll?: boolean }[] };
};
const allPanels = dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
const queryPanels = allPanels.filter((p) => p.type !== 'row');

/** The variables a viewer of a server in `names` mode gets: the model chosen is the server's. */
function viewerVars(names: MetricsNames): Map<string, string> {
  return new Map([['datasource', 'prometheus'], ['metrics_names', names], ['model_name', MODEL]]);
}

type Variable = (typeof dashboard.templating.list)[number];
const variables = new Map(dashboard.templating.list.map((v) => [v.name, v]));
const queryOf = (v: Variable | undefined): string | undefined => (typeof v?.query === 'string' ? v.query : (v?.query as { query?: string } | undefined)?.query);

t.test('the checks can fail', async (t) => {
  t.ok(parsePromQL('sum(rate(x[5m])').errors.length > 0, 'a syntax error is caught');
  const sel = parsePromQL(interpolate('sum by (le) (rate(${metrics_names}:a_bucket{model_name=~"$model_name"}[$__rate_interval]))', viewerVars('vllm'))).selectors;
  t.same(sel.map((s) => [s.metric, s.matchers.get('model_name')]), [['vllm:a_bucket', { op: '=~', value: MODEL }]]);
  const [gemma, vllm] = [EXPORTED.get('gemma_serve')!, EXPORTED.get('vllm')!];
  const one = (expr: string): Selector => parsePromQL(expr).selectors[0]!;
  t.ok(selects(one('gemma_serve:num_requests_running'), gemma).length > 0, 'the default names are exported by default');
  t.same(selects(one('gemma_serve:num_requests_running'), vllm), [], 'and not under --metrics-names vllm');
  t.same(selects(one('vllm:num_requests_running'), gemma), [], 'vllm: names are not exported by default');
  t.same(selects(one('gemma_serve:kv_cache_usage_perc{layer_type="mystery"}'), gemma), [], 'a label matcher no series meets selects nothing');
  t.same(selects(one('gemma_serve:time_to_first_token_seconds'), gemma), [], 'a histogram has no series under its base name');
  t.equal(selects(one('vllm:kv_cache_usage_perc{layer_type=""}'), vllm).length, 1, 'an absent label matches ""');
});

t.test('dashboard metadata and template variables', async (t) => {
  t.type(dashboard.title, 'string');
  t.type(dashboard.uid, 'string');
  t.ok(dashboard.schemaVersion >= 36, `schemaVersion ${dashboard.schemaVersion} >= 36`);
  t.same(dashboard.templating.list.map((v) => v.name), ['datasource', 'metrics_names', 'model_name'], 'each variable after the ones it uses');
  const ds = variables.get('datasource');
  t.equal(ds?.type, 'datasource', 'a datasource variable');
  t.equal(ds?.query, 'prometheus', 'of Prometheus data sources');
  const model = variables.get('model_name');
  t.equal(model?.type, 'query', 'a model_name query variable');
  t.equal(model?.datasource?.uid, '${datasource}', 'queried on the chosen data source');
  t.match(queryOf(model), /^label_values\(\$\{metrics_names\}:\w+,\s*model_name\)$/, 'its values are the model_name labels of a metric under the chosen names');
  t.ok(model?.multi && model.includeAll, 'several models or all of them');
  const names = variables.get('metrics_names');
  t.equal(names?.type, 'query', 'a metrics_names query variable');
  t.equal(names?.datasource?.uid, '${datasource}', 'queried on the chosen data source');
  t.notOk(names?.multi || names?.includeAll, 'one naming at a time');
});

t.test('under both namings the variables find their values', async (t) => {
  const names = variables.get('metrics_names')!;
  const m = /^metrics\((.*)\)$/.exec(queryOf(names) ?? '');
  t.ok(m, `metrics_names lists metric names by a regex: ${queryOf(names)}`);
  const filter = new RegExp(m![1]!);
  const extract = grafanaRegex(names.regex ?? '');
  const model = variables.get('model_name')!;
  for (const mode of METRICS_NAMES) {
    const series = EXPORTED.get(mode)!;
    // Grafana's metrics(): the names that match, then the variable's regex keeps its first group.
    const values = [...new Set(series.map((s) => s.name).filter((n) => filter.test(n)).map((n) => extract.exec(n)?.[1]).filter((v) => v !== undefined))];
    t.same(values, [mode], `a server with --metrics-names ${mode} offers metrics_names=${mode}, and only that`);
    const q = /^label_values\((.*),\s*model_name\)$/.exec(interpolate(queryOf(model) ?? '', viewerVars(mode)));
    const sel = parsePromQL(q?.[1] ?? '').selectors;
    t.equal(sel.length, 1, `${mode}: the model selector reads one metric`);
    const found = selects(sel[0]!, series).map((s) => s.labels.get('model_name'));
    t.same([...new Set(found)], [MODEL], `${mode}: the model selector lists the served model (${sel[0]?.metric})`);
  }
});

t.test('every panel has the datasource variable and PromQL targets whose metrics are exported under both namings', async (t) => {
  t.ok(queryPanels.length >= 15, `${queryPanels.length} panels`);
  const ids = allPanels.map((p) => p.id);
  t.equal(new Set(ids).size, ids.length, 'panel ids are unique');
  const allValue = variables.get('model_name')?.allValue ?? '';
  for (const p of queryPanels) {
    t.equal(p.datasource?.uid, '${datasource}', `${p.title}: panel datasource is the variable`);
    t.equal(p.datasource?.type, 'prometheus', `${p.title}: a Prometheus panel`);
    t.ok(p.gridPos && p.gridPos.w > 0 && p.gridPos.h > 0 && p.gridPos.x + p.gridPos.w <= 24, `${p.title}: laid out on the grid`);
    t.ok((p.targets ?? []).length > 0, `${p.title}: has targets`);
    const refIds = (p.targets ?? []).map((tg) => tg.refId);
    t.equal(new Set(refIds).size, refIds.length, `${p.title}: unique refIds`);
    for (const tg of p.targets ?? []) {
      const what = `${p.title} ${tg.refId}`;
      t.equal(tg.datasource?.uid, '${datasource}', `${what}: target datasource is the variable`);
      t.ok(tg.expr && tg.expr.trim() !== '', `${what}: an expression`);
      for (const mode of METRICS_NAMES) {
        const series = EXPORTED.get(mode)!;
        for (const model of [MODEL, allValue]) {
          const expr = interpolate(tg.expr ?? '', new Map([...viewerVars(mode), ['model_name', model]]));
          const parsed = parsePromQL(expr);
          t.same(parsed.errors, [], `${what} (${mode}): valid PromQL: ${expr}`);
          t.ok(parsed.selectors.length > 0, `${what}: selects series`);
          for (const s of parsed.selectors) {
            t.ok(selects(s, series).length > 0, `${what} (${mode}, model ${model}): ${s.metric}{${[...s.matchers].map(([l, m]) => `${l}${m.op}"${m.value}"`).join(', ')}} is exported`);
            // a metric with model_name must be narrowed to the chosen models
            if (series.some((x) => x.name === s.metric && x.labels.has('model_name'))) t.same(s.matchers.get('model_name'), { op: '=~', value: model }, `${what}: ${s.metric} is filtered by $model_name`);
          }
        }
      }
      for (const m of (tg.expr ?? '').matchAll(/histogram_quantile\(\s*([\d.]+)/g)) t.ok(Number(m[1]) > 0 && Number(m[1]) < 1, `${p.title}: a quantile in (0, 1)`);
    }
  }
});

t.test('the panels issue 6 asks for are there (read under the default names)', async (t) => {
  const exprs = queryPanels.flatMap((p) => (p.targets ?? []).map((tg) => interpolate(tg.expr ?? '', viewerVars('gemma_serve'))));
  const uses = (re: RegExp): boolean => exprs.some((e) => re.test(e));
  t.ok(uses(/gemma_serve:num_requests_running\b/), 'requests running');
  t.ok(uses(/gemma_serve:num_requests_waiting\b/), 'requests waiting');
  t.ok(uses(/gemma_serve:kv_cache_usage_perc\{[^}]*layer_type=""/), 'KV cache usage overall (the series without layer_type)');
  t.ok(exprs.some((e) => /gemma_serve:kv_cache_usage_perc\{[^}]*layer_type=~"sliding\|global"/.test(e) && /by \([^)]*layer_type/.test(e)), 'KV cache usage split by layer_type sliding | global');
  t.ok(uses(/rate\(gemma_serve:num_preemptions_total\b/), 'preemption rate');
  t.ok(uses(/rate\(gemma_serve:prompt_tokens_total\b/) && uses(/rate\(gemma_serve:generation_tokens_total\b/), 'prompt and generation tokens/s');
  for (const h of ['time_to_first_token_seconds', 'inter_token_latency_seconds']) {
    for (const q of ['0.5', '0.99']) t.ok(uses(new RegExp(`histogram_quantile\\(${q.replace('.', '\\.')}, sum by \\([^)]*\\ble\\b[^)]*\\) \\(rate\\(gemma_serve:${h}_bucket\\b`)), `${h} p${Number(q) * 100}`);
  }
  for (const h of ['e2e_request_latency_seconds', 'request_queue_time_seconds', 'iteration_tokens_total']) t.ok(uses(new RegExp(`gemma_serve:${h}_bucket\\b`)), h);
  t.ok(exprs.some((e) => /rate\(gemma_serve:prefix_cache_hits_total\b.*\/.*rate\(gemma_serve:prefix_cache_queries_total\b/.test(e)), 'prefix cache hit rate: hits / queries');
  t.ok(uses(/sum by \(finished_reason\) \(rate\(gemma_serve:request_success_total\b/), 'request success by finished_reason');
  t.ok(uses(/sum by \(route, status\) \(rate\(gemma_serve:http_requests_total\b/), 'HTTP requests by route and status');
  t.ok(uses(/rate\(process_cpu_seconds_total\b/), 'process CPU');
  t.ok(uses(/process_resident_memory_bytes\b/), 'process memory');
});
