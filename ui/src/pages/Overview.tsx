// Overview: the window's totals against the previous window, cost by model,
// requests and errors, latency quantiles over time, and the top spenders.

import { api, type UsagePoint, type UsageSeries, type UsageSummary, type UsageTotals } from '../api';
import { Chart } from '../components/Chart';
import { NumCell, numCol, Panel, Stat, Table } from '../components/ui';
import * as fmt from '../lib/format';
import { align, grid } from '../lib/series';
import { parseDuration, previous, stepFor } from '../lib/time';
import { href, shared, withParams } from '../lib/url';
import { useLocation } from '../router';
import { useData, useView, windowParams } from '../view';

const SUMMARY = '/api/v1/usage/summary';
const SERIES = '/api/v1/usage/series';

function errorRate(t: UsageTotals | undefined): number | null {
  if (!t) return null;
  return t.requests ? t.errors / t.requests : 0;
}

export function Overview() {
  const view = useView();
  const w = windowParams(view);
  const prev = previous(view.window);
  const step = stepFor(view.window, '1m');
  const now = useData((signal) => api.get<UsageSummary>(SUMMARY, w, signal), [w]);
  const before = useData(
    (signal) => api.get<UsageSummary>(SUMMARY, { ...w, from: Math.floor(prev.from), to: Math.ceil(prev.to) }, signal),
    [w],
  );
  const byModel = useData((signal) => api.get<UsageSeries>(SERIES, { ...w, step, group_by: 'model', limit: 8 }, signal), [w, step]);
  const overall = useData((signal) => api.get<UsageSeries>(SERIES, { ...w, step }, signal), [w, step]);

  const t = now.data?.total;
  const b = before.data?.total;
  const tokensIn = t ? t.input_tokens : null;
  return (
    <>
      <Panel loading={now.loading} error={now.error} empty={!now.data} testId="overview-totals">
        <div class="stats">
          <Stat label="Cost" value={t?.cost_usd} before={b?.cost_usd} kind="cost" testId="total-cost" />
          <Stat label="Requests" value={t?.requests} before={b?.requests} kind="count" upIsGood testId="total-requests" />
          <Stat label="Input tokens" value={tokensIn} before={b?.input_tokens} kind="count" upIsGood testId="total-input-tokens" />
          <Stat label="Output tokens" value={t?.output_tokens} before={b?.output_tokens} kind="count" upIsGood testId="total-output-tokens" />
          <Stat label="Cached input tokens" value={t?.cache_read_tokens} before={b?.cache_read_tokens} kind="count" upIsGood testId="total-cache-read-tokens" />
          <Stat label="Reasoning tokens" value={t?.reasoning_tokens} before={b?.reasoning_tokens} kind="count" testId="total-reasoning-tokens" />
          <Stat label="Error rate" value={errorRate(t)} before={errorRate(b)} kind="percent" testId="error-rate" />
          <Stat label="Latency p50" value={t?.latency_ms.p50} before={b?.latency_ms.p50} kind="ms" testId="latency-p50" />
          <Stat label="Latency p95" value={t?.latency_ms.p95} before={b?.latency_ms.p95} kind="ms" testId="latency-p95" />
          <Stat label="Latency p99" value={t?.latency_ms.p99} before={b?.latency_ms.p99} kind="ms" testId="latency-p99" />
          <Stat label="TTFT p50" value={t?.ttft_ms.p50} before={b?.ttft_ms.p50} kind="ms" testId="ttft-p50" />
          <Stat label="TTFT p95" value={t?.ttft_ms.p95} before={b?.ttft_ms.p95} kind="ms" testId="ttft-p95" />
          <Stat label="TTFT p99" value={t?.ttft_ms.p99} before={b?.ttft_ms.p99} kind="ms" testId="ttft-p99" />
        </div>
      </Panel>
      <div class="grid">
        <Panel title={`Cost by model (per ${step})`} loading={byModel.loading} error={byModel.error} empty={!byModel.data?.groups.length}>
          {byModel.data && <CostByModel series={byModel.data} step={step} />}
        </Panel>
        <Panel title={`Requests and errors (per ${step})`} loading={overall.loading} error={overall.error} empty={!overall.data?.groups.length}>
          {overall.data && <OverallChart series={overall.data} step={step} lines={REQUEST_LINES} missing={0} format={fmt.count} label="Requests and errors over time" />}
        </Panel>
        <Panel title="Latency quantiles" loading={overall.loading} error={overall.error} empty={!overall.data?.groups.length}>
          {overall.data && <OverallChart series={overall.data} step={step} lines={LATENCY_LINES} missing={null} format={fmt.ms} label="Latency quantiles over time" />}
        </Panel>
      </div>
      <div class="grid">
        <TopBy dimension="model" title="Top models by cost" />
        <TopBy dimension="user" title="Top users by cost" />
        <TopBy dimension="api_key" title="Top API keys by cost" />
      </div>
    </>
  );
}

/** The bucket starts of a series answer. */
export function seriesTimes(series: { from: number; to: number }, step: string): number[] {
  return grid(series.from, series.to, parseDuration(step) ?? 60_000);
}

function CostByModel({ series, step }: { series: UsageSeries; step: string }) {
  const times = seriesTimes(series, step);
  const lines = series.groups.map((g) => ({ label: g.key.model ?? '(none)', values: align(times, g.points, (p) => p.cost_usd, 0) }));
  if (series.other) lines.push({ label: 'other models', values: align(times, series.other.points, (p) => p.cost_usd, 0) });
  return <Chart times={times} series={lines} stacked format={fmt.cost} label="Cost over time, stacked by model" />;
}

/** A line of the window's one ungrouped series: a field of its points. */
interface OverallLine {
  label: string;
  get: (p: UsagePoint) => number | null;
  color: string;
}

const REQUEST_LINES: OverallLine[] = [
  { label: 'Requests', get: (p) => p.requests, color: '#4e79a7' },
  { label: 'Errors', get: (p) => p.errors, color: '#e15759' },
];

const LATENCY_LINES: OverallLine[] = [
  { label: 'p50', get: (p) => p.latency_ms.p50, color: '#59a14f' },
  { label: 'p95', get: (p) => p.latency_ms.p95, color: '#f28e2b' },
  { label: 'p99', get: (p) => p.latency_ms.p99, color: '#e15759' },
];

/** Lines of the ungrouped series; `missing` fills the buckets without a point (0 for counts, null for quantiles). */
function OverallChart({ series, step, lines, missing, format, label }: { series: UsageSeries; step: string; lines: OverallLine[]; missing: number | null; format: (v: number | null) => string; label: string }) {
  const points = series.groups[0]?.points ?? [];
  const times = seriesTimes(series, step);
  return <Chart times={times} series={lines.map((l) => ({ label: l.label, values: align(times, points, l.get, missing), color: l.color }))} format={format} label={label} />;
}

function TopBy({ dimension, title }: { dimension: string; title: string }) {
  const view = useView();
  const { params } = useLocation();
  const w = windowParams(view);
  const top = useData((signal) => api.get<UsageSummary>(SUMMARY, { ...w, group_by: dimension, limit: 5 }, signal), [w, dimension]);
  const groups = top.data?.groups ?? [];
  // The same groups over the previous window, for the change column.
  const prev = previous(view.window);
  const keys = groups.map((g) => `${dimension}:${g.key[dimension] ?? ''}`);
  const before = useData(
    (signal) => (keys.length ? api.get<UsageSummary>(SUMMARY, { project: w.project, from: Math.floor(prev.from), to: Math.ceil(prev.to), group_by: dimension, filter: keys }, signal) : Promise.resolve(null)),
    [w, keys],
  );
  const heading = dimension === 'api_key' ? 'API key' : dimension[0].toUpperCase() + dimension.slice(1);
  const beforeCost = new Map((before.data?.groups ?? []).map((g) => [g.key[dimension] ?? '', g.cost_usd]));
  return (
    <Panel title={title} loading={top.loading} error={top.error} empty={!groups.length} testId={`top-${dimension}`}>
      <Table columns={[heading, numCol('Cost'), numCol(<abbr title="Cost against the previous window of the same length">vs prev</abbr>), numCol('Requests'), numCol('Tokens')]}>
        {groups.map((g) => {
          const value = g.key[dimension];
          const link = href('/usage', withParams(withParams(shared(params), 'group_by', [dimension === 'model' ? 'user' : 'model']), 'filter', [`${dimension}:${value ?? ''}`]));
          return (
            <tr key={value}>
              <td class="mono">
                <a href={link}>{value ?? '(none)'}</a>
              </td>
              <NumCell value={g.cost_usd} kind="cost" />
              <td class="n" title={before.data ? `previous window: ${fmt.cost(beforeCost.get(value ?? '') ?? 0)}` : undefined}>
                {before.data ? fmt.change(g.cost_usd, beforeCost.get(value ?? '') ?? 0).text : '…'}
              </td>
              <NumCell value={g.requests} kind="count" />
              <NumCell value={g.total_tokens} kind="count" />
            </tr>
          );
        })}
      </Table>
    </Panel>
  );
}
