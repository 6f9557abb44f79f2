// Usage: group by any ledger dimension, filter on each, a stacked chart over
// time, a sortable table of every ledger field, the same table as CSV
// (through the API's CSV), and the raw records of the selection, paged.

import { useEffect, useMemo, useState } from 'preact/hooks';
import { api, headers, query, type UsageGroup, type UsagePoint, type UsageRecord, type UsageSeries, type UsageSummary } from '../api';
import { Chart } from '../components/Chart';
import { DIMENSIONS, UsageFilters } from '../components/Filters';
import { Num, NumCell, numCol, Pager, Panel, Select, Table, Time } from '../components/ui';
import * as fmt from '../lib/format';
import { align } from '../lib/series';
import { stepFor } from '../lib/time';
import { seriesTimes } from './Overview';
import { href, withParam, withParams } from '../lib/url';
import { navigate, useLocation } from '../router';
import { useData, useView, windowParams } from '../view';

type Column = { key: string; label: string; kind: 'cost' | 'count' | 'ms'; get: (g: UsageGroup) => number | null };

export const COLUMNS: Column[] = [
  { key: 'cost_usd', label: 'Cost', kind: 'cost', get: (g) => g.cost_usd },
  { key: 'requests', label: 'Requests', kind: 'count', get: (g) => g.requests },
  { key: 'input_tokens', label: 'Input tokens', kind: 'count', get: (g) => g.input_tokens },
  { key: 'output_tokens', label: 'Output tokens', kind: 'count', get: (g) => g.output_tokens },
  { key: 'cache_read_tokens', label: 'Cache read', kind: 'count', get: (g) => g.cache_read_tokens },
  { key: 'cache_write_tokens', label: 'Cache write', kind: 'count', get: (g) => g.cache_write_tokens },
  { key: 'reasoning_tokens', label: 'Reasoning', kind: 'count', get: (g) => g.reasoning_tokens },
  { key: 'total_tokens', label: 'Total tokens', kind: 'count', get: (g) => g.total_tokens },
  { key: 'errors', label: 'Errors', kind: 'count', get: (g) => g.errors },
  { key: 'estimated', label: 'Estimated', kind: 'count', get: (g) => g.estimated },
  { key: 'unpriced', label: 'Unpriced', kind: 'count', get: (g) => g.unpriced },
  { key: 'reported_cost_usd', label: 'Reported cost', kind: 'cost', get: (g) => g.reported_cost_usd },
  { key: 'latency_p50', label: 'Latency p50', kind: 'ms', get: (g) => g.latency_ms.p50 },
  { key: 'latency_p95', label: 'Latency p95', kind: 'ms', get: (g) => g.latency_ms.p95 },
  { key: 'latency_p99', label: 'Latency p99', kind: 'ms', get: (g) => g.latency_ms.p99 },
  { key: 'ttft_p50', label: 'TTFT p50', kind: 'ms', get: (g) => g.ttft_ms.p50 },
  { key: 'ttft_p95', label: 'TTFT p95', kind: 'ms', get: (g) => g.ttft_ms.p95 },
  { key: 'ttft_p99', label: 'TTFT p99', kind: 'ms', get: (g) => g.ttft_ms.p99 },
];

const CHART_METRICS: [string, string][] = [
  ['cost_usd', 'Cost'],
  ['requests', 'Requests'],
  ['total_tokens', 'Total tokens'],
  ['input_tokens', 'Input tokens'],
  ['output_tokens', 'Output tokens'],
  ['errors', 'Errors'],
];

export function Usage() {
  const view = useView();
  const { path, params } = useLocation();
  const w = windowParams(view);
  const groupBy = params.get('group_by') ?? 'model';
  const filters = params.getAll('filter');
  const metric = params.get('chart') ?? 'cost_usd';
  const step = stepFor(view.window, '1m');
  const [tagName, setTagName] = useState(groupBy.startsWith('tag.') ? groupBy.slice(4) : '');
  const q = { ...w, group_by: groupBy, filter: filters };
  const summary = useData((signal) => api.get<UsageSummary>('/api/v1/usage/summary', { ...q, limit: 100 }, signal), [q]);
  const series = useData((signal) => api.get<UsageSeries>('/api/v1/usage/series', { ...q, step, limit: 10 }, signal), [q, step]);
  const go = (p: URLSearchParams) => navigate(href(path, p));

  const pick = groupBy.startsWith('tag.') ? 'tag' : groupBy;
  return (
    <>
      <div class="filters">
        <Select
          id="group-by"
          label="Group by"
          value={pick}
          options={[...DIMENSIONS, ['tag', 'tag…']]}
          onChange={(v) => {
            if (v === 'tag') go(withParam(params, 'group_by', `tag.${tagName || 'team'}`));
            else go(withParam(params, 'group_by', v));
          }}
        />
        {pick === 'tag' && (
          <form
            class="row"
            onSubmit={(e) => {
              e.preventDefault();
              if (tagName.trim()) go(withParam(params, 'group_by', `tag.${tagName.trim()}`));
            }}
          >
            <label class="field" for="group-tag">
              <span>Tag name</span>
              <input id="group-tag" value={tagName} onInput={(e) => setTagName((e.target as HTMLInputElement).value)} />
            </label>
            <button type="submit">Group</button>
          </form>
        )}
        <Select id="chart-metric" label="Chart" value={metric} options={CHART_METRICS} onChange={(v) => go(withParam(params, 'chart', v === 'cost_usd' ? null : v))} />
      </div>
      <UsageFilters />
      <Panel title={`${CHART_METRICS.find((m) => m[0] === metric)?.[1] ?? metric} by ${groupBy} (per ${step})`} loading={series.loading} error={series.error} empty={!series.data?.groups.length}>
        {series.data && <UsageChart series={series.data} groupBy={groupBy} metric={metric} step={step} />}
      </Panel>
      <Panel
        title={`By ${groupBy}`}
        loading={summary.loading}
        error={summary.error}
        empty={!summary.data?.groups.length}
        testId="usage-table"
        actions={<CsvButton params={{ ...q, limit: 100, format: 'csv' }} name={`tally-usage-by-${groupBy}.csv`} />}
      >
        {summary.data && <UsageTable summary={summary.data} groupBy={groupBy} onFilter={(value) => go(withParams(params, 'filter', [...filters.filter((f) => !f.startsWith(groupBy + ':')), `${groupBy}:${value}`]))} />}
      </Panel>
      <Records filters={filters} />
    </>
  );
}

function UsageChart({ series, groupBy, metric, step }: { series: UsageSeries; groupBy: string; metric: string; step: string }) {
  const value = (p: UsagePoint) => {
    const v = (p as unknown as Record<string, unknown>)[metric];
    return typeof v === 'number' ? v : null;
  };
  const times = seriesTimes(series, step);
  const lines = series.groups.map((g) => ({ label: g.key[groupBy] ?? '(none)', values: align(times, g.points, value, 0) }));
  if (series.other) lines.push({ label: 'other', values: align(times, series.other.points, value, 0) });
  const format = metric.includes('cost') ? fmt.cost : fmt.count;
  return <Chart times={times} series={lines} stacked format={format} label={`${metric} over time by ${groupBy}`} />;
}

function UsageTable({ summary, groupBy, onFilter }: { summary: UsageSummary; groupBy: string; onFilter: (value: string) => void }) {
  const [sort, setSort] = useState<{ key: string; desc: boolean }>({ key: 'cost_usd', desc: true });
  const col = COLUMNS.find((c) => c.key === sort.key) ?? COLUMNS[0];
  const rows = useMemo(() => {
    const r = [...summary.groups];
    if (sort.key === 'key') r.sort((a, b) => String(a.key[groupBy] ?? '').localeCompare(String(b.key[groupBy] ?? '')));
    else r.sort((a, b) => (col.get(a) ?? -Infinity) - (col.get(b) ?? -Infinity));
    if (sort.desc) r.reverse();
    return r;
  }, [summary, sort, groupBy]);
  const header = (key: string, label: string, numeric: boolean) => (
    <th scope="col" class={numeric ? 'n' : ''} aria-sort={sort.key === key ? (sort.desc ? 'descending' : 'ascending') : undefined}>
      <button type="button" onClick={() => setSort({ key, desc: sort.key === key ? !sort.desc : numeric })}>
        {label}
        {sort.key === key ? (sort.desc ? ' ↓' : ' ↑') : ''}
      </button>
    </th>
  );
  return (
    <Table
      testId="usage-groups"
      head={
        <>
          {header('key', groupBy, false)}
          {COLUMNS.map((c) => header(c.key, c.label, true))}
        </>
      }
      foot={
        <>
          {summary.other && (
            <tr>
              <th scope="row">other ({summary.groups_total - summary.groups.length} groups)</th>
              {COLUMNS.map((c) => (
                <td class="n" key={c.key}>
                  <Num value={c.get({ ...summary.other!, key: {} })} kind={c.kind} />
                </td>
              ))}
            </tr>
          )}
          <tr>
            <th scope="row">Total</th>
            {COLUMNS.map((c) => (
              <td class="n" key={c.key}>
                <Num value={c.get({ ...summary.total, key: {} })} kind={c.kind} testId={`usage-total-${c.key}`} />
              </td>
            ))}
          </tr>
        </>
      }
    >
      {rows.map((g) => {
        const v = g.key[groupBy];
        return (
          <tr key={v}>
            <th scope="row" class="mono">
              <button type="button" class="link" title={`Filter on ${groupBy} ${v}`} onClick={() => onFilter(v ?? '')}>
                {v ?? '(none)'}
              </button>
            </th>
            {COLUMNS.map((c) => (
              <td class="n" key={c.key}>
                <Num value={c.get(g)} kind={c.kind} />
              </td>
            ))}
          </tr>
        );
      })}
    </Table>
  );
}

/** Downloads what the API answers as CSV (with the key, when there is one). */
export function CsvButton({ params, name, path = '/api/v1/usage/summary' }: { params: Record<string, unknown>; name: string; path?: string }) {
  const [error, setError] = useState<string | null>(null);
  return (
    <span class="row">
      <button
        type="button"
        onClick={async () => {
          setError(null);
          try {
            const r = await fetch(path + query(params as never), { headers: headers({ accept: 'text/csv' }) });
            if (!r.ok) throw new Error(`${r.status}: ${await r.text()}`);
            const url = URL.createObjectURL(await r.blob());
            const a = document.createElement('a');
            a.href = url;
            a.download = name;
            document.body.appendChild(a);
            a.click();
            a.remove();
            setTimeout(() => URL.revokeObjectURL(url), 1000);
          } catch (err) {
            setError((err as Error).message);
          }
        }}
      >
        Download CSV
      </button>
      {error && (
        <span class="field-error" role="alert">
          {error}
        </span>
      )}
    </span>
  );
}

const PAGE = 50;

function Records({ filters }: { filters: string[] }) {
  const view = useView();
  const w = windowParams(view);
  const [cursors, setCursors] = useState<string[]>([]);
  const cursor = cursors[cursors.length - 1];
  // Another selection starts again at its first page.
  useEffect(() => setCursors([]), [filters.join('\n')]);
  const page = useData(
    (signal) => api.get<{ records: UsageRecord[]; next_cursor: string | null }>('/api/v1/usage/records', { ...w, filter: filters, limit: PAGE, cursor }, signal),
    [w, filters, cursor],
  );
  const records = page.data?.records ?? [];
  return (
    <Panel
      title="Records (oldest first)"
      loading={page.loading}
      error={page.error}
      empty={!records.length}
      emptyText="No records in this window."
      testId="usage-records"
      actions={
        <>
          <span class="muted">Page {cursors.length + 1}</span>
          <Pager cursors={cursors} next={page.data?.next_cursor} onChange={setCursors} back="Previous" forward="Next" />
        </>
      }
    >
      <Table columns={['Time', 'Model', 'Provider', 'User', 'API key', 'Status', numCol('Input'), numCol('Output'), numCol('Cost'), numCol('Duration'), 'Trace']}>
        {records.map((r, i) => (
          <tr key={`${r.id ?? ''}-${i}`}>
            <td>
              <Time ms={r.time_ms} />
            </td>
            <td class="mono">{r.model}</td>
            <td>{r.provider ?? '—'}</td>
            <td>{r.user ?? '—'}</td>
            <td class="mono">{r.api_key ?? '—'}</td>
            <td>
              <span class={`pill ${r.status}`}>{r.status}</span>
              {r.estimated ? ' est.' : ''}
            </td>
            <NumCell value={r.input_tokens} kind="count" />
            <NumCell value={r.output_tokens} kind="count" />
            <NumCell value={r.cost_usd} kind="cost" />
            <NumCell value={r.duration_ms} kind="ms" />
            <td class="mono">{r.trace_id ? <a href={`/traces/${r.trace_id}${r.span_id ? `?span=${r.span_id}` : ''}`}>{r.trace_id.slice(0, 8)}…</a> : '—'}</td>
          </tr>
        ))}
      </Table>
    </Panel>
  );
}
