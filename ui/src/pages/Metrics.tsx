// Metrics: pick a metric name, filter on its tags, group by one, choose the
// statistic and the step, and chart it (`/api/v1/metrics/*`).

import { api } from '../api';
import { Chart } from '../components/Chart';
import { Panel, Select } from '../components/ui';
import * as fmt from '../lib/format';
import { align, grid } from '../lib/series';
import { parseDuration, stepFor } from '../lib/time';
import { href, readFilters, withParam, withParams } from '../lib/url';
import { navigate, useLocation } from '../router';
import { useData, useView, windowParams } from '../view';

const AGGS = ['avg', 'min', 'max', 'sum', 'count', 'last', 'p50', 'p90', 'p95', 'p99', 'rate'];
const STEPS = ['10s', '30s', '1m', '5m', '15m', '30m', '1h', '3h', '6h', '12h', '1d'];

interface MetricQuery {
  from: number;
  to: number;
  step_ms: number;
  tier: string;
  groups: { key: Record<string, string>; points: { t: number; value: number | null }[] }[];
  other: { points: { t: number; value: number | null }[] } | null;
  truncated: boolean;
}

export function Metrics() {
  const view = useView();
  const { path, params } = useLocation();
  const w = windowParams(view);
  const names = useData((signal) => api.get<{ names: { name: string; series: number }[] }>('/api/v1/metrics/names', view.project ? { project: view.project } : {}, signal), []);
  const list = names.data?.names ?? [];
  const name = params.get('name') ?? list[0]?.name ?? '';
  const tags = useData((signal) => (name ? api.get<{ tags: Record<string, string[]> }>('/api/v1/metrics/tags', { name, project: view.project ?? undefined }, signal) : Promise.resolve({ tags: {} })), [name]);
  const agg = params.get('agg') ?? 'avg';
  const groupBy = params.get('group_by') ?? '';
  const filters = params.getAll('filter');
  const autoStep = stepFor(view.window, '10s');
  const step = params.get('step') ?? autoStep;
  const query = useData(
    (signal) => (name ? api.get<MetricQuery>('/api/v1/metrics/query', { ...w, name, agg, step, group_by: groupBy, filter: filters, limit: 20 }, signal) : Promise.resolve(null)),
    [w, name, agg, step, groupBy, filters],
  );
  const go = (p: URLSearchParams) => navigate(href(path, p));
  const tagMap: Record<string, string[]> = tags.data?.tags ?? {};
  const active = readFilters(params);
  const q = query.data;
  const times = q ? grid(q.from, q.to, q.step_ms || (parseDuration(step) ?? 60_000)) : [];
  const missing = agg === 'count' || agg === 'sum' || agg === 'rate' ? 0 : null;
  const lines = q ? q.groups.map((g) => ({ label: Object.entries(g.key).map(([k, v]) => `${k}=${v}`).join(', ') || name, values: align(times, g.points, (p) => p.value, missing) })) : [];
  if (q?.other) lines.push({ label: 'other', values: align(times, q.other.points, (p) => p.value, missing) });
  const format = agg === 'count' ? fmt.count : (v: number | null) => (v == null ? '—' : fmt.compact(v));
  return (
    <>
      <div class="filters">
        <Select id="metric-name" label="Metric" value={name} options={list.length ? list.map((n) => [n.name, `${n.name} (${n.series} series)`] as [string, string]) : [['', 'no metrics yet']]} onChange={(v) => go(withParams(withParam(withParam(params, 'name', v), 'group_by', null), 'filter', []))} />
        <Select id="metric-agg" label="Statistic" value={agg} options={AGGS} onChange={(v) => go(withParam(params, 'agg', v === 'avg' ? null : v))} />
        <Select id="metric-step" label="Step" value={params.get('step') ?? ''} options={[['', `auto (${autoStep})`], ...STEPS]} onChange={(v) => go(withParam(params, 'step', v))} />
        <Select id="metric-group" label="Group by" value={groupBy} options={[['', 'nothing'], ...Object.keys(tagMap)]} onChange={(v) => go(withParam(params, 'group_by', v))} />
        {Object.entries(tagMap).map(([tag, values]) => (
          <Select
            key={tag}
            id={`metric-tag-${tag}`}
            label={`${tag} is`}
            value={active.get(tag)?.[0] ?? ''}
            options={[['', 'any'], ...values.slice(0, 200)]}
            onChange={(v) => go(withParams(params, 'filter', [...filters.filter((f) => !f.startsWith(`${tag}:`)), ...(v ? [`${tag}:${v}`] : [])]))}
          />
        ))}
      </div>
      <Panel
        title={name ? `${agg} of ${name}${groupBy ? ` by ${groupBy}` : ''} (per ${step}${q ? `, ${q.tier} bins` : ''})` : 'Metrics'}
        loading={query.loading || names.loading}
        error={names.error ?? query.error}
        empty={!lines.length}
        emptyText={list.length ? 'No points in this window.' : 'No metric has been received yet: send points to /api/v1/points or OTLP metrics to /v1/metrics.'}
        testId="metric-chart"
      >
        {lines.length > 0 && <Chart times={times} series={lines} format={format} label={`${agg} of ${name} over time`} height={280} />}
      </Panel>
    </>
  );
}
