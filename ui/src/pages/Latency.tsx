// Latency: where time goes, by span kind, name or model, from
// `/api/v1/traces/latency`: total time as a bar, p50/p95/p99 side by side.

import { api } from '../api';
import { Bar, NumCell, numCol, Panel, Select, Table, TextInput } from '../components/ui';
import * as fmt from '../lib/format';
import { href, withParam } from '../lib/url';
import { navigate, useLocation } from '../router';
import { useData, useView, windowParams } from '../view';

interface LatencyGroup {
  key: string | null;
  count: number;
  errors: number;
  total_ms: number;
  avg_ms: number | null;
  p50_ms: number | null;
  p95_ms: number | null;
  p99_ms: number | null;
}

export function Latency() {
  const view = useView();
  const { path, params } = useLocation();
  const by = params.get('by') ?? 'kind';
  const service = params.get('service') ?? '';
  const w = windowParams(view);
  const data = useData((signal) => api.get<{ groups: LatencyGroup[] }>('/api/v1/traces/latency', { ...w, by, service }, signal), [w, by, service]);
  const groups = data.data?.groups ?? [];
  const maxTotal = Math.max(...groups.map((g) => g.total_ms), 1);
  const maxP99 = Math.max(...groups.map((g) => g.p99_ms ?? 0), 1);
  return (
    <>
      <div class="filters">
        <Select id="latency-by" label="Break down by" value={by} options={[['kind', 'span kind'], ['name', 'span name'], ['model', 'model']]} onChange={(v) => navigate(href(path, withParam(params, 'by', v === 'kind' ? null : v)))} />
        <TextInput id="latency-service" label="Service" value={service} onCommit={(v) => navigate(href(path, withParam(params, 'service', v)))} />
      </div>
      <Panel title={`Time by ${by}, most total time first`} loading={data.loading} error={data.error} empty={!groups.length} emptyText="No spans in this window." testId="latency-table">
        <Table columns={[by, numCol('Spans'), numCol('Errors'), numCol('Total time'), 'Share of time', numCol('Avg'), numCol('p50'), numCol('p95'), numCol('p99'), 'p50 · p95 · p99']}>
          {groups.map((g) => (
            <tr key={g.key ?? ''} data-key={g.key ?? ''}>
              <th scope="row" class="mono">
                {g.key ?? '(none)'}
              </th>
              <NumCell value={g.count} kind="count" />
              <td class="n">{g.errors}</td>
              <NumCell value={g.total_ms} kind="ms" />
              <td>
                <Bar share={g.total_ms / maxTotal} label={`${fmt.ms(g.total_ms)} in all`} />
              </td>
              <NumCell value={g.avg_ms} kind="ms" />
              <NumCell value={g.p50_ms} kind="ms" testId="latency-p50" />
              <NumCell value={g.p95_ms} kind="ms" />
              <NumCell value={g.p99_ms} kind="ms" />
              <td style={{ minWidth: '140px' }}>
                <div class="quantile-bars" aria-label={`p50 ${fmt.ms(g.p50_ms)}, p95 ${fmt.ms(g.p95_ms)}, p99 ${fmt.ms(g.p99_ms)}`} role="img">
                  {(['p50_ms', 'p95_ms', 'p99_ms'] as const).map((q) => (
                    <div key={q} class={`qbar ${q}`} style={{ width: `${((g[q] ?? 0) / maxP99) * 100}%` }} />
                  ))}
                </div>
              </td>
            </tr>
          ))}
        </Table>
      </Panel>
    </>
  );
}
