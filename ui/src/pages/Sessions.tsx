// Sessions: conversations with a trace in the window, most recently active
// first; a session's traces in order.

import { api, type TraceRow } from '../api';
import { Num, NumCell, numCol, Panel, Table, Tile, Time } from '../components/ui';
import { href, shared } from '../lib/url';
import { useLocation } from '../router';
import { useData, useView, windowParams } from '../view';

interface SessionRow {
  session: string;
  user: string | null;
  traces: number;
  span_count: number;
  error_count: number;
  llm_calls: number;
  input_tokens: number;
  output_tokens: number;
  cost_usd: number;
  start_ms: number;
  end_ms: number;
  duration_ms: number;
}

export function Sessions() {
  const view = useView();
  const { params } = useLocation();
  const w = windowParams(view);
  const list = useData((signal) => api.get<{ sessions: SessionRow[] }>('/api/v1/sessions', { ...w, limit: 100 }, signal), [w]);
  const rows = list.data?.sessions ?? [];
  return (
    <Panel title="Sessions (most recently active first)" loading={list.loading} error={list.error} empty={!rows.length} emptyText="No session has a trace in this window." testId="session-list">
      <Table columns={['Session', 'User', 'Last active', numCol('Traces'), numCol('LLM calls'), numCol('Errors'), numCol('Tokens in/out'), numCol('Cost')]}>
        {rows.map((s) => (
          <tr key={s.session}>
            <td class="mono">
              <a href={href(`/sessions/${encodeURIComponent(s.session)}`, shared(params))}>{s.session}</a>
            </td>
            <td>{s.user ?? '—'}</td>
            <td>
              <Time ms={s.end_ms} />
            </td>
            <NumCell value={s.traces} kind="count" />
            <NumCell value={s.llm_calls} kind="count" />
            <td class="n">{s.error_count}</td>
            <td class="n">
              <Num value={s.input_tokens} kind="count" /> / <Num value={s.output_tokens} kind="count" />
            </td>
            <NumCell value={s.cost_usd} kind="cost" />
          </tr>
        ))}
      </Table>
    </Panel>
  );
}

export function SessionView({ session }: { session: string }) {
  const { params } = useLocation();
  const detail = useData(
    (signal) => api.get<{ traces: TraceRow[]; totals: { traces: number; llm_calls: number; cost_usd: number; input_tokens: number; output_tokens: number } }>(`/api/v1/sessions/${encodeURIComponent(session)}`, {}, signal),
    [session],
  );
  const d = detail.data;
  return (
    <>
      <p>
        <a href={href('/sessions', shared(params))}>← All sessions</a> · <span class="mono">{session}</span>
      </p>
      {d && (
        <div class="stats">
          <Tile label="Traces">{d.totals.traces}</Tile>
          <Tile label="LLM calls">{d.totals.llm_calls}</Tile>
          <Tile label="Tokens in / out">
            <Num value={d.totals.input_tokens} kind="count" /> / <Num value={d.totals.output_tokens} kind="count" />
          </Tile>
          <Tile label="Cost">
            <Num value={d.totals.cost_usd} kind="cost" testId="session-cost" />
          </Tile>
        </div>
      )}
      <Panel title="Traces, oldest first" loading={detail.loading} error={detail.error} empty={!d?.traces.length} testId="session-traces">
        <ol>
          {d?.traces.map((t) => (
            <li key={t.trace_id}>
              <Time ms={t.start_ms} /> — <a href={href(`/traces/${t.trace_id}`, shared(params))}>{t.root_name}</a> · <Num value={t.duration_ms} kind="ms" /> · {t.llm_calls} LLM calls · <Num value={t.cost_usd} kind="cost" />
              {t.error_count ? <span class="pill error"> {t.error_count} errors</span> : null}
            </li>
          ))}
        </ol>
      </Panel>
    </>
  );
}
