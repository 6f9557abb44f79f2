// Traces: the filterable list (service, kind, model, user, session, status,
// duration, one attribute), newest first, refreshed every few seconds while
// the window follows the clock.

import { useEffect, useState } from 'preact/hooks';
import { api, type TraceRow } from '../api';
import { Num, NumCell, numCol, Panel, Select, Table, TextInput, Time } from '../components/ui';
import { href, shared as shareWindow, withParam } from '../lib/url';
import { navigate, useLocation } from '../router';
import { useData, useView, windowParams } from '../view';

export const KINDS = ['agent', 'llm', 'embedding', 'tool', 'retrieval', 'reranker', 'memory', 'chain', 'workflow', 'guardrail', 'evaluator', 'unknown'];

/** Seconds between live updates of the list. */
const LIVE_S = 5;

export function Traces() {
  const view = useView();
  const { path, params } = useLocation();
  const w = windowParams(view);
  const get = (k: string) => params.get(k) ?? '';
  const set = (k: string, v: string) => navigate(href(path, withParam(params, k, v)));
  const attr = get('attr');
  const eq = attr.indexOf('=');
  const q: Record<string, string | number | undefined> = {
    ...w,
    service: get('service'),
    kind: get('kind'),
    model: get('model'),
    user: get('user'),
    session: get('session'),
    status: get('status'),
    min_duration_ms: get('min_ms'),
    max_duration_ms: get('max_ms'),
    limit: 50,
  };
  if (eq > 0) q[`attr.${attr.slice(0, eq)}`] = attr.slice(eq + 1);
  const [more, setMore] = useState<TraceRow[]>([]);
  const [cursor, setCursor] = useState<string | null>(null);
  const list = useData((signal) => api.get<{ traces: TraceRow[]; next_cursor: string | null }>('/api/v1/traces', q, signal), [q]);
  // Live updates: the list reloads every few seconds while the window is live.
  useEffect(() => {
    if (!view.live) return;
    const timer = setInterval(() => {
      if (document.visibilityState !== 'hidden') list.reload();
    }, LIVE_S * 1000);
    return () => clearInterval(timer);
  }, [view.live, JSON.stringify(q)]);
  useEffect(() => {
    setMore([]);
    setCursor(null);
  }, [JSON.stringify(q)]);
  const loaded = [...(list.data?.traces ?? []), ...more];
  const order = get('order');
  const by: Record<string, (t: TraceRow) => number> = { slowest: (t) => t.duration_ms, costliest: (t) => t.cost_usd, errors: (t) => t.error_count };
  const rows = by[order] ? [...loaded].sort((a, b) => by[order](b) - by[order](a)) : loaded;
  const next = more.length ? cursor : (list.data?.next_cursor ?? null);
  return (
    <>
      <div class="filters" data-testid="trace-filters">
        <TextInput id="f-service" label="Service" value={get('service')} onCommit={(v) => set('service', v)} />
        <Select id="f-kind" label="Span kind" value={get('kind')} options={[['', 'any'], ...KINDS]} onChange={(v) => set('kind', v)} />
        <TextInput id="f-model" label="Model" value={get('model')} onCommit={(v) => set('model', v)} />
        <TextInput id="f-user" label="User" value={get('user')} onCommit={(v) => set('user', v)} />
        <TextInput id="f-session" label="Session" value={get('session')} onCommit={(v) => set('session', v)} />
        <Select id="f-status" label="Status" value={get('status')} options={[['', 'any'], ['error', 'with errors']]} onChange={(v) => set('status', v)} />
        <TextInput id="f-min" label="Min duration (ms)" value={get('min_ms')} onCommit={(v) => set('min_ms', v)} />
        <TextInput id="f-max" label="Max duration (ms)" value={get('max_ms')} onCommit={(v) => set('max_ms', v)} />
        <Select
          id="f-order"
          label="Order (of the traces loaded)"
          value={order}
          options={[['', 'newest first'], ['slowest', 'slowest first'], ['costliest', 'costliest first'], ['errors', 'most errors first']]}
          onChange={(v) => set('order', v)}
        />
        <TextInput id="f-attr" label="Attribute (key=value)" value={attr} placeholder="gen_ai.agent.name=support" onCommit={(v) => set('attr', v)} />
      </div>
      <Panel
        title={`Traces (${loaded.length} loaded${next ? ', more below' : ''})`}
        loading={list.loading}
        error={list.error}
        empty={!rows.length}
        emptyText="No trace in this window matches."
        testId="trace-list"
        actions={view.live ? <span class="muted">live, every {LIVE_S} s</span> : <span class="muted">paused</span>}
      >
        <Table columns={['Start', 'Root span', 'Service', numCol('Duration'), numCol('Spans'), numCol('Errors'), numCol('LLM calls'), numCol('Tokens in/out'), numCol('Cost'), 'User', 'Session']}>
          {rows.map((t) => (
            <tr key={t.trace_id} data-trace-id={t.trace_id}>
              <td>
                <Time ms={t.start_ms} />
              </td>
              <td>
                <a href={href(`/traces/${t.trace_id}`, shareWindow(params))}>{t.root_name || t.trace_id}</a>
              </td>
              <td>{t.service ?? '—'}</td>
              <NumCell value={t.duration_ms} kind="ms" />
              <NumCell value={t.span_count} kind="count" />
              <td class="n">{t.error_count ? <span class="pill error">{t.error_count}</span> : '0'}</td>
              <NumCell value={t.llm_calls} kind="count" />
              <td class="n">
                <Num value={t.input_tokens} kind="count" /> / <Num value={t.output_tokens} kind="count" />
              </td>
              <NumCell value={t.cost_usd} kind="cost" />
              <td>{t.user ?? '—'}</td>
              <td>{t.session ? <a href={href(`/sessions/${encodeURIComponent(t.session)}`, shareWindow(params))}>{t.session}</a> : '—'}</td>
            </tr>
          ))}
        </Table>
        {next && (
          <button
            type="button"
            onClick={async () => {
              const page = await api.get<{ traces: TraceRow[]; next_cursor: string | null }>('/api/v1/traces', { ...q, cursor: next });
              setMore([...more, ...page.traces]);
              setCursor(page.next_cursor);
            }}
          >
            Load more
          </button>
        )}
      </Panel>
    </>
  );
}
