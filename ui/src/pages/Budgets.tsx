// Budgets: each budget's spend against its limit with the forecast to the
// period's end, thresholds marked, reserved amount and period; the alert
// history with each webhook delivery's status; create, edit and delete
// through the budgets API, its validation errors shown by their field.

import { useState } from 'preact/hooks';
import { ApiError, api } from '../api';
import { Num, numCol, Panel, Table, Time } from '../components/ui';
import { EMPTY_FORM, errorField, fromBudget, toBody, type BudgetForm } from '../lib/budget';
import * as fmt from '../lib/format';
import { useData } from '../view';

interface BudgetView {
  id: string;
  name: string;
  project: string;
  scope: Record<string, string>;
  metric: string;
  limit: number;
  period: string;
  timezone: string;
  thresholds: number[];
  webhooks: string[];
  mode: string;
  fail: string;
  source: string;
}

interface BudgetStatus {
  id: string;
  spend: number;
  limit: number;
  remaining: number;
  percent: number;
  period_start: number;
  period_end: number;
  forecast: number;
  reserved: number;
  ready: boolean;
}

interface Alert {
  id: number;
  budget_id: string;
  threshold: number;
  crossed_at: number;
  payload: { budget_name?: string; spend?: number; limit?: number; metric?: string };
  deliveries: { url: string; status: string; attempts: number; next_attempt_at: number | null; last_error: string | null; delivered_at: number | null }[];
}

export function Budgets() {
  const budgets = useData((signal) => api.get<{ budgets: BudgetView[] }>('/api/v1/budgets', {}, signal), []);
  const statuses = useData((signal) => api.get<{ budgets: BudgetStatus[] }>('/api/v1/budgets/status', {}, signal), []);
  const alerts = useData((signal) => api.get<{ alerts: Alert[] }>('/api/v1/alerts', { limit: 100 }, signal), []);
  const [editing, setEditing] = useState<BudgetView | 'new' | null>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const reload = () => {
    budgets.reload();
    statuses.reload();
    alerts.reload();
  };
  const byId = new Map((statuses.data?.budgets ?? []).map((s) => [s.id, s]));
  // Closest to its limit first.
  const list = [...(budgets.data?.budgets ?? [])].sort((a, b) => (byId.get(b.id)?.percent ?? -1) - (byId.get(a.id)?.percent ?? -1));
  const names = new Map(list.map((b) => [b.id, b.name]));
  return (
    <>
      <Panel
        title="Budgets, closest to their limit first"
        loading={budgets.loading}
        error={budgets.error ?? statuses.error}
        empty={!list.length}
        emptyText="No budget yet. Create one to track spend against a limit."
        testId="budget-list"
        actions={
          <button type="button" class="primary" onClick={() => setEditing('new')} aria-expanded={editing === 'new'}>
            New budget
          </button>
        }
      >
        {notice && (
          <p class="state" role="status">
            {notice}
          </p>
        )}
        <Table columns={['Budget', 'Scope', 'Period', 'Spend of limit', numCol('Used'), numCol('Forecast'), numCol('Reserved'), 'Mode', { label: <span class="sr-only">Actions</span> }]}>
          {list.map((b) => {
            const s = byId.get(b.id);
            const kind = b.metric === 'cost_usd' ? 'cost' : 'count';
            return (
              <tr key={b.id} data-budget={b.name}>
                <th scope="row">{b.name}</th>
                <td class="mono">{Object.entries(b.scope).map(([k, v]) => `${k}=${v}`).join(', ') || 'whole project'}</td>
                <td>
                  {b.period}
                  {s && (
                    <div class="muted" style={{ fontSize: '.8rem' }}>
                      <Time ms={s.period_start} /> – <Time ms={s.period_end} />
                    </div>
                  )}
                </td>
                <td style={{ minWidth: '200px' }}>
                  {s ? <Progress status={s} thresholds={b.thresholds} /> : '—'}
                  {s && (
                    <div style={{ fontSize: '.8rem' }}>
                      <Num value={s.spend} kind={kind} testId="budget-spend" /> of <Num value={b.limit} kind={kind} />
                    </div>
                  )}
                </td>
                <td class="n">{s ? `${fmt.percent(s.percent / 100)}` : '—'}</td>
                <td class="n">{s ? <Num value={s.forecast} kind={kind} /> : '—'}</td>
                <td class="n">{s ? <Num value={s.reserved} kind={kind} /> : '—'}</td>
                <td>{b.mode}</td>
                <td>
                  {b.source === 'config' ? (
                    <span class="muted" title="Defined in the config file: change it there">config</span>
                  ) : (
                    <span class="row">
                      <button type="button" onClick={() => setEditing(b)} aria-label={`Edit ${b.name}`}>
                        Edit
                      </button>
                      <button
                        type="button"
                        class="danger"
                        aria-label={`Delete ${b.name}`}
                        onClick={async () => {
                          if (!window.confirm(`Delete the budget "${b.name}"? Its alert history stays.`)) return;
                          try {
                            await api.del(`/api/v1/budgets/${encodeURIComponent(b.id)}`);
                            setNotice(`Deleted ${b.name}.`);
                          } catch (err) {
                            setNotice((err as Error).message);
                          }
                          reload();
                        }}
                      >
                        Delete
                      </button>
                    </span>
                  )}
                </td>
              </tr>
            );
          })}
        </Table>
      </Panel>
      {editing && (
        <BudgetEditor
          key={editing === 'new' ? 'new' : editing.id}
          budget={editing === 'new' ? null : editing}
          onDone={(message) => {
            setEditing(null);
            if (message) setNotice(message);
            reload();
          }}
        />
      )}
      <Panel title="Alert history" loading={alerts.loading} error={alerts.error} empty={!alerts.data?.alerts.length} emptyText="No threshold has been crossed." testId="alert-history">
        <Table columns={['Crossed', 'Budget', numCol('Threshold'), numCol('Spend'), 'Deliveries']}>
          {alerts.data?.alerts.map((a) => (
            <tr key={a.id}>
              <td>
                <Time ms={a.crossed_at} />
              </td>
              <td>{a.payload.budget_name ?? names.get(a.budget_id) ?? a.budget_id}</td>
              <td class="n">{a.threshold} %</td>
              <td class="n">{a.payload.spend != null ? <Num value={a.payload.spend} kind={a.payload.metric === 'tokens' ? 'count' : 'cost'} /> : '—'}</td>
              <td>
                {a.deliveries.length === 0 && <span class="muted">no webhooks</span>}
                {a.deliveries.map((d) => (
                  <div key={d.url}>
                    <span class={`pill ${d.status}`}>{d.status}</span> <span class="mono">{d.url}</span> <span class="muted">({d.attempts} attempts)</span>
                    {d.last_error && <div class="muted">{d.last_error}</div>}
                  </div>
                ))}
              </td>
            </tr>
          ))}
        </Table>
      </Panel>
    </>
  );
}

function Progress({ status, thresholds }: { status: BudgetStatus; thresholds: number[] }) {
  const pct = Math.max(0, status.percent);
  const forecastPct = status.limit > 0 ? (status.forecast / status.limit) * 100 : 0;
  // The bar spans 0..max(100 %, spend, forecast) so overshoot stays visible.
  const scale = Math.max(100, pct, Math.min(forecastPct, 300));
  const level = pct >= 100 ? 'over' : pct >= (thresholds[thresholds.length - 2] ?? 80) ? 'warn' : '';
  return (
    <div
      class="progress"
      role="progressbar"
      aria-valuemin={0}
      aria-valuemax={100}
      aria-valuenow={Math.round(pct)}
      aria-valuetext={`${fmt.percent(pct / 100)} of the limit used; forecast ${fmt.percent(forecastPct / 100)} by the period's end`}
      title={`used ${fmt.percent(pct / 100)}, forecast ${fmt.percent(forecastPct / 100)}`}
    >
      <div class={`progress-fill ${level}`} style={{ width: `${(Math.min(pct, scale) / scale) * 100}%` }} />
      {thresholds.map((t) => (
        <div key={t} class="progress-threshold" style={{ left: `${(t / scale) * 100}%` }} title={`threshold ${t} %`} />
      ))}
      {forecastPct > 0 && <div class="progress-forecast" style={{ left: `${(Math.min(forecastPct, scale) / scale) * 100}%` }} title={`forecast ${fmt.percent(forecastPct / 100)}`} />}
    </div>
  );
}

function BudgetEditor({ budget, onDone }: { budget: BudgetView | null; onDone: (message: string | null) => void }) {
  const [form, setForm] = useState<BudgetForm>(budget ? fromBudget(budget) : EMPTY_FORM);
  const [errors, setErrors] = useState<Partial<Record<keyof BudgetForm, string>>>({});
  const [general, setGeneral] = useState<string | null>(null);
  const [saving, setSaving] = useState(false);
  const set = (k: keyof BudgetForm) => (e: Event) => setForm({ ...form, [k]: (e.target as HTMLInputElement).value });
  const field = (k: keyof BudgetForm, label: string, input: preact.ComponentChildren, hint?: string, wide = false) => (
    <div class={`field ${wide ? 'wide' : ''}`}>
      <label for={`budget-${k}`}>{label}</label>
      {input}
      {hint && (
        <span class="muted" id={`budget-${k}-hint`}>
          {hint}
        </span>
      )}
      {errors[k] && (
        <span class="field-error" id={`budget-${k}-error`} role="alert">
          {errors[k]}
        </span>
      )}
    </div>
  );
  const described = (k: keyof BudgetForm, hint = false) => [hint ? `budget-${k}-hint` : '', errors[k] ? `budget-${k}-error` : ''].filter(Boolean).join(' ') || undefined;
  const submit = async (e: Event) => {
    e.preventDefault();
    setGeneral(null);
    const { body, errors: local } = toBody(form);
    setErrors(local);
    if (!body) return;
    setSaving(true);
    try {
      if (budget) await api.put(`/api/v1/budgets/${encodeURIComponent(budget.id)}`, body);
      else {
        const created = await api.post<{ secret?: string; name: string }>('/api/v1/budgets', body);
        if (created.secret && body.webhooks.length) {
          onDone(`Created ${created.name}. Its webhook signing secret, shown once: ${created.secret}`);
          return;
        }
      }
      onDone(`${budget ? 'Saved' : 'Created'} ${body.name}.`);
    } catch (err) {
      const message = (err as Error).message;
      const f = err instanceof ApiError ? errorField(message) : null;
      if (f) setErrors({ [f]: message.slice(message.indexOf(':') + 1).trim() });
      else setGeneral(message);
    } finally {
      setSaving(false);
    }
  };
  return (
    <Panel title={budget ? `Edit ${budget.name}` : 'New budget'} testId="budget-form">
      <form class="budget-form" onSubmit={submit} noValidate>
        {field('name', 'Name', <input id="budget-name" value={form.name} onInput={set('name')} aria-invalid={!!errors.name} aria-describedby={described('name')} required />)}
        {field(
          'metric',
          'Metric',
          <select id="budget-metric" value={form.metric} onChange={set('metric')} aria-describedby={described('metric')}>
            <option value="cost_usd">Cost (USD)</option>
            <option value="tokens">Tokens</option>
          </select>,
        )}
        {field('limit', 'Limit per period', <input id="budget-limit" inputMode="decimal" value={form.limit} onInput={set('limit')} aria-invalid={!!errors.limit} aria-describedby={described('limit')} />)}
        {field(
          'period',
          'Period',
          <input id="budget-period" list="budget-periods" value={form.period} onInput={set('period')} aria-invalid={!!errors.period} aria-describedby={described('period', true)} />,
          'day, week, month, or rolling 24h / rolling 7d',
        )}
        <datalist id="budget-periods">
          <option value="day" />
          <option value="week" />
          <option value="month" />
          <option value="rolling 24h" />
          <option value="rolling 7d" />
        </datalist>
        {field('timezone', 'Time zone', <input id="budget-timezone" value={form.timezone} placeholder="server default (UTC)" onInput={set('timezone')} aria-invalid={!!errors.timezone} aria-describedby={described('timezone')} />)}
        {field('thresholds', 'Alert thresholds (%)', <input id="budget-thresholds" value={form.thresholds} onInput={set('thresholds')} aria-invalid={!!errors.thresholds} aria-describedby={described('thresholds')} />)}
        {field(
          'mode',
          'Mode',
          <select id="budget-mode" value={form.mode} onChange={set('mode')}>
            <option value="enforce">enforce (quota checks deny past the limit)</option>
            <option value="observe">observe (alert only)</option>
          </select>,
        )}
        {field(
          'fail',
          'While undecided',
          <select id="budget-fail" value={form.fail} onChange={set('fail')}>
            <option value="open">allow (fail open)</option>
            <option value="closed">deny (fail closed)</option>
          </select>,
        )}
        {field(
          'scope',
          'Scope',
          <textarea id="budget-scope" rows={3} value={form.scope} onInput={set('scope')} aria-invalid={!!errors.scope} aria-describedby={described('scope', true)} />,
          'One per line: user=alice, model=gpt-4o, api_key_fingerprint=k_…, route=/chat, tag.team=search. Empty: the whole project.',
          true,
        )}
        {field(
          'webhooks',
          'Webhooks',
          <textarea id="budget-webhooks" rows={2} value={form.webhooks} onInput={set('webhooks')} aria-invalid={!!errors.webhooks} aria-describedby={described('webhooks', true)} />,
          'One http(s) URL per line; each alert is POSTed there, signed.',
          true,
        )}
        {general && (
          <p class="field-error wide" role="alert">
            {general}
          </p>
        )}
        <div class="row wide">
          <button type="submit" class="primary" disabled={saving}>
            {budget ? 'Save budget' : 'Create budget'}
          </button>
          <button type="button" onClick={() => onDone(null)}>
            Cancel
          </button>
        </div>
      </form>
    </Panel>
  );
}
