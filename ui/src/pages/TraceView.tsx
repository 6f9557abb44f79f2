// One trace: a waterfall of its spans on a shared time axis (coloured by
// kind, nested by parent, self time shown, subtrees collapsible), and a side
// panel for the selected span with its tokens, cost, attributes, events,
// correlated logs, chat transcript and raw JSON.

import { Fragment } from 'preact';
import { useMemo, useState } from 'preact/hooks';
import { api, type LogRecord, type SpanNode, type TraceDetail } from '../api';
import { Num, Panel, Tile, Time } from '../components/ui';
import * as fmt from '../lib/format';
import { extractTranscript, type Message } from '../lib/transcript';
import { type Row, slowestStep, visibleRows } from '../lib/tree';
import { href, withParam } from '../lib/url';
import { navigate, useLocation } from '../router';
import { useData } from '../view';

export const KIND_COLORS: Record<string, string> = {
  agent: '#4e79a7',
  llm: '#59a14f',
  embedding: '#8cd17d',
  tool: '#f28e2b',
  retrieval: '#b07aa1',
  reranker: '#ff9da7',
  memory: '#9c755f',
  chain: '#76b7b2',
  workflow: '#edc948',
  guardrail: '#e15759',
  evaluator: '#bab0ac',
  unknown: '#999999',
};

function findSpan(roots: SpanNode[], id: string | null): SpanNode | null {
  if (!id) return null;
  const stack = [...roots];
  while (stack.length) {
    const s = stack.pop()!;
    if (s.span_id === id) return s;
    stack.push(...s.children);
  }
  return null;
}

export function TraceView({ traceId }: { traceId: string }) {
  const { path, params } = useLocation();
  const trace = useData((signal) => api.get<TraceDetail>(`/api/v1/traces/${traceId}`, {}, signal), [traceId]);
  const [collapsed, setCollapsed] = useState<Set<string>>(new Set());
  const t = trace.data;
  const rows = useMemo(() => (t ? visibleRows(t.spans, collapsed) : []), [t, collapsed]);
  const selectedId = params.get('span') ?? t?.spans[0]?.span_id ?? null;
  const selected = t ? findSpan(t.spans, selectedId) : null;
  const slowest = useMemo(() => (t ? slowestStep(t.spans) : null), [t]);
  const select = (id: string) => navigate(href(path, withParam(params, 'span', id)), true);
  const toggle = (id: string) => {
    const next = new Set(collapsed);
    if (next.has(id)) next.delete(id);
    else next.add(id);
    setCollapsed(next);
  };
  return (
    <>
      <p>
        <a href={href('/traces', withParam(withParam(params, 'span', null), 'range', params.get('range')))}>← All traces</a>
      </p>
      <Panel loading={trace.loading} error={trace.error} empty={!t} testId="trace-header">
        {t && (
          <div class="stats">
            <div class="stat">
              <div class="stat-label">Trace</div>
              <div class="mono" style={{ overflowWrap: 'anywhere' }}>
                {t.trace_id}
              </div>
            </div>
            <div class="stat">
              <div class="stat-label">Started</div>
              <Time ms={t.start_ms} />
            </div>
            <Tile label="Duration">
              <Num value={t.duration_ms} kind="ms" testId="trace-duration" />
            </Tile>
            {slowest && (
              <div class="stat">
                <div class="stat-label">Slowest step (own time)</div>
                <button type="button" class="link" onClick={() => select(slowest.span_id)} data-testid="slowest-step">
                  {slowest.name}
                </button>{' '}
                <Num value={slowest.self_ms} kind="ms" />
              </div>
            )}
            <Tile label="Spans / errors">
              {t.span_count} / {t.error_count}
            </Tile>
            <Tile label="Tokens in / out">
              <Num value={t.totals.input_tokens} kind="count" /> / <Num value={t.totals.output_tokens} kind="count" />
            </Tile>
            <Tile label="Cost">
              <Num value={t.totals.cost_usd} kind="cost" testId="trace-cost" />
            </Tile>
          </div>
        )}
        {t?.truncated && <p class="state">Only the first {t.span_count - t.spans_left_out} spans are shown; {t.spans_left_out} were left out.</p>}
      </Panel>
      {t && (
        <div class="trace-layout">
          <Panel title="Waterfall" class="waterfall" testId="waterfall">
            <Legend />
            <Waterfall rows={rows} total={Math.max(t.duration_ms, 0.001)} selected={selected?.span_id ?? null} collapsed={collapsed} onSelect={select} onToggle={toggle} />
          </Panel>
          {selected && <SpanPanel key={selected.span_id} span={selected} logs={t.logs.filter((l) => l.span_id === selected.span_id)} />}
        </div>
      )}
    </>
  );
}

function Legend() {
  return (
    <div class="legend" aria-label="Span kinds">
      {Object.entries(KIND_COLORS).map(([k, c]) => (
        <span key={k}>
          <span class="kind-swatch" style={{ background: c }} />
          {k}
        </span>
      ))}
    </div>
  );
}

interface WaterfallProps {
  rows: Row[];
  total: number;
  selected: string | null;
  collapsed: Set<string>;
  onSelect: (id: string) => void;
  onToggle: (id: string) => void;
}

function Waterfall({ rows, total, selected, collapsed, onSelect, onToggle }: WaterfallProps) {
  const ticks = [0, 0.25, 0.5, 0.75, 1];
  // Arrow keys move the selection through the visible spans.
  const onKeyDown = (e: KeyboardEvent) => {
    if (e.key !== 'ArrowDown' && e.key !== 'ArrowUp') return;
    const i = rows.findIndex((r) => r.span.span_id === selected);
    const next = rows[Math.max(0, Math.min(rows.length - 1, i + (e.key === 'ArrowDown' ? 1 : -1)))];
    if (!next) return;
    e.preventDefault();
    onSelect(next.span.span_id);
    (document.querySelector(`[data-span-id="${next.span.span_id}"] .pick`) as HTMLElement | null)?.focus();
  };
  return (
    <div onKeyDown={onKeyDown}>
      <div class="wf-axis" aria-hidden="true">
        <span>Span</span>
        <div class="ticks">
          {ticks.map((f) => (
            <span key={f} style={{ left: `${f * 100}%` }}>
              {fmt.ms(total * f)}
            </span>
          ))}
        </div>
      </div>
      <ul role="tree" aria-label="Spans" style={{ listStyle: 'none', margin: 0, padding: 0 }}>
        {rows.map(({ span, depth }) => {
          const left = (span.offset_ms / total) * 100;
          const width = Math.max((span.duration_ms / total) * 100, 0.15);
          const hasChildren = span.children.length > 0;
          const isCollapsed = collapsed.has(span.span_id);
          const color = KIND_COLORS[span.kind] ?? KIND_COLORS.unknown;
          const error = span.status === 'error';
          return (
            <li
              key={span.span_id}
              class="wf-row"
              role="treeitem"
              aria-level={depth + 1}
              aria-selected={span.span_id === selected ? 'true' : 'false'}
              aria-expanded={hasChildren ? !isCollapsed : undefined}
              data-span-id={span.span_id}
              style={{ contentVisibility: 'auto', containIntrinsicSize: 'auto 1.7rem' }}
            >
              <div class="wf-name" style={{ paddingLeft: `${Math.min(depth, 30) * 0.9}rem` }}>
                {hasChildren ? (
                  <button type="button" class="toggle" aria-label={`${isCollapsed ? 'Expand' : 'Collapse'} ${span.name}`} onClick={() => onToggle(span.span_id)}>
                    {isCollapsed ? '▸' : '▾'}
                  </button>
                ) : (
                  <span class="toggle" aria-hidden="true" />
                )}
                <span class="kind-swatch" style={{ background: color }} title={span.kind} />
                <button type="button" class="pick" onClick={() => onSelect(span.span_id)} title={`${span.name} (${span.kind})`}>
                  {error && <span class="pill error">error</span>} {span.name}
                  {isCollapsed && <span class="muted"> (+{span.subtree.spans - 1})</span>}
                </button>
              </div>
              <div class="wf-track" title={`${fmt.ms(span.duration_ms)}, self ${fmt.ms(span.self_ms)}, starts at +${fmt.ms(span.offset_ms)}`}>
                <div class={`wf-bar ${error ? 'error' : ''}`} style={{ left: `${left}%`, width: `${width}%`, background: color }} />
                <span class="wf-label" style={left + width > 70 ? { right: `${100 - left + 0.5}%` } : { left: `calc(${left + width}% + 4px)` }}>
                  {fmt.ms(span.duration_ms)}
                  {hasChildren ? ` · self ${fmt.ms(span.self_ms)}` : ''}
                </span>
              </div>
            </li>
          );
        })}
      </ul>
    </div>
  );
}

type Tab = 'overview' | 'transcript' | 'attributes' | 'events' | 'logs' | 'raw';

function SpanPanel({ span, logs }: { span: SpanNode; logs: LogRecord[] }) {
  const transcript = useMemo(() => extractTranscript(span.attributes, span.events), [span]);
  const [tab, setTab] = useState<Tab>(transcript ? 'transcript' : 'overview');
  const tabs: [Tab, string][] = [
    ['overview', 'Overview'],
    ...(transcript ? [['transcript', 'Transcript'] as [Tab, string]] : []),
    ['attributes', `Attributes (${Object.keys(span.attributes).length})`],
    ['events', `Events (${span.events.length})`],
    ['logs', `Logs (${logs.length})`],
    ['raw', 'Raw JSON'],
  ];
  const current = tabs.some(([t]) => t === tab) ? tab : 'overview';
  const { children: _children, ...raw } = span;
  return (
    <Panel title={span.name} class="span-panel" testId="span-panel">
      <div class="tabs" role="tablist" aria-label="Span details">
        {tabs.map(([t, label]) => (
          <button key={t} type="button" role="tab" id={`tab-${t}`} aria-selected={current === t} aria-controls="span-tabpanel" onClick={() => setTab(t)}>
            {label}
          </button>
        ))}
      </div>
      <div role="tabpanel" id="span-tabpanel" aria-labelledby={`tab-${current}`}>
        {current === 'overview' && (
          <>
            <dl class="kv">
              <dt>Kind</dt>
              <dd>
                <span class="kind-swatch" style={{ background: KIND_COLORS[span.kind] ?? KIND_COLORS.unknown }} /> {span.kind}
              </dd>
              <dt>Service</dt>
              <dd>{span.service ?? '—'}</dd>
              <dt>Status</dt>
              <dd>
                <span class={`pill ${span.status}`}>{span.status}</span> {span.status_message ?? ''}
              </dd>
              <dt>Start</dt>
              <dd>
                <Time ms={span.start_ms} /> (+<Num value={span.offset_ms} kind="ms" />)
              </dd>
              <dt>Duration</dt>
              <dd>
                <Num value={span.duration_ms} kind="ms" /> (self <Num value={span.self_ms} kind="ms" />)
              </dd>
              <dt>Model</dt>
              <dd class="mono">{span.model ?? '—'}</dd>
              <dt>Provider</dt>
              <dd>{span.provider ?? '—'}</dd>
              <dt>Tokens in / out</dt>
              <dd>
                <Num value={span.input_tokens} kind="count" /> / <Num value={span.output_tokens} kind="count" />
                {span.cache_read_tokens ? (
                  <>
                    {' '}
                    (<Num value={span.cache_read_tokens} kind="count" /> cached)
                  </>
                ) : null}
              </dd>
              <dt>Cost</dt>
              <dd>
                <Num value={span.cost_usd} kind="cost" testId="span-cost" />
              </dd>
              <dt>User / session</dt>
              <dd>
                {span.user ?? '—'} / {span.session ?? '—'}
              </dd>
              {span.children.length > 0 && (
                <>
                  <dt>Subtree</dt>
                  <dd>
                    {span.subtree.spans} spans, {span.subtree.llm_calls} LLM calls, <Num value={span.subtree.cost_usd} kind="cost" />
                  </dd>
                </>
              )}
              <dt>Span id</dt>
              <dd class="mono">{span.span_id}</dd>
            </dl>
            {transcript && (
              <button type="button" onClick={() => setTab('transcript')}>
                Show the transcript ({transcript.messages.length} messages)
              </button>
            )}
          </>
        )}
        {current === 'transcript' && transcript && <TranscriptView messages={transcript.messages} convention={transcript.convention} attributes={span.attributes} />}
        {current === 'attributes' && <KeyValues values={span.attributes} />}
        {current === 'events' &&
          (span.events.length ? (
            <ul>
              {span.events.map((e, i) => (
                <li key={i}>
                  <strong>{e.name}</strong> at +<Num value={e.offset_ms} kind="ms" />
                  <KeyValues values={e.attributes} />
                </li>
              ))}
            </ul>
          ) : (
            <p class="state empty">No events.</p>
          ))}
        {current === 'logs' &&
          (logs.length ? (
            <ul>
              {logs.map((l, i) => (
                <li key={i}>
                  <span class={`pill ${severityClass(l)}`}>{l.severity_text ?? l.severity_number ?? ''}</span> <Time ms={l.time_ms} /> {typeof l.body === 'string' ? l.body : JSON.stringify(l.body)}
                </li>
              ))}
            </ul>
          ) : (
            <p class="state empty">No log records for this span.</p>
          ))}
        {current === 'raw' && <pre data-testid="span-raw">{JSON.stringify(raw, null, 2)}</pre>}
      </div>
    </Panel>
  );
}

export function severityClass(l: LogRecord): string {
  const n = l.severity_number ?? 0;
  if (n >= 17) return 'error';
  if (n >= 13) return 'warn';
  return '';
}

function KeyValues({ values }: { values: Record<string, unknown> }) {
  const entries = Object.entries(values);
  if (!entries.length) return <p class="state empty">None.</p>;
  return (
    <dl class="kv">
      {entries.map(([k, v]) => (
        <Fragment key={k}>
          <dt class="mono">{k}</dt>
          <dd class="mono">{typeof v === 'string' ? v : JSON.stringify(v)}</dd>
        </Fragment>
      ))}
    </dl>
  );
}

function TranscriptView({ messages, convention, attributes }: { messages: Message[]; convention: string; attributes: Record<string, unknown> }) {
  const [raw, setRaw] = useState(false);
  const source = Object.fromEntries(
    Object.entries(attributes).filter(([k]) => /messages|system_instructions|\.input$|\.output$|^gen_ai\.(prompt|completion)\./.test(k)),
  );
  return (
    <div data-testid="transcript">
      <div class="row" style={{ justifyContent: 'space-between', marginBottom: '.5rem' }}>
        <span class="muted">Read from {convention} attributes</span>
        <button type="button" aria-pressed={raw} onClick={() => setRaw(!raw)}>
          {raw ? 'Show as chat' : 'Show raw JSON'}
        </button>
      </div>
      {raw ? (
        <pre>{JSON.stringify(source, null, 2)}</pre>
      ) : (
        <div class="transcript">
          {messages.map((m, i) => (
            <div key={i} class={`msg ${m.role}`}>
              <div class="msg-role">
                {m.role} <span class="muted">· {m.direction === 'input' ? 'sent' : 'received'}</span>
              </div>
              {m.parts.map((p, j) =>
                p.kind === 'text' ? (
                  <div key={j} class="msg-text">
                    {p.text}
                  </div>
                ) : p.kind === 'tool_call' ? (
                  <div key={j} class="tool-call">
                    <strong>Tool call</strong> <span class="mono">{p.name}</span>
                    {p.id && <span class="muted"> ({p.id})</span>}
                    <pre>{p.arguments}</pre>
                  </div>
                ) : (
                  <div key={j} class="tool-call">
                    <strong>Tool result</strong>
                    {p.id && <span class="muted"> ({p.id})</span>}
                    <pre>{p.content}</pre>
                  </div>
                ),
              )}
            </div>
          ))}
        </div>
      )}
    </div>
  );
}
