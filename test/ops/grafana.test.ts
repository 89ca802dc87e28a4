/**
 * grafana/gemma-serve-dashboard.json: it parses, has the datasource and model_name template
 * variables, every panel queries the Prometheus datasource variable with valid PromQL (parsed
 * with Prometheus' own lezer grammar) that names only metrics gemma-serve exports (issue 6's
 * list under gemma_serve:, plus prom-client's process metrics), and the panels the issue asks
 * for are there.
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parser } from '@prometheus-io/lezer-promql';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const FILE = join(ROOT, 'grafana/gemma-serve-dashboard.json');

/** Issue 6's metrics (vLLM V1 semantics) under gemma_serve:, each with its type. */
const ENGINE_METRICS: Record<string, 'gauge' | 'counter' | 'histogram'> = {
  num_requests_running: 'gauge',
  num_requests_waiting: 'gauge',
  kv_cache_usage_perc: 'gauge',
  num_preemptions_total: 'counter',
  prompt_tokens_total: 'counter',
  generation_tokens_total: 'counter',
  request_success_total: 'counter',
  time_to_first_token_seconds: 'histogram',
  inter_token_latency_seconds: 'histogram',
  e2e_request_latency_seconds: 'histogram',
  request_queue_time_seconds: 'histogram',
  request_inference_time_seconds: 'histogram',
  request_prefill_time_seconds: 'histogram',
  request_decode_time_seconds: 'histogram',
  iteration_tokens_total: 'histogram',
  request_prompt_tokens: 'histogram',
  request_generation_tokens: 'histogram',
  prefix_cache_queries_total: 'counter',
  prefix_cache_hits_total: 'counter',
};
/** HTTP metrics by route and status (no model_name label). */
const HTTP_METRICS: Record<string, 'counter' | 'histogram'> = {
  http_requests_total: 'counter',
  http_request_duration_seconds: 'histogram',
};
/** Node process metrics: prom-client's collectDefaultMetrics names. */
const PROCESS_METRICS = ['process_cpu_seconds_total', 'process_resident_memory_bytes', 'nodejs_heap_size_used_bytes', 'nodejs_eventloop_lag_p99_seconds'];

function seriesNames(base: string, type: string): string[] {
  return type === 'histogram' ? [`${base}_bucket`, `${base}_sum`, `${base}_count`] : [base];
}
const ENGINE_SERIES = new Set(Object.entries(ENGINE_METRICS).flatMap(([n, ty]) => seriesNames(`gemma_serve:${n}`, ty)));
const ALLOWED = new Set([...ENGINE_SERIES, ...Object.entries(HTTP_METRICS).flatMap(([n, ty]) => seriesNames(`gemma_serve:${n}`, ty)), ...PROCESS_METRICS]);

interface Selector { metric: string; matchers: Map<string, string> }
interface ParsedExpr { errors: number[]; selectors: Selector[] }

/** Grafana's variables replaced by what they stand for, then parsed as PromQL. */
export function parsePromQL(expr: string): ParsedExpr {
  const src = expr.replace(/\$__rate_interval|\$__interval|\$__range/g, '5m').replace(/\$\{?(\w+)\}?/g, 'VAR_$1');
  const errors: number[] = [];
  const selectors: Selector[] = [];
  parser.parse(src).iterate({
    enter: (n) => {
      if (n.type.isError) errors.push(n.from);
      if (n.name === 'VectorSelector') {
        const id = n.node.getChild('Identifier');
        const matchers = new Map<string, string>();
        const lm = n.node.getChild('LabelMatchers');
        for (const m of lm?.getChildren('UnquotedLabelMatcher') ?? []) {
          const name = m.getChild('LabelName');
          const value = m.getChild('StringLiteral');
          const op = m.getChild('MatchOp');
          if (name && value && op) matchers.set(src.slice(name.from, name.to), `${src.slice(op.from, op.to)}${src.slice(value.from, value.to)}`);
        }
        selectors.push({ metric: id ? src.slice(id.from, id.to) : '', matchers });
      }
    },
  });
  return { errors, selectors };
}

interface Target { expr?: string; refId?: string; datasource?: { type?: string; uid?: string } }
interface Panel { type: string; title?: string; id?: number; datasource?: { type?: string; uid?: string }; targets?: Target[]; gridPos?: { h: number; w: number; x: number; y: number }; panels?: Panel[] }

const dashboard = JSON.parse(readFileSync(FILE, 'utf8')) as {
  title: string; uid: string; schemaVersion: number; panels: Panel[];
  templating: { list: { name: string; type: string; query: unknown; datasource?: { uid?: string }; multi?: boolean; includeAll?: boolean }[] };
};
const allPanels = dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
const queryPanels = allPanels.filter((p) => p.type !== 'row');
const exprs = queryPanels.flatMap((p) => (p.targets ?? []).map((tg) => ({ panel: p.title ?? '?', expr: tg.expr ?? '' })));

t.test('the PromQL checks can fail', async (t) => {
  t.ok(parsePromQL('sum(rate(x[5m])').errors.length > 0, 'a syntax error is caught');
  t.same(parsePromQL('sum by (le) (rate(gemma_serve:a_bucket{model_name=~"$model_name"}[$__rate_interval]))').selectors.map((s) => [s.metric, s.matchers.get('model_name')]),
    [['gemma_serve:a_bucket', '=~"VAR_model_name"']]);
  t.notOk(ALLOWED.has('vllm:num_requests_running'), 'vllm: names are not in the gemma_serve: list');
});

t.test('dashboard metadata and template variables', async (t) => {
  t.type(dashboard.title, 'string');
  t.type(dashboard.uid, 'string');
  t.ok(dashboard.schemaVersion >= 36, `schemaVersion ${dashboard.schemaVersion} >= 36`);
  const vars = new Map(dashboard.templating.list.map((v) => [v.name, v]));
  const ds = vars.get('datasource');
  t.equal(ds?.type, 'datasource', 'a datasource variable');
  t.equal(ds?.query, 'prometheus', 'of Prometheus data sources');
  const model = vars.get('model_name');
  t.equal(model?.type, 'query', 'a model_name query variable');
  t.equal(model?.datasource?.uid, '${datasource}', 'queried on the chosen data source');
  const q = typeof model?.query === 'string' ? model.query : (model?.query as { query?: string } | undefined)?.query;
  t.match(q, /^label_values\(gemma_serve:\w+,\s*model_name\)$/, 'its values are the model_name labels of a gemma_serve: metric');
  t.ok(model?.multi && model.includeAll, 'several models or all of them');
});

t.test('every panel has the datasource variable and PromQL targets over known metrics', async (t) => {
  t.ok(queryPanels.length >= 15, `${queryPanels.length} panels`);
  const ids = allPanels.map((p) => p.id);
  t.equal(new Set(ids).size, ids.length, 'panel ids are unique');
  for (const p of queryPanels) {
    t.equal(p.datasource?.uid, '${datasource}', `${p.title}: panel datasource is the variable`);
    t.equal(p.datasource?.type, 'prometheus', `${p.title}: a Prometheus panel`);
    t.ok(p.gridPos && p.gridPos.w > 0 && p.gridPos.h > 0 && p.gridPos.x + p.gridPos.w <= 24, `${p.title}: laid out on the grid`);
    t.ok((p.targets ?? []).length > 0, `${p.title}: has targets`);
    const refIds = (p.targets ?? []).map((tg) => tg.refId);
    t.equal(new Set(refIds).size, refIds.length, `${p.title}: unique refIds`);
    for (const tg of p.targets ?? []) {
      t.equal(tg.datasource?.uid, '${datasource}', `${p.title} ${tg.refId}: target datasource is the variable`);
      t.ok(tg.expr && tg.expr.trim() !== '', `${p.title} ${tg.refId}: an expression`);
      const parsed = parsePromQL(tg.expr ?? '');
      t.same(parsed.errors, [], `${p.title} ${tg.refId}: valid PromQL: ${tg.expr}`);
      t.ok(parsed.selectors.length > 0, `${p.title} ${tg.refId}: selects series`);
      for (const s of parsed.selectors) {
        t.ok(ALLOWED.has(s.metric), `${p.title}: ${s.metric} is a metric gemma-serve exports`);
        if (ENGINE_SERIES.has(s.metric)) t.equal(s.matchers.get('model_name'), '=~"VAR_model_name"', `${p.title}: ${s.metric} is filtered by $model_name`);
      }
      // histograms are only read through their _bucket/_sum/_count series
      for (const m of (tg.expr ?? '').matchAll(/histogram_quantile\(\s*([\d.]+)/g)) t.ok(Number(m[1]) > 0 && Number(m[1]) < 1, `${p.title}: a quantile in (0, 1)`);
    }
  }
});

t.test('the panels issue 6 asks for are there', async (t) => {
  const uses = (re: RegExp): boolean => exprs.some((e) => re.test(e.expr));
  t.ok(uses(/gemma_serve:num_requests_running\b/), 'requests running');
  t.ok(uses(/gemma_serve:num_requests_waiting\b/), 'requests waiting');
  t.ok(uses(/gemma_serve:kv_cache_usage_perc\{[^}]*layer_type=""/), 'KV cache usage overall (the series without layer_type)');
  t.ok(exprs.some((e) => /gemma_serve:kv_cache_usage_perc\{[^}]*layer_type=~"sliding\|global"/.test(e.expr) && /by \([^)]*layer_type/.test(e.expr)), 'KV cache usage split by layer_type sliding | global');
  t.ok(uses(/rate\(gemma_serve:num_preemptions_total\b/), 'preemption rate');
  t.ok(uses(/rate\(gemma_serve:prompt_tokens_total\b/) && uses(/rate\(gemma_serve:generation_tokens_total\b/), 'prompt and generation tokens/s');
  for (const h of ['time_to_first_token_seconds', 'inter_token_latency_seconds']) {
    for (const q of ['0.5', '0.99']) t.ok(uses(new RegExp(`histogram_quantile\\(${q.replace('.', '\\.')}, sum by \\([^)]*\\ble\\b[^)]*\\) \\(rate\\(gemma_serve:${h}_bucket\\b`)), `${h} p${Number(q) * 100}`);
  }
  for (const h of ['e2e_request_latency_seconds', 'request_queue_time_seconds', 'iteration_tokens_total']) t.ok(uses(new RegExp(`gemma_serve:${h}_bucket\\b`)), h);
  t.ok(exprs.some((e) => /rate\(gemma_serve:prefix_cache_hits_total\b.*\/.*rate\(gemma_serve:prefix_cache_queries_total\b/.test(e.expr)), 'prefix cache hit rate: hits / queries');
  t.ok(uses(/sum by \(finished_reason\) \(rate\(gemma_serve:request_success_total\b/), 'request success by finished_reason');
  t.ok(uses(/sum by \(route, status\) \(rate\(gemma_serve:http_requests_total\b/), 'HTTP requests by route and status');
  t.ok(uses(/rate\(process_cpu_seconds_total\b/), 'process CPU');
  t.ok(uses(/process_resident_memory_bytes\b/), 'process memory');
});
