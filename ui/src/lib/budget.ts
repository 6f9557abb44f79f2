// The budget form's pure parts: the text fields to and from the API's
// budget body, and which field an API validation error names.

export interface BudgetBody {
  name: string;
  scope: Record<string, string>;
  metric: string;
  limit: number;
  period: string;
  timezone?: string;
  thresholds?: number[];
  webhooks: string[];
  mode: string;
  fail: string;
}

/** What the form's inputs hold, all as text. */
export interface BudgetForm {
  name: string;
  scope: string;
  metric: string;
  limit: string;
  period: string;
  timezone: string;
  thresholds: string;
  webhooks: string;
  mode: string;
  fail: string;
}

export const EMPTY_FORM: BudgetForm = {
  name: '',
  scope: '',
  metric: 'cost_usd',
  limit: '',
  period: 'month',
  timezone: '',
  thresholds: '50, 80, 100',
  webhooks: '',
  mode: 'enforce',
  fail: 'open',
};

/** The form's fields, as the API names them in its errors. */
export const FIELDS: (keyof BudgetForm)[] = ['name', 'scope', 'metric', 'limit', 'period', 'timezone', 'thresholds', 'webhooks', 'mode', 'fail'];

export function fromBudget(b: { name: string; scope: Record<string, string>; metric: string; limit: number; period: string; timezone: string; thresholds: number[]; webhooks: string[]; mode: string; fail: string }): BudgetForm {
  return {
    name: b.name,
    scope: Object.entries(b.scope)
      .map(([k, v]) => `${k}=${v}`)
      .join('\n'),
    metric: b.metric,
    limit: String(b.limit),
    period: b.period,
    timezone: b.timezone,
    thresholds: b.thresholds.join(', '),
    webhooks: b.webhooks.join('\n'),
    mode: b.mode,
    fail: b.fail,
  };
}

/**
 * The API body for the form, or the errors found before sending (by field).
 * Only what the browser can tell for sure is checked here; the API checks
 * everything and its errors are shown the same way.
 */
export function toBody(form: BudgetForm): { body: BudgetBody | null; errors: Partial<Record<keyof BudgetForm, string>> } {
  const errors: Partial<Record<keyof BudgetForm, string>> = {};
  const scope: Record<string, string> = {};
  for (const line of form.scope.split(/[\n,]/)) {
    const t = line.trim();
    if (!t) continue;
    const eq = t.indexOf('=');
    if (eq <= 0) {
      errors.scope = `"${t}" is not NAME=VALUE (e.g. user=alice)`;
      continue;
    }
    scope[t.slice(0, eq).trim()] = t.slice(eq + 1).trim();
  }
  const limit = Number(form.limit);
  if (form.limit.trim() === '' || !Number.isFinite(limit)) errors.limit = 'must be a number';
  const thresholds = form.thresholds
    .split(/[\s,]+/)
    .filter(Boolean)
    .map(Number);
  if (thresholds.some((t) => !Number.isFinite(t))) errors.thresholds = 'must be numbers separated by commas';
  if (Object.keys(errors).length) return { body: null, errors };
  const body: BudgetBody = {
    name: form.name.trim(),
    scope,
    metric: form.metric,
    limit,
    period: form.period.trim(),
    webhooks: form.webhooks
      .split('\n')
      .map((w) => w.trim())
      .filter(Boolean),
    mode: form.mode,
    fail: form.fail,
  };
  if (thresholds.length) body.thresholds = thresholds;
  if (form.timezone.trim()) body.timezone = form.timezone.trim();
  return { body, errors };
}

/** The form field an API error message names (`webhooks[0]: …` → webhooks), or null. */
export function errorField(message: string): keyof BudgetForm | null {
  const m = /^([a-z_]+)(?:\[\d+\]|\.[^\s:]+)?\s*:/.exec(message);
  if (!m) return null;
  const field = m[1] as keyof BudgetForm;
  if (field === ('tags' as string)) return 'scope';
  return FIELDS.includes(field) ? field : null;
}
