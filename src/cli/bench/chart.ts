/**
 * A self-contained SVG chart of a bench report (hand-written, no dependencies): three panels
 * against the levels (concurrency, or request rate): output tokens/s (aggregate and mean per
 * stream), time to first token (p50, p90, p99) and inter-token latency (p50, p99), in ms.
 * Levels are spaced evenly (1, 2, 4, 8 read as a log axis). A missing value breaks no line: the
 * point is left out.
 */
import type { BenchReport, LevelReport } from './run.ts';

interface Series {
  readonly name: string;
  readonly color: string;
  readonly value: (l: LevelReport) => number | null | undefined;
}

interface Panel {
  readonly title: string;
  readonly series: readonly Series[];
}

const PANELS: readonly Panel[] = [
  { title: 'Output tokens/s', series: [
    { name: 'aggregate', color: '#1f77b4', value: (l) => l.output_tokens_per_s },
    { name: 'per stream (mean)', color: '#2ca02c', value: (l) => l.output_tokens_per_s_per_stream },
  ] },
  { title: 'Time to first token (ms)', series: [
    { name: 'TTFT p50', color: '#ff7f0e', value: (l) => l.ttft_ms.p50 },
    { name: 'TTFT p90', color: '#d62728', value: (l) => l.ttft_ms.p90 },
    { name: 'TTFT p99', color: '#9467bd', value: (l) => l.ttft_ms.p99 },
  ] },
  { title: 'Inter-token latency (ms)', series: [
    { name: 'ITL p50', color: '#17becf', value: (l) => l.itl_ms.p50 },
    { name: 'ITL p99', color: '#8c564b', value: (l) => l.itl_ms.p99 },
  ] },
];

const W = 360; // one panel
const H = 300;
const M = { left: 56, right: 14, top: 58, bottom: 44 };

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const fmt = (x: number): string => (Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 10 ? x.toFixed(1) : String(+x.toPrecision(3)));

/** A round axis maximum ≥ max (1, 2, 2.5 or 5 times a power of ten). */
export function niceMax(max: number): number {
  if (!(max > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(max));
  return [1, 2, 2.5, 5, 10].map((m) => m * p).find((v) => v >= max)!;
}

function panel(p: Panel, levels: readonly LevelReport[], xLabels: readonly string[], xTitle: string, x0: number): string {
  const plotW = W - M.left - M.right;
  const plotH = H - M.top - M.bottom;
  const values = p.series.flatMap((s) => levels.map((l) => s.value(l))).filter((v): v is number => typeof v === 'number' && Number.isFinite(v));
  const yMax = niceMax(Math.max(0, ...values));
  const x = (i: number): number => x0 + M.left + (levels.length === 1 ? plotW / 2 : (i / (levels.length - 1)) * plotW);
  const y = (v: number): number => M.top + plotH - (v / yMax) * plotH;
  const out: string[] = [`<g class="panel"><text x="${x0 + W / 2}" y="18" text-anchor="middle" font-weight="bold">${esc(p.title)}</text>`];
  for (let k = 0; k <= 4; k++) {
    const v = (yMax * k) / 4;
    out.push(`<line x1="${x0 + M.left}" x2="${x0 + W - M.right}" y1="${y(v)}" y2="${y(v)}" stroke="#ddd"/>`,
      `<text x="${x0 + M.left - 4}" y="${y(v) + 4}" text-anchor="end" font-size="10">${fmt(v)}</text>`);
  }
  out.push(`<line x1="${x0 + M.left}" x2="${x0 + M.left}" y1="${M.top}" y2="${M.top + plotH}" stroke="#333"/>`,
    `<line x1="${x0 + M.left}" x2="${x0 + W - M.right}" y1="${M.top + plotH}" y2="${M.top + plotH}" stroke="#333"/>`);
  xLabels.forEach((label, i) => out.push(`<text x="${x(i)}" y="${M.top + plotH + 14}" text-anchor="middle" font-size="10">${esc(label)}</text>`));
  out.push(`<text x="${x0 + M.left + plotW / 2}" y="${H - 8}" text-anchor="middle" font-size="11">${esc(xTitle)}</text>`);
  p.series.forEach((s, k) => {
    const pts = levels.map((l, i) => [i, s.value(l)] as const).filter((pt): pt is readonly [number, number] => typeof pt[1] === 'number' && Number.isFinite(pt[1]));
    out.push(`<g class="series" data-series="${esc(s.name)}">`,
      `<polyline fill="none" stroke="${s.color}" stroke-width="2" points="${pts.map(([i, v]) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(' ')}"/>`,
      ...pts.map(([i, v]) => `<circle cx="${x(i).toFixed(1)}" cy="${y(v).toFixed(1)}" r="3" fill="${s.color}"><title>${esc(`${s.name} @ ${xLabels[i]}: ${fmt(v)}`)}</title></circle>`),
      `<rect x="${x0 + M.left + (k % 2) * 150}" y="${26 + Math.floor(k / 2) * 14}" width="10" height="10" fill="${s.color}"/>`,
      `<text x="${x0 + M.left + (k % 2) * 150 + 14}" y="${35 + Math.floor(k / 2) * 14}" font-size="11">${esc(s.name)}</text>`,
      '</g>');
  });
  out.push('</g>');
  return out.join('\n');
}

/** The chart of a report, as an SVG document. */
export function renderChart(report: BenchReport): string {
  const byRate = report.mode === 'rate';
  const xLabels = report.levels.map((l) => String(byRate ? l.rate : l.concurrency));
  const xTitle = byRate ? 'request rate (req/s)' : 'concurrent requests';
  const totalW = W * PANELS.length;
  const caption = `${report.model} at ${report.url} (${report.endpoint}), prompt ${rangeText(report.options.prompt_tokens)} tokens, `
    + `max_tokens ${rangeText(report.options.max_tokens)}${report.options.ignore_eos ? ', ignore_eos' : ''} · ${report.started_at}`;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${totalW}" height="${H + 24}" viewBox="0 0 ${totalW} ${H + 24}" font-family="sans-serif" font-size="12">`,
    `<title>gemma-serve bench: ${esc(caption)}</title>`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    ...PANELS.map((p, i) => panel(p, report.levels, xLabels, xTitle, i * W)),
    `<text x="8" y="${H + 16}" font-size="10" fill="#555">${esc(caption)}</text>`,
    '</svg>',
    '',
  ].join('\n');
}

function rangeText(r: { min: number; max: number }): string {
  return r.min === r.max ? String(r.min) : `${r.min}–${r.max}`;
}
