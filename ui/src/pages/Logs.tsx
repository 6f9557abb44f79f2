// Logs: newest first, with a lowest-severity and a text filter; each record
// that belongs to a trace links to it.

import { useEffect, useState } from 'preact/hooks';
import { api, type LogRecord } from '../api';
import { Pager, Panel, Select, Table, TextInput, Time } from '../components/ui';
import { href, shared, withParam } from '../lib/url';
import { navigate, useLocation } from '../router';
import { useData, useView, windowParams } from '../view';
import { severityClass } from './TraceView';

export function Logs() {
  const view = useView();
  const { path, params } = useLocation();
  const severity = params.get('severity') ?? '';
  const q = params.get('q') ?? '';
  const traceId = params.get('trace_id') ?? '';
  const w = windowParams(view);
  const query = { ...w, severity, q, trace_id: traceId, limit: 100 };
  const [cursors, setCursors] = useState<string[]>([]);
  const cursor = cursors[cursors.length - 1];
  useEffect(() => setCursors([]), [severity, q, traceId]);
  const page = useData((signal) => api.get<{ logs: LogRecord[]; next_cursor: string | null }>('/api/v1/logs', { ...query, cursor }, signal), [query, cursor]);
  const logs = page.data?.logs ?? [];
  const set = (k: string, v: string) => navigate(href(path, withParam(params, k, v)));
  return (
    <>
      <div class="filters">
        <Select id="log-severity" label="Lowest severity" value={severity} options={[['', 'any'], 'debug', 'info', 'warn', 'error', 'fatal']} onChange={(v) => set('severity', v)} />
        <TextInput id="log-q" label="Text contains" value={q} onCommit={(v) => set('q', v)} />
        <TextInput id="log-trace" label="Trace id" value={traceId} onCommit={(v) => set('trace_id', v)} />
      </div>
      <Panel
        title="Log records, newest first"
        loading={page.loading}
        error={page.error}
        empty={!logs.length}
        emptyText="No log record in this window matches."
        testId="log-list"
        actions={<Pager cursors={cursors} next={page.data?.next_cursor} onChange={setCursors} back="Newer" forward="Older" />}
      >
        <Table columns={['Time', 'Severity', 'Service', 'Message', 'Trace']}>
          {logs.map((l, i) => (
            <tr key={`${l.time_ms}-${i}`}>
              <td>
                <Time ms={l.time_ms} />
              </td>
              <td>
                <span class={`pill ${severityClass(l)}`}>{l.severity_text || String(l.severity_number ?? '')}</span>
              </td>
              <td>{l.service ?? '—'}</td>
              <td style={{ whiteSpace: 'pre-wrap', minWidth: '16rem' }}>{typeof l.body === 'string' ? l.body : JSON.stringify(l.body)}</td>
              <td class="mono">
                {l.trace_id ? <a href={href(`/traces/${l.trace_id}`, l.span_id ? withParam(shared(params), 'span', l.span_id) : shared(params))}>{l.trace_id.slice(0, 12)}…</a> : '—'}
              </td>
            </tr>
          ))}
        </Table>
      </Panel>
    </>
  );
}
